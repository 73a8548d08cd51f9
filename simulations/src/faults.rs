//! The fault plan: which faults happen when, drawn from the seed before the run starts.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::disk::DiskFault;
use crate::world::SimConfig;

/// How often faults happen (per simulated hour, whole cluster) and how bad messages get.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRates {
    /// Machine crashes (the agent and its tasks die; it restarts later).
    pub crashes_per_hour: f64,
    /// Chance that a crashed machine comes back without its state directory.
    pub lose_state: f64,
    /// Network partitions between some agents and the master (some one-way).
    pub partitions_per_hour: f64,
    /// Pauses: a node (master, framework or agent) stops answering for a while.
    pub pauses_per_hour: f64,
    /// Probability that a batch of messages is lost.
    pub drop_rate: f64,
    /// Smallest one-way message delay.
    pub min_delay: Duration,
    /// Largest one-way message delay.
    pub max_delay: Duration,
    /// Share of tasks that crash (non-zero exit, signal, or out of memory).
    pub task_failure_rate: f64,
    /// Master crashes (the master actor fails and its supervisor restarts it).
    pub master_crashes_per_hour: f64,
    /// Agents' disks failing their writes for a while: full, tearing writes or failing
    /// syncs (checkpoint writes fail).
    pub disk_faults_per_hour: f64,
    /// Crashes of the leading master's machine (it restarts later, with its disk).
    pub leader_crashes_per_hour: f64,
    /// Partitions that cut the leading master, with some agents, off from the other
    /// masters and everything else.
    pub leader_isolations_per_hour: f64,
}

impl Default for FaultRates {
    fn default() -> Self {
        FaultRates {
            crashes_per_hour: 12.0,
            lose_state: 0.25,
            partitions_per_hour: 6.0,
            pauses_per_hour: 6.0,
            drop_rate: 0.001,
            min_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(20),
            task_failure_rate: 0.1,
            master_crashes_per_hour: 1.0,
            disk_faults_per_hour: 2.0,
            leader_crashes_per_hour: 2.0,
            leader_isolations_per_hour: 2.0,
        }
    }
}

impl FaultRates {
    /// A clean run: no faults, steady small delays, no task crashes.
    pub fn none() -> Self {
        FaultRates {
            crashes_per_hour: 0.0,
            lose_state: 0.0,
            partitions_per_hour: 0.0,
            pauses_per_hour: 0.0,
            drop_rate: 0.0,
            min_delay: Duration::from_micros(200),
            max_delay: Duration::from_micros(200),
            task_failure_rate: 0.0,
            master_crashes_per_hour: 0.0,
            disk_faults_per_hour: 0.0,
            leader_crashes_per_hour: 0.0,
            leader_isolations_per_hour: 0.0,
        }
    }

    /// Every rate multiplied by `k` (message delays unchanged).
    pub fn scaled(&self, k: f64) -> Self {
        FaultRates {
            crashes_per_hour: self.crashes_per_hour * k,
            partitions_per_hour: self.partitions_per_hour * k,
            pauses_per_hour: self.pauses_per_hour * k,
            drop_rate: (self.drop_rate * k).min(0.5),
            task_failure_rate: (self.task_failure_rate * k).min(1.0),
            master_crashes_per_hour: self.master_crashes_per_hour * k,
            disk_faults_per_hour: self.disk_faults_per_hour * k,
            leader_crashes_per_hour: self.leader_crashes_per_hour * k,
            leader_isolations_per_hour: self.leader_isolations_per_hour * k,
            ..self.clone()
        }
    }
}

/// A cluster and fault mix drawn from the seed, as swarm testing does: each seed runs
/// with its own rates (some faults switched off entirely, others much denser than the
/// default mix) and its own cluster shape, so a sweep explores many mixes instead of one.
#[derive(Debug, Clone, PartialEq)]
pub struct Swarm {
    /// The fault rates of this seed.
    pub faults: FaultRates,
    /// Agents, from 1 to twice the base count.
    pub agents: usize,
    /// Frameworks, from 1 to twice the base count.
    pub frameworks: usize,
    /// The master's offer limit (0: none).
    pub offer_limit: u32,
}

