//! The containerizer: launches tasks as isolated OS processes and reports how they end.
//!
//! [`Containerizer`] is the trait the agent uses; [`ProcessContainerizer`] is the real
//! one: each task gets a sandbox directory (`stdout`, `stderr`), runs under a [`shim`]
//! (forked by the agent's [`forkserver`] launcher) in its own process group, in its own
//! cgroup (v1 or v2) with cpu and memory limits, or with an rlimit when the machine has no
//! usable cgroups. Exits are awaited through a pidfd, so a restarted agent re-adopts
//! running tasks ([`Containerizer::is_running`], [`Containerizer::wait`]), still learns
//! their exit status from the sandbox, and stops what it has no record of
//! ([`Containerizer::destroy_orphans`]). The simulator provides its own implementation.

pub mod cgroups;
pub mod conformance;
pub mod forkserver;
pub mod logs;
pub mod shim;
mod spawn;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::reason::Reason;
use crate::resources::Resources;
use crate::task::TaskState;
use cgroups::{CgroupMode, TaskCgroup};
use forkserver::Launcher;
use logs::LogLimits;
use shim::{ExitRecord, Limit, ShimArgs, WatchLimits};
use tracing::{info, warn};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors of launching.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ContainerError {
    /// The sandbox or cgroup could not be prepared, or the shim not started.
    #[error("launch of task {task} failed: {reason}")]
    Launch {
        /// The task.
        task: String,
        /// Why.
        reason: String,
    },
    /// The command is not an executable file, or not found in the agent's `PATH`.
    #[error("launch of task {task} failed: command {command:?} {why}")]
    NotFound {
        /// The task.
        task: String,
        /// The command (`argv[0]`).
        command: String,
        /// `not found in PATH`, or what else is wrong with it.
        why: String,
    },
}

impl ContainerError {
    /// The shell's exit code for this failure: 127 for a command not found, else 126
    /// (found but could not be run).
    pub fn exit_code(&self) -> i32 {
        match self {
            ContainerError::NotFound { .. } => 127,
            ContainerError::Launch { .. } => 126,
        }
    }
}

/// The shell-style exit code of an exit: its status, 128 + N for signal N, 126 when the
/// shim could not start the command; `None` when the shim recorded nothing.
pub fn exit_code(exit: &ExitInfo) -> Option<i32> {
    match exit.record.as_ref()? {
        ExitRecord::Exited(c) => Some(*c),
        ExitRecord::Signaled(s) => Some(128 + s),
        ExitRecord::LaunchFailed(_) => Some(126),
        ExitRecord::Limited(..) => Some(128 + libc::SIGKILL),
    }
}

/// What to launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Unique task id.
    pub task_id: String,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Its resource limits.
    pub resources: Resources,
    /// The OS user it runs as (`None`: the agent's default task user).
    pub user: Option<String>,
    /// Variables added to the command's environment (they may hold secrets: they reach
    /// the command through a file only root can read, never through a command line).
    pub env: Vec<(String, String)>,
}

/// What the agent checkpoints about a launched task to re-adopt it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// The task.
    pub task_id: String,
    /// Its sandbox.
    pub sandbox: PathBuf,
    /// The shim's pid.
    pub shim_pid: u32,
    /// Its cgroup directories (empty with rlimits).
    pub cgroups: Vec<PathBuf>,
    /// True for cgroup v2.
    pub cgroup_v2: bool,
}

impl ContainerInfo {
    fn cgroup(&self) -> Option<TaskCgroup> {
        (!self.cgroups.is_empty()).then(|| TaskCgroup {
            v2: self.cgroup_v2,
            dirs: self.cgroups.clone(),
        })
    }
}

/// How a task's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// What the shim recorded (`None`: the shim itself died without recording).
    pub record: Option<ExitRecord>,
    /// The kernel OOM-killed a process of the task.
    pub oom_killed: bool,
}

