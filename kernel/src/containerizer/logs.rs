//! Task output kept by size: the shim pipes a task's stdout and stderr into a
//! [`RotatingLog`] each, which keeps at most a configured number of bytes on disk per
//! stream (the live file and its rotations, `stdout`, `stdout.1`, …), so a task printing
//! without end cannot fill its agent's disk.
//!
//! The files live in the task's sandbox, a directory the task's user owns, while the
//! shim writing them runs as root: every file is created anew with `O_EXCL | O_NOFOLLOW`,
//! so a link the task planted in its place is never followed, only refused.
//!
//! Offsets into a stream count every byte it was ever given: the shim records in
//! `stdout.base` where the oldest file kept begins, so [`read_across`] reads from an
//! offset as one stream over the rotations (what `plexus logs -f` follows), and a reader
//! that fell behind a rotation resumes at the oldest byte still kept.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How much output a stream keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Most bytes of one stream on disk, over its live file and its rotations.
    pub max_bytes: u64,
    /// Older files kept besides the live one (`stdout.1` … `stdout.N`).
    pub rotations: u32,
}

impl LogLimits {
    /// Most bytes in one file: the stream's share split over its files (at least 4 KiB).
    pub fn file_bytes(&self) -> u64 {
        (self.max_bytes / (u64::from(self.rotations) + 1)).max(4096)
    }
}

/// Opens `path` for writing as a new file, never through a link found there: what is in
/// the way is removed first, and a file that appears meanwhile is refused.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o644)
        .open(path)
}

fn rotation(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// One stream's files, written by size.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    limits: LogLimits,
    /// The live file (`None` after it could not be made again: output is then dropped).
    file: Option<File>,
    /// Bytes in the live file.
    written_bytes: u64,
    /// Stream offset where the oldest file kept begins.
    base_bytes: u64,
}

impl RotatingLog {
    /// Starts the stream at `path` (an empty live file; older files of the same name go).
    pub fn create(path: PathBuf, limits: LogLimits) -> std::io::Result<RotatingLog> {
        for n in 1..=limits.rotations.max(1) {
            match std::fs::remove_file(rotation(&path, n)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let file = create_new(&path)?;
        // No `.base` file until the first rotation drops output: none reads as 0.
        match std::fs::remove_file(base_file(&path)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(RotatingLog {
            path,
            limits,
            file: Some(file),
            written_bytes: 0,
            base_bytes: 0,
        })
    }

    /// Records where the oldest file kept begins (written aside, then renamed over).
    fn record_base(&self) -> std::io::Result<()> {
        let base = base_file(&self.path);
        let mut tmp = base.clone().into_os_string();
        tmp.push(".new");
        create_new(Path::new(&tmp))?.write_all(self.base_bytes.to_string().as_bytes())?;
        std::fs::rename(&tmp, base)
    }

    /// Appends `bytes`, rotating first when they would overflow the live file.
    pub fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        let cap = self.limits.file_bytes();
        while !bytes.is_empty() {
            if self.written_bytes >= cap {
                self.rotate()?;
            }
            let room = (cap - self.written_bytes) as usize;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            if let Some(f) = self.file.as_mut() {
                f.write_all(now)?;
            }
            self.written_bytes += now.len() as u64;
            bytes = rest;
        }
        Ok(())
    }

    /// Moves `stdout.K` to `stdout.K+1` (the oldest is overwritten) and the live file to
    /// `stdout.1`, then starts a new live file; with no rotations, empties the live file.
    fn rotate(&mut self) -> std::io::Result<()> {
        let live_bytes = std::mem::take(&mut self.written_bytes);
        if self.limits.rotations == 0 {
            self.base_bytes += live_bytes;
            self.record_base()?;
            if let Some(f) = self.file.as_mut() {
                f.set_len(0)?;
                std::io::Seek::rewind(f)?;
            }
            return Ok(());
        }
        let oldest = rotation(&self.path, self.limits.rotations);
        if let Ok(m) = std::fs::symlink_metadata(&oldest) {
            self.base_bytes += m.len();
            self.record_base()?;
        }
        for n in (1..self.limits.rotations).rev() {
            let from = rotation(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotation(&self.path, n + 1))?;
            }
        }
        match std::fs::rename(&self.path, rotation(&self.path, 1)) {
            Ok(()) => {}
            // The task removed its live file: a new one starts all the same.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.file = None;
        self.file = Some(create_new(&self.path)?);
        Ok(())
    }
}

/// The files of the stream at `path`, oldest first: `stdout.N` … `stdout.1`, `stdout`.
pub fn files_of(path: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = (1..)
        .map(|n| rotation(path, n))
        .take_while(|p| p.exists())
        .collect();
    v.reverse();
    v.push(path.to_path_buf());
    v
}

fn base_file(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".base");
    PathBuf::from(s)
}

/// Up to `limit_bytes` of the stream at `path` from stream offset `offset` (or from the
/// oldest byte kept, when older ones were rotated away), and the offset they start at.
pub fn read_across(path: &Path, offset: u64, limit_bytes: u64) -> std::io::Result<(Vec<u8>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let base = std::fs::read_to_string(base_file(path))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let start = offset.max(base);
    let files = files_of(path);
    let sizes: Vec<u64> = files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .collect();
    let mut out = Vec::new();
    let mut skip = start - base;
    for (p, size) in files.iter().zip(sizes) {
        if skip >= size {
            skip -= size;
            continue;
        }
        let want = limit_bytes - out.len() as u64;
        if want == 0 {
            break;
        }
        let mut f = match File::open(p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(skip))?;
        f.take(want.min(size - skip)).read_to_end(&mut out)?;
        skip = 0;
    }
    Ok((out, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_keeps_at_most_its_limit_and_reads_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        let limits = LogLimits {
            max_bytes: 3 * 4096,
            rotations: 2,
        };
        let mut log = RotatingLog::create(path.clone(), limits).unwrap();
        let mut all = Vec::new();
        for i in 0..10_000u32 {
            let line = format!("line {i}\n");
            all.extend_from_slice(line.as_bytes());
            log.write(line.as_bytes()).unwrap();
        }
        let files = files_of(&path);
        assert_eq!(files.len(), 3, "{files:?}");
        let on_disk: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
        assert!(on_disk <= limits.max_bytes, "{on_disk} bytes kept");
        let (kept, start) = read_across(&path, 0, u64::MAX).unwrap();
        assert_eq!(kept.len() as u64, on_disk);
        assert_eq!(
            start,
            all.len() as u64 - on_disk,
            "offsets count every byte"
        );
        assert!(all.ends_with(&kept), "the newest output is kept, in order");
        let at = all.len() as u64 - 10;
        assert_eq!(
            read_across(&path, at, 100).unwrap(),
            (all[at as usize..].to_vec(), at)
        );
        let (some, from) = read_across(&path, start + 5, 7).unwrap();
        assert_eq!(
            (some.as_slice(), from),
            (&all[from as usize..from as usize + 7], start + 5)
        );
    }

    #[test]
    fn without_rotations_the_live_file_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr");
        let mut log = RotatingLog::create(
            path.clone(),
            LogLimits {
                max_bytes: 4096,
                rotations: 0,
            },
        )
        .unwrap();
        log.write(&[b'x'; 10_000]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 10_000 - 2 * 4096);
        assert_eq!(files_of(&path), vec![path]);
    }

    #[test]
    fn a_planted_link_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("stdout");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let mut log = RotatingLog::create(
            path.clone(),
            LogLimits {
                max_bytes: 1 << 20,
                rotations: 1,
            },
        )
        .unwrap();
        log.write(b"output").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "output");
    }
}