impl Swarm {
    /// The mix of `seed`, around a cluster of `agents` and `frameworks`.
    pub fn draw(seed: u64, agents: usize, frameworks: usize) -> Swarm {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0073_7761_726d);
        let mut rate = |max: f64| rate_or_none(&mut rng, max);
        let crashes_per_hour = rate(40.0);
        let partitions_per_hour = rate(20.0);
        let pauses_per_hour = rate(20.0);
        let drop_rate = rate(0.01);
        let task_failure_rate = rate(0.4);
        let master_crashes_per_hour = rate(4.0);
        let disk_faults_per_hour = rate(12.0);
        let lose_state = rng.random_range(0.0..=0.6);
        let min_delay = Duration::from_micros(rng.random_range(50..=2_000));
        let max_delay = min_delay + Duration::from_micros(rng.random_range(0..=50_000));
        let agents = rng.random_range(1..=agents.max(1) * 2);
        let frameworks = rng.random_range(1..=frameworks.max(1) * 2);
        let offer_limit = [0, 1, 4, 64][rng.random_range(0..4)];
        // Drawn last, so that the draws above are those of a seed before masters' faults
        // existed.
        let mut rate = |max: f64| rate_or_none(&mut rng, max);
        let leader_crashes_per_hour = rate(6.0);
        let leader_isolations_per_hour = rate(6.0);
        Swarm {
            faults: FaultRates {
                crashes_per_hour,
                lose_state,
                partitions_per_hour,
                pauses_per_hour,
                drop_rate,
                min_delay,
                max_delay,
                task_failure_rate,
                master_crashes_per_hour,
                disk_faults_per_hour,
                leader_crashes_per_hour,
                leader_isolations_per_hour,
            },
            agents,
            frameworks,
            offer_limit,
        }
    }
}

/// A rate of at most `max`, or none (three times in ten).
fn rate_or_none(rng: &mut ChaCha8Rng, max: f64) -> f64 {
    if rng.random_bool(0.3) {
        0.0
    } else {
        rng.random_range(0.0..=max)
    }
}

/// One fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// A machine crashes and restarts after `down_for`.
    CrashAgent {
        /// Which agent.
        agent: usize,
        /// Time until it restarts.
        down_for: Duration,
        /// It restarts without its state directory.
        lose_state: bool,
    },
    /// Some agents lose the master, for a while.
    Partition {
        /// Which agents.
        agents: Vec<usize>,
        /// Only their traffic towards the master is lost.
        one_way: bool,
        /// How long.
        lasts: Duration,
    },
    /// The master crashes (its supervisor restarts it).
    CrashMaster,
    /// An agent's disk fails its writes (its checkpoint writes fail) for a while.
    DiskFault {
        /// Which agent.
        agent: usize,
        /// How the writes fail.
        kind: DiskFault,
        /// How long.
        lasts: Duration,
    },
    /// The leading master's machine crashes and restarts after `down_for` (with one
    /// master: that master's).
    CrashLeader {
        /// Time until it restarts.
        down_for: Duration,
    },
    /// The leading master and some agents are cut off from the other masters and from
    /// everything else, for a while.
    IsolateLeader {
        /// The agents cut off with it.
        agents: Vec<usize>,
        /// How long.
        lasts: Duration,
    },
    /// A node stops answering: 0 is the leading master, 1..=F frameworks, the rest
    /// agents.
    Pause {
        /// Which node.
        node: usize,
        /// How long.
        lasts: Duration,
    },
}

/// Faults and when they start; each one ends before the simulation's duration does.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// `(start, fault)`, in start order.
    pub faults: Vec<(Duration, Fault)>,
}

fn arrivals(rng: &mut ChaCha8Rng, per_hour: f64, within: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    if per_hour <= 0.0 {
        return out;
    }
    let mean = 3600.0 / per_hour;
    let mut t = 0.0;
    loop {
        let u: f64 = rng.random::<f64>().max(1e-12);
        t += -mean * u.ln();
        if t >= within.as_secs_f64() {
            return out;
        }
        out.push(Duration::from_secs_f64(t));
    }
}