/// The task state, reason and message for an exit; `killing` when the agent was killing it.
pub fn classify(exit: &ExitInfo, killing: bool) -> (TaskState, Option<Reason>, String) {
    let limited = matches!(exit.record, Some(ExitRecord::Limited(..)));
    if exit.oom_killed && !limited {
        return (
            TaskState::Failed,
            Some(Reason::ContainerLimitationMemory),
            "memory limit exceeded: the task was OOM-killed".into(),
        );
    }
    match &exit.record {
        // The shim ended the task at the first limit it crossed.
        Some(ExitRecord::Limited(limit, text)) => {
            let reason = match limit {
                Limit::Memory => Reason::ContainerLimitationMemory,
                Limit::Disk => Reason::ContainerLimitationDisk,
                Limit::Pids => Reason::ContainerLimitation,
            };
            (TaskState::Failed, Some(reason), text.clone())
        }
        Some(ExitRecord::Exited(0)) => (
            TaskState::Finished,
            None,
            "command exited with status 0".into(),
        ),
        Some(ExitRecord::Exited(c)) if killing => (
            TaskState::Killed,
            Some(Reason::TaskKilled),
            format!("killed; command exited with status {c}"),
        ),
        Some(ExitRecord::Exited(c)) => (
            TaskState::Failed,
            Some(Reason::CommandExecutorFailed),
            format!("command exited with status {c}"),
        ),
        Some(ExitRecord::Signaled(s)) if killing => (
            TaskState::Killed,
            Some(Reason::TaskKilled),
            format!("killed by signal {s}"),
        ),
        Some(ExitRecord::Signaled(s)) => (
            TaskState::Failed,
            Some(Reason::CommandExecutorFailed),
            format!("command terminated by signal {s}"),
        ),
        Some(ExitRecord::LaunchFailed(t)) => (
            TaskState::Failed,
            Some(Reason::ContainerLaunchFailed),
            format!("launch failed: {t}"),
        ),
        None if killing => (TaskState::Killed, Some(Reason::TaskKilled), "killed".into()),
        None => (
            TaskState::Failed,
            Some(Reason::CommandExecutorFailed),
            "the task's shim ended without recording an exit status".into(),
        ),
    }
}

/// Launches, watches and kills task processes.
pub trait Containerizer: Send + Sync + 'static {
    /// How tasks are isolated here (for logs and the API).
    fn isolation(&self) -> String;
    /// Starts a task.
    /// The future owns what it needs, so launches can run side by side.
    fn launch(&self, spec: LaunchSpec)
        -> BoxFuture<'static, Result<ContainerInfo, ContainerError>>;
    /// Resolves when the task's process has ended (also for re-adopted tasks).
    fn wait(&self, info: &ContainerInfo) -> BoxFuture<'static, ExitInfo>;
    /// Asks the task to stop (SIGTERM), then forces it (SIGKILL) after `grace`.
    fn kill(&self, info: &ContainerInfo, grace: Duration) -> BoxFuture<'static, ()>;
    /// True when the task's process still runs (checked when re-adopting).
    fn is_running(&self, info: &ContainerInfo) -> bool;
    /// Frees what the task held (its cgroup, once what the task left running died);
    /// resolves when it is freed. The sandbox stays for its logs.
    fn destroy(&self, info: &ContainerInfo) -> BoxFuture<'static, ()>;
    /// The sandbox of a task (also after it ended), if it has one.
    fn sandbox_of(&self, task_id: &str) -> Option<PathBuf>;
    /// Sets a running task's cpu and memory limits to `resources` (a pre-started
    /// executor taking on an actor task). Without cgroups there is nothing to change.
    fn resize(&self, _info: &ContainerInfo, _resources: &Resources) -> Result<(), String> {
        Ok(())
    }
    /// Stops and frees, in the background, whatever this agent launched (it has their
    /// sandboxes) for tasks other than `known`: tasks launched just before a crash but
    /// never checkpointed. Called once when the agent starts.
    fn destroy_orphans(&self, _known: Vec<ContainerInfo>) {}
}

