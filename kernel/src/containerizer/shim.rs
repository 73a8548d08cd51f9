//! The task shim: a small process between the agent and a task's command.
//!
//! The agent has one shim per task started (forked by the [`super::forkserver`] launcher,
//! or as a program of its own), in its own process group. The shim starts the command in
//! a new process group inside the task's cgroups (or under an address-space rlimit when
//! there are none), records the command's pid, and stays with it until it ends:
//! - it copies the command's stdout and stderr from pipes into size-capped, rotated
//!   files in the sandbox ([`super::logs`]), dropping output rather than filling the
//!   disk below the agent's free-space floor;
//! - it watches the task's limits ([`WatchLimits`]): the first OOM kill, the first fork
//!   the `pids` limit refused, or a sandbox grown past the task's `disk` ends the whole
//!   task at once, and is recorded as its end ([`ExitRecord::Limited`]);
//! - it writes how the command ended to the sandbox. Because the status lands in a file,
//!   an agent that restarted meanwhile still learns how its task ended.
//!
//! This runs in its own process, outside any kernel logic, and outside the task's
//! cgroups: its work is not charged to the task, and an OOM kill never takes it.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroups::TaskCgroup;
use super::logs::{LogLimits, RotatingLog};
use super::spawn;

/// Directory inside a sandbox holding the shim's files.
pub const META_DIR: &str = ".plexus";
/// Directory beside the sandboxes (root's alone) holding each task's shim files, out of
/// the task's reach: a task owns its sandbox, and a record it could forge (the pid a kill
/// signals) would let it steer the agent.
pub const META_ROOT: &str = ".meta";

/// Where the shim files of the task with `sandbox` live: `SANDBOXES/.meta/TASK`.
pub fn meta_dir(sandbox: &Path) -> PathBuf {
    let name = sandbox.file_name().unwrap_or_default();
    sandbox
        .parent()
        .unwrap_or(Path::new("/"))
        .join(META_ROOT)
        .join(name)
}
/// File (in [`META_DIR`]) with variables for the command's environment, written by the
/// agent before the shim starts and removed by the shim once read.
pub const ENV_FILE: &str = "env";

/// The bytes of an [`ENV_FILE`]: `NAME=VALUE` entries, each ended by a NUL (values may
/// span lines, as PEM keys do).
pub fn encode_env(vars: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in vars {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Reads and removes the [`ENV_FILE`] in `meta`, if there is one.
fn take_env(meta: &Path) -> std::io::Result<Vec<(OsString, OsString)>> {
    use std::os::unix::ffi::OsStrExt;
    let path = meta.join(ENV_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    std::fs::remove_file(&path)?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let eq = e.iter().position(|b| *b == b'=')?;
            Some((
                std::ffi::OsStr::from_bytes(&e[..eq]).to_os_string(),
                std::ffi::OsStr::from_bytes(&e[eq + 1..]).to_os_string(),
            ))
        })
        .collect())
}

/// File (in [`META_DIR`]) with the command's pid.
pub const PID_FILE: &str = "pid";
/// File (in [`META_DIR`]) with the command's exit status.
pub const EXIT_FILE: &str = "exit";

/// What the shim was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    /// The task's sandbox (working directory; stdout, stderr and metadata live there).
    pub sandbox: PathBuf,
    /// The task's cgroup, which the command joins and the shim watches.
    pub cgroup: Option<TaskCgroup>,
    /// Address-space limit in bytes (used when there are no cgroups).
    pub rlimit_as: Option<u64>,
    /// The user and group the command runs as (`None`: the shim's own).
    pub ids: Option<(u32, u32)>,
    /// How much of stdout and stderr is kept.
    pub logs: LogLimits,
    /// What the shim enforces while the command runs.
    pub watch: WatchLimits,
    /// The command and its arguments.
    pub argv: Vec<OsString>,
}

/// Limits the shim checks while the command runs; the first one crossed ends the task
/// with a [`Limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// The task's `disk` in MB, enforced on its sandbox (`None`: not enforced).
    pub disk_mb: Option<u64>,
    /// Free space kept on the sandbox's file system for the agent's own state: below it,
    /// output is dropped rather than written.
    pub disk_floor_mb: u64,
    /// Time between checks of the cgroup's OOM and fork counters.
    pub check_interval_ms: u64,
    /// Time between measurements of the sandbox's disk use.
    pub disk_check_interval_ms: u64,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            disk_mb: None,
            disk_floor_mb: 0,
            check_interval_ms: 250,
            disk_check_interval_ms: 5000,
        }
    }
}

