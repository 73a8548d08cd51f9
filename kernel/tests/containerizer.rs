//! The process containerizer with the real shim, sandboxes and cgroups.

use std::time::Duration;

use plexus_kernel::containerizer::cgroups::{CgroupMode, TaskCgroup};
use plexus_kernel::containerizer::conformance::ended_by;
use plexus_kernel::containerizer::logs::{self, LogLimits};
use plexus_kernel::containerizer::shim::{self, ExitRecord};
use plexus_kernel::containerizer::{
    classify, ContainerError, ContainerInfo, Containerizer, LaunchSpec, ProcessContainerizer,
    TaskLimits,
};
use plexus_kernel::reason::Reason;
use plexus_kernel::resources::Resources;
use plexus_kernel::task::TaskState;

struct Fixture {
    dir: tempfile::TempDir,
    c: ProcessContainerizer,
    mode: CgroupMode,
}

impl Fixture {
    fn new(cgroups: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let agent = format!("test-{}", dir.path().file_name().unwrap().to_string_lossy());
        let mode = if cgroups {
            CgroupMode::detect(&agent)
        } else {
            CgroupMode::Unavailable {
                why: "disabled for this test".into(),
            }
        };
        let c = ProcessContainerizer::new(
            dir.path().join("sandboxes"),
            vec![env!("CARGO_BIN_EXE_plexus-kernel-shim").into()],
            mode.clone(),
        );
        Fixture { dir, c, mode }
    }

    fn new_containerizer(&self) -> ProcessContainerizer {
        ProcessContainerizer::new(
            self.dir.path().join("sandboxes"),
            vec![env!("CARGO_BIN_EXE_plexus-kernel-shim").into()],
            self.mode.clone(),
        )
    }

    fn has_cgroups(&self) -> bool {
        if let CgroupMode::Unavailable { why } = &self.mode {
            eprintln!("cgroups unavailable here, so this test cannot check isolation: {why}");
            return false;
        }
        true
    }

    async fn launch(&self, id: &str, sh: &str, cpus: f64, mem: u64) -> ContainerInfo {
        self.c
            .launch(LaunchSpec {
                task_id: id.into(),
                argv: vec!["/bin/sh".into(), "-c".into(), sh.into()],
                resources: Resources::new(cpus, mem),
                user: None,
                env: Vec::new(),
            })
            .await
            .unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.mode.remove_base();
    }
}

async fn end(
    c: &ProcessContainerizer,
    info: &ContainerInfo,
    killing: bool,
) -> (TaskState, Option<Reason>, String) {
    let exit = tokio::time::timeout(Duration::from_secs(60), c.wait(info))
        .await
        .expect("the task ends");
    c.destroy(info).await;
    classify(&exit, killing)
}

