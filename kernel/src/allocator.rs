//! The allocator: a sans-IO core deciding which framework is offered which agent's free
//! resources, by weighted Dominant Resource Fairness over roles, then over the frameworks
//! of a role (Mesos's hierarchical DRF).
//!
//! The master feeds it events (agents and frameworks coming and going, resources
//! recovered from declines and finished tasks, suppress/revive, weights, quotas) and calls
//! [`Allocator::allocate`] with the current time; it returns allocations (offers to make).
//! Offered resources count as allocated until recovered. A decline may install a filter:
//! that agent is not offered to that framework again before it expires.
//!
//! Ordering is indexed, not scanned: roles and frameworks sit in ordered sets keyed by
//! weighted dominant share, so each agent costs a few ordered-set operations.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::ids::{AgentId, FrameworkId};
use crate::resources::{Resources, RoleResources, ANY_ROLE};

type Ix = u32;

/// Smallest free resources worth offering (Mesos's defaults: 0.01 cpus or 32 MB).
const MIN_CPUS_MILLI: u64 = 10;
const MIN_MEM_MB: u64 = 32;

fn offerable(r: &Resources) -> bool {
    r.cpus_milli >= MIN_CPUS_MILLI || r.mem_mb >= MIN_MEM_MB
}

/// One offer to make: `resources` of `agent` to `framework`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The framework.
    pub framework: FrameworkId,
    /// The agent.
    pub agent: AgentId,
    /// What is offered, per role.
    pub resources: RoleResources,
}

/// Errors of allocator events naming unknown parties.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocatorError {
    /// No such agent.
    #[error("unknown agent {0:?}")]
    UnknownAgent(AgentId),
    /// No such framework.
    #[error("unknown framework {0:?}")]
    UnknownFramework(FrameworkId),
    /// A framework of that id is already registered.
    #[error("framework {0:?} is already added")]
    DuplicateFramework(FrameworkId),
    /// Recovered resources were not allocated to that framework on that agent.
    #[error("framework {framework:?} holds no such resources on agent {agent:?}")]
    NotAllocated {
        /// The framework.
        framework: FrameworkId,
        /// The agent.
        agent: AgentId,
    },
}

impl AllocatorError {
    fn not_allocated(framework: &str, agent: &str) -> Self {
        AllocatorError::NotAllocated {
            framework: framework.into(),
            agent: agent.into(),
        }
    }
}

struct Agent {
    name: AgentId,
    /// Not offered (it cannot take tasks now); its books are kept.
    paused: bool,
    total: RoleResources,
    available: RoleResources,
    alive: bool,
}

struct Framework {
    name: FrameworkId,
    role: Ix,
    allocated: Resources,
    suppressed: bool,
    key: u64,
    alive: bool,
}

struct Role {
    name: String,
    weight: f64,
    allocated: Resources,
    quota: Option<Resources>,
    /// Active (not suppressed) frameworks by (share key, index).
    frameworks: BTreeSet<(u64, Ix)>,
    key: u64,
}

/// The weighted hierarchical DRF allocator.
#[derive(Default)]
pub struct Allocator {
    agents: Vec<Agent>,
    agent_ix: BTreeMap<AgentId, Ix>,
    frameworks: Vec<Framework>,
    framework_ix: BTreeMap<FrameworkId, Ix>,
    roles: Vec<Role>,
    role_ix: BTreeMap<String, Ix>,
    /// Roles having active frameworks, by (weighted share key, index).
    role_order: BTreeSet<(u64, Ix)>,
    /// Allocated resources per (framework, agent).
    allocations: BTreeMap<(Ix, Ix), RoleResources>,
    /// Decline filters: (framework, agent) → expiry (expired ones are ignored, and
    /// swept out now and then).
    filters: BTreeMap<(Ix, Ix), Duration>,
    /// When expired filters are next swept out.
    next_sweep: Duration,
    /// Resources held on agents by tasks of frameworks not registered (yet), by
    /// (framework, agent): after a master restart, agents re-register before their
    /// frameworks re-subscribe. They are not offered; they are charged to the framework
    /// when it registers, and freed when the task ends or the agent goes.
    absent: BTreeMap<(FrameworkId, Ix), RoleResources>,
    /// Slots of forgotten agents and removed frameworks, reused before the tables grow.
    free_agents: Vec<Ix>,
    free_frameworks: Vec<Ix>,
    /// Most offers one framework gets in one cycle (0: no limit).
    offer_limit: u32,
    /// The agent the next cycle starts at (cycles that hit the offer limit resume where
    /// they stopped, so every agent gets its turn).
    cursor: Ix,
    total: Resources,
    keys_stale: bool,
}

