//! Resources: quantities an agent offers and a task consumes.
//!
//! cpus are fixed-point (thousandths of a cpu) so arithmetic is exact; mem and disk are
//! megabytes; ports are sets of inclusive ranges; named scalars (`gpus`, …) are also
//! thousandths. The text form is Mesos's: `cpus:2;mem:1024;disk:4096;ports:[31000-32000];gpus:1`.
//! Resources are held per role: `*` is unreserved; a named role holds static reservations.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The unreserved role.
pub const ANY_ROLE: &str = "*";

/// Longest role name.
pub const MAX_ROLE_LEN: usize = 64;

/// Checks a role name as Mesos does: `*`, or 1-64 characters of letters, digits, `-`, `_`
/// and `.`, not starting with `-` or `.`.
pub fn validate_role(role: &str) -> Result<(), String> {
    if role == ANY_ROLE {
        return Ok(());
    }
    let ok = !role.is_empty()
        && role.len() <= MAX_ROLE_LEN
        && !role.starts_with(['-', '.'])
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a role is `*` or 1-{MAX_ROLE_LEN} letters, digits, '-', '_' and '.', not starting with '-' or '.'"
        ))
    }
}

/// A set of ports, kept as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortSet(Vec<(u16, u16)>);

impl PortSet {
    /// The set of the given ranges (normalised).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u16, u16)>) -> Self {
        let mut v: Vec<(u16, u16)> = ranges
            .into_iter()
            .map(|(a, b)| (a.min(b), a.max(b)))
            .collect();
        v.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
        for (a, b) in v {
            match out.last_mut() {
                Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        PortSet(out)
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }

    /// True when no port is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of ports.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|(a, b)| u64::from(*b - *a) + 1).sum()
    }

    /// Union.
    pub fn union(&self, other: &PortSet) -> PortSet {
        PortSet::from_ranges(self.0.iter().chain(other.0.iter()).copied())
    }

    /// True when every port of `other` is in `self`.
    pub fn contains(&self, other: &PortSet) -> bool {
        other
            .0
            .iter()
            .all(|(a, b)| self.0.iter().any(|(x, y)| x <= a && b <= y))
    }

    /// Ports of `self` not in `other`.
    pub fn difference(&self, other: &PortSet) -> PortSet {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            let mut start = u32::from(a);
            let end = u32::from(b);
            for &(x, y) in &other.0 {
                let (x, y) = (u32::from(x), u32::from(y));
                if y < start || x > end {
                    continue;
                }
                if x > start {
                    out.push((start as u16, (x - 1) as u16));
                }
                start = y + 1;
                if start > end {
                    break;
                }
            }
            if start <= end {
                out.push((start as u16, end as u16));
            }
        }
        PortSet(out)
    }

    /// The first `n` ports of the set, if it has that many.
    pub fn take(&self, n: u64) -> Option<PortSet> {
        let mut left = n;
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            if left == 0 {
                break;
            }
            let size = u64::from(b - a) + 1;
            let k = size.min(left);
            out.push((a, a + (k - 1) as u16));
            left -= k;
        }
        (left == 0).then_some(PortSet(out))
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        write!(f, "[{}]", parts.join(","))
    }
}

/// Errors of parsing or validating resources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The text is not `name:value;...`.
    #[error("bad resource {item:?}: {reason}")]
    Parse {
        /// The offending item.
        item: String,
        /// Why it is refused.
        reason: String,
    },
}

/// Quantities of resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Thousandths of a cpu.
    pub cpus_milli: u64,
    /// Megabytes of memory.
    pub mem_mb: u64,
    /// Megabytes of disk.
    pub disk_mb: u64,
    /// Ports.
    pub ports: PortSet,
    /// Named scalars (thousandths), e.g. `gpus`.
    pub scalars: BTreeMap<String, u64>,
}

fn milli(v: f64) -> u64 {
    (v * 1000.0).round() as u64
}

impl Resources {
    /// `cpus` cpus and `mem_mb` megabytes, nothing else.
    pub fn new(cpus: f64, mem_mb: u64) -> Self {
        Resources {
            cpus_milli: milli(cpus),
            mem_mb,
            ..Default::default()
        }
    }

    /// Cpus as a number.
    pub fn cpus(&self) -> f64 {
        self.cpus_milli as f64 / 1000.0
    }