/// What every task of a containerizer is held to besides its resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskLimits {
    /// Most processes and threads of one task (`None`: no limit).
    pub max_pids: Option<u64>,
    /// How much of each task's stdout and stderr is kept.
    pub logs: LogLimits,
    /// Free space kept on the sandboxes' file system for the agent's own state, MB: no
    /// task starts below it, and output is dropped rather than written.
    pub disk_floor_mb: u64,
    /// Time between checks of a task's OOM and fork counters.
    pub check_interval_ms: u64,
    /// Time between measurements of a task's sandbox against its `disk`.
    pub disk_check_interval_ms: u64,
}

impl Default for TaskLimits {
    fn default() -> Self {
        let watch = WatchLimits::default();
        TaskLimits {
            max_pids: Some(4096),
            logs: shim::DEFAULT_LOGS,
            disk_floor_mb: 256,
            check_interval_ms: watch.check_interval_ms,
            disk_check_interval_ms: watch.disk_check_interval_ms,
        }
    }
}

/// Times a task cgroup's removal is tried, with growing pauses (about 1.5 s in all).
const CGROUP_REMOVE_ATTEMPTS: u32 = 10;

/// Launches in flight at once (each holds a blocking thread while the shim starts).
const LAUNCH_PARALLELISM: usize = 16;

/// The real containerizer: OS processes, sandboxes, cgroups.
#[derive(Debug, Clone)]
pub struct ProcessContainerizer {
    sandboxes: PathBuf,
    shim: Vec<OsString>,
    cgroups: CgroupMode,
    launching: Arc<tokio::sync::Semaphore>,
    /// Whether shims are forked by a launcher.
    use_launcher: bool,
    /// The launcher forking shims, started on the first launch.
    launcher: Arc<Mutex<Option<Launcher>>>,
    /// Pidfds of the shims this containerizer started, by task, until destroyed.
    pidfds: Arc<Mutex<BTreeMap<String, Arc<OwnedFd>>>>,
    /// The user and group tasks run as (`None`: the agent's own).
    task_ids: Option<(u32, u32)>,
    /// Limits beside each task's resources.
    limits: TaskLimits,
}

