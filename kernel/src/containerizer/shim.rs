//! The task shim: a small process between the agent and a task's command.
//!
//! The agent has one shim per task started (forked by the [`super::forkserver`] launcher,
//! or as a program of its own), in its own process group. The shim starts the command in
//! a new process group with stdout and stderr in the sandbox, inside the task's cgroups
//! (or under an address-space rlimit when there are none), records the command's pid,
//! waits for it, and writes its exit status to the sandbox. Because the
//! status lands in a file, an agent that restarted meanwhile still learns how its task
//! ended. This runs in its own process, outside any kernel logic.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::spawn;

/// Directory inside a sandbox holding the shim's files.
pub const META_DIR: &str = ".plexus";
/// File (in [`META_DIR`]) with the command's pid.
pub const PID_FILE: &str = "pid";
/// File (in [`META_DIR`]) with the command's exit status.
pub const EXIT_FILE: &str = "exit";

/// What the shim was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    /// The task's sandbox (working directory; stdout, stderr and metadata live there).
    pub sandbox: PathBuf,
    /// `cgroup.procs` files to join before starting the command.
    pub cgroup_procs: Vec<PathBuf>,
    /// Address-space limit in bytes (used when there are no cgroups).
    pub rlimit_as: Option<u64>,
    /// The user and group the command runs as (`None`: the shim's own).
    pub ids: Option<(u32, u32)>,
    /// The command and its arguments.
    pub argv: Vec<OsString>,
}

impl ShimArgs {
    /// Command-line arguments for the shim (after the shim program itself).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["--sandbox".into(), self.sandbox.clone().into()];
        for p in &self.cgroup_procs {
            v.push("--cgroup-procs".into());
            v.push(p.clone().into());
        }
        if let Some(b) = self.rlimit_as {
            v.push("--rlimit-as".into());
            v.push(b.to_string().into());
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
            cgroup_procs: Vec::new(),
            rlimit_as: None,
            ids: None,
            argv: Vec::new(),
        };
        while let Some(a) = it.next() {
            let mut val = || it.next().ok_or_else(|| format!("{a:?} needs a value"));
            match a.to_str() {
                Some("--sandbox") => out.sandbox = val()?.into(),
                Some("--cgroup-procs") => out.cgroup_procs.push(val()?.into()),
                Some("--rlimit-as") => {
                    out.rlimit_as = Some(
                        val()?
                            .to_str()
                            .and_then(|s| s.parse().ok())
                            .ok_or("--rlimit-as takes bytes")?,
                    )
                }
                Some("--ids") => {
                    let v = val()?;
                    let ids = v.to_str().and_then(|s| {
                        let (u, g) = s.split_once(':')?;
                        Some((u.parse().ok()?, g.parse().ok()?))
                    });
                    out.ids = Some(ids.ok_or("--ids takes UID:GID")?);
                }
                Some("--") => {
                    out.argv = it.collect();
                    break;
                }
                _ => return Err(format!("unexpected shim argument {a:?}")),
            }
        }
        if out.sandbox.as_os_str().is_empty() || out.argv.is_empty() {
            return Err("the shim needs --sandbox DIR -- COMMAND...".into());
        }
        Ok(out)
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
}

impl ExitRecord {
    /// The file form: `exited N`, `signaled N` or `launch-failed TEXT`.
    pub fn to_line(&self) -> String {
        match self {
            ExitRecord::Exited(c) => format!("exited {c}"),
            ExitRecord::Signaled(s) => format!("signaled {s}"),
            ExitRecord::LaunchFailed(t) => format!("launch-failed {t}"),
        }
    }

    /// Parses [`ExitRecord::to_line`]'s form.
    pub fn parse(line: &str) -> Option<ExitRecord> {
        let (k, v) = line.trim().split_once(' ')?;
        match k {
            "exited" => v.parse().ok().map(ExitRecord::Exited),
            "signaled" => v.parse().ok().map(ExitRecord::Signaled),
            "launch-failed" => Some(ExitRecord::LaunchFailed(v.to_string())),
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
    let meta = args.sandbox.join(META_DIR);
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
    }
}

fn launch_and_wait(args: &ShimArgs, pid_slot: &RecordSlot) -> ExitRecord {
    // The command joins the task's cgroups between clone and exec ([`spawn`]), so the
    // task's limits hold from its first instruction while the shim stays outside them:
    // its own work does not eat the task's cpu quota, and an OOM kill never takes the
    // shim that records how the task ended.
    let mut joins = Vec::with_capacity(args.cgroup_procs.len());
    for p in &args.cgroup_procs {
        match std::fs::OpenOptions::new().write(true).open(p) {
            Ok(f) => joins.push(f),
            Err(e) => {
                return ExitRecord::LaunchFailed(format!("joining cgroup {}: {e}", p.display()))
            }
        }
    }
    let open = |name: &str| std::fs::File::create(args.sandbox.join(name));
    let (out, err) = match (open("stdout"), open("stderr")) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return ExitRecord::LaunchFailed(format!("sandbox files: {e}"))
        }
    };
    let null = match std::fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => return ExitRecord::LaunchFailed(format!("/dev/null: {e}")),
    };
    let joins: Vec<_> = joins.iter().map(|f| f.as_raw_fd()).collect();
    let mut env = vec![("PLEXUS_SANDBOX", args.sandbox.as_os_str())];
    if args.ids.is_some() {
        env.push(("PATH", std::ffi::OsStr::new(spawn::TASK_USER_PATH)));
    }
    let started = spawn::spawn(&spawn::SpawnSpec {
        argv: &args.argv,
        env: &env,
        cwd: &args.sandbox,
        stdio: [null.as_raw_fd(), out.as_raw_fd(), err.as_raw_fd()],
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
    let mut status = 0;
    // SAFETY: waitpid on the child just started, into a local.
    let r = loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break r;
        }
    };
    if r < 0 {
        return ExitRecord::LaunchFailed(format!("wait: {}", std::io::Error::last_os_error()));
    }
    if libc::WIFEXITED(status) {
        ExitRecord::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        ExitRecord::Signaled(libc::WTERMSIG(status))
    } else {
        ExitRecord::LaunchFailed("unknown exit status".into())
    }
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
            cgroup_procs: vec!["/sys/fs/cgroup/memory/x/cgroup.procs".into()],
            rlimit_as: Some(1 << 30),
            ids: Some((1000, 100)),
            argv: vec!["sh".into(), "-c".into(), "echo --sandbox".into()],
        };
        assert_eq!(ShimArgs::parse(a.to_args()).unwrap(), a);
        assert!(ShimArgs::parse(vec![OsString::from("--sandbox")]).is_err());
        for r in [
            ExitRecord::Exited(3),
            ExitRecord::Signaled(9),
            ExitRecord::LaunchFailed("no such file".into()),
        ] {
            assert_eq!(ExitRecord::parse(&r.to_line()), Some(r));
        }
    }
}
