//! Authorization: what an authenticated principal may do, decided from the master's
//! `[master.acls]` ([`plexus_config::AclSettings`]), in the spirit of Mesos's ACLs.
//!
//! Authentication says who is calling (a bearer token at the API, a principal and its
//! secret for a framework); this says whether they may.
//! Without ACLs every principal may do everything but run tasks as root; with them,
//! only what a rule allows is allowed. Root is never implied: only a `run_tasks` rule
//! that names `root` among its users lets a task run as root, whoever asks.

use plexus_config::{AclRule, AclSettings};

/// What a principal asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Register a framework in `role`.
    RegisterFramework {
        /// The role.
        role: &'a str,
    },
    /// Run a task (submit a job) in `role` as OS user `user` (`None`: the agent's
    /// default user).
    RunTask {
        /// The role.
        role: &'a str,
        /// The OS user.
        user: Option<&'a str>,
    },
    /// Kill a task of `owner` (`None`: a task no principal submitted).
    KillTask {
        /// The principal that submitted it.
        owner: Option<&'a str>,
    },
    /// See a task of `owner`.
    ViewTask {
        /// The principal that submitted it.
        owner: Option<&'a str>,
    },
    /// Read the output of a task of `owner`.
    ReadLogs {
        /// The principal that submitted it.
        owner: Option<&'a str>,
    },
    /// Change `role`'s weight.
    UpdateWeight {
        /// The role.
        role: &'a str,
    },
    /// Change `role`'s quota.
    UpdateQuota {
        /// The role.
        role: &'a str,
    },
}

impl std::fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owner = |o: &Option<&str>| o.map_or("no principal".to_string(), |o| format!("{o:?}"));
        match self {
            Action::RegisterFramework { role } => write!(
                f,
                "register frameworks in role {role:?} (master.acls.register_frameworks)"
            ),
            Action::RunTask { role, user } => write!(
                f,
                "run tasks in role {role:?} as {} (master.acls.run_tasks)",
                user.map_or("the agent's default user".to_string(), |u| format!(
                    "user {u:?}"
                ))
            ),
            Action::KillTask { owner: o } => {
                write!(f, "kill tasks of {} (master.acls.kill_tasks)", owner(o))
            }
            Action::ViewTask { owner: o } => {
                write!(f, "view tasks of {} (master.acls.view_tasks)", owner(o))
            }
            Action::ReadLogs { owner: o } => {
                write!(
                    f,
                    "read the logs of tasks of {} (master.acls.read_logs)",
                    owner(o)
                )
            }
            Action::UpdateWeight { role } => {
                write!(
                    f,
                    "change the weight of role {role:?} (master.acls.update_weights)"
                )
            }
            Action::UpdateQuota { role } => {
                write!(
                    f,
                    "change the quota of role {role:?} (master.acls.update_quotas)"
                )
            }
        }
    }
}

/// Principals' secrets (their API tokens), for frameworks to prove who they are when
/// they subscribe, as Mesos frameworks authenticate with a principal and a secret.
#[derive(Clone, Default)]
pub struct Credentials {
    secrets: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: secrets never reach a log.
        f.debug_set().entries(self.secrets.keys()).finish()
    }
}

impl Credentials {
    /// Adds `secret` for `principal`.
    pub fn add(&mut self, principal: &str, secret: &str) {
        self.secrets.insert(principal.into(), secret.into());
    }

