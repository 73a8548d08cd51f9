//! The cluster-wide name table: a plain type replicated on every node.
//!
//! Each node announces its own registrations to its peers. When two nodes claim an
//! ordinary name at once, every node keeps the claim of the node whose name sorts first,
//! so all nodes agree without a coordinator.
//!
//! Names under `plexus.` carry authority: whoever holds `plexus.master` receives every
//! agent's registration. [`rule`] says who may hold them (by the roles in the claimant's
//! certificate and by its node name), and such a name, once held, is never taken over by
//! another node while its holder lives: a claim on it from anyone else is refused, not
//! ranked.

use std::collections::{BTreeMap, BTreeSet};

use plexus_net::{Role, Roles};

/// The name of the master (held only by a master-role node).
pub const MASTER_NAME: &str = "plexus.master";
/// Prefix of agents' names: `plexus.agent:NODE`, held only by agent-role node `NODE`.
pub const AGENT_PREFIX: &str = "plexus.agent:";
/// Prefix of framework schedulers' names: `plexus.scheduler:NODE:…`, held only by `NODE`.
pub const SCHEDULER_PREFIX: &str = "plexus.scheduler:";
/// Prefix of every name that carries authority in the cluster.
pub const KERNEL_PREFIX: &str = "plexus.";

/// Who may hold a name, and how conflicting claims end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRule {
    /// Anyone; of two claims at once the node whose name sorts first wins.
    Open,
    /// The claimant may; while it lives, no other node can take the name.
    Exclusive,
    /// The claimant may not hold it, for the reason given.
    Refused(String),
}

impl NameRule {
    /// Whether a claim under this rule is exclusive, or why it is refused.
    pub fn exclusive(self) -> Result<bool, String> {
        match self {
            NameRule::Open => Ok(false),
            NameRule::Exclusive => Ok(true),
            NameRule::Refused(reason) => Err(reason),
        }
    }
}

/// The rule for `name` claimed by `node` whose certificate carries `roles`.
pub fn rule(name: &str, node: &str, roles: Roles) -> NameRule {
    let need = |role: Role| {
        if roles.has(role) {
            NameRule::Exclusive
        } else {
            NameRule::Refused(format!(
                "only a node with the {role} role may hold {name:?} (node {node:?} has: {roles})"
            ))
        }
    };
    if name == MASTER_NAME || name.starts_with("plexus.master:") {
        return need(Role::Master);
    }
    if let Some(agent) = name.strip_prefix(AGENT_PREFIX) {
        if agent != node {
            return NameRule::Refused(format!(
                "node {node:?} may hold only its own agent name {AGENT_PREFIX}{node}, not {name:?}"
            ));
        }
        return need(Role::Agent);
    }
    if let Some(rest) = name.strip_prefix(SCHEDULER_PREFIX) {
        let owner = rest.split(':').next().unwrap_or_default();
        if owner != node {
            return NameRule::Refused(format!(
                "node {node:?} may hold only scheduler names starting {SCHEDULER_PREFIX}{node}:, not {name:?}"
            ));
        }
        return NameRule::Exclusive;
    }
    if name.starts_with(KERNEL_PREFIX) {
        if roles.any(Roles::of(&[Role::Master, Role::Agent])) {
            return NameRule::Exclusive;
        }
        return NameRule::Refused(format!(
            "names under {KERNEL_PREFIX:?} belong to masters and agents; node {node:?} has: {roles}"
        ));
    }
    NameRule::Open
}

/// Whether claims on `name` go by rank: only the master's name does (a leader's claim
/// carries its term); on any other name a peer's rank is taken as 0, so no node can
/// outrank another's claim on it.
pub fn ranked(name: &str) -> bool {
    name == MASTER_NAME
}

/// Where a name points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// The node running the actor.
    pub node: String,
    /// The actor's id on that node.
    pub pid: u64,
    /// The actor's message type (checked by typed lookups).
    pub msg_type: String,
    /// The claim's rank: of two claims by different nodes, the higher rank wins whatever
    /// the rule (0 for ordinary names; the master's name is claimed with the leader's
    /// Raft term, so it always points at the newest leader).
    pub rank: u64,
}

/// The outcome of applying a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The name now points at the claimed actor.
    Accepted,
    /// Another node's claim on the name wins; it is kept.
    Lost {
        /// The winning entry.
        holder: NameEntry,
    },
}

/// Names → actors, for the whole cluster.
#[derive(Debug, Default, Clone)]
pub struct NameTable {
    entries: BTreeMap<String, NameEntry>,
    /// The names each node holds (so a node's names are found without a scan).
    by_node: BTreeMap<String, BTreeSet<String>>,
}

