//! Authorization: what an authenticated principal may do, decided from the master's
//! `[master.acls]` ([`plexus_config::AclSettings`]), in the spirit of Mesos's ACLs.
//!
//! Authentication ([`super::auth`]) says who is calling; this says whether they may.
//! Without ACLs every principal may do everything but run tasks as root; with them,
//! only what a rule allows is allowed. Root is never implied: only a `run_tasks` rule
//! that names `root` among its users lets a task run as root, whoever asks.

use plexus_config::{AclRule, AclSettings};

use super::auth::Principal;

/// What a principal asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
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
}

impl std::fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owner = |o: &Option<&str>| o.map_or("no principal".to_string(), |o| format!("{o:?}"));
        match self {
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
        }
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

    /// Whether `who` may do `what`.
    pub fn allows(&self, who: &Principal, what: &Action<'_>) -> bool {
        if let Action::RunTask {
            role,
            user: Some(user),
        } = what
        {
            if is_root(user) {
                // Root only by a rule that names it, for anyone.
                return self.rules.as_ref().is_some_and(|r| {
                    r.run_tasks.iter().any(|rule| {
                        names(&rule.principals, &who.0)
                            && names(&rule.roles, role)
                            && rule.users.iter().any(|u| u == ROOT)
                    })
                });
            }
        }
        let Some(rules) = &self.rules else {
            return true;
        };
        if self.admin.as_deref() == Some(who.0.as_str()) {
            return true;
        }
        let list = match what {
            Action::RunTask { .. } => &rules.run_tasks,
            Action::KillTask { .. } => &rules.kill_tasks,
            Action::ViewTask { .. } => &rules.view_tasks,
            Action::ReadLogs { .. } => &rules.read_logs,
        };
        list.iter()
            .any(|r| names(&r.principals, &who.0) && fits(r, what))
    }
}

/// Whether `rule` (of `what`'s kind) covers `what`'s objects.
fn fits(rule: &AclRule, what: &Action<'_>) -> bool {
    match *what {
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

    fn p(name: &str) -> Principal {
        Principal(name.into())
    }

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
                run_tasks: vec![
                    rule(&["alice"], &["prod"], &["*"], &[]),
                    rule(&["ops"], &["*"], &["root"], &[]),
                ],
                kill_tasks: vec![rule(&["alice"], &[], &[], &["alice"])],
                view_tasks: vec![rule(&["*"], &[], &[], &["*"])],
                read_logs: vec![rule(&["alice", "ops"], &[], &[], &["alice"])],
            }),
            Some("admin".into()),
        )
    }

    #[test]
    fn without_acls_everything_but_root_is_allowed() {
        let a = Acls::default();
        let run = |user| Action::RunTask { role: "*", user };
        assert!(a.allows(&p("anyone"), &run(None)));
        assert!(a.allows(&p("anyone"), &run(Some("nobody"))));
        assert!(a.allows(&p("anyone"), &Action::KillTask { owner: Some("x") }));
        for root in ["root", "0:0"] {
            assert!(!a.allows(&p("anyone"), &run(Some(root))), "{root}");
        }
    }

    #[test]
    fn with_acls_only_what_a_rule_allows_is_allowed() {
        let a = acls();
        let run = |role, user| Action::RunTask { role, user };
        assert!(a.allows(&p("alice"), &run("prod", None)));
        assert!(a.allows(&p("alice"), &run("prod", Some("alice"))));
        assert!(!a.allows(&p("alice"), &run("dev", None)), "another role");
        assert!(!a.allows(&p("bob"), &run("prod", None)), "no rule for bob");
        let kill = |owner| Action::KillTask { owner };
        assert!(a.allows(&p("alice"), &kill(Some("alice"))));
        assert!(!a.allows(&p("alice"), &kill(Some("bob"))));
        assert!(!a.allows(&p("alice"), &kill(None)));
        assert!(a.allows(&p("bob"), &Action::ViewTask { owner: None }));
        assert!(!a.allows(
            &p("bob"),
            &Action::ReadLogs {
                owner: Some("alice")
            }
        ));
        assert!(a.allows(
            &p("ops"),
            &Action::ReadLogs {
                owner: Some("alice")
            }
        ));
        assert!(a.allows(&p("admin"), &kill(Some("bob"))), "the admin may");
    }

    #[test]
    fn root_needs_a_rule_that_names_it_even_for_the_admin_and_wildcards() {
        let a = acls();
        let root = |role| Action::RunTask {
            role,
            user: Some("root"),
        };
        assert!(
            !a.allows(&p("alice"), &root("prod")),
            "`*` does not cover root"
        );
        assert!(!a.allows(&p("admin"), &root("prod")));
        assert!(a.allows(&p("ops"), &root("prod")));
        assert!(!a.allows(
            &p("alice"),
            &Action::RunTask {
                role: "prod",
                user: Some("0:0")
            }
        ));
    }
}
