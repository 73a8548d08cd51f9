//! `plexus bench allocator`: allocation cycles of the DRF allocator alone.
//!
//! 20,000 agents (`cpus:24;mem:65536;disk:100000;ports:[31000-32000]`, every tenth with a
//! reservation for one role) and 2,000 frameworks in 200 roles of varied weights. A cycle
//! offers every free agent; between cycles all offers are recovered. Prints the cycle
//! time (Mesos 1.8 took ≈3.8 s for this size; the goal is ≤ 40 ms), and the time of a
//! cycle right after every framework declined its offer with a filter.

use std::time::{Duration, Instant};

use plexus_kernel::allocator::Allocator;
use plexus_kernel::resources::{Resources, RoleResources};

/// Sizes of the allocator benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct AllocatorOpts {
    /// Agents.
    #[arg(long, default_value_t = 20_000)]
    pub agents: usize,
    /// Frameworks.
    #[arg(long, default_value_t = 2_000)]
    pub frameworks: usize,
    /// Timed cycles.
    #[arg(long, default_value_t = 5)]
    pub cycles: usize,
}

/// Runs the benchmark and prints its figures.
pub fn run(o: AllocatorOpts) -> anyhow::Result<()> {
    let roles = (o.frameworks / 10).max(1);
    let mut al = Allocator::new();
    let base = Resources::parse("cpus:24;mem:65536;disk:100000;ports:[31000-32000]")?;
    let t0 = Instant::now();
    for i in 0..o.frameworks {
        let role = format!("role{}", i % roles);
        al.add_framework(&format!("fw{i}"), &role)?;
        al.set_weight(&role, 1.0 + (i % roles % 3) as f64);
    }
    for i in 0..o.agents {
        let mut r = RoleResources::unreserved(base.clone());
        if i % 10 == 0 {
            r.0.insert(format!("role{}", i % roles), Resources::new(4.0, 8192));
        }
        al.add_agent(&format!("agent{i}"), r, &[]);
    }
    let setup = t0.elapsed();
    let mut times = Vec::new();
    let mut now = Duration::ZERO;
    let mut offers = 0;
    for _ in 0..o.cycles {
        let t = Instant::now();
        let got = al.allocate(now);
        times.push(t.elapsed());
        offers = got.len();
        for a in got {
            al.recover(&a.framework, &a.agent, &a.resources, None, now)?;
        }
        now += Duration::from_secs(1);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "plexus allocator_cycle_ms agents={} frameworks={} offers={offers} p50={:.1} max={:.1}",
        o.agents,
        o.frameworks,
        ms(times[times.len() / 2]),
        ms(*times.last().expect("at least one cycle"))
    );
    let got = al.allocate(now);
    for a in got {
        al.recover(
            &a.framework,
            &a.agent,
            &a.resources,
            Some(Duration::from_secs(5)),
            now,
        )?;
    }
    let t = Instant::now();
    let got = al.allocate(now + Duration::from_secs(1));
    println!(
        "plexus allocator_cycle_after_declines_ms agents={} frameworks={} offers={} ms={:.1}",
        o.agents,
        o.frameworks,
        got.len(),
        ms(t.elapsed())
    );
    println!("plexus allocator_setup_ms ms={:.1}", ms(setup));
    Ok(())
}