    /// True when `secret` is `principal`'s (compared in full, in constant time).
    pub fn verify(&self, principal: &str, secret: &str) -> bool {
        let Some(known) = self.secrets.get(principal) else {
            return false;
        };
        let (a, b) = (known.as_bytes(), secret.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// On whose authority a framework acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameworkAuthority {
    /// The kernel's own (a framework in the master's process, such as the jobs
    /// framework, whose API authorized each job).
    Kernel,
    /// A framework that proved it is this principal.
    Principal(String),
    /// A framework that named no principal (allowed only without ACLs).
    Anonymous,
}

impl Acls {
    /// Whether a framework acting on `authority` may register in `role`; why not.
    pub fn framework_problem(&self, authority: &FrameworkAuthority, role: &str) -> Option<String> {
        let who = match authority {
            FrameworkAuthority::Kernel => return None,
            FrameworkAuthority::Anonymous if self.configured() => {
                return Some(
                    "frameworks must authenticate with a principal and its secret when ACLs are configured"
                        .into(),
                )
            }
            FrameworkAuthority::Anonymous => "",
            FrameworkAuthority::Principal(p) => p,
        };
        let what = Action::RegisterFramework { role };
        (!self.allows(who, &what)).then(|| format!("principal {who:?} may not {what}"))
    }

    /// Whether a framework acting on `authority` in `role` may launch a task as `user`;
    /// why not.
    pub fn task_problem(
        &self,
        authority: &FrameworkAuthority,
        role: &str,
        user: Option<&str>,
    ) -> Option<String> {
        let who = match authority {
            FrameworkAuthority::Kernel => return None,
            FrameworkAuthority::Anonymous => "",
            FrameworkAuthority::Principal(p) => p,
        };
        let what = Action::RunTask { role, user };
        (!self.allows(who, &what)).then(|| {
            let who = if who.is_empty() {
                "an anonymous framework".to_string()
            } else {
                format!("principal {who:?}")
            };
            format!("{who} may not {what}")
        })
    }
}

/// A wildcard in a rule's list.
const ANY: &str = "*";
/// The OS user a wildcard never covers.
const ROOT: &str = "root";

/// True when `user` names the superuser: `root`, or a numeric `0:GID`.
pub fn is_root(user: &str) -> bool {
    user == ROOT || user.split(':').next() == Some("0")
}

fn names(list: &[String], x: &str) -> bool {
    list.iter().any(|v| v == ANY || v == x)
}

fn names_owner(list: &[String], owner: Option<&str>) -> bool {
    list.iter().any(|v| v == ANY || Some(v.as_str()) == owner)
}

/// The master's authorization rules.
#[derive(Debug, Clone, Default)]
pub struct Acls {
    rules: Option<AclSettings>,
    /// The master's own principal, allowed everything but root.
    admin: Option<String>,
}

impl Acls {
    /// Rules from the master's settings (`None`: no `[master.acls]`); `admin` is the
    /// principal of the master's own token.
    pub fn new(rules: Option<AclSettings>, admin: Option<String>) -> Acls {
        Acls { rules, admin }
    }

    /// True when ACLs are configured (what they do not allow is denied).
    pub fn configured(&self) -> bool {
        self.rules.is_some()
    }

    /// Whether the principal `who` may do `what`.
    pub fn allows(&self, who: &str, what: &Action<'_>) -> bool {
        if let Action::RunTask {
            role,
            user: Some(user),
        } = what
        {
            if is_root(user) {
                // Root only by a rule that names it, for anyone.
                return self.rules.as_ref().is_some_and(|r| {
                    r.run_tasks.iter().any(|rule| {
                        names(&rule.principals, who)
                            && names(&rule.roles, role)
                            && rule.users.iter().any(|u| u == ROOT)
                    })
                });
            }
        }
        let Some(rules) = &self.rules else {
            return true;
        };
        if self.admin.as_deref() == Some(who) {
            return true;
        }
        let list = match what {
            Action::RegisterFramework { .. } => &rules.register_frameworks,
            Action::RunTask { .. } => &rules.run_tasks,
            Action::KillTask { .. } => &rules.kill_tasks,
            Action::ViewTask { .. } => &rules.view_tasks,
            Action::ReadLogs { .. } => &rules.read_logs,
            Action::UpdateWeight { .. } => &rules.update_weights,
            Action::UpdateQuota { .. } => &rules.update_quotas,
        };
        list.iter()
            .any(|r| names(&r.principals, who) && fits(r, what))
    }
}

/// Whether `rule` (of `what`'s kind) covers `what`'s objects.
fn fits(rule: &AclRule, what: &Action<'_>) -> bool {
    match *what {
        Action::RegisterFramework { role }
        | Action::UpdateWeight { role }
        | Action::UpdateQuota { role } => names(&rule.roles, role),
        Action::RunTask { role, user } => {
            names(&rule.roles, role) && user.is_none_or(|u| names(&rule.users, u))
        }
        Action::KillTask { owner } | Action::ViewTask { owner } | Action::ReadLogs { owner } => {
            names_owner(&rule.owners, owner)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(principals: &[&str], roles: &[&str], users: &[&str], owners: &[&str]) -> AclRule {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        AclRule {
            principals: v(principals),
            roles: v(roles),
            users: v(users),
            owners: v(owners),
        }
    }

    fn acls() -> Acls {
        Acls::new(
            Some(AclSettings {
                register_frameworks: vec![rule(&["sched"], &["prod"], &[], &[])],
                run_tasks: vec![
                    rule(&["alice"], &["prod"], &["*"], &[]),
                    rule(&["ops"], &["*"], &["root"], &[]),
                ],
                kill_tasks: vec![rule(&["alice"], &[], &[], &["alice"])],
                view_tasks: vec![rule(&["*"], &[], &[], &["*"])],
                read_logs: vec![rule(&["alice", "ops"], &[], &[], &["alice"])],
                update_weights: vec![rule(&["ops"], &["*"], &[], &[])],
                update_quotas: vec![rule(&["ops"], &["batch"], &[], &[])],
            }),
            Some("admin".into()),
        )
    }

    #[test]
    fn without_acls_everything_but_root_is_allowed() {
        let a = Acls::default();
        let run = |user| Action::RunTask { role: "*", user };
        assert!(a.allows("anyone", &run(None)));
        assert!(a.allows("anyone", &run(Some("nobody"))));
        assert!(a.allows("anyone", &Action::KillTask { owner: Some("x") }));
        for root in ["root", "0:0"] {
            assert!(!a.allows("anyone", &run(Some(root))), "{root}");
        }
    }

    #[test]
    fn with_acls_only_what_a_rule_allows_is_allowed() {
        let a = acls();
        let run = |role, user| Action::RunTask { role, user };
        assert!(a.allows("alice", &run("prod", None)));
        assert!(a.allows("alice", &run("prod", Some("alice"))));
        assert!(!a.allows("alice", &run("dev", None)), "another role");
        assert!(!a.allows("bob", &run("prod", None)), "no rule for bob");
        let kill = |owner| Action::KillTask { owner };
        assert!(a.allows("alice", &kill(Some("alice"))));
        assert!(!a.allows("alice", &kill(Some("bob"))));
        assert!(!a.allows("alice", &kill(None)));
        assert!(a.allows("bob", &Action::ViewTask { owner: None }));
        assert!(!a.allows(
            "bob",
            &Action::ReadLogs {
                owner: Some("alice")
            }
        ));
        assert!(a.allows(
            "ops",
            &Action::ReadLogs {
                owner: Some("alice")
            }
        ));
        assert!(a.allows("admin", &kill(Some("bob"))), "the admin may");
        let register = |role| Action::RegisterFramework { role };
        assert!(a.allows("sched", &register("prod")));
        assert!(!a.allows("sched", &register("dev")));
        assert!(!a.allows("alice", &register("prod")));
        assert!(a.allows("ops", &Action::UpdateWeight { role: "prod" }));
        assert!(!a.allows("alice", &Action::UpdateWeight { role: "prod" }));
        assert!(a.allows("ops", &Action::UpdateQuota { role: "batch" }));
        assert!(!a.allows("ops", &Action::UpdateQuota { role: "prod" }));
    }

    #[test]
    fn frameworks_authenticate_when_acls_exist_and_the_kernels_own_are_trusted() {
        let a = acls();
        let anon = FrameworkAuthority::Anonymous;
        let sched = FrameworkAuthority::Principal("sched".into());
        assert!(a.framework_problem(&anon, "prod").is_some());
        assert_eq!(a.framework_problem(&sched, "prod"), None);
        assert!(a.framework_problem(&sched, "dev").is_some());
        assert_eq!(a.framework_problem(&FrameworkAuthority::Kernel, "x"), None);
        let open = Acls::default();
        assert_eq!(open.framework_problem(&anon, "x"), None);
        assert_eq!(open.task_problem(&anon, "x", Some("nobody")), None);
        let e = open.task_problem(&anon, "x", Some("root")).unwrap();
        assert!(e.contains("anonymous") && e.contains("root"), "{e}");
        assert_eq!(
            a.task_problem(&FrameworkAuthority::Kernel, "x", Some("root")),
            None
        );
        let mut c = Credentials::default();
        c.add("sched", "sixteen-byte-secret");
        assert!(c.verify("sched", "sixteen-byte-secret"));
        assert!(!c.verify("sched", "sixteen-byte-secreT"));
        assert!(!c.verify("other", "sixteen-byte-secret"));
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn root_needs_a_rule_that_names_it_even_for_the_admin_and_wildcards() {
        let a = acls();
        let root = |role| Action::RunTask {
            role,
            user: Some("root"),
        };
        assert!(!a.allows("alice", &root("prod")), "`*` does not cover root");
        assert!(!a.allows("admin", &root("prod")));
        assert!(a.allows("ops", &root("prod")));
        assert!(!a.allows(
            "alice",
            &Action::RunTask {
                role: "prod",
                user: Some("0:0")
            }
        ));
    }
}