#[tokio::test]
async fn exit_codes_map_to_states_and_output_lands_in_the_sandbox() {
    let f = Fixture::new(true);
    let ok = f.launch("ok", "echo hello; echo oops >&2", 0.5, 64).await;
    assert_eq!(end(&f.c, &ok, false).await.0, TaskState::Finished);
    assert_eq!(
        std::fs::read_to_string(ok.sandbox.join("stdout")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(ok.sandbox.join("stderr")).unwrap(),
        "oops\n"
    );
    let bad = f.launch("bad", "exit 3", 0.5, 64).await;
    let (st, _, msg) = end(&f.c, &bad, false).await;
    assert_eq!(st, TaskState::Failed);
    assert!(msg.contains("status 3"), "{msg}");
}

#[tokio::test]
async fn kill_sends_term_then_kill_after_grace() {
    let f = Fixture::new(true);
    let polite = f.launch("polite", "touch ready; sleep 100", 0.5, 64).await;
    let stubborn = f
        .launch(
            "stubborn",
            "trap '' TERM; touch ready; while :; do sleep 1; done",
            0.5,
            64,
        )
        .await;
    // Both shells run (and the stubborn one ignores SIGTERM) once their files exist.
    for info in [&polite, &stubborn] {
        wait_for_file(&info.sandbox.join("ready")).await;
    }
    f.c.kill(&polite, Duration::from_secs(30)).await;
    let (st, _, msg) = end(&f.c, &polite, true).await;
    assert_eq!(st, TaskState::Killed);
    assert!(msg.contains("signal 15"), "SIGTERM was enough: {msg}");
    f.c.kill(&stubborn, Duration::from_millis(500)).await;
    let (st, _, msg) = end(&f.c, &stubborn, true).await;
    assert_eq!(st, TaskState::Killed);
    assert!(msg.contains("signal 9"), "escalated to SIGKILL: {msg}");
}

async fn wait_for_file(p: &std::path::Path) {
    for _ in 0..1200 {
        if p.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", p.display());
}

#[tokio::test]
async fn a_kill_before_the_shim_started_the_task_keeps_it_from_starting() {
    let f = Fixture::new(true);
    // A shim that has not started the task yet (here: never will on its own) when the
    // kill comes, as after a launch on a loaded machine.
    let slow = ProcessContainerizer::new(
        f.dir.path().join("sandboxes"),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "while :; do sleep 0.05; done; exec \"$0\" \"$@\"".into(),
            env!("CARGO_BIN_EXE_plexus-kernel-shim").into(),
        ],
        f.mode.clone(),
    )
    .without_launcher();
    let info = slow
        .launch(LaunchSpec {
            task_id: "early".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), "sleep 100".into()],
            resources: Resources::new(0.1, 32),
            user: None,
            env: Vec::new(),
        })
        .await
        .unwrap();
    slow.kill(&info, Duration::from_millis(200)).await;
    // The shim is stopped after the grace period, so the task never starts.
    let (st, _, msg) = end(&slow, &info, true).await;
    assert_eq!(st, TaskState::Killed, "{msg}");
    assert!(!slow.is_running(&info));
    assert!(!shim::meta_dir(&info.sandbox).join(shim::PID_FILE).exists());
}

#[tokio::test]
async fn exceeding_memory_fails_with_the_memory_reason() {
    let f = Fixture::new(true);
    if !f.has_cgroups() {
        return;
    }
    let hog = f
        .launch(
            "hog",
            "python3 -c 'a = bytearray(400 * 1024 * 1024); import time; time.sleep(10)'",
            1.0,
            64,
        )
        .await;
    ended_by(&f.c, &hog, Reason::ContainerLimitationMemory).await;
}

#[tokio::test]
async fn a_resized_task_is_held_to_its_new_memory_limit() {
    let f = Fixture::new(true);
    if !f.has_cgroups() {
        return;
    }
    // A pre-started executor sized 512 MB takes on a 64 MB task: what it then takes
    // past 64 MB is the task's memory limit crossed.
    let t = f
        .launch(
            "resized",
            "until [ -e go ]; do sleep 0.05; done; python3 -c 'a = bytearray(200 * 1024 * 1024); import time; time.sleep(10)'",
            1.0,
            512,
        )
        .await;
    let cg = TaskCgroup {
        v2: t.cgroup_v2,
        dirs: t.cgroups.clone(),
    };
    assert_eq!(cg.mem_limit_bytes(), Some(512 << 20));
    f.c.resize(&t, &Resources::new(0.5, 64)).unwrap();
    assert_eq!(cg.mem_limit_bytes(), Some(64 << 20));
    // The task allocates once told to (it waits for this file in its sandbox).
    std::fs::write(t.sandbox.join("go"), "").unwrap();
    ended_by(&f.c, &t, Reason::ContainerLimitationMemory).await;
    // Growing works too (memory+swap is raised first).
    let u = f.launch("grown", "sleep 30", 1.0, 64).await;
    let cg = TaskCgroup {
        v2: u.cgroup_v2,
        dirs: u.cgroups.clone(),
    };
    f.c.resize(&u, &Resources::new(1.0, 256)).unwrap();
    assert_eq!(cg.mem_limit_bytes(), Some(256 << 20));
    f.c.kill(&u, Duration::from_secs(5)).await;
    assert_eq!(end(&f.c, &u, true).await.0, TaskState::Killed);
}

