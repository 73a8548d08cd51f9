//! [`MasterSupervisor`]: the root of the master process's tree.
//!
//! Its child, the [`Master`] actor, is restarted under a [`RestartPolicy`] (backoff, and
//! an intensity limit past which the supervisor fails and the process exits). A restarted
//! master starts empty and rebuilds as after a master process restart: agents see the
//! old one go, find the new one under [`MASTER_NAME`](crate::protocol::MASTER_NAME) and
//! re-register with their tasks; frameworks re-subscribe under their ids.

use plexus_actors::Node;

use super::{Master, MasterConfig};
use crate::protocol::MasterMsg;
use crate::supervision::{ChildSpec, Restarter, RestarterMsg};

#[allow(unused_imports)]
use crate::supervision::RestartPolicy;

/// The master process's root supervisor.
pub type MasterSupervisor = Restarter<MasterSpec>;

/// Messages of the master's supervisor.
pub type MasterSupervisorMsg = RestarterMsg<MasterMsg>;

/// The masters a [`MasterSupervisor`] starts.
pub struct MasterSpec {
    node: Node,
    cfg: MasterConfig,
}

impl MasterSpec {
    /// Masters of `cfg` on `node`.
    pub fn new(node: Node, cfg: MasterConfig) -> Self {
        MasterSpec { node, cfg }
    }
}

impl ChildSpec for MasterSpec {
    type Child = Master;

    fn make(&self, generation: u32) -> (Master, ()) {
        (
            Master::generation(self.node.clone(), self.cfg.clone(), generation),
            (),
        )
    }

    fn what(&self) -> &'static str {
        "the master"
    }

    fn node(&self) -> &Node {
        &self.node
    }
}