impl std::fmt::Debug for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocator")
            .field("agents", &self.agent_ix.len())
            .field("frameworks", &self.framework_ix.len())
            .finish()
    }
}

fn key(share: f64, weight: f64) -> u64 {
    ((share / weight.max(1e-9)) * 1e15) as u64
}

impl Allocator {
    /// An empty allocator.
    pub fn new() -> Self {
        Self::default()
    }

    fn role(&mut self, name: &str) -> Ix {
        if let Some(i) = self.role_ix.get(name) {
            return *i;
        }
        let i = self.roles.len() as Ix;
        self.roles.push(Role {
            name: name.to_string(),
            weight: 1.0,
            allocated: Resources::default(),
            quota: None,
            frameworks: BTreeSet::new(),
            key: 0,
        });
        self.role_ix.insert(name.to_string(), i);
        i
    }

    fn agent(&self, name: &str) -> Result<Ix, AllocatorError> {
        self.agent_ix
            .get(name)
            .copied()
            .ok_or_else(|| AllocatorError::UnknownAgent(name.into()))
    }

    fn framework(&self, name: &str) -> Result<Ix, AllocatorError> {
        self.framework_ix
            .get(name)
            .copied()
            .ok_or_else(|| AllocatorError::UnknownFramework(name.into()))
    }

    /// Adds (or re-adds) an agent with `total` resources, of which `used` are already
    /// held by running tasks of the given frameworks (an agent re-registering).
    pub fn add_agent(
        &mut self,
        name: &str,
        total: RoleResources,
        used: &[(FrameworkId, RoleResources)],
    ) {
        if let Some(&i) = self.agent_ix.get(name) {
            if self.agents[i as usize].alive {
                self.remove_agent(name);
            }
        }
        let i = match self.agent_ix.get(name) {
            Some(&i) => i,
            None => {
                let slot = Agent {
                    name: name.into(),
                    paused: false,
                    total: RoleResources::default(),
                    available: RoleResources::default(),
                    alive: false,
                };
                let i = match self.free_agents.pop() {
                    Some(i) => {
                        self.agents[i as usize] = slot;
                        i
                    }
                    None => {
                        self.agents.push(slot);
                        (self.agents.len() - 1) as Ix
                    }
                };
                self.agent_ix.insert(name.into(), i);
                i
            }
        };
        self.total.add(&total.total());
        let a = &mut self.agents[i as usize];
        a.total = total.clone();
        a.available = total;
        a.alive = true;
        a.paused = false;
        for (fw, r) in used {
            let Some(rest) = self.agents[i as usize].available.checked_sub(r) else {
                tracing::warn!(agent = name, framework = %fw, "tasks hold more than the agent has: {}", r.total());
                continue;
            };
            self.agents[i as usize].available = rest;
            match self.framework_ix.get(fw) {
                Some(&f) if self.frameworks[f as usize].alive => self.charge(f, i, r),
                _ => self.absent.entry((fw.clone(), i)).or_default().add(r),
            }
        }
        self.keys_stale = true;
    }

    /// Removes an agent; everything allocated on it is dropped.
    pub fn remove_agent(&mut self, name: &str) {
        let Ok(i) = self.agent(name) else { return };
        if !self.agents[i as usize].alive {
            return;
        }
        let held: Vec<(Ix, RoleResources)> = self
            .allocations
            .iter()
            .filter(|((_, a), _)| *a == i)
            .map(|((f, _), r)| (*f, r.clone()))
            .collect();
        for (f, r) in held {
            self.uncharge(f, i, &r);
        }
        self.absent.retain(|(_, a), _| *a != i);
        let a = &mut self.agents[i as usize];
        a.alive = false;
        let t = a.total.total();
        a.available = RoleResources::default();
        self.total = self.total.checked_sub(&t).unwrap_or_default();
        self.filters.retain(|(_, ag), _| *ag != i);
        self.keys_stale = true;
    }

