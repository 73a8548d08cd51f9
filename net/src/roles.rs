//! What a node is allowed to be: its roles, carried in its certificate.
//!
//! A certificate from the cluster CA proves a peer's name; its roles say what the peer
//! may do. The CA writes them into the certificate's subject as an organizational unit
//! (`OU=plexus-roles:master,agent`), so a node cannot claim a role it was not issued. The
//! actors layer decides by them which names a peer may hold and which actor types it may
//! spawn; the kernel decides by them who may register as an agent or hold the master's
//! name.

use serde::{Deserialize, Serialize};

/// One role a node may be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Runs the master: admits agents, makes offers, holds the master's names.
    Master,
    /// Runs an agent: runs tasks, holds its own agent name.
    Agent,
    /// Hosts actor tasks for one framework on an agent.
    Executor,
    /// A program or the CLI: frameworks, operators. Holds no kernel name.
    Client,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 4] = [Role::Master, Role::Agent, Role::Executor, Role::Client];

    /// The role's name as written in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Agent => "agent",
            Role::Executor => "executor",
            Role::Client => "client",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?} (expected one of: master, agent, executor, client)")
            })
    }
}

/// The prefix of the roles written into a certificate's organizational unit
/// (`plexus-roles:master,agent`).
pub const ROLE_OU_PREFIX: &str = "plexus-roles:";

/// A set of roles (a node in development mode is both master and agent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Roles(u8);

impl Roles {
    /// No role: such a peer may only reach actors it was handed.
    pub const NONE: Roles = Roles(0);
    /// Every role.
    pub const ALL: Roles = Roles(0b1111);

    /// The set holding `roles`.
    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |acc, r| acc | r.bit()))
    }

    /// True when `role` is in the set.
    pub fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// True when the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when any of `roles` is in the set.
    pub fn any(self, roles: Roles) -> bool {
        self.0 & roles.0 != 0
    }

    /// The roles in the set, in order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.has(*r))
    }
}

impl From<Role> for Roles {
    fn from(r: Role) -> Roles {
        Roles(r.bit())
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Role::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl std::str::FromStr for Roles {
    type Err = String;
    /// `master`, `master,agent`, …
    fn from_str(s: &str) -> Result<Self, String> {
        let roles = s
            .split(',')
            .map(|r| r.trim().parse::<Role>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Roles::of(&roles))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print_alike() {
        let r: Roles = "master,agent".parse().unwrap();
        assert!(r.has(Role::Master) && r.has(Role::Agent) && !r.has(Role::Client));
        assert_eq!(r.to_string(), "master,agent");
        let e = "root".parse::<Roles>().unwrap_err();
        assert!(e.contains("\"root\""), "{e}");
    }
}
