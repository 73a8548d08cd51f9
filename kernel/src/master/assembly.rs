//! Registrations that come in parts.
//!
//! An agent running many tasks with long commands can have more to say when it
//! re-registers than one message may carry. It then sends its registration split
//! ([`AgentRegistration::split`]): a header with some of its tasks and the number of
//! parts, and the parts. The [`Assembler`] keeps what came of each agent's latest
//! registration until it is whole, then hands it on as one. Parts may come in any order;
//! those of an older registration of the same agent are dropped when a newer one starts;
//! a registration left incomplete for [`PARTIAL_REGISTRATION_TIMEOUT`] is forgotten
//! (the agent registers again at its next tick).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ids::AgentId;
use crate::protocol::{AgentRegistration, RegistrationPart};

/// Most agents with a registration under way at once; past it the oldest is forgotten.
pub const MAX_PARTIAL_REGISTRATIONS: usize = 4_096;
/// Most parts of one registration (with parts of about 1 MiB, 4 GiB of tasks).
pub const MAX_REGISTRATION_PARTS: u32 = 4_096;
/// How long an incomplete registration is kept.
pub const PARTIAL_REGISTRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// What came of one agent's latest registration.
struct Partial {
    attempt: u64,
    header: Option<AgentRegistration>,
    parts: BTreeMap<u32, RegistrationPart>,
    since: Duration,
}

/// Puts registrations that come in parts back together.
#[derive(Default)]
pub struct Assembler {
    partial: BTreeMap<AgentId, Partial>,
}

impl Assembler {
    /// A registration's header came in at `now`: the whole registration if it is now
    /// complete.
    pub fn header(
        &mut self,
        reg: AgentRegistration,
        now: Duration,
    ) -> Result<Option<AgentRegistration>, String> {
        if reg.parts == 0 {
            self.partial.remove(&reg.agent_id);
            return Ok(Some(reg));
        }
        if reg.parts > MAX_REGISTRATION_PARTS {
            return Err(format!(
                "registration of {} in {} parts; at most {MAX_REGISTRATION_PARTS}",
                reg.agent_id, reg.parts
            ));
        }
        let agent = reg.agent_id.clone();
        let attempt = reg.attempt;
        self.entry(&agent, attempt, now).header = Some(reg);
        debug_assert!(self.partial.len() <= MAX_PARTIAL_REGISTRATIONS);
        self.complete(&agent)
    }

    /// A part came in at `now`: the whole registration if it is now complete.
    pub fn part(
        &mut self,
        part: RegistrationPart,
        now: Duration,
    ) -> Result<Option<AgentRegistration>, String> {
        if part.index >= MAX_REGISTRATION_PARTS {
            return Err(format!(
                "part {} of a registration of {}; at most {MAX_REGISTRATION_PARTS} parts",
                part.index, part.agent_id
            ));
        }
        let agent = part.agent_id.clone();
        let (attempt, index) = (part.attempt, part.index);
        self.entry(&agent, attempt, now).parts.insert(index, part);
        debug_assert!(self.partial.len() <= MAX_PARTIAL_REGISTRATIONS);
        self.complete(&agent)
    }

    /// Forgets registrations incomplete for longer than the timeout; returns how many.
    pub fn expire(&mut self, now: Duration) -> usize {
        let before = self.partial.len();
        self.partial
            .retain(|_, p| now.saturating_sub(p.since) < PARTIAL_REGISTRATION_TIMEOUT);
        before - self.partial.len()
    }

    /// Registrations under way.
    pub fn len(&self) -> usize {
        self.partial.len()
    }