    /// Stops (`true`) or resumes offering an agent's resources; what its tasks hold is
    /// kept either way. (Re-adding an agent resumes it.)
    pub fn pause_agent(&mut self, name: &str, paused: bool) {
        if let Ok(i) = self.agent(name) {
            self.agents[i as usize].paused = paused;
        }
    }

    /// Forgets an agent for good (removed from the cluster): its slot is reused.
    pub fn forget_agent(&mut self, name: &str) {
        self.remove_agent(name);
        if let Some(i) = self.agent_ix.remove(name) {
            debug_assert!(!self.agents[i as usize].alive);
            self.agents[i as usize].name = AgentId::default();
            self.free_agents.push(i);
        }
    }

    /// Table slots in use and allocated, as `(agents, agent slots, frameworks,
    /// framework slots)`.
    pub fn slots(&self) -> (usize, usize, usize, usize) {
        (
            self.agent_ix.len(),
            self.agents.len(),
            self.framework_ix.len(),
            self.frameworks.len(),
        )
    }

    /// Registers a framework in `role`.
    pub fn add_framework(&mut self, name: &str, role: &str) -> Result<(), AllocatorError> {
        if let Some(&f) = self.framework_ix.get(name) {
            if self.frameworks[f as usize].alive {
                return Err(AllocatorError::DuplicateFramework(name.into()));
            }
        }
        let r = self.role(role);
        let f = match self.framework_ix.get(name) {
            Some(&f) => f,
            None => {
                let slot = Framework {
                    name: name.into(),
                    role: r,
                    allocated: Resources::default(),
                    suppressed: false,
                    key: 0,
                    alive: false,
                };
                let f = match self.free_frameworks.pop() {
                    Some(f) => {
                        self.frameworks[f as usize] = slot;
                        f
                    }
                    None => {
                        self.frameworks.push(slot);
                        (self.frameworks.len() - 1) as Ix
                    }
                };
                self.framework_ix.insert(name.into(), f);
                f
            }
        };
        let fw = &mut self.frameworks[f as usize];
        fw.role = r;
        fw.alive = true;
        fw.suppressed = false;
        fw.allocated = Resources::default();
        self.reindex_framework(f);
        // What its tasks hold on agents that registered before it (already taken out of
        // what those agents offer).
        let held: Vec<(Ix, RoleResources)> = self
            .absent
            .range((FrameworkId::from(name), 0)..=(FrameworkId::from(name), Ix::MAX))
            .map(|((_, a), r)| (*a, r.clone()))
            .collect();
        for (a, r) in held {
            self.absent.remove(&(FrameworkId::from(name), a));
            self.charge(f, a, &r);
        }
        Ok(())
    }

    /// Frees resources held on `agent` by a task of `framework`, which is not registered
    /// (the task ended before its framework came back).
    pub fn release_absent(
        &mut self,
        framework: &str,
        agent: &str,
        resources: &RoleResources,
    ) -> Result<(), AllocatorError> {
        let a = self.agent(agent)?;
        let key = (FrameworkId::from(framework), a);
        let not_held = || AllocatorError::not_allocated(framework, agent);
        let held = self.absent.get_mut(&key).ok_or_else(not_held)?;
        if !held.sub_assign_checked(resources) {
            return Err(not_held());
        }
        if held.is_empty() {
            self.absent.remove(&key);
        }
        if self.agents[a as usize].alive {
            self.agents[a as usize].available.add(resources);
        }
        Ok(())
    }

    /// Keeps `resources` on `agent` held for tasks of `framework`, which is gone but
    /// whose tasks still run (they are being killed): not offered until they end.
    pub fn hold_absent(
        &mut self,
        framework: &str,
        agent: &str,
        resources: &RoleResources,
    ) -> Result<(), AllocatorError> {
        let a = self.agent(agent)?;
        let not_free = || AllocatorError::not_allocated(framework, agent);
        if !self.agents[a as usize].alive {
            return Err(not_free());
        }
        let rest = self.agents[a as usize]
            .available
            .checked_sub(resources)
            .ok_or_else(not_free)?;
        self.agents[a as usize].available = rest;
        self.absent
            .entry((framework.into(), a))
            .or_default()
            .add(resources);
        Ok(())
    }

    /// What tasks of unregistered frameworks hold, in all.
    pub fn absent_total(&self) -> Resources {
        let mut sum = Resources::default();
        for r in self.absent.values() {
            sum.add(&r.total());
        }
        sum
    }