    /// True when nothing is in it.
    pub fn is_empty(&self) -> bool {
        self.cpus_milli == 0
            && self.mem_mb == 0
            && self.disk_mb == 0
            && self.ports.is_empty()
            && self.scalars.values().all(|v| *v == 0)
    }

    /// True when `self` holds at least `other` of everything.
    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus_milli >= other.cpus_milli
            && self.mem_mb >= other.mem_mb
            && self.disk_mb >= other.disk_mb
            && self.ports.contains(&other.ports)
            && other
                .scalars
                .iter()
                .all(|(k, v)| self.scalars.get(k).copied().unwrap_or(0) >= *v)
    }

    /// Adds `other` in place.
    pub fn add(&mut self, other: &Resources) {
        self.cpus_milli += other.cpus_milli;
        self.mem_mb += other.mem_mb;
        self.disk_mb += other.disk_mb;
        if !other.ports.is_empty() {
            self.ports = self.ports.union(&other.ports);
        }
        for (k, v) in &other.scalars {
            *self.scalars.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// `self - other`, or `None` when `self` does not contain `other`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        let mut r = self.clone();
        r.sub_contained(other);
        Some(r)
    }

    /// Subtracts `other` in place if `self` contains it (true), else leaves `self` as it
    /// is (false).
    pub fn sub_assign_checked(&mut self, other: &Resources) -> bool {
        if !self.contains(other) {
            return false;
        }
        self.sub_contained(other);
        true
    }

    fn sub_contained(&mut self, other: &Resources) {
        self.cpus_milli -= other.cpus_milli;
        self.mem_mb -= other.mem_mb;
        self.disk_mb -= other.disk_mb;
        if !other.ports.is_empty() {
            self.ports = self.ports.difference(&other.ports);
        }
        if !other.scalars.is_empty() {
            for (k, v) in &other.scalars {
                if let Some(x) = self.scalars.get_mut(k) {
                    *x -= v;
                }
            }
            self.scalars.retain(|_, v| *v != 0);
        }
    }

    /// The largest fraction of `total` that `self` takes in any one resource (DRF's
    /// dominant share). Resources `total` lacks are ignored.
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        let f = |a: u64, t: u64| if t == 0 { 0.0 } else { a as f64 / t as f64 };
        let mut s = f(self.cpus_milli, total.cpus_milli)
            .max(f(self.mem_mb, total.mem_mb))
            .max(f(self.disk_mb, total.disk_mb));
        for (k, v) in &self.scalars {
            s = s.max(f(*v, total.scalars.get(k).copied().unwrap_or(0)));
        }
        s
    }

    /// Each quantity clamped to at most `limit`'s (ports and scalars absent from `limit`
    /// are kept).
    pub fn clamp_to(&self, limit: &Resources) -> Resources {
        let mut r = self.clone();
        r.cpus_milli = r.cpus_milli.min(limit.cpus_milli);
        r.mem_mb = r.mem_mb.min(limit.mem_mb);
        r.disk_mb = r.disk_mb.min(limit.disk_mb);
        for (k, v) in r.scalars.iter_mut() {
            if let Some(l) = limit.scalars.get(k) {
                *v = (*v).min(*l);
            }
        }
        r
    }

    /// The element-wise minimum of `self` and `other` (ports: the intersection).
    pub fn min(&self, other: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.min(other.cpus_milli),
            mem_mb: self.mem_mb.min(other.mem_mb),
            disk_mb: self.disk_mb.min(other.disk_mb),
            ports: self.ports.difference(&self.ports.difference(&other.ports)),
            scalars: self
                .scalars
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), (*v).min(*other.scalars.get(k)?))))
                .filter(|(_, v)| *v > 0)
                .collect(),
        }
    }

    /// Parses the Mesos text form: `cpus:2;mem:1024;disk:10;ports:[31000-32000];gpus:1`.
    pub fn parse(text: &str) -> Result<Resources, ResourceError> {
        let mut r = Resources::default();
        for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = |reason: &str| ResourceError::Parse {
                item: item.to_string(),
                reason: reason.to_string(),
            };
            let (name, value) = item
                .split_once(':')
                .ok_or_else(|| bad("expected NAME:VALUE"))?;
            let name = name.trim();
            let value = value.trim();
            if name == "ports" {
                let inner = value
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .ok_or_else(|| bad("ports are written [A-B,C-D]"))?;
                let mut ranges = Vec::new();
                for part in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let (a, b) = part.split_once('-').unwrap_or((part, part));
                    let a: u16 = a.trim().parse().map_err(|_| bad("port out of range"))?;
                    let b: u16 = b.trim().parse().map_err(|_| bad("port out of range"))?;
                    ranges.push((a, b));
                }
                r.ports = r.ports.union(&PortSet::from_ranges(ranges));
                continue;
            }
            let v: f64 = value.parse().map_err(|_| bad("not a number"))?;
            if !v.is_finite() || v < 0.0 {
                return Err(bad("must be a non-negative number"));
            }
            match name {
                "cpus" => r.cpus_milli += milli(v),
                "mem" => r.mem_mb += v.round() as u64,
                "disk" => r.disk_mb += v.round() as u64,
                other
                    if other
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                        && !other.is_empty() =>
                {
                    *r.scalars.entry(other.to_string()).or_insert(0) += milli(v)
                }
                _ => return Err(bad("unknown resource name")),
            }
        }
        Ok(r)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![
            format!("cpus:{}", self.cpus()),
            format!("mem:{}", self.mem_mb),
        ];
        if self.disk_mb > 0 {
            parts.push(format!("disk:{}", self.disk_mb));
        }
        if !self.ports.is_empty() {
            parts.push(format!("ports:{}", self.ports));
        }
        for (k, v) in &self.scalars {
            parts.push(format!("{k}:{}", *v as f64 / 1000.0));
        }
        f.write_str(&parts.join(";"))
    }
}