/// The user id and primary group of the user `name` (or `UID:GID` given as numbers).
pub fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    if let Some((u, g)) = name.split_once(':') {
        if let (Ok(u), Ok(g)) = (u.parse(), g.parse()) {
            return Ok((u, g));
        }
    }
    let c =
        std::ffi::CString::new(name).map_err(|_| format!("user {name:?} contains a NUL byte"))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwnam_r fills it with
    // pointers into `buf`, which outlives the only fields read (numbers).
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc =
        unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return Err(format!("no user {name:?} on this machine"));
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a fresh fd we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Blocks until `fd` (a pidfd: its process ended) is readable or `deadline` passes.
fn wait_readable(fd: &OwnedFd, deadline: std::time::Instant) {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // SAFETY: poll on one pollfd for an fd we own, for at most `left`.
        let n = unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
        if n != -1 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// The shim's file `name` of the task with `sandbox`: in its meta directory, or (for a
/// task started before there was one, and only then) in the sandbox's `.plexus`.
fn record_file(sandbox: &Path, name: &str) -> PathBuf {
    let meta = shim::meta_dir(sandbox);
    if meta.is_dir() {
        meta.join(name)
    } else {
        sandbox.join(shim::META_DIR).join(name)
    }
}

fn read_exit(sandbox: &Path) -> Option<ExitRecord> {
    ExitRecord::parse(&shim::read_record(&record_file(sandbox, shim::EXIT_FILE))?)
}

fn read_pid(sandbox: &Path) -> Option<i32> {
    shim::read_record(&record_file(sandbox, shim::PID_FILE))?
        .parse()
        .ok()
}

/// Longest a kill waits for the shim to record the pid of a command it is starting.
const PID_RECORD_WAIT: Duration = Duration::from_secs(1);

/// The task's recorded pid (its process group), waiting up to `wait` for the shim to
/// record it: the command may already run (it runs before its shim goes on) when a kill
/// comes right after it started. 0 if there is none.
async fn recorded_pid(sandbox: &Path, wait: Duration) -> i32 {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(p) = read_pid(sandbox) {
            return p;
        }
        if tokio::time::Instant::now() >= deadline {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) on a process group the shim created for this task.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

impl ProcessContainerizer {
    /// A containerizer keeping sandboxes under `sandboxes`, starting tasks through the
    /// shim program `shim` (program and leading arguments, e.g. `[plexus, __shim]`),
    /// isolating them as `cgroups` allows.
    pub fn new(sandboxes: PathBuf, shim: Vec<OsString>, cgroups: CgroupMode) -> Self {
        ProcessContainerizer {
            sandboxes,
            shim,
            cgroups,
            launching: Arc::new(tokio::sync::Semaphore::new(LAUNCH_PARALLELISM)),
            use_launcher: true,
            launcher: Arc::new(Mutex::new(None)),
            pidfds: Arc::new(Mutex::new(BTreeMap::new())),
            task_ids: None,
            limits: TaskLimits::default(),
        }
    }

    /// Holds every task to `limits` besides its resources.
    pub fn with_limits(mut self, limits: TaskLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Tasks run as `ids` (user, group): their sandboxes are theirs (mode 0700), and
    /// nothing else of the agent's is (its keys and state are root's, 0600/0700).
    pub fn with_task_ids(mut self, ids: (u32, u32)) -> Self {
        self.task_ids = Some(ids);
        self
    }

    /// The user and group a task asking for `user` runs as (`None`: the agent's own).
    /// The master's ACLs decided that the task may ask for it; here it must exist, and
    /// only the name `root` itself may mean the superuser.
    fn ids_for(&self, user: Option<&str>) -> Result<Option<(u32, u32)>, String> {
        let Some(user) = user else {
            return Ok(self.task_ids);
        };
        let ids = lookup_user(user)?;
        if ids.0 == 0 && user != "root" {
            return Err(format!("user {user:?} is the superuser by another name"));
        }
        if self.task_ids.is_none() {
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if ids.0 != me {
                return Err(format!(
                    "the agent does not run as root, so it runs tasks only as itself (uid {me}), not as user {user:?}"
                ));
            }
            return Ok(None);
        }
        Ok(Some(ids))
    }

    /// Has the launcher fork a shim for `args` (starting or restarting the launcher as
    /// needed); returns the shim's pid and pidfd.
    fn fork_shim(&self, args: &ShimArgs) -> std::io::Result<(u32, OwnedFd)> {
        let mut guard = self.launcher.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        for _ in 0..2 {
            let l = match guard.as_mut() {
                Some(l) => l,
                None => guard.insert(Launcher::start(&self.shim)?),
            };
            match l.launch(args) {
                Ok(r) => return r,
                Err(e) => {
                    // The launcher died or spoke nonsense: replace it once.
                    *guard = None;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no launcher")))
    }

    /// The pid of the launcher forking this containerizer's shims, while one runs.
    pub fn launcher_pid(&self) -> Option<u32> {
        self.launcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Launcher::pid)
    }

    /// This agent's task cgroups other than those of `known`.
    fn orphans(&self, known: &[ContainerInfo]) -> Vec<TaskCgroup> {
        let v2 = matches!(self.cgroups, CgroupMode::V2 { .. });
        let bases = self.cgroups.bases();
        let known: BTreeSet<&PathBuf> = known.iter().flat_map(|i| &i.cgroups).collect();
        let mut names = BTreeSet::new();
        for base in &bases {
            for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
                // Only tasks this agent launched (they have a sandbox here): another agent
                // of the same name on this machine, with other state, is left alone.
                if e.file_type().is_ok_and(|t| t.is_dir())
                    && !known.contains(&e.path())
                    && self.sandboxes.join(e.file_name()).is_dir()
                {
                    names.insert(e.file_name());
                }
            }
        }
        names
            .into_iter()
            .map(|name| TaskCgroup {
                v2,
                dirs: bases
                    .iter()
                    .map(|b| b.join(&name))
                    .filter(|d| d.is_dir())
                    .collect(),
            })
            .collect()
    }

    /// Kills what runs in `cg` and waits (up to 5 s) for it to end, again should one
    /// have forked meanwhile; then removes the cgroup. True once it is gone. Blocks.
    fn kill_and_remove(cg: &TaskCgroup) -> bool {
        for _ in 0..5 {
            let pids = cg.pids();
            if pids.is_empty() {
                break;
            }
            let fds: Vec<OwnedFd> = pids.iter().filter_map(|p| pidfd(*p as u32)).collect();
            cg.destroy();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            for fd in &fds {
                wait_readable(fd, deadline);
            }
        }
        cg.destroy();
        cg.dirs.iter().all(|d| !d.exists())
    }

    /// Kills what runs in `cg` and removes it, trying again a few times: a cgroup whose
    /// last process just ended may refuse removal for a moment. True once it is gone.
    async fn remove_cgroup(cg: TaskCgroup) -> bool {
        for attempt in 0..CGROUP_REMOVE_ATTEMPTS {
            let c = cg.clone();
            match tokio::task::spawn_blocking(move || Self::kill_and_remove(&c)).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => warn!("removing a task cgroup: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(5 << attempt.min(6))).await;
        }
        warn!(cgroup = ?cg.dirs, "a task cgroup could not be removed");
        false
    }

    /// Kills what runs in this agent's task cgroups other than those of `known` and
    /// removes those cgroups; returns the cgroups removed (their first directory).
    pub async fn destroy_orphans_now(&self, known: &[ContainerInfo]) -> Vec<PathBuf> {
        Self::remove_all(self.orphans(known)).await
    }

    async fn remove_all(cgroups: Vec<TaskCgroup>) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for cg in cgroups {
            let first = cg.dirs.first().cloned();
            if Self::remove_cgroup(cg).await {
                removed.extend(first);
            }
        }
        removed
    }

    /// Starts every shim as a program of its own instead of forking it from a launcher
    /// (slower; for shim programs that cannot serve).
    pub fn without_launcher(mut self) -> Self {
        self.use_launcher = false;
        self
    }

    /// Starts the shim as a program of its own (when no launcher can be used).
    fn spawn_shim(&self, args: &ShimArgs) -> std::io::Result<u32> {
        let log = std::fs::File::create(shim::meta_dir(&args.sandbox).join("shim.log"))?;
        let mut cmd = std::process::Command::new(&self.shim[0]);
        cmd.args(&self.shim[1..])
            .args(args.to_args())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .process_group(0);
        // Not waited on here: `wait` watches the shim through a pidfd and reaps it.
        Ok(cmd.spawn()?.id())
    }

    /// The cgroup mode in use.
    pub fn cgroup_mode(&self) -> &CgroupMode {
        &self.cgroups
    }

    fn launch_blocking(&self, spec: LaunchSpec) -> Result<ContainerInfo, ContainerError> {
        let fail = |reason: String| ContainerError::Launch {
            task: spec.task_id.clone(),
            reason,
        };
        if spec.argv.is_empty() || spec.argv[0].is_empty() {
            return Err(fail("empty command".into()));
        }
        // The id names the sandbox: one path component of its own, never `.meta`.
        let id = &spec.task_id;
        if id.is_empty() || id.contains('/') || id.contains('\0') || id.starts_with('.') {
            return Err(fail(format!(
                "task id {id:?} cannot name a sandbox (empty, starts with `.`, or holds `/`)"
            )));
        }
        let task_ids = self.ids_for(spec.user.as_deref()).map_err(&fail)?;
        // A command that cannot be found fails the launch, before the task is RUNNING.
        // (The shim looks it up again in the same PATH when it starts it.)
        let task_path = task_ids.map(|_| std::ffi::OsStr::new(spawn::TASK_USER_PATH));
        spawn::resolve(std::ffi::OsStr::new(&spec.argv[0]), task_path).map_err(|e| {
            ContainerError::NotFound {
                task: spec.task_id.clone(),
                command: spec.argv[0].clone(),
                why: e.to_string(),
            }
        })?;
        let floor_mb = self.limits.disk_floor_mb;
        std::fs::create_dir_all(&self.sandboxes)
            .map_err(|e| fail(format!("sandboxes {}: {e}", self.sandboxes.display())))?;
        match shim::free_mb(&self.sandboxes) {
            Some(free_mb) if free_mb < floor_mb => {
                return Err(fail(format!(
                    "the agent's disk has {free_mb} MB free, below its floor of {floor_mb} MB"
                )))
            }
            _ => {}
        }
        let sandbox = self.sandboxes.join(&spec.task_id);
        std::fs::create_dir_all(&sandbox)
            .map_err(|e| fail(format!("sandbox {}: {e}", sandbox.display())))?;
        // The shim's records live where the task cannot reach (root's, 0700).
        let meta = shim::meta_dir(&sandbox);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&meta)
            .map_err(|e| fail(format!("task records {}: {e}", meta.display())))?;
        if !spec.env.is_empty() {
            let path = meta.join(shim::ENV_FILE);
            let text = String::from_utf8(shim::encode_env(&spec.env))
                .map_err(|e| fail(format!("task environment: {e}")))?;
            plexus_net::tls::write_private(&path, &text)
                .map_err(|e| fail(format!("task environment {}: {e}", path.display())))?;
        }
        if let Some((uid, gid)) = task_ids {
            use std::os::unix::fs::PermissionsExt;
            std::os::unix::fs::chown(&sandbox, Some(uid), Some(gid))
                .and_then(|()| {
                    std::fs::set_permissions(&sandbox, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| fail(format!("sandbox {} for uid {uid}: {e}", sandbox.display())))?;
        }
        let cg = match &self.cgroups {
            CgroupMode::Unavailable { .. } => None,
            mode => Some(
                mode.create(
                    &spec.task_id,
                    spec.resources.cpus_milli,
                    spec.resources.mem_mb,
                    self.limits.max_pids,
                )
                .map_err(|e| fail(format!("cgroup: {e}")))?,
            ),
        };
        let args = ShimArgs {
            sandbox: sandbox.clone(),
            cgroup: cg.clone(),
            rlimit_as: cg
                .is_none()
                .then(|| spec.resources.mem_mb.max(16) * 1024 * 1024),
            ids: task_ids,
            logs: self.limits.logs,
            watch: WatchLimits {
                disk_mb: (spec.resources.disk_mb > 0).then_some(spec.resources.disk_mb),
                disk_floor_mb: floor_mb,
                check_interval_ms: self.limits.check_interval_ms,
                disk_check_interval_ms: self.limits.disk_check_interval_ms,
            },
            argv: spec.argv.iter().map(OsString::from).collect(),
        };
        let started = match self.use_launcher.then(|| self.fork_shim(&args)) {
            Some(Ok((pid, fd))) => {
                self.pidfds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(spec.task_id.clone(), Arc::new(fd));
                Ok(pid)
            }
            Some(Err(e)) => {
                warn!(task = %spec.task_id, "the launcher failed ({e}); starting the shim directly");
                self.spawn_shim(&args)
            }
            None => self.spawn_shim(&args),
        };
        let shim_pid = started.map_err(|e| {
            if let Some(c) = &cg {
                c.destroy();
            }
            fail(format!("starting the shim {:?}: {e}", self.shim[0]))
        })?;
        Ok(ContainerInfo {
            task_id: spec.task_id,
            sandbox,
            shim_pid,
            cgroups: cg.as_ref().map(|c| c.dirs.clone()).unwrap_or_default(),
            cgroup_v2: cg.is_some_and(|c| c.v2),
        })
    }
}

impl Containerizer for ProcessContainerizer {
    fn isolation(&self) -> String {
        self.cgroups.describe()
    }

    fn resize(&self, info: &ContainerInfo, resources: &Resources) -> Result<(), String> {
        match info.cgroup() {
            Some(cg) => cg
                .resize(resources.cpus_milli, resources.mem_mb)
                .map_err(|e| format!("resizing {}: {e}", info.task_id)),
            None => Ok(()),
        }
    }

    fn launch(
        &self,
        spec: LaunchSpec,
    ) -> BoxFuture<'static, Result<ContainerInfo, ContainerError>> {
        let me = self.clone();
        Box::pin(async move {
            let task = spec.task_id.clone();
            let _permit = me.launching.clone().acquire_owned().await;
            // Starting a process blocks until the child has exec'd: keep it off the runtime,
            // so the agent stays responsive and launches overlap.
            tokio::task::spawn_blocking(move || me.launch_blocking(spec))
                .await
                .unwrap_or_else(|e| {
                    Err(ContainerError::Launch {
                        task,
                        reason: format!("launcher thread: {e}"),
                    })
                })
        })
    }

    fn wait(&self, info: &ContainerInfo) -> BoxFuture<'static, ExitInfo> {
        let info = info.clone();
        // The pidfd from the launch when there is one: the pid may be reaped already.
        let known = self
            .pidfds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&info.task_id)
            .and_then(|fd| fd.try_clone().ok());
        Box::pin(async move {
            if let Some(fd) = known.or_else(|| pidfd(info.shim_pid)) {
                // SAFETY: `fd` is an open pidfd owned by the AsyncFd for its whole life.
                let afd = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        fd,
                        tokio::io::Interest::READABLE,
                    )
                };
                if let Ok(afd) = afd {
                    if let Err(e) = afd.readable().await {
                        warn!("waiting on a task's pidfd: {e}");
                    }
                    // Reap it if it is our child (a re-adopted shim is not: ECHILD).
                    // SAFETY: waitid on a pidfd we own, into a zeroed siginfo.
                    unsafe {
                        let mut si: libc::siginfo_t = std::mem::zeroed();
                        libc::waitid(
                            libc::P_PIDFD,
                            afd.get_ref().as_raw_fd() as libc::id_t,
                            &mut si,
                            libc::WEXITED | libc::WNOHANG,
                        );
                    }
                }
            }
            // The shim writes its record before exiting; a killed shim leaves none.
            let record = read_exit(&info.sandbox);
            ExitInfo {
                record,
                oom_killed: info.cgroup().is_some_and(|c| c.oom_killed()),
            }
        })
    }

    fn kill(&self, info: &ContainerInfo, grace: Duration) -> BoxFuture<'static, ()> {
        let info = info.clone();
        let waiter = self.wait(&info);
        Box::pin(async move {
            let pgid = recorded_pid(&info.sandbox, grace.min(PID_RECORD_WAIT)).await;
            signal_group(pgid, libc::SIGTERM);
            if tokio::time::timeout(grace, waiter).await.is_err() {
                // The shim may have started the task only since (a kill right after the
                // launch), or not at all yet: then it must not start it any more.
                let pgid = read_pid(&info.sandbox).unwrap_or(0);
                if pgid == 0 && info.shim_pid > 1 {
                    // SAFETY: kill(2) on our shim, which still runs (its waiter is pending).
                    unsafe {
                        libc::kill(info.shim_pid as i32, libc::SIGKILL);
                    }
                }
                signal_group(pgid, libc::SIGKILL);
                if let Some(c) = info.cgroup() {
                    // Everything else in the task's cgroup, but not the shim: it records
                    // how the task ended.
                    for pid in c.pids().into_iter().filter(|p| *p != info.shim_pid as i32) {
                        // SAFETY: kill(2) on a pid in the task's own cgroup.
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                }
            }
        })
    }

    fn is_running(&self, info: &ContainerInfo) -> bool {
        pidfd(info.shim_pid).is_some() && read_exit(&info.sandbox).is_none()
    }

    fn destroy(&self, info: &ContainerInfo) -> BoxFuture<'static, ()> {
        self.pidfds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&info.task_id);
        let cg = info.cgroup();
        Box::pin(async move {
            if let Some(cg) = cg {
                Self::remove_cgroup(cg).await;
            }
        })
    }

    fn destroy_orphans(&self, known: Vec<ContainerInfo>) {
        // Listed now, before any new launch makes a cgroup; killed in the background.
        let orphans = self.orphans(&known);
        if orphans.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for dir in Self::remove_all(orphans).await {
                info!(cgroup = %dir.display(), "destroyed an orphan task container");
            }
        });
    }

    fn sandbox_of(&self, task_id: &str) -> Option<PathBuf> {
        // Ids are not paths: no `/`, and none starting with `.` (`.meta` is not a task).
        let p = self.sandboxes.join(task_id);
        (!task_id.contains('/') && !task_id.starts_with('.') && p.is_dir()).then_some(p)
    }
}
