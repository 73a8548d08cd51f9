//! Crash-safe state files rewritten in place: the agent's checkpoint.
//!
//! A state file is two slot files, `NAME.0` and `NAME.1`. Each write goes to the slot not
//! holding the newest state, as one header (magic, sequence number, length, CRC-32) and
//! the bytes; reading picks the valid slot with the highest sequence number. A write torn
//! by a crash fails its checksum, so the previous state is read instead. Unlike writing a
//! temporary file and renaming it over the old one, this allocates no new inode per
//! write, which on ext4 costs more and more as deleted inodes pile up. A write returns
//! once its bytes are synced to the device.
//!
//! The slots live on a [`Disk`]: [`RealDisk`] is the machine's file system; the
//! simulator's disks fill up, tear writes and lose unsynced ones on purpose. Both pass
//! the same checks (`statefile::disk_contract`).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"PLXSTAT1";
const HEADER: usize = 8 + 8 + 8 + 4;

/// Errors of reading a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// A slot could not be read or written.
    #[error("state file {path}: {source}")]
    Io {
        /// The slot file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Where state files keep their bytes: whole files, rewritten in place.
pub trait Disk: Send + Sync + std::fmt::Debug + 'static {
    /// The file's bytes; `None` if there is no such file.
    fn read(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>>;
    /// Replaces the file's bytes (creating it), and returns once they are synced.
    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes directory `path` and those above it.
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path)
    }
    /// True when its files are the machine's (so files of earlier versions may be
    /// there too).
    fn is_real(&self) -> bool {
        true
    }
}

/// The machine's file system. Files are opened for each access: a simulated datacenter
/// holds many agents in one process, and a descriptor held per agent would exhaust its
/// file limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

impl Disk for RealDisk {
    fn read(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        f.write_all_at(bytes, 0)?;
        f.set_len(bytes.len() as u64)?;
        f.sync_data()
    }
}

/// A two-slot state file.
#[derive(Debug)]
pub struct StateFile {
    disk: std::sync::Arc<dyn Disk>,
    paths: [PathBuf; 2],
    /// Sequence number of the newest state written or read.
    seq: u64,
    /// The slots were read (so `seq` is known).
    known: bool,
}

fn parse(buf: &[u8]) -> Option<(u64, &[u8])> {
    if buf.len() < HEADER || &buf[..8] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(buf[8..16].try_into().ok()?);
    let len = usize::try_from(u64::from_le_bytes(buf[16..24].try_into().ok()?)).ok()?;
    let crc = u32::from_le_bytes(buf[24..28].try_into().ok()?);
    let body = buf.get(HEADER..HEADER.checked_add(len)?)?;
    (crc32fast::hash(body) == crc).then_some((seq, body))
}

impl StateFile {
    /// The state file `base` (slots `base.0` and `base.1`) on the machine's file system;
    /// nothing is read or created yet.
    pub fn new(base: &Path) -> StateFile {
        Self::on(std::sync::Arc::new(RealDisk), base)
    }

    /// The state file `base` on `disk`.
    pub fn on(disk: std::sync::Arc<dyn Disk>, base: &Path) -> StateFile {
        let slot = |i: u8| {
            let mut p = base.as_os_str().to_owned();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        StateFile {
            disk,
            paths: [slot(0), slot(1)],
            seq: 0,
            known: false,
        }
    }

    /// The newest intact state, if any slot holds one.
    pub fn read(&mut self) -> Result<Option<Vec<u8>>, StateFileError> {
        let mut best: Option<(u64, Vec<u8>)> = None;
        for p in &self.paths {
            let buf = match self.disk.read(p) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(source) => {
                    return Err(StateFileError::Io {
                        path: p.clone(),
                        source,
                    })
                }
            };
            if let Some((seq, body)) = parse(&buf) {
                if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                    best = Some((seq, body.to_vec()));
                }
            }
        }
        self.seq = best.as_ref().map_or(0, |(s, _)| *s);
        self.known = true;
        Ok(best.map(|(_, b)| b))
    }

    /// Writes `bytes` as the newest state (into the slot holding the older one).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StateFileError> {
        if !self.known {
            // Continue after whatever an earlier writer left.
            self.read()?;
        }
        let seq = self.seq + 1;
        let i = (seq % 2) as usize;
        let path = &self.paths[i];
        let io = |source| StateFileError::Io {
            path: path.clone(),
            source,
        };
        let mut buf = Vec::with_capacity(HEADER + bytes.len());
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        buf.extend_from_slice(bytes);
        self.disk.write(path, &buf).map_err(io)?;
        self.seq = seq;
        Ok(())
    }
}

/// What every [`Disk`] keeps, checked on `disk` in the directory `dir` (which must
/// exist for a real disk): a file reads back what was last written to it, shorter
/// writes replace longer ones, and a state file on it keeps the newest intact state.
pub fn disk_contract(disk: std::sync::Arc<dyn Disk>, dir: &Path) {
    let p = dir.join("contract");
    assert_eq!(disk.read(&p).expect("reads"), None, "no file yet");
    disk.write(&p, b"a longer first content").expect("writes");
    disk.write(&p, b"short").expect("writes");
    assert_eq!(
        disk.read(&p).expect("reads").as_deref(),
        Some(&b"short"[..])
    );
    let base = dir.join("state");
    let mut f = StateFile::on(disk.clone(), &base);
    assert_eq!(f.read().expect("reads"), None);
    for state in [&b"one"[..], b"two", b"three"] {
        f.write(state).expect("writes");
        let got = StateFile::on(disk.clone(), &base).read().expect("reads");
        assert_eq!(got.as_deref(), Some(state));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_disk_keeps_the_disk_contract() {
        let dir = tempfile::tempdir().unwrap();
        disk_contract(std::sync::Arc::new(RealDisk), dir.path());
    }

    #[test]
    fn the_newest_intact_state_wins() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("ck");
        let mut f = StateFile::new(&base);
        assert_eq!(f.read().unwrap(), None);
        f.write(b"one, a longer first state").unwrap();
        f.write(b"two").unwrap();
        assert_eq!(StateFile::new(&base).read().unwrap().unwrap(), b"two");
        f.write(b"three").unwrap();
        let mut again = StateFile::new(&base);
        assert_eq!(again.read().unwrap().unwrap(), b"three");
        // A reader continues the sequence where it left off.
        again.write(b"four").unwrap();
        assert_eq!(StateFile::new(&base).read().unwrap().unwrap(), b"four");
        // So does a writer that never read.
        StateFile::new(&base).write(b"five").unwrap();
        assert_eq!(StateFile::new(&base).read().unwrap().unwrap(), b"five");
    }

    #[test]
    fn a_torn_write_falls_back_to_the_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("ck");
        let mut f = StateFile::new(&base);
        f.write(b"old state").unwrap();
        f.write(b"new state").unwrap();
        // The newest slot (sequence 2, slot 0) lost its tail in a crash.
        let slot = dir.path().join("ck.0");
        let len = std::fs::metadata(&slot).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&slot)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert_eq!(StateFile::new(&base).read().unwrap().unwrap(), b"old state");
        // A flipped bit is caught too.
        let mut b = std::fs::read(dir.path().join("ck.1")).unwrap();
        *b.last_mut().unwrap() ^= 1;
        std::fs::write(dir.path().join("ck.1"), b).unwrap();
        assert_eq!(StateFile::new(&base).read().unwrap(), None);
    }
}