#[tokio::test]
async fn exceeding_cpu_is_throttled_not_killed() {
    let f = Fixture::new(true);
    if !f.has_cgroups() {
        return;
    }
    let spin = f.launch("spin", "while :; do :; done", 0.1, 64).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(f.c.is_running(&spin), "a cpu-hungry task keeps running");
    let cg = TaskCgroup {
        v2: spin.cgroup_v2,
        dirs: spin.cgroups.clone(),
    };
    assert!(cg.throttled_periods() > 0, "and is throttled");
    f.c.kill(&spin, Duration::from_secs(5)).await;
    assert_eq!(end(&f.c, &spin, true).await.0, TaskState::Killed);
}

#[tokio::test]
async fn a_new_containerizer_re_adopts_running_tasks() {
    let f = Fixture::new(true);
    let info = f.launch("long", "sleep 1; exit 7", 0.5, 64).await;
    // the agent restarts: a new containerizer, knowing only the checkpointed info
    let again = f.new_containerizer();
    assert!(again.is_running(&info));
    let exit = again.wait(&info).await;
    assert_eq!(exit.record, Some(ExitRecord::Exited(7)));
    again.destroy(&info).await;
    assert!(!again.is_running(&info));
}

#[tokio::test]
async fn bad_commands_fail_to_launch_with_a_reason() {
    let f = Fixture::new(true);
    let info =
        f.c.launch(LaunchSpec {
            task_id: "nope".into(),
            argv: vec!["/nonexistent/command".into()],
            resources: Resources::new(0.1, 32),
            user: None,
            env: Vec::new(),
        })
        .await
        .unwrap();
    ended_by(&f.c, &info, Reason::ContainerLaunchFailed).await;
    let empty =
        f.c.launch(LaunchSpec {
            task_id: "empty".into(),
            argv: vec![],
            resources: Resources::new(0.1, 32),
            user: None,
            env: Vec::new(),
        })
        .await;
    assert!(empty.unwrap_err().to_string().contains("empty command"));
}

#[tokio::test]
async fn without_cgroups_an_rlimit_bounds_memory() {
    let f = Fixture::new(false);
    assert!(f.c.isolation().contains("rlimits"));
    let hog = f
        .launch(
            "hog",
            "python3 -c 'a = bytearray(400 * 1024 * 1024)'",
            1.0,
            64,
        )
        .await;
    let (st, _, msg) = end(&f.c, &hog, false).await;
    assert_eq!(st, TaskState::Failed, "{msg}");
    let small = f
        .launch("small", "python3 -c 'a = bytearray(1024)'", 1.0, 256)
        .await;
    assert_eq!(end(&f.c, &small, false).await.0, TaskState::Finished);
}

#[tokio::test]
async fn a_launcher_that_died_is_replaced() {
    let f = Fixture::new(false);
    let first = f.launch("first", "exit 0", 0.1, 32).await;
    assert_eq!(end(&f.c, &first, false).await.0, TaskState::Finished);
    let pid = f.c.launcher_pid().expect("shims are forked by a launcher");
    // SAFETY: kill(2) on the launcher this containerizer started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let second = f.launch("second", "exit 4", 0.1, 32).await;
    let (st, _, msg) = end(&f.c, &second, false).await;
    assert_eq!(st, TaskState::Failed);
    assert!(msg.contains("status 4"), "{msg}");
    let now = f.c.launcher_pid().expect("a new launcher");
    assert_ne!(now, pid);
}

