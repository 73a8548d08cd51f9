//! Where actor tasks go: a plain function of the waiting spawns, the offers held and the
//! actors already placed, with no I/O and no clock, tested rule by rule below.
//!
//! Spawns are placed in the order they were asked for. Each takes, among the offers
//! whose agent satisfies its constraints and which still have room for it, the one with
//! the most cpus left (then memory): a burst spreads over the agents instead of filling
//! the first. A spawn that fits nowhere gets the reason, in the words `plexus ps` uses
//! for pending tasks.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, TaskId};
use crate::protocol::Offer;
use crate::resources::{Resources, RoleResources};

/// Where an actor may be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Constraint {
    /// No two live actors of `group` on one host.
    UniqueHost {
        /// The group (actors of other groups do not count).
        group: String,
    },
    /// At most `max` live actors of `group` on one host.
    MaxPerHost {
        /// The group.
        group: String,
        /// Most actors of the group per host.
        max: u32,
    },
    /// Only on agents whose attribute `name` is `value`.
    AttributeEquals {
        /// The attribute.
        name: String,
        /// Its value.
        value: String,
    },
    /// Only on agents whose attribute `name` matches `pattern` (`*` matches any run of
    /// characters, as in a shell).
    AttributeLike {
        /// The attribute.
        name: String,
        /// The pattern.
        pattern: String,
    },
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Constraint::UniqueHost { group } => write!(f, "unique host for {group:?}"),
            Constraint::MaxPerHost { group, max } => {
                write!(f, "at most {max} of {group:?} per host")
            }
            Constraint::AttributeEquals { name, value } => write!(f, "{name} = {value:?}"),
            Constraint::AttributeLike { name, pattern } => write!(f, "{name} like {pattern:?}"),
        }
    }
}

/// What a spawn waiting for placement needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Its task.
    pub task_id: TaskId,
    /// Resources (ports: none; see `ports`).
    pub resources: Resources,
    /// How many ports it takes from the offer.
    pub ports: u64,
    /// Its constraints.
    pub constraints: Vec<Constraint>,
    /// Agents it should not go to while others have room (where it just failed).
    pub avoid: BTreeSet<AgentId>,
}

/// A placement decided: spawn `task_id` on offer `offers[offer]` holding `resources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The task.
    pub task_id: TaskId,
    /// Index of the offer in the slice given.
    pub offer: usize,
    /// What it takes from the offer (with the ports chosen).
    pub resources: Resources,
}

/// Live actors (placed, not ended) per group, per host.
pub type HostCounts = BTreeMap<String, BTreeMap<String, u32>>;

/// Shell-style match of `text` against `pattern` (`*` any run of characters).
pub fn like(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The first constraint of `want` that `offer`'s agent breaks, given `counts`.
fn broken<'a>(want: &'a Want, offer: &Offer, counts: &HostCounts) -> Option<&'a Constraint> {
    let on_host = |group: &str| {
        counts
            .get(group)
            .and_then(|h| h.get(&offer.hostname))
            .copied()
            .unwrap_or(0)
    };
    want.constraints.iter().find(|c| match c {
        Constraint::UniqueHost { group } => on_host(group) >= 1,
        Constraint::MaxPerHost { group, max } => on_host(group) >= *max,
        Constraint::AttributeEquals { name, value } => offer.attributes.get(name) != Some(value),
        Constraint::AttributeLike { name, pattern } => {
            !offer.attributes.get(name).is_some_and(|v| like(pattern, v))
        }
    })
}

/// What `want` takes from `left` (an offer's resources not yet placed), if it fits.
fn take(want: &Want, role: &str, left: &RoleResources) -> Option<(Resources, RoleResources)> {
    let mut r = want.resources.clone();
    if want.ports > 0 {
        r.ports = left.total().ports.take(want.ports)?;
    }
    let taken = left.take(role, &r)?;
    Some((r, taken))
}

/// An offer a want fits, and how well.
struct Candidate {
    offer: usize,
    /// Not an agent to avoid, then cpus left, then memory left: higher is better.
    rank: (bool, u64, u64),
    resources: Resources,
    taken: RoleResources,
}

