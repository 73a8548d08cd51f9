//! The cluster-wide name table: a plain type replicated on every node.
//!
//! Each node announces its own registrations to its peers. When two nodes claim one name
//! at once, every node keeps the claim of the node whose name sorts first, so all nodes
//! agree without a coordinator.

use std::collections::{BTreeMap, BTreeSet};

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
    /// The names each node holds (so a node's names are found without a scan).
    by_node: BTreeMap<String, BTreeSet<String>>,
}

impl NameTable {
    /// Applies a claim (local or from a peer).
    pub fn claim(&mut self, name: &str, entry: NameEntry) -> Claim {
        match self.entries.get(name) {
            Some(cur) if cur.node != entry.node && cur.node < entry.node => Claim::Lost {
                holder: cur.clone(),
            },
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
