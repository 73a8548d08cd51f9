//! Helpers the kernel's multi-process tests share: waiting on events from task processes
//! (a line on a FIFO, a process's end through a pidfd) rather than polling for them.

#![allow(dead_code)]

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;

/// Generous bound for a task process to do what a test waits for.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes a FIFO `name` in `dir`, for a task to tell the test something.
pub fn fifo(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let c = CString::new(p.as_os_str().as_encoded_bytes()).expect("a path without NUL");
    // SAFETY: mkfifo with a valid C path and mode.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(
        r,
        0,
        "mkfifo {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    p
}

/// The first line written to the FIFO at `path` (waits for the writer).
pub async fn read_line(path: &Path) -> String {
    // Opened read-write, so that it does not read an end before its writer comes.
    let mut rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .expect("the FIFO opens");
    let mut line = Vec::new();
    let read = async {
        let mut buf = [0u8; 256];
        while !line.contains(&b'\n') {
            let n = rx.read(&mut buf).await.expect("the FIFO reads");
            line.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("nothing written to {} in time", path.display()));
    let text = String::from_utf8_lossy(&line);
    text.lines().next().unwrap_or_default().to_string()
}

/// Waits until process `pid` has ended (through a pidfd, which becomes readable then).
pub async fn wait_gone(pid: i32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return; // no such process: already gone (and reaped)
    }
    // SAFETY: a non-negative return is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: `fd` is an open pidfd owned by the AsyncFd for its whole life.
    let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .expect("the pidfd registers");
    tokio::time::timeout(EVENT_TIMEOUT, afd.readable())
        .await
        .unwrap_or_else(|_| panic!("process {pid} still runs"))
        .expect("the pidfd polls")
        .retain_ready();
}