    /// Whether no registration is under way.
    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }

    /// The agent's registration `attempt`, started afresh if another was under way.
    fn entry(&mut self, agent: &AgentId, attempt: u64, now: Duration) -> &mut Partial {
        if self
            .partial
            .get(agent)
            .is_some_and(|p| p.attempt != attempt)
        {
            self.partial.remove(agent);
        }
        if !self.partial.contains_key(agent) && self.partial.len() >= MAX_PARTIAL_REGISTRATIONS {
            let oldest = self
                .partial
                .iter()
                .min_by_key(|(_, p)| p.since)
                .map(|(a, _)| a.clone());
            if let Some(a) = oldest {
                self.partial.remove(&a);
            }
        }
        self.partial.entry(agent.clone()).or_insert(Partial {
            attempt,
            header: None,
            parts: BTreeMap::new(),
            since: now,
        })
    }

    /// The agent's registration if its header and every part are in (then forgotten
    /// here).
    fn complete(&mut self, agent: &AgentId) -> Result<Option<AgentRegistration>, String> {
        let whole = self.partial.get(agent).is_some_and(|p| {
            p.header
                .as_ref()
                .is_some_and(|h| p.parts.len() >= h.parts as usize)
        });
        if !whole {
            return Ok(None);
        }
        let p = self.partial.remove(agent).expect("checked above");
        let header = p.header.expect("checked above");
        header.join(p.parts.into_values().collect()).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AgentTask, TaskSpec};
    use crate::resources::{Resources, RoleResources};
    use crate::task::TaskState;

    fn registration(
        agent: &str,
        attempt: u64,
        tasks: usize,
        argv_bytes: usize,
    ) -> AgentRegistration {
        AgentRegistration {
            agent_id: agent.into(),
            hostname: agent.into(),
            resources: RoleResources::unreserved(Resources::new(4.0, 4096)),
            tasks: (0..tasks)
                .map(|i| AgentTask {
                    spec: TaskSpec {
                        task_id: format!("t{i:03}").into(),
                        name: String::new(),
                        argv: vec!["x".repeat(argv_bytes)],
                        resources: Resources::new(0.1, 16),
                        user: None,
                        actor: None,
                    },
                    framework_id: "fw".into(),
                    resources: RoleResources::unreserved(Resources::new(0.1, 16)),
                    state: TaskState::Running,
                })
                .collect(),
            isolation: "none".into(),
            completed: vec![],
            problem: None,
            attempt,
            parts: 0,
            attributes: Default::default(),
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_registration_split_to_a_budget_is_joined_whole_whatever_the_order_of_its_parts() {
        let reg = registration("a1", 7, 40, 60_000);
        let (header, mut parts) = reg.clone().split(1 << 20);
        assert_eq!(header.parts as usize, parts.len());
        assert!(parts.len() >= 2, "2.4 MB in parts of 1 MiB");
        assert!(header.tasks.len() + parts.iter().map(|p| p.tasks.len()).sum::<usize>() == 40);
        parts.reverse();
        let mut asm = Assembler::default();
        let last = parts.pop().unwrap();
        assert_eq!(asm.header(header, SEC).unwrap(), None);
        for p in parts {
            assert_eq!(asm.part(p, SEC).unwrap(), None);
        }
        assert_eq!(asm.part(last, SEC).unwrap(), Some(reg));
        assert!(asm.is_empty());
    }

    #[test]
    fn a_small_registration_is_one_message_and_passes_at_once() {
        let reg = registration("a1", 1, 3, 10);
        let (header, parts) = reg.clone().split(1 << 20);
        assert!(parts.is_empty());
        assert_eq!(Assembler::default().header(header, SEC).unwrap(), Some(reg));
    }

    #[test]
    fn a_newer_registration_drops_the_parts_of_an_older_one() {
        let (h1, p1) = registration("a1", 1, 40, 60_000).split(1 << 20);
        let (h2, p2) = registration("a1", 2, 40, 60_000).split(1 << 20);
        let mut asm = Assembler::default();
        asm.header(h1, SEC).unwrap();
        for p in p2 {
            assert_eq!(asm.part(p, SEC).unwrap(), None);
        }
        // The rest of the old one starts it afresh, and never completes the new one.
        for p in p1 {
            assert_eq!(asm.part(p, SEC).unwrap(), None);
        }
        assert_eq!(asm.header(h2, SEC).unwrap(), None);
        assert_eq!(asm.len(), 1);
    }

    #[test]
    fn an_incomplete_registration_is_forgotten_after_its_timeout() {
        let (h, _) = registration("a1", 1, 40, 60_000).split(1 << 20);
        let mut asm = Assembler::default();
        asm.header(h, SEC).unwrap();
        assert_eq!(asm.expire(SEC + PARTIAL_REGISTRATION_TIMEOUT / 2), 0);
        assert_eq!(asm.expire(SEC + PARTIAL_REGISTRATION_TIMEOUT), 1);
        assert!(asm.is_empty());
    }

    #[test]
    fn a_task_larger_than_the_budget_goes_alone_in_its_part() {
        let (h, parts) = registration("a1", 1, 3, 5_000).split(1_000);
        assert_eq!((h.tasks.len(), parts.len()), (1, 2));
        assert!(parts.iter().all(|p| p.tasks.len() == 1));
    }
}
