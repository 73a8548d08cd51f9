//! Starting a task's command from the shim without copying the shim: `clone` with
//! `CLONE_VM | CLONE_VFORK`, as `posix_spawn` does, plus what `posix_spawn` cannot do:
//! joining the task's cgroups and setting an rlimit between clone and exec.
//!
//! The child shares the shim's memory and runs on a stack of its own until `execve`;
//! the shim is suspended meanwhile. Everything the child needs (paths, argument and
//! environment vectors, descriptors) is prepared before the clone, and the child makes
//! only system calls. A failure before `execve` is passed back in shared memory.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What to start.
pub struct SpawnSpec<'a> {
    /// The command and its arguments (`argv[0]` is looked up in `PATH` unless it has a `/`).
    pub argv: &'a [OsString],
    /// Extra environment variables (on top of the shim's).
    pub env: &'a [(&'a str, &'a OsStr)],
    /// Working directory.
    pub cwd: &'a Path,
    /// Descriptors for the child's stdin, stdout and stderr.
    pub stdio: [RawFd; 3],
    /// Open `cgroup.procs` files the child writes itself into.
    pub cgroup_procs: &'a [RawFd],
    /// Address-space limit for the child.
    pub rlimit_as: Option<u64>,
    /// The user and group the command runs as (`None`: the shim's own).
    pub ids: Option<(libc::uid_t, libc::gid_t)>,
}

struct Plan {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    stdio: [RawFd; 3],
    joins: Vec<RawFd>,
    limit: Option<libc::rlimit>,
    ids: Option<(libc::uid_t, libc::gid_t)>,
    old_mask: libc::sigset_t,
    /// Set by the child when it fails before `execve`: (step, errno).
    failed: (i32, i32),
}

fn cstr(s: &OsStr) -> std::io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

/// `PATH` of a task that runs as another user than the agent: the agent's own `PATH` may
/// name directories only it can enter (as `sudo`'s `secure_path`).
pub const TASK_USER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `argv[0]` as a path to execute: itself when it has a `/`, else the first executable
/// of that name in `path` (`None`: this process's `PATH`).
pub(crate) fn resolve(prog: &OsStr, path: Option<&OsStr>) -> std::io::Result<PathBuf> {
    if prog.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(prog));
    }
    let path = path
        .map(OsStr::to_os_string)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| {
            cstr(p.as_os_str())
                // SAFETY: access(2) on a NUL-terminated path.
                .map(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not found in PATH"))
}

/// The child's stack: ample for the few system calls it makes.
const STACK: usize = 64 * 1024;

const STEPS: [&str; 10] = [
    "setpgid",
    "joining cgroup",
    "setrlimit",
    "dup2",
    "chdir",
    "execve",
    "sigprocmask",
    "setgroups",
    "setresgid",
    "setresuid",
];

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Plan`, alive and untouched while the parent is
    // suspended (CLONE_VFORK); only async-signal-safe system calls follow.
    unsafe {
        let p = &mut *(arg as *mut Plan);
        let fail = |p: &mut Plan, step: i32| -> libc::c_int {
            p.failed = (step, *libc::__errno_location());
            libc::_exit(127)
        };
        // Default dispositions for what the shim ignores (SIGPIPE), then its mask.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if libc::sigprocmask(libc::SIG_SETMASK, &p.old_mask, std::ptr::null_mut()) != 0 {
            return fail(p, 6);
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(p, 0);
        }
        for &fd in &p.joins {
            // "0" is the writing process itself, in v1 and v2 alike.
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return fail(p, 1);
            }
        }
        if let Some(lim) = &p.limit {
            if libc::setrlimit(libc::RLIMIT_AS, lim) != 0 {
                return fail(p, 2);
            }
        }
        for (i, &fd) in p.stdio.iter().enumerate() {
            if libc::dup2(fd, i as libc::c_int) < 0 {
                return fail(p, 3);
            }
        }
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            return fail(p, 4);
        }
        if let Some((uid, gid)) = p.ids {
            // Raw system calls: the C library's wrappers would change the ids of every
            // thread sharing this memory, the shim's included. Groups first, then the
            // group, then the user (after which no more can be changed).
            let groups = [gid];
            if libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()) != 0 {
                return fail(p, 7);
            }
            if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
                return fail(p, 8);
            }
            if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
                return fail(p, 9);
            }
        }
        libc::execve(p.path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        fail(p, 5)
    }
}

/// Starts the command; returns its pid (a child of this process, to be waited for).
pub fn spawn(spec: &SpawnSpec) -> std::io::Result<libc::pid_t> {
    let prog = spec
        .argv
        .first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let task_path = spec.env.iter().find(|(k, _)| *k == "PATH").map(|(_, v)| *v);
    let path = cstr(resolve(prog, task_path)?.as_os_str())?;
    let args: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<_, _>>()?;
    let mut env: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        if spec.env.iter().all(|(n, _)| OsStr::new(n) != k) {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            env.push(cstr(&kv)?);
        }
    }
    for (k, v) in spec.env {
        let mut kv = OsString::from(k);
        kv.push("=");
        kv.push(v);
        env.push(cstr(&kv)?);
    }
    let ptrs = |v: &[CString]| {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let mut plan = Plan {
        path,
        argv: ptrs(&args),
        envp: ptrs(&env),
        cwd: cstr(spec.cwd.as_os_str())?,
        stdio: spec.stdio,
        joins: spec.cgroup_procs.to_vec(),
        limit: spec.rlimit_as.map(|b| libc::rlimit {
            rlim_cur: b as libc::rlim_t,
            rlim_max: b as libc::rlim_t,
        }),
        ids: spec.ids,
        // SAFETY: a zeroed sigset_t is a valid (empty) set; filled in below.
        old_mask: unsafe { std::mem::zeroed() },
        failed: (-1, 0),
    };
    // Uninitialised: only the pages the child touches near the top get mapped.
    let mut stack: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(STACK);
    // SAFETY: all signals are blocked around the clone so no handler runs on the child's
    // borrowed stack; the child gets the top of `stack` (which outlives it: the parent
    // is suspended until the child execs or exits) and `plan`, which it only writes
    // `failed` in.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut plan.old_mask);
        let top = stack.as_mut_ptr().add(stack.capacity()).cast::<u8>();
        let top = top.sub(top as usize % 16);
        let pid = libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut plan as *mut Plan).cast(),
        );
        let err = std::io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &plan.old_mask, std::ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        pid
    };
    drop(stack);
    let (step, errno) = plan.failed;
    if step >= 0 {
        // It exited without exec'ing: reap it and say why.
        // SAFETY: waitpid on our own child.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let e = std::io::Error::from_raw_os_error(errno);
        return Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", STEPS[step as usize]),
        ));
    }
    Ok(pid)
}