    /// Removes a framework and recovers everything allocated to it.
    pub fn remove_framework(&mut self, name: &str) {
        let Ok(f) = self.framework(name) else { return };
        let held: Vec<(Ix, RoleResources)> = self
            .allocations
            .range((f, 0)..=(f, Ix::MAX))
            .map(|((_, a), r)| (*a, r.clone()))
            .collect();
        for (a, r) in held {
            self.uncharge(f, a, &r);
            if self.agents[a as usize].alive {
                self.agents[a as usize].available.add(&r);
            }
        }
        self.unindex_framework(f);
        self.frameworks[f as usize].alive = false;
        self.clear_filters(f);
        // Framework ids are not reused, so its slot is free for the next one.
        self.framework_ix.remove(name);
        self.frameworks[f as usize].name = FrameworkId::default();
        self.free_frameworks.push(f);
    }

    /// Everything allocated to a framework (offered or used by its tasks), over all
    /// agents.
    pub fn allocated_to(&self, framework: &str) -> Result<Resources, AllocatorError> {
        let f = self.framework(framework)?;
        let mut sum = Resources::default();
        for r in self
            .allocations
            .range((f, 0)..=(f, Ix::MAX))
            .map(|(_, r)| r)
        {
            sum.add(&r.total());
        }
        Ok(sum)
    }

    /// Sets a role's weight (default 1).
    pub fn set_weight(&mut self, role: &str, weight: f64) {
        let r = self.role(role);
        self.roles[r as usize].weight = weight.max(1e-6);
        self.keys_stale = true;
    }

    /// Sets (or clears) a role's quota limit: it is never allocated beyond it.
    pub fn set_quota(&mut self, role: &str, limit: Option<Resources>) {
        let r = self.role(role);
        self.roles[r as usize].quota = limit;
    }

    /// Stops offers to a framework until [`Allocator::revive`].
    pub fn suppress(&mut self, name: &str) -> Result<(), AllocatorError> {
        let f = self.framework(name)?;
        self.unindex_framework(f);
        self.frameworks[f as usize].suppressed = true;
        Ok(())
    }

    /// Resumes offers to a framework and clears its decline filters.
    pub fn revive(&mut self, name: &str) -> Result<(), AllocatorError> {
        let f = self.framework(name)?;
        self.clear_filters(f);
        if self.frameworks[f as usize].suppressed {
            self.frameworks[f as usize].suppressed = false;
            self.reindex_framework(f);
        }
        Ok(())
    }

    /// Returns resources a framework held on an agent (declined, unused, or freed by a
    /// finished task). With `refuse`, that agent is not offered to that framework again
    /// until `now + refuse`.
    pub fn recover(
        &mut self,
        framework: &str,
        agent: &str,
        resources: &RoleResources,
        refuse: Option<Duration>,
        now: Duration,
    ) -> Result<(), AllocatorError> {
        let f = self.framework(framework)?;
        let a = self.agent(agent)?;
        if !self
            .allocations
            .get(&(f, a))
            .is_some_and(|held| held.contains(resources))
        {
            return Err(AllocatorError::NotAllocated {
                framework: framework.into(),
                agent: agent.into(),
            });
        }
        self.uncharge(f, a, resources);
        if self.agents[a as usize].alive {
            self.agents[a as usize].available.add(resources);
        }
        if let Some(d) = refuse.filter(|d| !d.is_zero()) {
            self.filters.insert((f, a), now + d);
        }
        Ok(())
    }

    fn charge(&mut self, f: Ix, a: Ix, r: &RoleResources) {
        self.allocations.entry((f, a)).or_default().add(r);
        let t = r.total();
        let role = self.frameworks[f as usize].role;
        self.unindex_framework(f);
        self.frameworks[f as usize].allocated.add(&t);
        self.roles[role as usize].allocated.add(&t);
        self.reindex_framework(f);
    }

    fn uncharge(&mut self, f: Ix, a: Ix, r: &RoleResources) {
        if let Some(h) = self.allocations.get_mut(&(f, a)) {
            if !h.sub_assign_checked(r) {
                *h = RoleResources::default();
            }
            if h.is_empty() {
                self.allocations.remove(&(f, a));
            }
        }
        let t = r.total();
        let role = self.frameworks[f as usize].role;
        self.unindex_framework(f);
        let fw = &mut self.frameworks[f as usize];
        if !fw.allocated.sub_assign_checked(&t) {
            fw.allocated = Resources::default();
        }
        let ro = &mut self.roles[role as usize];
        if !ro.allocated.sub_assign_checked(&t) {
            ro.allocated = Resources::default();
        }
        self.reindex_framework(f);
    }