#[tokio::test]
async fn commands_are_found_in_path_and_run_in_their_sandbox() {
    let f = Fixture::new(true);
    let info =
        f.c.launch(LaunchSpec {
            task_id: "bare".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo \"$PLEXUS_SANDBOX\"; pwd; echo \"$HOME\"; read x || echo eof".into(),
            ],
            resources: Resources::new(0.1, 32),
            user: None,
            env: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(end(&f.c, &info, false).await.0, TaskState::Finished);
    let sandbox = info.sandbox.canonicalize().unwrap();
    let home = std::env::var("HOME").unwrap_or_default();
    assert_eq!(
        std::fs::read_to_string(info.sandbox.join("stdout")).unwrap(),
        format!(
            "{}\n{}\n{home}\neof\n",
            info.sandbox.display(),
            sandbox.display()
        ),
        "PLEXUS_SANDBOX and the agent's environment are set, the sandbox is the working \
         directory, stdin is empty"
    );
    // A command not found fails the launch itself, before anything runs.
    let missing =
        f.c.launch(LaunchSpec {
            task_id: "missing".into(),
            argv: vec!["no-such-command-anywhere".into()],
            resources: Resources::new(0.1, 32),
            user: None,
            env: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, ContainerError::NotFound { command, .. } if command == "no-such-command-anywhere"),
        "{missing}"
    );
    assert_eq!(missing.exit_code(), 127);
    assert!(
        missing.to_string().contains("not found in PATH"),
        "{missing}"
    );
}

#[tokio::test]
async fn a_restarted_agent_kills_tasks_it_does_not_know_and_removes_their_cgroups() {
    let f = Fixture::new(true);
    if !f.has_cgroups() {
        return;
    }
    let kept = f.launch("kept", "touch ready; sleep 100", 0.1, 32).await;
    let lost = f.launch("lost", "touch ready; sleep 100", 0.1, 32).await;
    for info in [&kept, &lost] {
        wait_for_file(&info.sandbox.join("ready")).await;
    }
    // The agent restarts and its checkpoint knows only `kept` (`lost` was launched
    // just before the crash).
    let again = f.new_containerizer();
    let known = vec![kept.clone()];
    let removed = again.destroy_orphans_now(&known).await;
    assert_eq!(removed, vec![lost.cgroups[0].clone()]);
    assert!(lost.cgroups.iter().all(|d| !d.exists()));
    let (_, _, msg) = end(&f.c, &lost, false).await;
    assert!(msg.contains("signal 9"), "{msg}");
    assert!(f.c.is_running(&kept), "a known task keeps running");
    f.c.kill(&kept, Duration::from_secs(5)).await;
    assert_eq!(end(&f.c, &kept, true).await.0, TaskState::Killed);
}

#[tokio::test]
async fn orphans_of_another_agent_with_other_state_are_left_alone() {
    let f = Fixture::new(true);
    if !f.has_cgroups() {
        return;
    }
    let theirs = f.launch("theirs", "touch ready; sleep 100", 0.1, 32).await;
    wait_for_file(&theirs.sandbox.join("ready")).await;
    // Same cgroup base (same agent name), but another state directory.
    let other_state = tempfile::tempdir().unwrap();
    let mine = ProcessContainerizer::new(
        other_state.path().join("sandboxes"),
        vec![env!("CARGO_BIN_EXE_plexus-kernel-shim").into()],
        f.mode.clone(),
    );
    let removed = mine.destroy_orphans_now(&[]).await;
    assert!(removed.is_empty(), "{removed:?}");
    assert!(f.c.is_running(&theirs));
    f.c.kill(&theirs, Duration::from_secs(5)).await;
    assert_eq!(end(&f.c, &theirs, true).await.0, TaskState::Killed);
}

/// A fixture whose containerizer holds tasks to `limits`, checked every 20 ms.
fn limited(limits: TaskLimits) -> Fixture {
    let mut f = Fixture::new(true);
    f.c = f.new_containerizer().with_limits(TaskLimits {
        check_interval_ms: 20,
        disk_check_interval_ms: 20,
        ..limits
    });
    f
}

#[tokio::test]
async fn a_fork_loop_is_stopped_by_the_pids_limit() {
    let f = limited(TaskLimits {
        max_pids: Some(32),
        ..TaskLimits::default()
    });
    if !f.has_cgroups() {
        return;
    }
    let bomb = f
        .launch("bomb", "while :; do sleep 1000 & done", 0.5, 64)
        .await;
    if !bomb.cgroups.iter().any(|d| d.join("pids.max").exists()) {
        eprintln!("no pids controller here: this test cannot check the limit");
        return;
    }
    let msg = ended_by(&f.c, &bomb, Reason::ContainerLimitation).await;
    assert!(msg.contains("pids limit of 32"), "{msg}");
    // Every process of the loop is gone with the task's cgroups.
    for d in &bomb.cgroups {
        assert!(!d.exists(), "{} is still there", d.display());
    }
}

#[tokio::test]
async fn a_gigabyte_of_output_leaves_only_the_configured_log_size_on_disk() {
    let max_bytes = 1 << 20;
    let f = limited(TaskLimits {
        logs: LogLimits {
            max_bytes,
            rotations: 1,
        },
        ..TaskLimits::default()
    });
    let gb = 1u64 << 30;
    let chatty = f
        .launch(
            "chatty",
            &format!("head -c {gb} /dev/zero; echo the end"),
            1.0,
            64,
        )
        .await;
    let (st, _, msg) = end(&f.c, &chatty, false).await;
    assert_eq!(st, TaskState::Finished, "{msg}");
    let stdout = chatty.sandbox.join("stdout");
    let files = logs::files_of(&stdout);
    let on_disk: u64 = files.iter().map(|p| p.metadata().unwrap().len()).sum();
    assert!(
        on_disk <= max_bytes,
        "{on_disk} bytes of output kept: {files:?}"
    );
    let (tail, start) = logs::read_across(&stdout, 0, u64::MAX).unwrap();
    assert_eq!(
        start + tail.len() as u64,
        gb + 8,
        "every byte passed through"
    );
    assert!(
        tail.ends_with(b"\0\0the end\n"),
        "the newest output is kept"
    );
}

#[tokio::test]
async fn writing_past_its_disk_ends_a_task_with_the_disk_reason() {
    let f = limited(TaskLimits::default());
    let filler =
        f.c.launch(LaunchSpec {
            task_id: "filler".into(),
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "head -c 30000000 /dev/urandom > big; touch wrote; sleep 1000".into(),
            ],
            resources: Resources {
                disk_mb: 10,
                ..Resources::new(0.5, 64)
            },
            user: None,
            env: Vec::new(),
        })
        .await
        .unwrap();
    let msg = ended_by(&f.c, &filler, Reason::ContainerLimitationDisk).await;
    assert!(msg.contains("task's disk of 10 MB"), "{msg}");
}