/// Resources held per role: `*` is unreserved, a named role holds reservations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleResources(pub BTreeMap<String, Resources>);

impl RoleResources {
    /// Unreserved resources only.
    pub fn unreserved(r: Resources) -> Self {
        let mut m = BTreeMap::new();
        m.insert(ANY_ROLE.to_string(), r);
        RoleResources(m)
    }

    /// Everything, whatever its role.
    pub fn total(&self) -> Resources {
        let mut t = Resources::default();
        for r in self.0.values() {
            t.add(r);
        }
        t
    }

    /// What a framework of `role` may use: its role's reservations plus unreserved.
    pub fn for_role(&self, role: &str) -> RoleResources {
        RoleResources(
            self.0
                .iter()
                .filter(|(k, v)| (k.as_str() == role || k.as_str() == ANY_ROLE) && !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// Adds `other` role by role.
    pub fn add(&mut self, other: &RoleResources) {
        for (k, v) in &other.0 {
            self.0.entry(k.clone()).or_default().add(v);
        }
    }

    /// True when every role holds at least what `other` has in it.
    pub fn contains(&self, other: &RoleResources) -> bool {
        let none = Resources::default();
        other
            .0
            .iter()
            .all(|(k, v)| self.0.get(k).unwrap_or(&none).contains(v))
    }

    /// Role-by-role subtraction in place when `self` contains `other` (true); otherwise
    /// `self` is left as it is (false).
    pub fn sub_assign_checked(&mut self, other: &RoleResources) -> bool {
        if !self.contains(other) {
            return false;
        }
        for (k, v) in &other.0 {
            if let Some(cur) = self.0.get_mut(k) {
                cur.sub_contained(v);
                if cur.is_empty() {
                    self.0.remove(k);
                }
            }
        }
        true
    }

    /// Role-by-role subtraction; `None` when any role lacks what is asked.
    pub fn checked_sub(&self, other: &RoleResources) -> Option<RoleResources> {
        let mut out = self.clone();
        for (k, v) in &other.0 {
            let cur = out.0.get(k).cloned().unwrap_or_default();
            out.0.insert(k.clone(), cur.checked_sub(v)?);
        }
        out.0.retain(|_, v| !v.is_empty());
        Some(out)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(Resources::is_empty)
    }

    /// Takes `want` (role-less quantities) from these resources, preferring `role`'s
    /// reservations, then unreserved. `None` when they do not fit.
    pub fn take(&self, role: &str, want: &Resources) -> Option<RoleResources> {
        let none = Resources::default();
        let reserved = match role {
            ANY_ROLE => &none,
            r => self.0.get(r).unwrap_or(&none),
        };
        let any = self.0.get(ANY_ROLE).unwrap_or(&none);
        let from_res = want.min(reserved);
        let rest = want.checked_sub(&from_res)?;
        if !any.contains(&rest) {
            return None;
        }
        let mut m = BTreeMap::new();
        if !from_res.is_empty() {
            m.insert(role.to_string(), from_res);
        }
        if !rest.is_empty() {
            m.insert(ANY_ROLE.to_string(), rest);
        }
        Some(RoleResources(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_ports() -> impl Strategy<Value = PortSet> {
        proptest::collection::vec((1000u16..1100, 0u16..20), 0..4)
            .prop_map(|v| PortSet::from_ranges(v.into_iter().map(|(a, l)| (a, a + l))))
    }

    fn arb_res() -> impl Strategy<Value = Resources> {
        (
            0u64..64_000,
            0u64..1 << 20,
            0u64..1 << 20,
            arb_ports(),
            0u64..8000,
        )
            .prop_map(|(c, m, d, p, g)| {
                let mut r = Resources {
                    cpus_milli: c,
                    mem_mb: m,
                    disk_mb: d,
                    ports: p,
                    scalars: BTreeMap::new(),
                };
                if g > 0 {
                    r.scalars.insert("gpus".into(), g);
                }
                r
            })
    }

    #[test]
    fn parses_and_prints_mesos_syntax() {
        let r =
            Resources::parse("cpus:1.5;mem:2048;disk:100;ports:[31000-31005,31010-31010];gpus:2")
                .unwrap();
        assert_eq!(r.cpus_milli, 1500);
        assert_eq!(r.ports.len(), 7);
        assert_eq!(r.scalars["gpus"], 2000);
        assert_eq!(Resources::parse(&r.to_string()).unwrap(), r);
        for bad in [
            "cpus:-1",
            "mem:lots",
            "ports:31000",
            "nonsense",
            "cpus:NaN",
            "a b:1",
        ] {
            assert!(Resources::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_difference_and_take() {
        let p = PortSet::from_ranges([(10, 20), (30, 40)]);
        let d = p.difference(&PortSet::from_ranges([(15, 32)]));
        assert_eq!(d.ranges(), &[(10, 14), (33, 40)]);
        assert_eq!(p.take(13).unwrap().ranges(), &[(10, 20), (30, 31)]);
        assert!(p.take(23).is_none());
    }

    #[test]
    fn reservations_are_taken_first() {
        let mut m = BTreeMap::new();
        m.insert("web".to_string(), Resources::new(1.0, 512));
        m.insert(ANY_ROLE.to_string(), Resources::new(4.0, 4096));
        let agent = RoleResources(m);
        let got = agent.take("web", &Resources::new(2.0, 256)).unwrap();
        assert_eq!(got.0["web"], Resources::new(1.0, 256));
        assert_eq!(got.0[ANY_ROLE], Resources::new(1.0, 0));
        assert!(agent.take("web", &Resources::new(6.0, 0)).is_none());
        assert!(agent.take(ANY_ROLE, &Resources::new(4.5, 0)).is_none());
        assert_eq!(
            agent.for_role("db").0.len(),
            1,
            "other roles' reservations are not offered"
        );
    }

    proptest! {
        #[test]
        fn add_then_sub_round_trips(a in arb_res(), b in arb_res()) {
            let mut s = a.clone();
            s.add(&b);
            prop_assert!(s.contains(&a) && s.contains(&b));
            let back = s.checked_sub(&b).unwrap();
            // ports overlapping between a and b are a set union, so only check scalars
            prop_assert_eq!(back.cpus_milli, a.cpus_milli);
            prop_assert_eq!(back.mem_mb, a.mem_mb);
            prop_assert_eq!(back.disk_mb, a.disk_mb);
            prop_assert!(back.ports.contains(&a.ports.difference(&b.ports)));
        }

        #[test]
        fn sub_fails_exactly_when_not_contained(a in arb_res(), b in arb_res()) {
            prop_assert_eq!(a.checked_sub(&b).is_some(), a.contains(&b));
        }

        #[test]
        fn port_algebra(a in arb_ports(), b in arb_ports()) {
            let u = a.union(&b);
            prop_assert!(u.contains(&a) && u.contains(&b));
            let d = a.difference(&b);
            prop_assert!(a.contains(&d));
            prop_assert_eq!(d.union(&a.difference(&d)), a.clone());
            prop_assert_eq!(d.len() + a.difference(&d).len(), a.len());
        }

        #[test]
        fn dominant_share_is_at_most_one_when_contained(a in arb_res(), b in arb_res()) {
            let mut t = a.clone();
            t.add(&b);
            let s = a.dominant_share(&t);
            prop_assert!((0.0..=1.0).contains(&s));
        }
    }
}