/// Default log limits: 20 MB per stream, in a live file and one rotation.
pub const DEFAULT_LOGS: LogLimits = LogLimits {
    max_bytes: 20 << 20,
    rotations: 1,
};

fn number<T: std::str::FromStr>(flag: &str, v: OsString) -> Result<T, String> {
    v.to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{flag} takes a number, not {v:?}"))
}

impl ShimArgs {
    /// Command-line arguments for the shim (after the shim program itself).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["--sandbox".into(), self.sandbox.clone().into()];
        let mut num = |flag: &str, n: u64| {
            v.push(flag.into());
            v.push(n.to_string().into());
        };
        num("--log-max-bytes", self.logs.max_bytes);
        num("--log-rotations", self.logs.rotations.into());
        num("--disk-floor-mb", self.watch.disk_floor_mb);
        num("--check-ms", self.watch.check_interval_ms);
        num("--disk-check-ms", self.watch.disk_check_interval_ms);
        if let Some(mb) = self.watch.disk_mb {
            num("--disk-mb", mb);
        }
        if let Some(b) = self.rlimit_as {
            num("--rlimit-as", b);
        }
        if let Some(cg) = &self.cgroup {
            if cg.v2 {
                v.push("--cgroup-v2".into());
            }
            for d in &cg.dirs {
                v.push("--cgroup".into());
                v.push(d.clone().into());
            }
        }
        if let Some((uid, gid)) = self.ids {
            v.push("--ids".into());
            v.push(format!("{uid}:{gid}").into());
        }
        v.push("--".into());
        v.extend(self.argv.iter().cloned());
        v
    }

    /// Parses what [`ShimArgs::to_args`] wrote.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<ShimArgs, String> {
        let mut it = args.into_iter();
        let mut out = ShimArgs {
            sandbox: PathBuf::new(),
            cgroup: None,
            rlimit_as: None,
            ids: None,
            logs: DEFAULT_LOGS,
            watch: WatchLimits::default(),
            argv: Vec::new(),
        };
        let mut v2 = false;
        let mut dirs = Vec::new();
        while let Some(a) = it.next() {
            let flag = a.to_string_lossy().into_owned();
            let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--sandbox" => out.sandbox = val()?.into(),
                "--cgroup" => dirs.push(PathBuf::from(val()?)),
                "--cgroup-v2" => v2 = true,
                "--rlimit-as" => out.rlimit_as = Some(number(&flag, val()?)?),
                "--log-max-bytes" => out.logs.max_bytes = number(&flag, val()?)?,
                "--log-rotations" => out.logs.rotations = number(&flag, val()?)?,
                "--disk-mb" => out.watch.disk_mb = Some(number(&flag, val()?)?),
                "--disk-floor-mb" => out.watch.disk_floor_mb = number(&flag, val()?)?,
                "--check-ms" => out.watch.check_interval_ms = number(&flag, val()?)?,
                "--disk-check-ms" => out.watch.disk_check_interval_ms = number(&flag, val()?)?,
                "--ids" => {
                    let v = val()?;
                    let ids = v.to_str().and_then(|s| {
                        let (u, g) = s.split_once(':')?;
                        Some((u.parse().ok()?, g.parse().ok()?))
                    });
                    out.ids = Some(ids.ok_or("--ids takes UID:GID")?);
                }
                "--" => {
                    out.argv = it.collect();
                    break;
                }
                _ => return Err(format!("unexpected shim argument {a:?}")),
            }
        }
        if !dirs.is_empty() {
            out.cgroup = Some(TaskCgroup { v2, dirs });
        }
        if out.sandbox.as_os_str().is_empty() || out.argv.is_empty() {
            return Err("the shim needs --sandbox DIR -- COMMAND...".into());
        }
        Ok(out)
    }
}

/// A limit whose crossing ends a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Limit {
    /// The kernel OOM-killed a process of the task.
    Memory,
    /// The `pids` limit refused a fork.
    Pids,
    /// The sandbox holds more than the task's `disk`.
    Disk,
}

impl Limit {
    /// The word in records.
    pub fn as_str(&self) -> &'static str {
        match self {
            Limit::Memory => "memory",
            Limit::Pids => "pids",
            Limit::Disk => "disk",
        }
    }

    fn parse(s: &str) -> Option<Limit> {
        [Limit::Memory, Limit::Pids, Limit::Disk]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

/// How the command ended, as the shim records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitRecord {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
    /// It could not be started.
    LaunchFailed(String),
    /// It crossed a limit, and the shim ended it; with what happened.
    Limited(Limit, String),
}