#[tokio::test]
async fn the_first_oom_kill_ends_the_task_even_if_its_main_process_lives_on() {
    let f = limited(TaskLimits::default());
    if !f.has_cgroups() {
        return;
    }
    // The hog is a child the kernel kills; the shell would go on sleeping.
    let hog = f
        .launch(
            "hog",
            "python3 -c 'a = bytearray(400 * 1024 * 1024)'; sleep 1000",
            1.0,
            64,
        )
        .await;
    let msg = ended_by(&f.c, &hog, Reason::ContainerLimitationMemory).await;
    assert!(msg.contains("OOM-killed"), "{msg}");
}

#[tokio::test]
async fn a_task_cgroup_is_removed_with_what_it_left_running_when_the_task_ends() {
    let f = Fixture::new(true);
    if !f.has_cgroups() {
        return;
    }
    let leaver = f
        .launch("leaver", "sleep 1000 & echo $! > bg", 0.1, 32)
        .await;
    assert_eq!(end(&f.c, &leaver, false).await.0, TaskState::Finished);
    for d in &leaver.cgroups {
        assert!(!d.exists(), "{} is still there", d.display());
    }
    let bg: i32 = std::fs::read_to_string(leaver.sandbox.join("bg"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill with signal 0 only asks whether the pid exists.
    let alive = unsafe { libc::kill(bg, 0) } == 0;
    let zombie = std::fs::read_to_string(format!("/proc/{bg}/stat"))
        .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"));
    assert!(!alive || zombie, "the task's background process was killed");
}