/// Places `wants` (in order) on `offers` for a framework of `role`, with `counts` the
/// live actors per group and host. Returns the placements and, for each want left, why.
pub fn place(
    wants: &[Want],
    offers: &[Offer],
    role: &str,
    counts: &HostCounts,
) -> (Vec<Placement>, BTreeMap<TaskId, String>) {
    let mut counts = counts.clone();
    let mut left: Vec<RoleResources> = offers.iter().map(|o| o.resources.clone()).collect();
    let mut placed = Vec::new();
    let mut why = BTreeMap::new();
    for want in wants {
        let mut best: Option<Candidate> = None;
        let mut blocked: Option<&Constraint> = None;
        let mut roomy = false;
        for (i, offer) in offers.iter().enumerate() {
            let Some((res, taken)) = take(want, role, &left[i]) else {
                continue;
            };
            roomy = true;
            if let Some(c) = broken(want, offer, &counts) {
                blocked = Some(c);
                continue;
            }
            let free = left[i].total();
            // Agents to avoid come last; then the most cpus left, then memory.
            let rank = (
                !want.avoid.contains(&offer.agent_id),
                free.cpus_milli,
                free.mem_mb,
            );
            if best.as_ref().is_none_or(|b| rank > b.rank) {
                best = Some(Candidate {
                    offer: i,
                    rank,
                    resources: res,
                    taken,
                });
            }
        }
        match best {
            Some(Candidate {
                offer: i,
                resources,
                taken,
                ..
            }) => {
                left[i] = left[i]
                    .checked_sub(&taken)
                    .expect("taken from what was left");
                for c in &want.constraints {
                    if let Constraint::UniqueHost { group } | Constraint::MaxPerHost { group, .. } =
                        c
                    {
                        *counts
                            .entry(group.clone())
                            .or_default()
                            .entry(offers[i].hostname.clone())
                            .or_default() += 1;
                    }
                }
                placed.push(Placement {
                    task_id: want.task_id.clone(),
                    offer: i,
                    resources,
                });
            }
            None => {
                let reason = unplaced(want, offers, &left, roomy, blocked);
                why.insert(want.task_id.clone(), reason);
            }
        }
    }
    (placed, why)
}

