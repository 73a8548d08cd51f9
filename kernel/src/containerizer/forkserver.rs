//! The launcher: a long-lived, single-threaded helper process that forks task shims.
//!
//! Starting a shim by `exec` costs a program load, dynamic linking and runtime start-up
//! for every task. Instead the agent starts the shim program once in serve mode
//! (`SHIM --serve`), connected to it by a Unix socket pair, and sends it one request per
//! task; the launcher forks, and the child becomes that task's shim (own process group;
//! its stderr, used only should it fail, is the launcher's, that is the agent's) without
//! loading anything. The reply carries the
//! shim's pid and a pidfd for it (passed with `SCM_RIGHTS`), so the agent watches exactly
//! that process even after the launcher has reaped it.
//!
//! The launcher exits when the agent's end of the socket closes (the agent stopped or
//! died); the shims it forked live on in their own process groups, so an agent restart
//! keeps running tasks. This runs in its own process, outside any kernel logic.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use super::shim::{self, ShimArgs};

/// Largest request accepted (the arguments of one task).
const MAX_REQUEST: usize = 4 << 20;

/// Sends `data` on `sock`, with `fd` attached when given.
fn send_with_fd(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    // SAFETY: a zeroed msghdr is a valid empty message; the pointers set below outlive
    // the sendmsg call, and the control buffer is large and aligned enough for one fd.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            let len = std::mem::size_of::<RawFd>() as u32;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(len) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        }
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) != data.len() as isize {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes from `sock` and the fd attached to them, if any.
fn recv_with_fd(sock: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: as in `send_with_fd`; every fd the kernel passed is taken into an OwnedFd.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut fd = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd);
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, fd))
    }
}

fn encode_request(args: &ShimArgs) -> Vec<u8> {
    let mut body = Vec::new();
    for a in args.to_args() {
        body.extend_from_slice(a.as_bytes());
        body.push(0);
    }
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend(body);
    out
}

fn decode_request(body: &[u8]) -> Result<ShimArgs, String> {
    let body = body.strip_suffix(&[0]).unwrap_or(body);
    ShimArgs::parse(
        body.split(|b| *b == 0)
            .map(|a| OsStr::from_bytes(a).to_os_string()),
    )
}

/// The agent's side of a running launcher.
#[derive(Debug)]
pub struct Launcher {
    sock: UnixStream,
    child: Child,
}

impl Launcher {
    /// Starts the shim program `shim` (program and leading arguments) in serve mode.
    pub fn start(shim: &[OsString]) -> std::io::Result<Launcher> {
        let (mine, theirs) = UnixStream::pair()?;
        let child = Command::new(&shim[0])
            .args(&shim[1..])
            .arg("--serve")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Launcher { sock: mine, child })
    }

    /// The launcher's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Has a shim forked for `args`; returns its pid and a pidfd for it, or why the
    /// launcher could not fork it. The outer error means the launcher itself is unusable
    /// (start another).
    pub fn launch(&mut self, args: &ShimArgs) -> std::io::Result<std::io::Result<(u32, OwnedFd)>> {
        self.sock.write_all(&encode_request(args))?;
        let mut reply = [0u8; 4];
        let (n, fd) = recv_with_fd(self.sock.as_raw_fd(), &mut reply)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the launcher exited",
            ));
        }
        self.sock.read_exact(&mut reply[n..])?;
        let pid = i32::from_le_bytes(reply);
        match fd {
            Some(fd) if pid > 0 => Ok(Ok((pid as u32, fd))),
            _ if pid < 0 => Ok(Err(std::io::Error::from_raw_os_error(-pid))),
            _ => Err(std::io::Error::other("the launcher sent no pidfd")),
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Closing our end makes the launcher exit; then reap it.
        if let Err(e) = self.sock.shutdown(std::net::Shutdown::Both) {
            tracing::debug!("closing the launcher's socket: {e}");
        }
        if let Err(e) = self.child.wait() {
            tracing::warn!("reaping the launcher: {e}");
        }
    }
}

fn reap_children() {
    // SAFETY: waitpid on our own children, without blocking.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// In the forked child: becomes the task's shim and never returns.
fn become_shim(args: &ShimArgs) -> ! {
    // SAFETY: plain syscalls in a single-threaded child; `_exit` skips the parent's
    // atexit handlers and buffered state.
    unsafe {
        libc::setpgid(0, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
    }
    let code = shim::run(args);
    // SAFETY: see above.
    unsafe { libc::_exit(code) }
}

/// Serves launch requests on standard input (a Unix socket) until it closes; returns the
/// process exit code.
pub fn serve() -> i32 {
    let sock = 0;
    let mut len = [0u8; 4];
    loop {
        let mut pfd = libc::pollfd {
            fd: sock,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 1000) };
        reap_children();
        if ready == 0 {
            continue;
        }
        // SAFETY: fd 0 is the socket the agent gave us; ManuallyDrop keeps it open.
        let mut stream = std::mem::ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(sock) });
        if stream.read_exact(&mut len).is_err() {
            return 0;
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > MAX_REQUEST {
            eprintln!("plexus launcher: request of {n} bytes refused");
            return 2;
        }
        let mut body = vec![0u8; n];
        if stream.read_exact(&mut body).is_err() {
            return 0;
        }
        let reply = match decode_request(&body) {
            Err(e) => {
                eprintln!("plexus launcher: {e}");
                Err(libc::EINVAL)
            }
            // SAFETY: this process is single-threaded, so the child may run any code.
            Ok(args) => match unsafe { libc::fork() } {
                0 => become_shim(&args),
                -1 => Err(std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EAGAIN)),
                pid => Ok(pid),
            },
        };
        let sent = match reply {
            Ok(pid) => {
                // Not reaped before this: the pid is still the child's. Ours is closed
                // once sent; the agent has its own copy.
                let fd = super::pidfd(pid as u32);
                send_with_fd(sock, &pid.to_le_bytes(), fd.as_ref().map(|f| f.as_raw_fd()))
            }
            Err(errno) => send_with_fd(sock, &(-errno).to_le_bytes(), None),
        };
        if sent.is_err() {
            return 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let a = ShimArgs {
            sandbox: "/tmp/s b".into(),
            cgroup: Some(super::super::cgroups::TaskCgroup {
                v2: true,
                dirs: vec!["/sys/fs/cgroup/x".into()],
            }),
            rlimit_as: None,
            ids: Some((65534, 65534)),
            logs: super::super::shim::DEFAULT_LOGS,
            watch: super::super::shim::WatchLimits::default(),
            argv: vec!["sh".into(), "-c".into(), "echo 'a  b'".into(), "".into()],
        };
        let r = encode_request(&a);
        assert_eq!(
            u32::from_le_bytes(r[..4].try_into().unwrap()) as usize,
            r.len() - 4
        );
        assert_eq!(decode_request(&r[4..]).unwrap(), a);
    }

    #[test]
    fn an_fd_passes_over_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        send_with_fd(a.as_raw_fd(), b"four", Some(f.as_raw_fd())).unwrap();
        let mut buf = [0u8; 4];
        let (n, fd) = recv_with_fd(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!((n, &buf), (4, b"four"));
        let fd = fd.expect("an fd");
        assert_ne!(fd.as_raw_fd(), f.as_raw_fd());
    }
}
