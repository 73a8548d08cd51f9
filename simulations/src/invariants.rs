//! The invariant checkers. Each is named; each violation says what went wrong and when.
//!
//! - `no-task-twice` (in the containerizer, at every launch);
//! - `updates-in-order` (in every framework, at every update);
//! - `resources` (from outside, every 15 simulated seconds and at the end; inside the
//!   master, its books and agents' holdings at every event in debug builds);
//! - the agent's own invariants (`AgentCore::check`: updates match task states, nothing
//!   ended is forgotten before its updates are acknowledged), at every event in debug
//!   builds;
//! - `no-task-lost`, `updates-acknowledged`, `history`, `kills-honoured`, `liveness`
//!   (at the end, after faults heal);
//! - workload checks of user actors (e.g. `supervision`).

use std::collections::BTreeMap;

use plexus_kernel::protocol::{AgentStatus, ClusterState, FrameworkStatus};
use plexus_kernel::resources::Resources;
use plexus_kernel::task::TaskState;

use crate::trace::Recorder;
use crate::world::World;

/// Resources: never offered twice at once, never more than an agent has, and never
/// offered on an agent the master considers lost.
pub fn resources(rec: &Recorder, s: &ClusterState) {
    let mut held: BTreeMap<&str, Resources> = BTreeMap::new();
    for t in s.tasks.iter().filter(|t| !t.state.is_terminal()) {
        // Tasks of an unreachable agent keep their resources until they are gone.
        held.entry(t.agent_id.as_str())
            .or_default()
            .add(&t.resources.total());
    }
    let agents: BTreeMap<&str, &plexus_kernel::protocol::AgentState> =
        s.agents.iter().map(|a| (a.id.as_str(), a)).collect();
    for o in &s.offers {
        held.entry(o.agent_id.as_str())
            .or_default()
            .add(&o.resources.total());
        match agents.get(o.agent_id.as_str()) {
            Some(a) if a.status == AgentStatus::Active => {}
            other => rec.violation(
                "resources",
                format!(
                    "offer {} to {} is for agent {} which is {}",
                    o.id,
                    o.framework_id,
                    o.agent_id,
                    other.map(|a| a.status.as_str()).unwrap_or("unknown")
                ),
            ),
        }
    }
    for a in s.agents.iter().filter(|a| a.status == AgentStatus::Active) {
        if let Some(h) = held.get(a.id.as_str()) {
            if !a.total.contains(h) {
                rec.violation(
                    "resources",
                    format!(
                        "agent {} holds {h} in tasks and offers but has only {}",
                        a.id, a.total
                    ),
                );
            }
        }
    }
}

/// history: every task whose agent reported its end is still known to the master, even
/// after master restarts (agents report their completed tasks when they register), unless
/// its agent since lost its state or completed more tasks than it remembers.
fn history(w: &World, s: &ClusterState) {
    let known: std::collections::BTreeSet<&str> =
        s.tasks.iter().map(|t| t.task_id.as_str()).collect();
    let lost_state = w.agents_that_lost_state();
    let mut ended_per_agent: BTreeMap<String, usize> = BTreeMap::new();
    for (_, log, _) in &w.frameworks {
        for agent in log.lock().expect("log lock").ended_on.values() {
            *ended_per_agent.entry(agent.to_string()).or_default() += 1;
        }
    }
    let forgetful = |agent: &str| {
        lost_state.contains(agent)
            || ended_per_agent.get(agent).copied().unwrap_or(0)
                > plexus_kernel::agent::AGENT_COMPLETED_TASKS_LIMIT
    };
    for (name, log, _) in &w.frameworks {
        let g = log.lock().expect("log lock");
        for (task, agent) in &g.ended_on {
            if !known.contains(task.as_str()) && !forgetful(agent) {
                let last = g.last.get(task).map(|s| s.mesos_name()).unwrap_or("?");
                w.rec.violation(
                    "history",
                    format!("{name}: task {task} ended ({last}) on {agent}, but the master no longer knows it"),
                );
            }
        }
    }
}

/// One leader: at no moment do two masters hold a lease (so at most one makes offers
/// or launches), and once faults have healed exactly one does.
pub(crate) fn one_leader(w: &World, healed: bool) {
    let leaders = w.leaders();
    if w.cfg.masters <= 1 {
        return;
    }
    if leaders.len() > 1 || (healed && leaders.len() != 1) {
        w.rec.violation(
            "one-leader",
            format!("masters leading at once: {leaders:?}"),
        );
    }
}

/// No acknowledged registry write is lost: every live master's registry holds the last
/// acknowledged write (or a later one).
pub(crate) fn registry_writes_kept(w: &World, acked: Option<u64>) {
    let Some(acked) = acked else { return };
    for (name, weight) in w.registry_marks() {
        if weight.is_none_or(|v| v < acked) {
            w.rec.violation(
                "registry",
                format!("{name} lost acknowledged write {acked} (it holds {weight:?})"),
            );
        }
    }
}