/// Why `want` was not placed, as `plexus ps` says it of a pending task.
fn unplaced(
    want: &Want,
    offers: &[Offer],
    left: &[RoleResources],
    roomy: bool,
    blocked: Option<&Constraint>,
) -> String {
    if offers.is_empty() {
        return "waiting for offers".into();
    }
    if let (true, Some(c)) = (roomy, blocked) {
        return format!("every offer with room breaks the constraint {c}");
    }
    let mut largest = Resources::default();
    for l in left {
        let t = l.total();
        if (t.cpus_milli, t.mem_mb) > (largest.cpus_milli, largest.mem_mb) {
            largest = t;
        }
    }
    let mut need = want.resources.clone();
    if want.ports > largest.ports.len() {
        return format!("no agent offers {} free ports", want.ports);
    }
    need.ports = Default::default();
    match crate::jobs::short_of(&need, &largest) {
        Some(what) => format!("no agent offers enough {what}"),
        None => "offers were used by earlier spawns; waiting for more".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::PortSet;

    fn offer(host: &str, cpus: f64, mem: u64) -> Offer {
        let mut r = Resources::new(cpus, mem);
        r.ports = PortSet::from_ranges([(31000, 31009)]);
        Offer {
            id: format!("o-{host}").into(),
            framework_id: "f".into(),
            agent_id: host.into(),
            hostname: host.into(),
            resources: RoleResources::unreserved(r),
            attributes: BTreeMap::new(),
        }
    }

    fn want(id: &str, cpus: f64, mem: u64, constraints: Vec<Constraint>) -> Want {
        Want {
            task_id: id.into(),
            resources: Resources::new(cpus, mem),
            ports: 0,
            constraints,
            avoid: BTreeSet::new(),
        }
    }

    fn unique() -> Vec<Constraint> {
        vec![Constraint::UniqueHost { group: "w".into() }]
    }

    fn hosts(p: &[Placement], offers: &[Offer]) -> Vec<String> {
        p.iter().map(|x| offers[x.offer].hostname.clone()).collect()
    }

    #[test]
    fn spawns_spread_to_the_offer_with_most_cpus_left() {
        let offers = [offer("a", 4.0, 4096), offer("b", 2.0, 4096)];
        let wants: Vec<Want> = (0..3)
            .map(|i| want(&format!("t{i}"), 1.0, 64, vec![]))
            .collect();
        let (p, why) = place(&wants, &offers, "*", &HostCounts::new());
        assert!(why.is_empty());
        assert_eq!(
            hosts(&p, &offers),
            ["a", "a", "b"],
            "4,2 → 3,2 → 2,2 → first of equals"
        );
    }

    #[test]
    fn unique_host_keeps_a_group_one_per_host_counting_live_actors() {
        let offers = [
            offer("a", 8.0, 4096),
            offer("b", 8.0, 4096),
            offer("c", 8.0, 4096),
        ];
        let mut live = HostCounts::new();
        live.entry("w".into()).or_default().insert("b".into(), 1);
        let wants: Vec<Want> = (0..3)
            .map(|i| want(&format!("t{i}"), 1.0, 64, unique()))
            .collect();
        let (p, why) = place(&wants, &offers, "*", &live);
        assert_eq!(hosts(&p, &offers), ["a", "c"]);
        assert_eq!(
            why.get(&TaskId::from("t2")).map(String::as_str),
            Some("every offer with room breaks the constraint unique host for \"w\"")
        );
        // Other groups are not counted.
        let other = want(
            "x",
            1.0,
            64,
            vec![Constraint::UniqueHost { group: "v".into() }],
        );
        let (p, _) = place(&[other], &offers, "*", &live);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn max_per_host_allows_that_many() {
        let offers = [offer("a", 8.0, 4096)];
        let c = vec![Constraint::MaxPerHost {
            group: "w".into(),
            max: 2,
        }];
        let wants: Vec<Want> = (0..3)
            .map(|i| want(&format!("t{i}"), 1.0, 64, c.clone()))
            .collect();
        let (p, why) = place(&wants, &offers, "*", &HostCounts::new());
        assert_eq!(p.len(), 2);
        assert!(why[&TaskId::from("t2")].contains("at most 2 of \"w\" per host"));
    }

    #[test]
    fn attributes_must_equal_or_match() {
        let mut offers = [offer("a", 8.0, 4096), offer("b", 8.0, 4096)];
        offers[1].attributes.insert("rack".into(), "r2-east".into());
        let eq = want(
            "e",
            1.0,
            64,
            vec![Constraint::AttributeEquals {
                name: "rack".into(),
                value: "r2-east".into(),
            }],
        );
        let lk = want(
            "l",
            1.0,
            64,
            vec![Constraint::AttributeLike {
                name: "rack".into(),
                pattern: "r*-e*t".into(),
            }],
        );
        let miss = want(
            "m",
            1.0,
            64,
            vec![Constraint::AttributeLike {
                name: "rack".into(),
                pattern: "r1*".into(),
            }],
        );
        let (p, why) = place(&[eq, lk, miss], &offers, "*", &HostCounts::new());
        assert_eq!(hosts(&p, &offers), ["b", "b"]);
        assert!(why[&TaskId::from("m")].contains("rack like \"r1*\""));
    }

    #[test]
    fn a_spawn_too_big_for_any_offer_says_what_is_short() {
        let offers = [offer("a", 2.0, 512)];
        let (p, why) = place(
            &[want("t", 1.0, 4096, vec![])],
            &offers,
            "*",
            &HostCounts::new(),
        );
        assert!(p.is_empty());
        assert_eq!(
            why[&TaskId::from("t")],
            "no agent offers enough mem (needs 4096 MB, largest offer 512 MB)"
        );
        let (_, why) = place(&[want("t", 1.0, 64, vec![])], &[], "*", &HostCounts::new());
        assert_eq!(why[&TaskId::from("t")], "waiting for offers");
    }

    #[test]
    fn ports_are_chosen_from_the_offer() {
        let offers = [offer("a", 2.0, 512)];
        let mut w = want("t", 0.1, 16, vec![]);
        w.ports = 2;
        let (p, _) = place(&[w.clone(), w.clone()], &offers, "*", &HostCounts::new());
        assert_eq!(p[0].resources.ports, PortSet::from_ranges([(31000, 31001)]));
        assert_eq!(p[1].resources.ports, PortSet::from_ranges([(31002, 31003)]));
        w.ports = 20;
        let (_, why) = place(&[w], &offers, "*", &HostCounts::new());
        assert_eq!(why[&TaskId::from("t")], "no agent offers 20 free ports");
    }

    #[test]
    fn agents_to_avoid_are_used_only_when_nothing_else_has_room() {
        let offers = [offer("a", 8.0, 4096), offer("b", 2.0, 4096)];
        let mut w = want("t", 1.0, 64, vec![]);
        w.avoid.insert("a".into());
        let (p, _) = place(&[w.clone()], &offers, "*", &HostCounts::new());
        assert_eq!(hosts(&p, &offers), ["b"]);
        let (p, _) = place(&[w], &offers[..1], "*", &HostCounts::new());
        assert_eq!(hosts(&p, &offers), ["a"]);
    }

    #[test]
    fn like_matches_shell_style() {
        assert!(like("r*", "r1"));
        assert!(like("*east", "r2-east"));
        assert!(like("r*-*t", "r2-east"));
        assert!(like("exact", "exact"));
        assert!(!like("r*", "x1"));
        assert!(!like("a*b*c", "acb"));
        assert!(!like("ab*ba", "aba"));
    }
}