impl ExitRecord {
    /// The file form: `exited N`, `signaled N`, `launch-failed TEXT` or
    /// `limited LIMIT TEXT`.
    pub fn to_line(&self) -> String {
        match self {
            ExitRecord::Exited(c) => format!("exited {c}"),
            ExitRecord::Signaled(s) => format!("signaled {s}"),
            ExitRecord::LaunchFailed(t) => format!("launch-failed {t}"),
            ExitRecord::Limited(l, t) => format!("limited {} {t}", l.as_str()),
        }
    }

    /// Parses [`ExitRecord::to_line`]'s form.
    pub fn parse(line: &str) -> Option<ExitRecord> {
        let (k, v) = line.trim().split_once(' ')?;
        match k {
            "exited" => v.parse().ok().map(ExitRecord::Exited),
            "signaled" => v.parse().ok().map(ExitRecord::Signaled),
            "launch-failed" => Some(ExitRecord::LaunchFailed(v.to_string())),
            "limited" => {
                let (l, t) = v.split_once(' ')?;
                Some(ExitRecord::Limited(Limit::parse(l)?, t.to_string()))
            }
            _ => None,
        }
    }
}

/// Bytes reserved for a record: more than any record the shim writes takes.
const RECORD_BYTES: i64 = 4096;

/// A record file whose room on disk was taken when it was created: a command that fills
/// its sandbox's disk cannot keep its end from being recorded.
struct RecordSlot {
    file: std::fs::File,
}

impl RecordSlot {
    /// Creates the record file and reserves its room (where the file system can; else
    /// the write later takes its chances).
    fn reserve(path: &Path) -> std::io::Result<RecordSlot> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)?;
        // SAFETY: fallocate(2) on a file descriptor we own; KEEP_SIZE leaves it empty.
        let r = unsafe {
            libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, RECORD_BYTES)
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(e);
            }
        }
        Ok(RecordSlot { file })
    }

    /// Writes a one-line record into the reserved room. Readers take a file only once it
    /// ends in a newline, so a record is never read half-written; no temporary file is
    /// needed (one small write, no new inode for a rename).
    fn write(&self, text: &str) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(format!("{text}\n").as_bytes(), 0)
    }
}

/// The record in `path` if it is complete: the shim writes each record in one write
/// ending in a newline, so a record without one is still being written.
pub fn read_record(path: &Path) -> Option<String> {
    let mut t = std::fs::read_to_string(path).ok()?;
    t.pop().filter(|c| *c == '\n')?;
    Some(t)
}

/// Runs the shim; returns its process exit code.
pub fn run(args: &ShimArgs) -> i32 {
    let meta = meta_dir(&args.sandbox);
    if let Err(e) = std::fs::create_dir_all(&meta) {
        eprintln!("plexus shim: cannot create {}: {e}", meta.display());
        return 125;
    }
    // Room for both records is taken before the command starts: if the sandbox's disk
    // is full already, the command does not start; if the command fills it, how it
    // ended is still recorded.
    let slots = RecordSlot::reserve(&meta.join(EXIT_FILE))
        .and_then(|exit| Ok((exit, RecordSlot::reserve(&meta.join(PID_FILE))?)));
    let (exit_slot, pid_slot) = match slots {
        Ok(s) => s,
        Err(e) => {
            eprintln!("plexus shim: cannot make room for the task's records: {e}");
            return 125;
        }
    };
    let record = launch_and_wait(args, &pid_slot);
    if let Err(e) = exit_slot.write(&record.to_line()) {
        // The agent then sees the shim end without a record, and says so.
        eprintln!("plexus shim: cannot record the command's end: {e}");
    }
    match record {
        ExitRecord::Exited(c) => c,
        ExitRecord::Signaled(s) => 128 + s,
        ExitRecord::LaunchFailed(_) => 127,
        ExitRecord::Limited(..) => 128 + libc::SIGKILL,
    }
}