    /// Drops every decline filter of framework `f`.
    fn clear_filters(&mut self, f: Ix) {
        let keys: Vec<(Ix, Ix)> = self
            .filters
            .range((f, 0)..=(f, Ix::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.filters.remove(&k);
        }
    }

    fn unindex_framework(&mut self, f: Ix) {
        let fw = &self.frameworks[f as usize];
        let r = fw.role as usize;
        let had = self.roles[r].frameworks.remove(&(fw.key, f));
        if had && self.roles[r].frameworks.is_empty() {
            self.role_order.remove(&(self.roles[r].key, r as Ix));
        }
    }

    fn reindex_framework(&mut self, f: Ix) {
        let fw = &self.frameworks[f as usize];
        if !fw.alive || fw.suppressed {
            return;
        }
        let r = fw.role as usize;
        let fkey = key(fw.allocated.dominant_share(&self.total), 1.0);
        self.frameworks[f as usize].key = fkey;
        let role = &mut self.roles[r];
        let was_empty = role.frameworks.is_empty();
        if !was_empty {
            self.role_order.remove(&(role.key, r as Ix));
        }
        role.frameworks.insert((fkey, f));
        role.key = key(role.allocated.dominant_share(&self.total), role.weight);
        self.role_order.insert((role.key, r as Ix));
    }

    fn refresh_keys(&mut self) {
        if !self.keys_stale {
            return;
        }
        self.keys_stale = false;
        self.role_order.clear();
        for r in &mut self.roles {
            r.frameworks.clear();
        }
        for f in 0..self.frameworks.len() as Ix {
            self.reindex_framework(f);
        }
    }

    /// True when a role has used up any dimension its quota limits.
    fn at_quota(&self, r: Ix) -> bool {
        let role = &self.roles[r as usize];
        let Some(q) = &role.quota else { return false };
        let a = &role.allocated;
        (q.cpus_milli > 0 && a.cpus_milli >= q.cpus_milli)
            || (q.mem_mb > 0 && a.mem_mb >= q.mem_mb)
            || (q.disk_mb > 0 && a.disk_mb >= q.disk_mb)
    }

    /// Quota headroom of a role: `None` when it has no quota.
    fn headroom(&self, r: Ix) -> Option<Resources> {
        let role = &self.roles[r as usize];
        let q = role.quota.as_ref()?;
        let mut h = q.clone();
        h.cpus_milli = q.cpus_milli.saturating_sub(role.allocated.cpus_milli);
        h.mem_mb = q.mem_mb.saturating_sub(role.allocated.mem_mb);
        h.disk_mb = q.disk_mb.saturating_sub(role.allocated.disk_mb);
        Some(h)
    }

    /// Removes from agent `a`'s free resources what role `r` may be offered (its
    /// reservations and unreserved resources, within its quota headroom) and returns it.
    fn take_offer(&mut self, a: Ix, r: Ix) -> RoleResources {
        let headroom = self.headroom(r);
        let role = self.roles[r as usize].name.clone();
        let avail = &mut self.agents[a as usize].available;
        let all_eligible = avail.0.keys().all(|k| *k == role || k == ANY_ROLE);
        if all_eligible && headroom.is_none() {
            let mut offer = std::mem::take(avail);
            offer.0.retain(|_, v| !v.is_empty());
            return offer;
        }
        let mut offer = avail.for_role(&role);
        if let Some(h) = &headroom {
            for v in offer.0.values_mut() {
                *v = v.clamp_to(h);
            }
        }
        offer.0.retain(|_, v| !v.is_empty());
        let taken = avail.sub_assign_checked(&offer);
        debug_assert!(taken, "offer taken from available");
        offer
    }

    /// Limits the offers one framework gets in one cycle (0: no limit). On a large
    /// cluster this keeps a framework that needs little from being handed (and having to
    /// decline) every agent each time it revives; the next cycle goes on from the agent
    /// where this one stopped.
    pub fn set_offer_limit(&mut self, limit: u32) {
        self.offer_limit = limit;
    }

    /// One allocation cycle at time `now`: every agent with free resources is offered to
    /// the first eligible framework of the role with the lowest weighted dominant share
    /// (and, within it, of the framework with the lowest share), each framework getting
    /// at most the offer limit.
    pub fn allocate(&mut self, now: Duration) -> Vec<Allocation> {
        self.refresh_keys();
        if now >= self.next_sweep {
            self.filters.retain(|_, exp| *exp > now);
            self.next_sweep = now + Duration::from_secs(10);
        }
        let mut out = Vec::new();
        if self
            .role_order
            .iter()
            .all(|&(_, r)| self.roles[r as usize].frameworks.is_empty())
        {
            return out; // nobody wants offers (all suppressed, or none registered)
        }
        let n = self.agents.len() as Ix;
        let limit = self.offer_limit;
        let mut given: BTreeMap<Ix, u32> = BTreeMap::new();
        let mut capped = 0usize;
        let active: usize = self
            .role_order
            .iter()
            .map(|&(_, r)| self.roles[r as usize].frameworks.len())
            .sum();
        let start = if self.cursor < n { self.cursor } else { 0 };
        self.cursor = 0;
        for i in 0..n {
            let a = (start + i) % n;
            if limit > 0 && capped >= active {
                // Every framework had its share of offers this cycle.
                self.cursor = a;
                break;
            }
            let agent = &self.agents[a as usize];
            if !agent.alive || agent.paused || !agent.available.0.values().any(offerable) {
                continue;
            }
            let mut pick: Option<(Ix, Ix)> = None;
            'roles: for &(_, r) in &self.role_order {
                if self.at_quota(r) {
                    continue;
                }
                let name = self.roles[r as usize].name.as_str();
                let eligible = agent
                    .available
                    .0
                    .iter()
                    .any(|(k, v)| (k == name || k == ANY_ROLE) && offerable(v));
                if !eligible {
                    continue;
                }
                for &(_, f) in &self.roles[r as usize].frameworks {
                    if limit > 0 && given.get(&f).is_some_and(|&c| c >= limit) {
                        continue;
                    }
                    if self.filters.get(&(f, a)).is_none_or(|exp| *exp <= now) {
                        pick = Some((r, f));
                        break 'roles;
                    }
                }
            }
            let Some((r, f)) = pick else { continue };
            let offer = self.take_offer(a, r);
            if offer.is_empty() {
                continue;
            }
            self.charge(f, a, &offer);
            let c = given.entry(f).or_insert(0);
            *c += 1;
            if *c == limit {
                capped += 1;
            }
            out.push(Allocation {
                framework: self.frameworks[f as usize].name.clone(),
                agent: self.agents[a as usize].name.clone(),
                resources: offer,
            });
        }
        out
    }

