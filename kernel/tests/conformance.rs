//! The containerizer contract (`plexus_kernel::containerizer::conformance`) on the
//! process containerizer: real processes, the real shim, cgroups where the machine has
//! them. `simulations/tests/conformance.rs` runs the same suite on the simulated one.

mod common;

use std::sync::Arc;

use plexus_kernel::containerizer::cgroups::CgroupMode;
use plexus_kernel::containerizer::conformance::{self, Behavior, Subject};
use plexus_kernel::containerizer::{
    BoxFuture, ContainerInfo, Containerizer, ProcessContainerizer, TaskLimits,
};

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
        .with_limits(TaskLimits {
            max_pids: Some(64),
            check_interval_ms: 20,
            disk_check_interval_ms: 20,
            ..TaskLimits::default()
        })
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.mode.remove_base();
    }
}

impl Processes {
    /// The FIFO on which task `task_id` says it runs (made on first use).
    fn ready(&self, task_id: &str) -> String {
        let name = format!("{task_id}.ready");
        let p = self.dir.path().join(&name);
        if !p.exists() {
            common::fifo(self.dir.path(), &name);
        }
        p.display().to_string()
    }
}

impl Subject for Processes {
    fn containerizer(&self) -> Arc<dyn Containerizer> {
        self.c.clone()
    }
    fn restarted(&self) -> Arc<dyn Containerizer> {
        Arc::new(Self::make(&self.dir, &self.mode))
    }
    fn argv(&self, b: Behavior, task_id: &str) -> Vec<String> {
        let sh = |script: &str| vec!["/bin/sh".into(), "-c".into(), script.into()];
        match b {
            Behavior::Exit(c) => sh(&format!("exit {c}")),
            // A line on the task's FIFO says the command runs (see `started`).
            Behavior::Forever => sh(&format!("echo > {}; exec sleep 3600", self.ready(task_id))),
            // The ignored signal is inherited by the sleep it runs.
            Behavior::IgnoreTerm => sh(&format!(
                "trap '' TERM; echo > {}; sleep 3600",
                self.ready(task_id)
            )),
            Behavior::OverMemory => {
                sh("python3 -c 'a = bytearray(400 * 1024 * 1024); import time; time.sleep(10)'")
            }
            Behavior::OverDisk => sh("head -c 30000000 /dev/zero > big; exec sleep 3600"),
            Behavior::ForkLoop => sh("while :; do sleep 3600 & done"),
            Behavior::Missing => vec!["plexus-no-such-command".into()],
        }
    }
    fn started<'a>(&'a self, info: &'a ContainerInfo) -> BoxFuture<'a, ()> {
        let fifo = self.dir.path().join(format!("{}.ready", info.task_id));
        Box::pin(async move {
            common::read_line(&fifo).await;
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
    fn enforces_pids(&self) -> bool {
        let pids = match &self.mode {
            CgroupMode::V1 { pids, .. } => pids.is_some(),
            CgroupMode::V2 { base } => std::fs::read_to_string(base.join("cgroup.subtree_control"))
                .is_ok_and(|t| t.split_whitespace().any(|c| c == "pids")),
            CgroupMode::Unavailable { .. } => false,
        };
        if !pids {
            eprintln!("no pids controller here, the fork limit is not checked");
        }
        pids
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_containerizer_keeps_the_contract() {
    conformance::run_all(&Processes::new()).await;
}