fn launch_and_wait(args: &ShimArgs, pid_slot: &RecordSlot) -> ExitRecord {
    // The command joins the task's cgroups between clone and exec ([`spawn`]), so the
    // task's limits hold from its first instruction while the shim stays outside them:
    // its own work does not eat the task's cpu quota, and an OOM kill never takes the
    // shim that records how the task ended.
    let mut joins = Vec::new();
    for p in args.cgroup.iter().flat_map(TaskCgroup::procs_files) {
        match std::fs::OpenOptions::new().write(true).open(&p) {
            Ok(f) => joins.push(f),
            Err(e) => {
                return ExitRecord::LaunchFailed(format!("joining cgroup {}: {e}", p.display()))
            }
        }
    }
    let streams = ["stdout", "stderr"].map(|name| {
        let log = RotatingLog::create(args.sandbox.join(name), args.logs)?;
        Ok::<_, std::io::Error>((Pipe::new()?, log))
    });
    let [Ok(out), Ok(err)] = streams else {
        let [a, b] = streams;
        let e = a
            .err()
            .or(b.err())
            .map(|e| e.to_string())
            .unwrap_or_default();
        return ExitRecord::LaunchFailed(format!("sandbox files: {e}"));
    };
    let null = match std::fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => return ExitRecord::LaunchFailed(format!("/dev/null: {e}")),
    };
    let joins: Vec<_> = joins.iter().map(|f| f.as_raw_fd()).collect();
    let extra = match take_env(&meta_dir(&args.sandbox)) {
        Ok(vars) => vars,
        Err(e) => return ExitRecord::LaunchFailed(format!("task environment: {e}")),
    };
    let mut env = vec![("PLEXUS_SANDBOX", args.sandbox.as_os_str())];
    if args.ids.is_some() {
        env.push(("PATH", std::ffi::OsStr::new(spawn::TASK_USER_PATH)));
    }
    for (k, v) in &extra {
        match k.to_str() {
            Some(k) => env.push((k, v.as_os_str())),
            None => return ExitRecord::LaunchFailed(format!("task environment: name {k:?}")),
        }
    }
    let started = spawn::spawn(&spawn::SpawnSpec {
        argv: &args.argv,
        env: &env,
        cwd: &args.sandbox,
        stdio: [null.as_raw_fd(), out.0.write_fd(), err.0.write_fd()],
        cgroup_procs: &joins,
        rlimit_as: args.rlimit_as,
        ids: args.ids,
    });
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => return ExitRecord::LaunchFailed(format!("{:?}: {e}", args.argv[0])),
    };
    if let Err(e) = pid_slot.write(&pid.to_string()) {
        // A kill then waits for the record in vain and falls back to the shim.
        eprintln!("plexus shim: cannot record the command's pid: {e}");
    }
    let mut watch = Watch::new(args, pid);
    let mut limited = watch.run([out, err]);
    let status = reap(pid);
    let failed = !matches!(status, Ok(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0);
    if limited.is_none() && failed {
        // A command that gave up when a fork was refused, or lost a child to the OOM
        // killer, ended by its limit, however quickly after the last check.
        limited = watch.check_cgroup();
    }
    match (limited, status) {
        (Some((limit, text)), _) => ExitRecord::Limited(limit, text),
        (None, Err(e)) => ExitRecord::LaunchFailed(format!("wait: {e}")),
        (None, Ok(status)) if libc::WIFEXITED(status) => {
            ExitRecord::Exited(libc::WEXITSTATUS(status))
        }
        (None, Ok(status)) if libc::WIFSIGNALED(status) => {
            ExitRecord::Signaled(libc::WTERMSIG(status))
        }
        (None, Ok(_)) => ExitRecord::LaunchFailed("unknown exit status".into()),
    }
}

/// Waits for the command `pid` and returns its wait status.
fn reap(pid: i32) -> std::io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on the child the shim started, into a local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A pipe from the command's stdout or stderr to the shim.
struct Pipe {
    read: OwnedFd,
    /// The command's end, closed in the shim once the command started.
    write: Option<OwnedFd>,
}

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fresh descriptors, which we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both are fresh descriptors from pipe2.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe {
            read,
            write: Some(write),
        })
    }

    fn write_fd(&self) -> i32 {
        self.write.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }
}

/// Bytes read from a pipe at a time.
const PIPE_CHUNK_BYTES: usize = 64 * 1024;

/// The shim's loop while the command runs: copies output into its logs and checks the
/// task's limits on time.
struct Watch<'a> {
    args: &'a ShimArgs,
    pid: i32,
    next_check: Instant,
    next_disk_check: Instant,
    /// Output dropped while the disk was below its floor, not yet noted in the log.
    dropped_bytes: [u64; 2],
    floor_reached: bool,
}

