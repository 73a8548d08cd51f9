//! The containerizer contract (`plexus_kernel::containerizer::conformance`) on the
//! process containerizer: real processes, the real shim, cgroups where the machine has
//! them. `simulations/tests/conformance.rs` runs the same suite on the simulated one.

use std::sync::Arc;

use plexus_kernel::containerizer::cgroups::CgroupMode;
use plexus_kernel::containerizer::conformance::{self, Behavior, Subject};
use plexus_kernel::containerizer::{BoxFuture, ContainerInfo, Containerizer, ProcessContainerizer};

struct Processes {
    dir: tempfile::TempDir,
    mode: CgroupMode,
    c: Arc<ProcessContainerizer>,
}

impl Processes {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let agent = format!("conf-{}", dir.path().file_name().unwrap().to_string_lossy());
        let mode = CgroupMode::detect(&agent);
        let c = Arc::new(Self::make(&dir, &mode));
        Processes { dir, mode, c }
    }

    fn make(dir: &tempfile::TempDir, mode: &CgroupMode) -> ProcessContainerizer {
        ProcessContainerizer::new(
            dir.path().join("sandboxes"),
            vec![env!("CARGO_BIN_EXE_plexus-kernel-shim").into()],
            mode.clone(),
        )
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.mode.remove_base();
    }
}

impl Subject for Processes {
    fn containerizer(&self) -> Arc<dyn Containerizer> {
        self.c.clone()
    }
    fn restarted(&self) -> Arc<dyn Containerizer> {
        Arc::new(Self::make(&self.dir, &self.mode))
    }
    fn argv(&self, b: Behavior) -> Vec<String> {
        let sh = |script: &str| vec!["/bin/sh".into(), "-c".into(), script.into()];
        match b {
            Behavior::Exit(c) => sh(&format!("exit {c}")),
            // `ready` in the sandbox says the command runs (see `started`).
            Behavior::Forever => sh("touch ready; exec sleep 3600"),
            // The ignored signal is inherited by the sleep it runs.
            Behavior::IgnoreTerm => sh("trap '' TERM; touch ready; sleep 3600"),
            Behavior::OverMemory => {
                sh("python3 -c 'a = bytearray(400 * 1024 * 1024); import time; time.sleep(10)'")
            }
            Behavior::Missing => vec!["plexus-no-such-command".into()],
        }
    }
    fn started<'a>(&'a self, info: &'a ContainerInfo) -> BoxFuture<'a, ()> {
        let ready = info.sandbox.join("ready");
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + conformance::END_TIMEOUT;
            while !ready.exists() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} never started",
                    info.task_id
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    }
    fn enforces_memory(&self) -> bool {
        match &self.mode {
            CgroupMode::Unavailable { why } => {
                eprintln!("no cgroups here, the memory limit is not checked: {why}");
                false
            }
            _ => true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_containerizer_keeps_the_contract() {
    conformance::run_all(&Processes::new()).await;
}
