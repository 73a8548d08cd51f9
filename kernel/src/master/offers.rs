//! The offer book: outstanding offers by id, indexed by agent and by framework.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{AgentId, FrameworkId, OfferId};
use crate::protocol::Offer;

/// Outstanding offers by id, indexed by agent and by framework, so that rescinding the
/// offers of one agent or framework touches only theirs.
#[derive(Default)]
pub(crate) struct OfferBook {
    by_id: BTreeMap<OfferId, Offer>,
    by_agent: BTreeMap<AgentId, BTreeSet<OfferId>>,
    by_framework: BTreeMap<FrameworkId, BTreeSet<OfferId>>,
}

impl OfferBook {
    pub(crate) fn insert(&mut self, o: Offer) {
        // Offer ids are never reused; should one be, the old offer goes first.
        self.remove(&o.id);
        self.by_agent
            .entry(o.agent_id.clone())
            .or_default()
            .insert(o.id.clone());
        self.by_framework
            .entry(o.framework_id.clone())
            .or_default()
            .insert(o.id.clone());
        self.by_id.insert(o.id.clone(), o);
    }

    pub(crate) fn unlink(&mut self, o: &Offer) {
        unlink_from(&mut self.by_agent, &o.agent_id, &o.id);
        unlink_from(&mut self.by_framework, &o.framework_id, &o.id);
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<Offer> {
        let o = self.by_id.remove(id)?;
        self.unlink(&o);
        Some(o)
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Offer> {
        self.by_id.get(id)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Offer> {
        self.by_id.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Ids of the offers of `agent`, in id order.
    pub(crate) fn of_agent(&self, agent: &str) -> Vec<OfferId> {
        self.by_agent
            .get(agent)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Ids of the offers made to `framework`, in id order.
    pub(crate) fn of_framework(&self, framework: &str) -> Vec<OfferId> {
        self.by_framework
            .get(framework)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Removes `offer` from `key`'s set in `index`, and the set once it is empty.
fn unlink_from<K: Ord>(index: &mut BTreeMap<K, BTreeSet<OfferId>>, key: &K, offer: &OfferId) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(offer);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RoleResources;
    use proptest::prelude::*;

    fn offer(id: usize, agent: usize, fw: usize) -> Offer {
        Offer {
            id: format!("o{id}").into(),
            framework_id: format!("f{fw}").into(),
            agent_id: format!("a{agent}").into(),
            hostname: String::new(),
            resources: RoleResources::default(),
            attributes: Default::default(),
        }
    }

    proptest! {
        /// The indexes always list exactly the offers a scan of all offers would find.
        #[test]
        fn offer_indexes_agree_with_a_scan(
            ops in proptest::collection::vec((any::<bool>(), 0usize..40, 0usize..5, 0usize..4), 1..200)
        ) {
            let mut book = OfferBook::default();
            for (insert, id, agent, fw) in ops {
                if insert {
                    book.insert(offer(id, agent, fw));
                } else {
                    book.remove(&format!("o{id}"));
                }
                for a in 0..5 {
                    let a = format!("a{a}");
                    let scan: Vec<OfferId> =
                        book.values().filter(|o| o.agent_id == a).map(|o| o.id.clone()).collect();
                    prop_assert_eq!(book.of_agent(&a), scan);
                }
                for f in 0..4 {
                    let f = format!("f{f}");
                    let scan: Vec<OfferId> =
                        book.values().filter(|o| o.framework_id == f).map(|o| o.id.clone()).collect();
                    prop_assert_eq!(book.of_framework(&f), scan);
                }
            }
            // Nothing is left behind once every offer is gone.
            let ids: Vec<OfferId> = book.values().map(|o| o.id.clone()).collect();
            for id in ids {
                book.remove(&id);
            }
            prop_assert!(book.by_agent.is_empty() && book.by_framework.is_empty());
        }
    }
}
