//! The cluster-wide name table: a plain type replicated on every node.
//!
//! Each node announces its own registrations to its peers. When two nodes claim one name
//! at once, every node keeps the claim of the node whose name sorts first, so all nodes
//! agree without a coordinator.

use std::collections::BTreeMap;

/// Where a name points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// The node running the actor.
    pub node: String,
    /// The actor's id on that node.
    pub pid: u64,
    /// The actor's message type (checked by typed lookups).
    pub msg_type: String,
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
}

impl NameTable {
    /// Applies a claim (local or from a peer).
    pub fn claim(&mut self, name: &str, entry: NameEntry) -> Claim {
        match self.entries.get(name) {
            Some(cur) if cur.node != entry.node && cur.node < entry.node => Claim::Lost {
                holder: cur.clone(),
            },
            _ => {
                self.entries.insert(name.to_string(), entry);
                Claim::Accepted
            }
        }
    }

    /// Looks a name up.
    pub fn get(&self, name: &str) -> Option<&NameEntry> {
        self.entries.get(name)
    }

    /// Drops `name` if `node` holds it.
    pub fn release(&mut self, name: &str, node: &str) -> bool {
        if self.entries.get(name).is_some_and(|e| e.node == node) {
            self.entries.remove(name);
            true
        } else {
            false
        }
    }

    /// Drops every name held by `node`'s actor `pid`; returns the names dropped.
    pub fn release_pid(&mut self, node: &str, pid: u64) -> Vec<String> {
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.node == node && e.pid == pid)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &names {
            self.entries.remove(n);
        }
        names
    }

    /// Drops every name held by `node` (it went down or left).
    pub fn release_node(&mut self, node: &str) {
        self.entries.retain(|_, e| e.node != node);
    }

    /// The names held by `node`, in name order.
    pub fn held_by(&self, node: &str) -> Vec<(String, NameEntry)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.node == node)
            .map(|(n, e)| (n.clone(), e.clone()))
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
    }
}