/// The checks after every fault has healed and the cluster has had time to settle.
pub(crate) async fn final_checks(w: &World, settle_start_ms: u64) {
    let rec = &w.rec;
    one_leader(w, true);
    let Some(s) = w.master_state().await else {
        rec.violation("liveness", "the master does not answer".into());
        return;
    };
    resources(rec, &s);
    let views = w.agent_views().await;
    // liveness: every agent registered, every framework subscribed, offers flowing.
    let by_host: BTreeMap<&str, &plexus_kernel::protocol::AgentState> =
        s.agents.iter().map(|a| (a.hostname.as_str(), a)).collect();
    let tasks: BTreeMap<&str, &plexus_kernel::protocol::TaskInfo> =
        s.tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
    for name in w.agent_names() {
        match by_host.get(name.as_str()) {
            Some(a) if a.status == AgentStatus::Active => {}
            Some(a) => rec.violation(
                "liveness",
                format!("agent {name} is {} after the faults healed", a.status),
            ),
            None => rec.violation(
                "liveness",
                format!("agent {name} is not registered after the faults healed"),
            ),
        }
    }
    for (name, log, _) in &w.frameworks {
        let g = log.lock().expect("log lock");
        let Some(id) = &g.framework_id else {
            rec.violation("liveness", format!("framework {name} never subscribed"));
            continue;
        };
        match s.frameworks.iter().find(|f| &f.id == id) {
            Some(f) if f.status == FrameworkStatus::Connected => {}
            _ => rec.violation(
                "liveness",
                format!("framework {name} ({id}) is not connected after the faults healed"),
            ),
        }
        let wants_more = g.live.len() < w.cfg.tasks_per_framework;
        if wants_more && g.last_offer_ms.is_none_or(|t| t < settle_start_ms) {
            rec.violation(
                "liveness",
                format!(
                    "framework {name} wants tasks but got no offer since the faults healed \
                     (last offer at {:?} ms)",
                    g.last_offer_ms
                ),
            );
        }
    }
    // no-task-lost: every launched task is terminal for its framework, or running and
    // known to both master and agent.
    for (name, log, _) in &w.frameworks {
        let g = log.lock().expect("log lock");
        for (task, at) in &g.launched {
            let fw = g.last.get(task).copied().unwrap_or(TaskState::Staging);
            if fw.is_terminal() || fw == TaskState::Unknown {
                continue;
            }
            let m = tasks.get(task.as_str()).copied();
            let on_agent = m.and_then(|m| {
                views
                    .get(m.agent_id.as_str())
                    .and_then(|v| v.tasks.iter().find(|(id, _)| id == task).map(|x| x.1))
            });
            let procs = w.machines.running(task);
            let fine = m.is_some_and(|m| !m.state.is_terminal())
                && on_agent.is_some_and(|st| !st.is_terminal())
                && !procs.is_empty();
            if !fine {
                rec.violation(
                    "no-task-lost",
                    format!(
                        "{name}: task {task} launched at {:.3} s: the framework last heard {}, \
                         the master says {}, its agent says {}, processes running: {}",
                        *at as f64 / 1000.0,
                        fw.mesos_name(),
                        m.map(|m| m.state.mesos_name()).unwrap_or("nothing"),
                        on_agent.map(|s| s.mesos_name()).unwrap_or("nothing"),
                        procs.len()
                    ),
                );
            }
        }
    }
    history(w, &s);
    // kills-honoured: every task its framework asked to kill has ended for it, and no
    // process runs it.
    for (name, log, _) in &w.frameworks {
        let g = log.lock().expect("log lock");
        for task in &g.kill_requested {
            let last = g.last.get(task).copied().unwrap_or(TaskState::Staging);
            let procs = w.machines.running(task).len();
            // (TASK_UNKNOWN: no master or agent has it; no process may run it either.)
            if procs > 0 || !(last.is_terminal() || last == TaskState::Unknown) {
                rec.violation(
                    "kills-honoured",
                    format!(
                        "{name}: task {task} was to be killed but is {} ({procs} processes)",
                        last.mesos_name()
                    ),
                );
            }
        }
    }
    // updates-acknowledged: nothing left unacknowledged once everyone is connected.
    for (agent, v) in &views {
        if let Some(u) = v.pending_updates.first() {
            rec.violation(
                "updates-acknowledged",
                format!(
                    "agent {agent} still has {} unacknowledged update(s) after the faults \
                     healed; the oldest: {} of task {} (uuid {})",
                    v.pending_updates.len(),
                    u.state.mesos_name(),
                    u.task_id,
                    u.uuid
                ),
            );
        }
    }
}