impl<'a> Watch<'a> {
    fn new(args: &'a ShimArgs, pid: i32) -> Self {
        // The first checks come one interval in: a short task costs no reads at all (and
        // one that failed at once is checked as it ends).
        let now = Instant::now();
        let w = &args.watch;
        Watch {
            args,
            pid,
            next_check: now + Duration::from_millis(w.check_interval_ms.max(1)),
            next_disk_check: now + Duration::from_millis(w.disk_check_interval_ms.max(1)),
            dropped_bytes: [0; 2],
            floor_reached: false,
        }
    }

    /// Runs until the command ended (and its output was copied); returns the limit it
    /// crossed, if it did (the command was then killed).
    fn run(&mut self, streams: [(Pipe, RotatingLog); 2]) -> Option<(Limit, String)> {
        let [(mut out_pipe, mut out_log), (mut err_pipe, mut err_log)] = streams;
        out_pipe.write = None;
        err_pipe.write = None;
        let ended = pidfd_open(self.pid);
        let mut open = [true, true];
        let mut limited = None;
        let mut buf = vec![0u8; PIPE_CHUNK_BYTES];
        loop {
            let now = Instant::now();
            if limited.is_none() {
                limited = self.check(now);
                if let Some((limit, text)) = &limited {
                    eprintln!("plexus shim: {} limit: {text}", limit.as_str());
                    self.kill_all();
                }
            }
            let wait_ms = self.next_wake(now);
            let mut fds = [
                poll_fd(open[0].then(|| out_pipe.read.as_raw_fd())),
                poll_fd(open[1].then(|| err_pipe.read.as_raw_fd())),
                poll_fd(ended.as_ref().map(AsRawFd::as_raw_fd)),
            ];
            // SAFETY: poll on three pollfds we own (negative fds are skipped).
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, wait_ms) };
            if n < 0 {
                continue; // EINTR
            }
            // Without a pidfd (a kernel before 5.3) the end of the output says the command
            // ended: the pipes are read until both close, then the command is reaped.
            let exited = ended.is_some() && fds[2].revents != 0;
            for (i, (pipe, log)) in [(&out_pipe, &mut out_log), (&err_pipe, &mut err_log)]
                .into_iter()
                .enumerate()
            {
                if open[i] && (fds[i].revents != 0 || exited) {
                    open[i] = self.copy(i, pipe, log, &mut buf, exited);
                }
            }
            if exited || (ended.is_none() && !open[0] && !open[1]) {
                return limited;
            }
        }
    }

    /// Milliseconds until the next check is due.
    fn next_wake(&self, now: Instant) -> i32 {
        let next = self.next_check.min(self.next_disk_check);
        next.saturating_duration_since(now).as_millis().min(60_000) as i32
    }

    /// Copies what the pipe holds into its log; all of it, without blocking, once the
    /// command `exited`. False once the pipe is closed (or is no longer read).
    fn copy(
        &mut self,
        i: usize,
        pipe: &Pipe,
        log: &mut RotatingLog,
        buf: &mut [u8],
        exited: bool,
    ) -> bool {
        let fd = pipe.read.as_raw_fd();
        if exited {
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
        }
        loop {
            // SAFETY: read into a buffer we own, at most its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                return false;
            }
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return e.kind() == std::io::ErrorKind::Interrupted
                    || (e.kind() == std::io::ErrorKind::WouldBlock && !exited);
            }
            self.keep(i, log, &buf[..n as usize]);
            if !exited {
                return true;
            }
        }
    }

    /// Writes output to its log unless the disk is below its floor (then it is counted,
    /// and the gap noted in the log once there is room again).
    fn keep(&mut self, i: usize, log: &mut RotatingLog, bytes: &[u8]) {
        if self.floor_reached {
            self.dropped_bytes[i] += bytes.len() as u64;
            return;
        }
        if self.dropped_bytes[i] > 0 {
            let note = format!(
                "\n[plexus: {} bytes of output dropped: the agent's disk was below its free-space floor]\n",
                self.dropped_bytes[i]
            );
            self.dropped_bytes[i] = 0;
            self.write_log(log, note.as_bytes());
        }
        self.write_log(log, bytes);
    }

    fn write_log(&mut self, log: &mut RotatingLog, bytes: &[u8]) {
        if let Err(e) = log.write(bytes) {
            eprintln!("plexus shim: writing the task's output: {e}");
        }
    }

    /// Checks the limits that are due; the first one crossed, with what happened.
    fn check(&mut self, now: Instant) -> Option<(Limit, String)> {
        let w = &self.args.watch;
        if now >= self.next_check {
            self.next_check = now + Duration::from_millis(w.check_interval_ms.max(1));
            if let Some(l) = self.check_cgroup() {
                return Some(l);
            }
        }
        if now >= self.next_disk_check {
            self.next_disk_check = now + Duration::from_millis(w.disk_check_interval_ms.max(1));
            self.floor_reached = free_mb(&self.args.sandbox).is_some_and(|mb| mb < w.disk_floor_mb);
            if let Some(limit_mb) = w.disk_mb {
                let used = disk_usage_bytes(&self.args.sandbox);
                if used > limit_mb << 20 {
                    return Some((
                        Limit::Disk,
                        format!(
                            "disk usage of {} MB exceeds the task's disk of {limit_mb} MB",
                            used.div_ceil(1 << 20)
                        ),
                    ));
                }
            }
        }
        None
    }

    /// The cgroup's OOM and fork counters: the first limit they show crossed.
    fn check_cgroup(&self) -> Option<(Limit, String)> {
        let cg = self.args.cgroup.as_ref()?;
        if cg.oom_killed() {
            let mb = cg
                .mem_limit_bytes()
                .map_or(String::new(), |b| format!(" of {} MB", b >> 20));
            return Some((
                Limit::Memory,
                format!("memory limit{mb} exceeded: the kernel OOM-killed a process of the task"),
            ));
        }
        if cg.forks_refused() > 0 {
            let n = cg.max_pids().map_or(String::new(), |n| format!(" of {n}"));
            return Some((
                Limit::Pids,
                format!("pids limit{n} reached: a fork was refused"),
            ));
        }
        None
    }

    /// Kills the command's process group and everything else in the task's cgroup.
    fn kill_all(&self) {
        // SAFETY: kill(2) on the process group the command leads.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        for p in self.args.cgroup.iter().flat_map(TaskCgroup::pids) {
            // SAFETY: kill(2) on a pid in the task's own cgroup (the shim is not in it).
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

fn poll_fd(fd: Option<i32>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a fresh fd we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Free space for unprivileged users on the file system of `dir`, MB.
pub fn free_mb(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs into a zeroed struct, on a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64) >> 20)
}