impl FaultPlan {
    /// The plan of `cfg.seed` for `cfg`'s cluster and rates.
    pub fn draw(cfg: &SimConfig) -> FaultPlan {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6661_756c_7473);
        let r = &cfg.faults;
        let end = cfg.duration;
        let agents = cfg.agents.max(1);
        let mut faults = Vec::new();
        let fits = |at: Duration, d: Duration| at + d < end;
        for at in arrivals(&mut rng, r.crashes_per_hour, end) {
            let down_for = Duration::from_secs(rng.random_range(5..=120));
            let f = Fault::CrashAgent {
                agent: rng.random_range(0..agents),
                down_for,
                lose_state: rng.random_bool(r.lose_state.clamp(0.0, 1.0)),
            };
            if fits(at, down_for) {
                faults.push((at, f));
            }
        }
        for at in arrivals(&mut rng, r.partitions_per_hour, end) {
            let n = rng.random_range(1..=agents.div_ceil(3));
            let lasts = Duration::from_secs(rng.random_range(5..=90));
            let f = Fault::Partition {
                agents: (0..n).map(|_| rng.random_range(0..agents)).collect(),
                one_way: rng.random_bool(0.3),
                lasts,
            };
            if fits(at, lasts) {
                faults.push((at, f));
            }
        }
        for at in arrivals(&mut rng, r.pauses_per_hour, end) {
            let lasts = Duration::from_secs(rng.random_range(2..=40));
            let f = Fault::Pause {
                node: rng.random_range(0..=cfg.frameworks + agents),
                lasts,
            };
            if fits(at, lasts) {
                faults.push((at, f));
            }
        }
        // At least a minute apart: the master's supervisor gives up on more than five
        // failures a minute, as it should.
        let mut last: Option<Duration> = None;
        for at in arrivals(&mut rng, r.master_crashes_per_hour, end) {
            if last.is_none_or(|l| at >= l + Duration::from_secs(60)) {
                faults.push((at, Fault::CrashMaster));
                last = Some(at);
            }
        }
        for at in arrivals(&mut rng, r.disk_faults_per_hour, end) {
            let lasts = Duration::from_secs(rng.random_range(5..=120));
            let f = Fault::DiskFault {
                agent: rng.random_range(0..agents),
                kind: DiskFault::ALL[rng.random_range(0..DiskFault::ALL.len())],
                lasts,
            };
            if fits(at, lasts) {
                faults.push((at, f));
            }
        }
        for at in arrivals(&mut rng, r.leader_crashes_per_hour, end) {
            let down_for = Duration::from_secs(rng.random_range(1..=90));
            if fits(at, down_for) {
                faults.push((at, Fault::CrashLeader { down_for }));
            }
        }
        for at in arrivals(&mut rng, r.leader_isolations_per_hour, end) {
            let n = rng.random_range(0..=agents.div_ceil(2));
            let lasts = Duration::from_secs(rng.random_range(2..=60));
            let f = Fault::IsolateLeader {
                agents: (0..n).map(|_| rng.random_range(0..agents)).collect(),
                lasts,
            };
            if fits(at, lasts) {
                faults.push((at, f));
            }
        }
        faults.sort_by_key(|f| f.0);
        FaultPlan { faults }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_a_function_of_the_seed_and_ends_in_time() {
        let cfg = |seed| SimConfig {
            seed,
            duration: Duration::from_secs(3600),
            ..SimConfig::default()
        };
        let a = FaultPlan::draw(&cfg(5));
        assert_eq!(a, FaultPlan::draw(&cfg(5)));
        assert_ne!(a, FaultPlan::draw(&cfg(6)));
        assert!(a.faults.len() >= 5, "{a:?}");
        assert!(a.faults.windows(2).all(|w| w[0].0 <= w[1].0));
        for (at, f) in &a.faults {
            let d = match f {
                Fault::CrashAgent { down_for, .. } | Fault::CrashLeader { down_for } => *down_for,
                Fault::IsolateLeader { lasts, .. }
                | Fault::Partition { lasts, .. }
                | Fault::Pause { lasts, .. }
                | Fault::DiskFault { lasts, .. } => *lasts,
                Fault::CrashMaster => Duration::ZERO,
            };
            assert!(*at + d < Duration::from_secs(3600), "{f:?} at {at:?}");
        }
        let none = SimConfig {
            faults: FaultRates::none(),
            ..cfg(5)
        };
        assert!(FaultPlan::draw(&none).faults.is_empty());
    }

    #[test]
    fn a_swarm_is_a_function_of_the_seed_and_varies_the_mix() {
        assert_eq!(Swarm::draw(3, 5, 2), Swarm::draw(3, 5, 2));
        let mixes: Vec<Swarm> = (0..200).map(|s| Swarm::draw(s, 5, 2)).collect();
        let off = mixes
            .iter()
            .filter(|m| m.faults.crashes_per_hour == 0.0)
            .count();
        assert!((20..=100).contains(&off), "crashes off in {off} of 200");
        assert!(mixes.iter().any(|m| m.faults.crashes_per_hour > 30.0));
        assert!(mixes.iter().all(|m| (1..=10).contains(&m.agents)));
        assert!(mixes
            .iter()
            .all(|m| m.faults.min_delay <= m.faults.max_delay));
        let limits: std::collections::BTreeSet<u32> = mixes.iter().map(|m| m.offer_limit).collect();
        assert_eq!(limits.len(), 4);
    }
}
