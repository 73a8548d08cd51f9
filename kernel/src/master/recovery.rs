//! What a leading master keeps of the registry's agents, and the re-registration window
//! after it takes over.
//!
//! With several masters the registry holds every admitted agent (tasks are not
//! replicated: agents bring theirs back). A master that begins to lead expects each of
//! them to re-register; until they have, or [`MasterConfig::agent_reregister_timeout`]
//! passed, it cannot tell a task it does not know from one on an agent not back yet.
//! So, as Mesos does, it holds back its answer to a framework reconciling an unknown task
//! until then: a `TASK_UNKNOWN` it sends means the task is on no agent that is back, and
//! a framework may launch the work again. [`Recovery`] is that bookkeeping, and the
//! registry writes an agent's admission and removal take.
//!
//! Frameworks are in the registry too, with their failover timeouts. One that does not
//! re-subscribe with the new leader within its failover timeout (counted from when that
//! master began to lead, as if it had disconnected then) is removed: the tasks its
//! agents bring back are killed, and it may not come back under its id.
//!
//! [`MasterConfig::agent_reregister_timeout`]: super::MasterConfig::agent_reregister_timeout

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::ids::{AgentId, FrameworkId, TaskId};
use crate::registry::RegistryOp;

/// Most reconciliations of unknown tasks held back at once; past it the request is
/// dropped (the framework asks again, as it does when a master fails over).
pub const MAX_HELD_RECONCILIATIONS: usize = 100_000;

/// The registry's agents as a leading master sees them; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Recovery {
    /// Whether the registry is replicated (several masters): only then are admissions
    /// and removals written.
    replicated: bool,
    /// Agents the registry holds as admitted, as far as this master knows.
    admitted: BTreeSet<AgentId>,
    /// Admitted agents not re-registered since this master began to lead.
    expected: BTreeSet<AgentId>,
    /// Reconciliations of tasks this master does not know, held back while agents are
    /// expected.
    held: Vec<(FrameworkId, TaskId)>,
    /// When the wait for expected agents ends, on the core's clock.
    deadline: Duration,
    /// Frameworks the registry holds, with their failover timeouts (ms).
    frameworks: BTreeMap<FrameworkId, u64>,
    /// Frameworks of the registry not re-subscribed since this master began to lead, and
    /// when their failover timeouts end, on the core's clock.
    awaited: BTreeMap<FrameworkId, Duration>,
}

impl Recovery {
    /// A single master's: no registry, nothing expected.
    pub fn single() -> Recovery {
        Recovery::default()
    }

    /// A leading master's, the registry holding `admitted` agents and `frameworks`
    /// (with their failover timeouts, ms): each agent is expected to re-register before
    /// `deadline`, each framework to re-subscribe within its failover timeout.
    pub fn leading(
        admitted: BTreeSet<AgentId>,
        deadline: Duration,
        frameworks: BTreeMap<FrameworkId, u64>,
    ) -> Recovery {
        let awaited = frameworks
            .iter()
            .map(|(f, ms)| (f.clone(), Duration::from_millis(*ms)))
            .collect();
        Recovery {
            replicated: true,
            expected: admitted.clone(),
            admitted,
            held: Vec::new(),
            deadline,
            frameworks,
            awaited,
        }
    }

    /// A framework subscribed (or re-subscribed) with a failover timeout of
    /// `failover_timeout_ms`: the registry write that records it, if the registry does
    /// not hold it so.
    pub fn subscribed(
        &mut self,
        framework: &FrameworkId,
        failover_timeout_ms: u64,
    ) -> Option<RegistryOp> {
        self.awaited.remove(framework);
        if !self.replicated {
            return None;
        }
        let had = self
            .frameworks
            .insert(framework.clone(), failover_timeout_ms);
        (had != Some(failover_timeout_ms)).then(|| RegistryOp::AddFramework {
            framework_id: framework.clone(),
            failover_timeout_ms,
        })
    }

