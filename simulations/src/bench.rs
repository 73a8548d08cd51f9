//! The simulated failover benchmark (`plexus bench failover`): a datacenter of three
//! masters, many agents and one framework keeping many tasks running; the leading
//! master's machine crashes, and the paused clock measures, in simulated time from the
//! crash, how long until (a) another master leads, (b) every agent has re-registered
//! with it, and (c) it makes its first offer.
//!
//! Simulated time counts what the protocol waits for (timeouts, message delays), not
//! the CPU the processes spend: a figure here is a lower bound a real cluster meets only
//! if its masters keep up with the messages.

use std::time::Duration;

use tokio::time::Instant;

use crate::faults::FaultRates;
use crate::world::{SimConfig, World};

/// What to measure.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// Agents (one per simulated machine).
    pub agents: usize,
    /// Running tasks, spread over the agents by one framework.
    pub tasks: usize,
    /// The seed.
    pub seed: u64,
    /// The masters' shortest election timeout.
    pub election_timeout: Duration,
    /// The leader's Raft heartbeat period.
    pub raft_heartbeat: Duration,
    /// One-way message delay.
    pub delay: Duration,
}

/// What was measured, in simulated milliseconds from the leader's crash.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverTimes {
    /// Until another master leads.
    pub elected_ms: f64,
    /// Until every agent is registered with it.
    pub registered_ms: f64,
    /// Until its first offer reaches the framework.
    pub first_offer_ms: f64,
    /// Tasks running when the leader crashed.
    pub tasks_running: usize,
    /// Simulated seconds it took to start the agents and the tasks.
    pub setup_s: f64,
}

/// Runs the benchmark on a fresh current-thread runtime with paused time.
pub fn failover(cfg: FailoverConfig) -> Result<FailoverTimes, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("a runtime: {e}"))?;
    rt.block_on(async move {
        plexus_net::clock::simulate(Duration::from_secs(1_700_000_000));
        plexus_kernel::registry::rt::seed_elections(Some(cfg.seed));
        let r = measure(cfg).await;
        plexus_kernel::registry::rt::seed_elections(None);
        plexus_net::clock::real();
        r
    })
}

async fn measure(cfg: FailoverConfig) -> Result<FailoverTimes, String> {
    let faults = FaultRates {
        min_delay: cfg.delay,
        max_delay: cfg.delay,
        ..FaultRates::none()
    };
    let sim = SimConfig {
        seed: cfg.seed,
        agents: cfg.agents,
        frameworks: 1,
        tasks_per_framework: cfg.tasks,
        faults,
        masters: 3,
        election_timeout: cfg.election_timeout,
        raft_heartbeat: cfg.raft_heartbeat,
        // As a real agent's.
        agent_tick: Duration::from_millis(250),
        offer_limit: 0,
        keep_trace: 0,
        ..SimConfig::default()
    };
    let start = Instant::now();
    let w = World::build(sim).await;
    // Every task running, seen by the leader.
    let deadline = start + Duration::from_secs(4 * 3600);
    let running = loop {
        if let Some(v) = w.leader_view() {
            let n = v.running_tasks;
            if n >= cfg.tasks && v.active_agents == cfg.agents {
                break n;
            }
        }
        if Instant::now() > deadline {
            return Err("the tasks did not all start within 4 simulated hours".into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let setup_s = start.elapsed().as_secs_f64();
    let old = w.leader_index_now().ok_or("no master leads")?;
    let crashed = Instant::now();
    let crashed_ms = w.rec.now_ms();
    w.crash_master(old).await;
    let (mut elected, mut registered, mut offered) = (None, None, None);
    let step = Duration::from_millis(1);
    while registered.is_none() || offered.is_none() || elected.is_none() {
        let at = crashed.elapsed().as_secs_f64() * 1000.0;
        if elected.is_none() && !w.leaders().is_empty() {
            elected = Some(at);
        }
        if registered.is_none()
            && w.leader_view()
                .is_some_and(|v| v.active_agents == cfg.agents)
        {
            registered = Some(at);
        }
        if offered.is_none() && w.last_offer_ms().is_some_and(|t| t > crashed_ms) {
            offered = Some(at);
        }
        if crashed.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "after 600 simulated seconds: elected {elected:?}, registered {registered:?}, offered {offered:?}"
            ));
        }
        tokio::time::sleep(step).await;
    }
    Ok(FailoverTimes {
        elected_ms: elected.unwrap_or_default(),
        registered_ms: registered.unwrap_or_default(),
        first_offer_ms: offered.unwrap_or_default(),
        tasks_running: running,
        setup_s,
    })
}