/// Most entries a disk measurement visits (a sandbox with more counts as what was seen).
const DISK_WALK_MAX_ENTRIES: usize = 1_000_000;

/// Bytes the files under `dir` take on disk (their allocated blocks, as `du`), staying on
/// its file system and not following links.
pub fn disk_usage_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            seen += 1;
            if seen > DISK_WALK_MAX_ENTRIES {
                return total;
            }
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            total += m.blocks() * 512;
            if m.is_dir() && m.dev() == top.dev() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Entry point for a binary acting as the shim (`plexus-shim`, `plexus __shim`); with
/// `--serve` alone, it is the launcher that forks shims ([`super::forkserver`]).
pub fn main_with(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    if args.len() == 1 && args[0] == "--serve" {
        return super::forkserver::serve();
    }
    match ShimArgs::parse(args) {
        Ok(a) => run(&a),
        Err(e) => {
            eprintln!("plexus shim: {e}");
            126
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_records_round_trip() {
        let a = ShimArgs {
            sandbox: "/tmp/s".into(),
            cgroup: Some(TaskCgroup {
                v2: false,
                dirs: vec![
                    "/sys/fs/cgroup/memory/x".into(),
                    "/sys/fs/cgroup/pids/x".into(),
                ],
            }),
            rlimit_as: Some(1 << 30),
            ids: Some((1000, 100)),
            logs: LogLimits {
                max_bytes: 1 << 20,
                rotations: 3,
            },
            watch: WatchLimits {
                disk_mb: Some(64),
                disk_floor_mb: 100,
                check_interval_ms: 50,
                disk_check_interval_ms: 500,
            },
            argv: vec!["sh".into(), "-c".into(), "echo --sandbox".into()],
        };
        assert_eq!(ShimArgs::parse(a.to_args()).unwrap(), a);
        assert!(ShimArgs::parse(vec![OsString::from("--sandbox")]).is_err());
        for r in [
            ExitRecord::Exited(3),
            ExitRecord::Signaled(9),
            ExitRecord::LaunchFailed("no such file".into()),
            ExitRecord::Limited(Limit::Disk, "disk usage of 9 MB exceeds 8 MB".into()),
        ] {
            assert_eq!(ExitRecord::parse(&r.to_line()), Some(r));
        }
    }
}