    /// A framework was removed at `unix_ms`: the registry write that says so, if the
    /// registry holds it.
    pub fn framework_removed(
        &mut self,
        framework: &FrameworkId,
        unix_ms: u64,
    ) -> Option<RegistryOp> {
        self.awaited.remove(framework);
        self.frameworks
            .remove(framework)
            .map(|_| RegistryOp::RemoveFramework {
                framework_id: framework.clone(),
                unix_ms,
            })
    }

    /// Frameworks of the registry whose failover timeouts ended at `now` before they
    /// re-subscribed (each once).
    pub fn overdue_frameworks(&mut self, now: Duration) -> Vec<FrameworkId> {
        let due: Vec<FrameworkId> = self
            .awaited
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(f, _)| f.clone())
            .collect();
        for f in &due {
            self.awaited.remove(f);
        }
        due
    }

    /// Whether admitted agents may still re-register with tasks this master does not
    /// know yet.
    pub fn waiting(&self) -> bool {
        !self.expected.is_empty()
    }

    /// An agent registered: the registry write its admission takes, if it is new to the
    /// registry. True in the second place if it was the last agent expected.
    pub fn registered(&mut self, agent: &AgentId, hostname: &str) -> (Option<RegistryOp>, bool) {
        let was_waiting = self.waiting();
        self.expected.remove(agent);
        let done = was_waiting && !self.waiting();
        if !self.replicated || !self.admitted.insert(agent.clone()) {
            return (None, done);
        }
        let op = RegistryOp::AdmitAgent {
            agent_id: agent.clone(),
            hostname: hostname.into(),
        };
        (Some(op), done)
    }

    /// An agent was removed at `unix_ms`: the registry write that says so, if the
    /// registry holds it.
    pub fn removed(&mut self, agent: &AgentId, unix_ms: u64) -> Option<RegistryOp> {
        self.expected.remove(agent);
        if !self.admitted.remove(agent) {
            return None;
        }
        Some(RegistryOp::RemoveAgent {
            agent_id: agent.clone(),
            unix_ms,
        })
    }

    /// Holds back a framework's reconciliation of a task this master does not know;
    /// false if too many are held already (the request is dropped).
    pub fn hold(&mut self, fw: &FrameworkId, task: TaskId) -> bool {
        debug_assert!(self.waiting(), "held back only while agents are expected");
        if self.held.len() >= MAX_HELD_RECONCILIATIONS {
            return false;
        }
        self.held.push((fw.clone(), task));
        true
    }

    /// At `now`: whether the wait just ended with agents that never came back (they are
    /// given up on; their number is returned).
    pub fn expire(&mut self, now: Duration) -> Option<usize> {
        if !self.waiting() || now < self.deadline {
            return None;
        }
        let late = self.expected.len();
        self.expected.clear();
        Some(late)
    }

    /// The reconciliations held back, to answer now that nothing is expected, in the
    /// order they came.
    pub fn release(&mut self) -> Vec<(FrameworkId, TaskId)> {
        debug_assert!(!self.waiting());
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> BTreeSet<AgentId> {
        v.iter().map(|s| AgentId::from(*s)).collect()
    }

    #[test]
    fn a_single_master_writes_nothing_and_waits_for_nobody() {
        let mut r = Recovery::single();
        assert!(!r.waiting());
        assert_eq!(r.registered(&"a1".into(), "h1"), (None, false));
        assert_eq!(r.removed(&"a1".into(), 5), None);
    }

    #[test]
    fn only_an_agent_new_to_the_registry_is_written_as_admitted() {
        let mut r = Recovery::leading(ids(&["a1"]), Duration::from_secs(10), BTreeMap::new());
        let (op, done) = r.registered(&"a1".into(), "h1");
        assert_eq!(op, None, "the registry holds it already");
        assert!(done, "the only agent expected is back");
        let (op, done) = r.registered(&"a2".into(), "h2");
        assert_eq!(
            op,
            Some(RegistryOp::AdmitAgent {
                agent_id: "a2".into(),
                hostname: "h2".into()
            })
        );
        assert!(!done);
        assert_eq!(r.registered(&"a2".into(), "h2").0, None, "once");
    }

    #[test]
    fn a_removal_is_written_for_an_admitted_agent_and_ends_its_wait() {
        let mut r = Recovery::leading(ids(&["a1", "a2"]), Duration::from_secs(10), BTreeMap::new());
        assert_eq!(
            r.removed(&"a1".into(), 7),
            Some(RegistryOp::RemoveAgent {
                agent_id: "a1".into(),
                unix_ms: 7
            })
        );
        assert_eq!(r.removed(&"a1".into(), 8), None);
        assert!(r.waiting(), "a2 is still expected");
        r.removed(&"a2".into(), 9);
        assert!(!r.waiting(), "a removed agent is expected no more");
    }

    #[test]
    fn reconciliations_are_held_until_every_expected_agent_is_back() {
        let mut r = Recovery::leading(ids(&["a1", "a2"]), Duration::from_secs(10), BTreeMap::new());
        assert!(r.hold(&"f1".into(), "t1".into()));
        assert!(r.hold(&"f2".into(), "t2".into()));
        assert!(!r.registered(&"a1".into(), "h1").1);
        assert!(r.waiting());
        assert!(r.registered(&"a2".into(), "h2").1);
        assert_eq!(
            r.release(),
            vec![("f1".into(), "t1".into()), ("f2".into(), "t2".into())]
        );
        assert!(r.release().is_empty());
    }

    #[test]
    fn the_wait_ends_at_the_deadline_with_the_agents_still_away() {
        let mut r = Recovery::leading(ids(&["a1", "a2"]), Duration::from_secs(10), BTreeMap::new());
        r.registered(&"a1".into(), "h1");
        assert_eq!(r.expire(Duration::from_secs(9)), None);
        assert_eq!(r.expire(Duration::from_secs(10)), Some(1));
        assert!(!r.waiting());
        assert_eq!(r.expire(Duration::from_secs(11)), None, "once");
    }

    #[test]
    fn a_framework_is_written_when_new_to_the_registry_or_its_timeout_changed() {
        let known = BTreeMap::from([(FrameworkId::from("f1"), 60_000)]);
        let mut r = Recovery::leading(BTreeSet::new(), Duration::from_secs(10), known);
        assert_eq!(r.subscribed(&"f1".into(), 60_000), None);
        assert_eq!(
            r.subscribed(&"f1".into(), 5_000),
            Some(RegistryOp::AddFramework {
                framework_id: "f1".into(),
                failover_timeout_ms: 5_000
            })
        );
        assert!(r.subscribed(&"f2".into(), 1_000).is_some());
        assert_eq!(
            r.framework_removed(&"f2".into(), 9),
            Some(RegistryOp::RemoveFramework {
                framework_id: "f2".into(),
                unix_ms: 9
            })
        );
        assert_eq!(r.framework_removed(&"f2".into(), 10), None);
        assert_eq!(Recovery::single().subscribed(&"f3".into(), 1), None);
    }

    #[test]
    fn a_framework_not_back_within_its_failover_timeout_is_overdue_once() {
        let known = BTreeMap::from([
            (FrameworkId::from("back"), 30_000),
            (FrameworkId::from("gone"), 30_000),
            (FrameworkId::from("slow"), 90_000),
        ]);
        let mut r = Recovery::leading(BTreeSet::new(), Duration::from_secs(10), known);
        r.subscribed(&"back".into(), 30_000);
        assert!(r.overdue_frameworks(Duration::from_secs(29)).is_empty());
        assert_eq!(
            r.overdue_frameworks(Duration::from_secs(30)),
            vec![FrameworkId::from("gone")]
        );
        assert!(r.overdue_frameworks(Duration::from_secs(31)).is_empty());
        assert_eq!(
            r.overdue_frameworks(Duration::from_secs(90)),
            vec![FrameworkId::from("slow")]
        );
    }

    #[test]
    fn held_reconciliations_are_bounded() {
        let mut r = Recovery::leading(ids(&["a1"]), Duration::from_secs(10), BTreeMap::new());
        for i in 0..MAX_HELD_RECONCILIATIONS {
            assert!(r.hold(&"f".into(), format!("t{i}").into()));
        }
        assert!(!r.hold(&"f".into(), "one-more".into()));
    }
}