    /// Each framework's dominant share of the cluster, by framework name.
    pub fn shares(&self) -> BTreeMap<FrameworkId, f64> {
        self.frameworks
            .iter()
            .filter(|f| f.alive)
            .map(|f| (f.name.clone(), f.allocated.dominant_share(&self.total)))
            .collect()
    }

    /// Total resources of the live agents.
    pub fn total(&self) -> &Resources {
        &self.total
    }

    /// Free (unallocated) resources of an agent.
    pub fn available(&self, agent: &str) -> Option<&RoleResources> {
        self.agent_ix
            .get(agent)
            .map(|&i| &self.agents[i as usize].available)
    }

    /// Why a framework gets no offers now, if something in the allocator says so.
    pub fn why_no_offers(&self, framework: &str, now: Duration) -> Option<String> {
        let f = self.framework(framework).ok()?;
        let fw = &self.frameworks[f as usize];
        if fw.suppressed {
            return Some("the framework suppressed its offers".into());
        }
        if self.at_quota(fw.role) {
            return Some(format!(
                "role {:?} reached its quota",
                self.roles[fw.role as usize].name
            ));
        }
        let live = self.agents.iter().filter(|a| a.alive).count();
        let filtered = self
            .filters
            .range((f, 0)..=(f, Ix::MAX))
            .filter(|(_, exp)| **exp > now)
            .count();
        if live > 0 && filtered >= live {
            return Some(format!("all {live} agents are filtered after declines"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_of_removed_frameworks_and_forgotten_agents_are_reused() {
        let mut al = Allocator::new();
        al.add_agent("keep", agent(4.0, 1024), &[]);
        for i in 0..1000 {
            let fw = format!("fw-{i}");
            al.add_framework(&fw, "*").unwrap();
            let a = format!("gone-{i}");
            al.add_agent(&a, agent(1.0, 256), &[]);
            let offers = al.allocate(Duration::ZERO);
            assert!(offers.iter().any(|o| o.framework == fw && o.agent == a));
            al.forget_agent(&a);
            al.remove_framework(&fw);
        }
        assert_eq!(
            al.slots(),
            (1, 2, 0, 1),
            "one live agent; one spare slot each"
        );
        // A reused slot starts clean: a new framework is offered everything.
        al.add_framework("last", "*").unwrap();
        let offers = al.allocate(Duration::ZERO);
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].resources.total(), Resources::new(4.0, 1024));
        assert_eq!(al.total(), &Resources::new(4.0, 1024));
    }

    fn agent(cpus: f64, mem: u64) -> RoleResources {
        RoleResources::unreserved(Resources::new(cpus, mem))
    }

    /// Frameworks that keep every offer (a saturated cluster), tasks of `task`
    /// size finishing in rounds.
    fn run_saturated(weights: &[(&str, &str, f64)], rounds: usize) -> BTreeMap<FrameworkId, f64> {
        let mut al = Allocator::new();
        for i in 0..60 {
            al.add_agent(&format!("a{i}"), agent(4.0, 8192), &[]);
        }
        for (fw, role, w) in weights {
            al.add_framework(fw, role).unwrap();
            al.set_weight(role, *w);
        }
        let mut held: Vec<Allocation> = Vec::new();
        let mut t = Duration::ZERO;
        for round in 0..rounds {
            held.extend(al.allocate(t));
            // a third of the holdings finish each round and are recovered
            let (done, keep): (Vec<_>, Vec<_>) = held
                .into_iter()
                .enumerate()
                .partition(|(i, _)| (i + round) % 3 == 0);
            held = keep.into_iter().map(|(_, a)| a).collect();
            for (_, a) in done {
                al.recover(&a.framework, &a.agent, &a.resources, None, t)
                    .unwrap();
            }
            t += Duration::from_secs(1);
        }
        held.extend(al.allocate(t));
        al.shares()
    }

    #[test]
    fn equal_weights_converge_to_equal_shares() {
        let s = run_saturated(&[("f1", "r1", 1.0), ("f2", "r2", 1.0)], 30);
        assert!((s["f1"] - s["f2"]).abs() <= 0.1, "{s:?}");
        assert!(s["f1"] + s["f2"] > 0.95, "cluster saturated: {s:?}");
    }

    #[test]
    fn weights_two_to_one_converge_to_two_to_one() {
        let s = run_saturated(&[("f1", "gold", 2.0), ("f2", "silver", 1.0)], 30);
        let ratio = s["f1"] / s["f2"];
        assert!((ratio - 2.0).abs() <= 0.2, "ratio {ratio}: {s:?}");
    }

    #[test]
    fn frameworks_of_one_role_share_it_by_drf() {
        let mut al = Allocator::new();
        for i in 0..10 {
            al.add_agent(&format!("a{i}"), agent(2.0, 2048), &[]);
        }
        al.add_framework("f1", "r").unwrap();
        al.add_framework("f2", "r").unwrap();
        let got = al.allocate(Duration::ZERO);
        let f1 = got.iter().filter(|a| a.framework == "f1").count();
        assert_eq!(f1, 5, "alternating by share");
    }

    #[test]
    fn declined_offer_is_filtered_until_refuse_expires() {
        let s = Duration::from_secs;
        let mut al = Allocator::new();
        al.add_agent("a1", agent(4.0, 4096), &[]);
        al.add_framework("f1", "r").unwrap();
        al.add_framework("f2", "r").unwrap();
        let first = al.allocate(s(0));
        assert_eq!(first.len(), 1);
        let who = first[0].framework.clone();
        let other = if who == "f1" { "f2" } else { "f1" };
        al.recover(&who, "a1", &first[0].resources, Some(s(5)), s(0))
            .unwrap();
        let next = al.allocate(s(1));
        assert_eq!(next[0].framework, other, "the decliner is skipped");
        al.recover(other, "a1", &next[0].resources, Some(s(30)), s(1))
            .unwrap();
        assert!(al.allocate(s(2)).is_empty(), "both filtered");
        assert!(al.why_no_offers(&who, s(2)).unwrap().contains("filtered"));
        let later = al.allocate(s(6));
        assert_eq!(
            later[0].framework, who,
            "offered again once the filter expired"
        );
    }

    #[test]
    fn suppress_revive_and_quota() {
        let mut al = Allocator::new();
        for i in 0..4 {
            al.add_agent(&format!("a{i}"), agent(4.0, 4096), &[]);
        }
        al.add_framework("f1", "capped").unwrap();
        al.set_quota("capped", Some(Resources::new(6.0, 1 << 20)));
        let got = al.allocate(Duration::ZERO);
        let cpus: u64 = got.iter().map(|a| a.resources.total().cpus_milli).sum();
        assert_eq!(cpus, 6000, "quota limit respected");
        assert!(al
            .why_no_offers("f1", Duration::ZERO)
            .unwrap()
            .contains("quota"));
        al.add_framework("f2", "free").unwrap();
        al.suppress("f2").unwrap();
        assert!(al.allocate(Duration::ZERO).is_empty());
        al.revive("f2").unwrap();
        assert_eq!(al.allocate(Duration::ZERO).len(), 3, "f2 gets what is left");
    }

    #[test]
    fn the_offer_limit_caps_each_framework_per_cycle_and_every_agent_gets_its_turn() {
        let mut al = Allocator::new();
        for i in 0..10 {
            al.add_agent(&format!("a{i}"), agent(4.0, 4096), &[]);
        }
        al.add_framework("f1", "r").unwrap();
        al.add_framework("f2", "r").unwrap();
        al.set_offer_limit(3);
        let first = al.allocate(Duration::ZERO);
        assert_eq!(first.len(), 6, "three offers to each framework: {first:?}");
        for f in ["f1", "f2"] {
            assert_eq!(first.iter().filter(|a| a.framework == f).count(), 3);
        }
        // Both decline everything (no filter): the next cycle starts where this one
        // stopped, so the agents not offered yet come first.
        for a in &first {
            al.recover(&a.framework, &a.agent, &a.resources, None, Duration::ZERO)
                .unwrap();
        }
        let second = al.allocate(Duration::ZERO);
        assert_eq!(second.len(), 6);
        let seen: BTreeSet<&str> = first
            .iter()
            .chain(&second)
            .map(|a| a.agent.as_str())
            .collect();
        assert_eq!(
            seen.len(),
            10,
            "every agent offered within two cycles: {seen:?}"
        );
        // Without a limit, everything is offered at once.
        for a in &second {
            al.recover(&a.framework, &a.agent, &a.resources, None, Duration::ZERO)
                .unwrap();
        }
        al.set_offer_limit(0);
        assert_eq!(al.allocate(Duration::ZERO).len(), 10);
    }

    #[test]
    fn reservations_go_only_to_their_role() {
        let mut al = Allocator::new();
        let mut m = BTreeMap::new();
        m.insert("db".to_string(), Resources::new(2.0, 1024));
        al.add_agent("a1", RoleResources(m), &[]);
        al.add_framework("web", "web").unwrap();
        assert!(al.allocate(Duration::ZERO).is_empty());
        al.add_framework("pg", "db").unwrap();
        assert_eq!(al.allocate(Duration::ZERO)[0].framework, "pg");
    }

    #[test]
    fn lost_agent_drops_its_allocations_and_readding_counts_running_tasks() {
        let mut al = Allocator::new();
        al.add_agent("a1", agent(4.0, 4096), &[]);
        al.add_framework("f1", "r").unwrap();
        let got = al.allocate(Duration::ZERO);
        assert!(al.shares()["f1"] > 0.99);
        al.remove_agent("a1");
        assert_eq!(al.shares()["f1"], 0.0);
        assert!(al.allocate(Duration::ZERO).is_empty());
        let used = vec![(FrameworkId::from("f1"), agent(1.0, 1024))];
        al.add_agent("a1", agent(4.0, 4096), &used);
        let again = al.allocate(Duration::ZERO);
        assert_eq!(again[0].resources.total(), Resources::new(3.0, 3072));
        assert_eq!(got[0].resources.total(), Resources::new(4.0, 4096));
        let too_much = agent(5.0, 0);
        assert!(
            al.recover("f1", "a1", &too_much, None, Duration::ZERO)
                .is_err(),
            "cannot recover more than the framework holds there"
        );
    }
}