impl NameTable {
    /// Applies a claim (local or from a peer) on an ordinary name.
    pub fn claim(&mut self, name: &str, entry: NameEntry) -> Claim {
        self.claim_as(name, entry, false)
    }

    /// Applies a claim. Of two nodes' claims the higher [`NameEntry::rank`] wins; of
    /// claims of equal rank, an `exclusive` name is kept by its holder whatever the
    /// claimant's name (see [`NameRule::Exclusive`]), an open one goes to the node whose
    /// name sorts first.
    pub fn claim_as(&mut self, name: &str, entry: NameEntry, exclusive: bool) -> Claim {
        match self.entries.get(name) {
            Some(cur) if cur.node != entry.node && Self::keeps(cur, &entry, exclusive) => {
                Claim::Lost {
                    holder: cur.clone(),
                }
            }
            _ => {
                self.by_node
                    .entry(entry.node.clone())
                    .or_default()
                    .insert(name.to_string());
                if let Some(old) = self.entries.insert(name.to_string(), entry) {
                    if self.entries[name].node != old.node {
                        self.unindex(&old.node, name);
                    }
                }
                Claim::Accepted
            }
        }
    }

    /// Whether `cur`, another node's claim, stands against `new`.
    fn keeps(cur: &NameEntry, new: &NameEntry, exclusive: bool) -> bool {
        match cur.rank.cmp(&new.rank) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => exclusive || cur.node < new.node,
        }
    }

    fn unindex(&mut self, node: &str, name: &str) {
        if let Some(set) = self.by_node.get_mut(node) {
            set.remove(name);
            if set.is_empty() {
                self.by_node.remove(node);
            }
        }
    }

    /// Looks a name up.
    pub fn get(&self, name: &str) -> Option<&NameEntry> {
        self.entries.get(name)
    }

    /// The names starting with `prefix`, in order.
    pub fn names_under(&self, prefix: &str) -> Vec<String> {
        self.entries
            .range(prefix.to_string()..)
            .take_while(|(n, _)| n.starts_with(prefix))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Drops `name` if `node` holds it.
    pub fn release(&mut self, name: &str, node: &str) -> bool {
        if self.entries.get(name).is_some_and(|e| e.node == node) {
            self.entries.remove(name);
            self.unindex(node, name);
            true
        } else {
            false
        }
    }

    /// Drops every name held by `node`'s actor `pid`; returns the names dropped.
    pub fn release_pid(&mut self, node: &str, pid: u64) -> Vec<String> {
        let names: Vec<String> = self
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter(|n| self.entries.get(*n).is_some_and(|e| e.pid == pid))
            .cloned()
            .collect();
        for n in &names {
            self.entries.remove(n);
            self.unindex(node, n);
        }
        names
    }

    /// Drops every name held by `node` (it went down or left).
    pub fn release_node(&mut self, node: &str) {
        for name in self.by_node.remove(node).unwrap_or_default() {
            self.entries.remove(&name);
        }
    }

    /// True when `node`'s actor `pid` holds a name.
    pub fn names_pid(&self, node: &str, pid: u64) -> bool {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .any(|n| self.entries.get(n).is_some_and(|e| e.pid == pid))
    }

    /// The names held by `node`, in name order.
    pub fn held_by(&self, node: &str) -> Vec<(String, NameEntry)> {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|n| self.entries.get(n).map(|e| (n.clone(), e.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(node: &str, pid: u64) -> NameEntry {
        NameEntry {
            node: node.into(),
            pid,
            rank: 0,
            msg_type: "M".into(),
        }
    }

    #[test]
    fn conflicting_claims_converge_whatever_the_order() {
        let mut x = NameTable::default();
        let mut y = NameTable::default();
        x.claim("svc", e("b", 1));
        x.claim("svc", e("a", 2));
        y.claim("svc", e("a", 2));
        assert!(matches!(y.claim("svc", e("b", 1)), Claim::Lost { .. }));
        assert_eq!(x.get("svc"), y.get("svc"));
        assert_eq!(x.get("svc").unwrap().node, "a");
    }

    #[test]
    fn release_by_pid_and_node() {
        let mut t = NameTable::default();
        t.claim("one", e("a", 1));
        t.claim("two", e("a", 1));
        t.claim("three", e("b", 3));
        assert!(!t.release("three", "a"));
        assert_eq!(
            t.release_pid("a", 1),
            vec!["one".to_string(), "two".to_string()]
        );
        t.release_node("b");
        assert!(t.get("three").is_none());
        t.claim("x", e("a", 9));
        assert_eq!(
            t.claim("x", e("a", 10)),
            Claim::Accepted,
            "a node may re-point its own name"
        );
        assert_eq!(t.held_by("a").len(), 1);
        t.claim("x.1", e("b", 1));
        t.claim("w", e("b", 2));
        assert_eq!(t.names_under("x"), vec!["x".to_string(), "x.1".to_string()]);
    }

    #[test]
    fn a_name_with_authority_is_never_taken_over_by_a_lower_name() {
        let mut t = NameTable::default();
        assert_eq!(t.claim_as(MASTER_NAME, e("m1", 1), true), Claim::Accepted);
        assert!(matches!(
            t.claim_as(MASTER_NAME, e("aaa", 2), true),
            Claim::Lost { holder } if holder.node == "m1"
        ));
        assert_eq!(
            t.claim_as(MASTER_NAME, e("m1", 3), true),
            Claim::Accepted,
            "its holder may re-point it"
        );
    }

    #[test]
    fn a_higher_ranked_claim_takes_a_name_and_a_lower_one_never_does_whatever_the_order() {
        let ranked = |node: &str, pid: u64, rank: u64| NameEntry {
            rank,
            ..e(node, pid)
        };
        let mut x = NameTable::default();
        let mut y = NameTable::default();
        // The leader of term 3 (m2) and an old leader of term 2 (m1), heard in either
        // order: every table points at the newer one.
        x.claim_as(MASTER_NAME, ranked("m1", 1, 2), true);
        assert_eq!(
            x.claim_as(MASTER_NAME, ranked("m2", 5, 3), true),
            Claim::Accepted
        );
        y.claim_as(MASTER_NAME, ranked("m2", 5, 3), true);
        assert!(matches!(
            y.claim_as(MASTER_NAME, ranked("m1", 1, 2), true),
            Claim::Lost { holder } if holder.node == "m2"
        ));
        assert_eq!(x.get(MASTER_NAME), y.get(MASTER_NAME));
        // The loser's names index no longer lists it; its release changes nothing.
        assert!(x.held_by("m1").is_empty());
        assert!(!x.release(MASTER_NAME, "m1"));
        assert_eq!(x.get(MASTER_NAME).unwrap().node, "m2");
    }

    #[test]
    fn kernel_names_go_by_role_and_ownership() {
        let master = Roles::from(Role::Master);
        let agent = Roles::from(Role::Agent);
        let client = Roles::from(Role::Client);
        assert_eq!(rule(MASTER_NAME, "m1", master), NameRule::Exclusive);
        assert!(
            matches!(rule(MASTER_NAME, "aaa", agent), NameRule::Refused(r) if r.contains("master role"))
        );
        assert_eq!(rule("plexus.agent:a1", "a1", agent), NameRule::Exclusive);
        assert!(matches!(
            rule("plexus.agent:a2", "a1", agent),
            NameRule::Refused(_)
        ));
        assert!(matches!(
            rule("plexus.agent:c", "c", client),
            NameRule::Refused(_)
        ));
        assert_eq!(
            rule("plexus.scheduler:c:1:jobs", "c", client),
            NameRule::Exclusive
        );
        assert!(matches!(
            rule("plexus.scheduler:m1:1:jobs", "c", client),
            NameRule::Refused(_)
        ));
        assert!(matches!(
            rule("plexus.anything", "c", client),
            NameRule::Refused(_)
        ));
        assert_eq!(rule("counter.main", "c", client), NameRule::Open);
    }

    proptest::proptest! {
        /// Whatever the claims and releases, a node's names (as used when it goes down
        /// or announces itself) are exactly the entries that point at it.
        #[test]
        fn names_by_node_match_the_entries(
            ops in proptest::collection::vec((0u8..4, 0u8..6, 0u8..3, 0u64..3), 0..60)
        ) {
            let mut t = NameTable::default();
            let nodes = ["a", "b", "c"];
            for (op, name, node, pid) in ops {
                let (name, node) = (format!("n{name}"), nodes[node as usize]);
                match op {
                    0 | 1 => { t.claim(&name, e(node, pid)); }
                    2 => { t.release(&name, node); }
                    _ => { t.release_pid(node, pid); }
                }
                for n in nodes {
                    let scan: Vec<String> = t
                        .entries
                        .iter()
                        .filter(|(_, x)| x.node == n)
                        .map(|(k, _)| k.clone())
                        .collect();
                    let held: Vec<String> = t.held_by(n).into_iter().map(|(k, _)| k).collect();
                    proptest::prop_assert_eq!(scan, held);
                }
            }
            t.release_node("a");
            proptest::prop_assert!(t.entries.values().all(|x| x.node != "a"));
        }
    }
}
