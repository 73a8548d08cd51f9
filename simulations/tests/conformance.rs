//! The containerizer contract (`plexus_kernel::containerizer::conformance`) on the
//! simulated containerizer, with its scripted `sim ...` commands: the same suite the
//! process containerizer passes on real processes (`kernel/tests/conformance.rs`).

use std::sync::Arc;

use plexus_kernel::containerizer::conformance::{self, Behavior, Subject};
use plexus_kernel::containerizer::{BoxFuture, ContainerInfo, Containerizer};
use plexus_net::{SimFaults, SimNetwork};
use plexus_sim::{Machines, Recorder};

struct Simulated {
    machines: Machines,
    c: Arc<dyn Containerizer>,
}

impl Subject for Simulated {
    fn containerizer(&self) -> Arc<dyn Containerizer> {
        self.c.clone()
    }
    fn restarted(&self) -> Arc<dyn Containerizer> {
        Arc::new(self.machines.containerizer("m1"))
    }
    fn argv(&self, b: Behavior, _task_id: &str) -> Vec<String> {
        let words = match b {
            Behavior::Exit(c) => vec!["exit".to_string(), c.to_string()],
            Behavior::Forever => vec!["forever".into()],
            Behavior::IgnoreTerm => vec!["ignore-term".into()],
            Behavior::OverMemory => vec!["oom".into()],
            Behavior::OverDisk => vec!["over-disk".into()],
            Behavior::ForkLoop => vec!["fork-loop".into()],
            Behavior::Missing => vec!["missing".into()],
        };
        std::iter::once("sim".to_string()).chain(words).collect()
    }
    fn enforces_memory(&self) -> bool {
        true
    }
    fn enforces_pids(&self) -> bool {
        true
    }
    fn started<'a>(&'a self, _: &'a ContainerInfo) -> BoxFuture<'a, ()> {
        // A simulated process runs from its launch on.
        Box::pin(async {})
    }
}

#[tokio::test(start_paused = true)]
async fn the_simulated_containerizer_keeps_the_contract() {
    let net = SimNetwork::new(1, SimFaults::default());
    let machines = Machines::new(1, 0.0, Recorder::new(net));
    let c: Arc<dyn Containerizer> = Arc::new(machines.containerizer("m1"));
    let s = Simulated { machines, c };
    assert!(
        conformance::run_all(&s).await,
        "the memory limit was checked"
    );
}
