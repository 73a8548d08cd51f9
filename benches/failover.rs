//! `plexus bench failover`: the leading master's machine crashes in a simulated
//! datacenter (three masters, 10,000 agents, 100,000 running tasks by default); with the
//! clock paused, the figures are simulated time from the crash until (a) another master
//! leads, (b) every agent has re-registered with it, (c) its first offer. The masters use
//! the default election settings (`master.election_timeout`,
//! `master.raft_heartbeat_interval`). With `--processes` the same is timed on real
//! processes ([`super::failover_processes`]).

use std::time::Duration;

/// Flags of `plexus bench failover`.
#[derive(Debug, clap::Args)]
pub struct FailoverOpts {
    /// Agents.
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// Running tasks, spread over the agents.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// Seeds to run, one failover each (their figures are printed, then the median).
    #[arg(long, default_value_t = 3)]
    pub runs: u64,
    /// One-way message delay, µs.
    #[arg(long, default_value_t = 500)]
    pub delay_us: u64,
    /// Instead: three `plexus master` processes and three agents on 127.0.0.x, the
    /// leader killed `--failovers` times; wall-clock figures.
    #[arg(long)]
    pub processes: bool,
    /// Failovers with `--processes` (each printed, then the median).
    #[arg(long, default_value_t = 10)]
    pub failovers: usize,
}

/// Runs the benchmark and prints its figures.
pub fn run(o: FailoverOpts) -> anyhow::Result<()> {
    if o.processes {
        return super::failover_processes::run(o.failovers);
    }
    let defaults = plexus_config::MasterSettings::default();
    let mut all = Vec::new();
    for seed in 1..=o.runs {
        let cfg = plexus_sim::bench::FailoverConfig {
            agents: o.agents,
            tasks: o.tasks,
            seed,
            election_timeout: defaults.election_timeout,
            raft_heartbeat: defaults.raft_heartbeat_interval,
            delay: Duration::from_micros(o.delay_us),
        };
        let wall = std::time::Instant::now();
        let t =
            plexus_sim::bench::failover(cfg).map_err(|e| anyhow::anyhow!("seed {seed}: {e}"))?;
        println!(
            "plexus failover_run seed={seed} agents={} tasks_running={} elected_ms={:.1} registered_ms={:.1} first_offer_ms={:.1} setup_simulated_s={:.0} wall_s={:.1}",
            o.agents,
            t.tasks_running,
            t.elected_ms,
            t.registered_ms,
            t.first_offer_ms,
            t.setup_s,
            wall.elapsed().as_secs_f64()
        );
        all.push(t);
    }
    let shape = format!("agents={} tasks={} runs={}", o.agents, o.tasks, o.runs);
    print_medians(
        "failover",
        &[
            ("elected_ms", all.iter().map(|t| t.elected_ms).collect()),
            (
                "registered_ms",
                all.iter().map(|t| t.registered_ms).collect(),
            ),
            (
                "first_offer_ms",
                all.iter().map(|t| t.first_offer_ms).collect(),
            ),
        ],
        &shape,
    );
    Ok(())
}

/// Prints one line per figure: `plexus {prefix}_{name} p50=… {shape}`.
pub(crate) fn print_medians(prefix: &str, figures: &[(&str, Vec<f64>)], shape: &str) {
    for (name, values) in figures {
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        let p50 = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
        println!("plexus {prefix}_{name} p50={p50:.1} {shape}");
    }
}
