//! Crash-safe state files rewritten in place: the agent's checkpoint.
//!
//! A state file is two slot files, `NAME.0` and `NAME.1`. Each write goes to the slot not
//! holding the newest state, as one header (magic, sequence number, length, CRC-32) and
//! the bytes; reading picks the valid slot with the highest sequence number. A write torn
//! by a crash fails its checksum, so the previous state is read instead. Unlike writing a
//! temporary file and renaming it over the old one, this allocates no new inode per
//! write, which on ext4 costs more and more as deleted inodes pile up.

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

/// A two-slot state file.
#[derive(Debug)]
pub struct StateFile {
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
    /// The state file `base` (slots `base.0` and `base.1`); nothing is read or created yet.
    pub fn new(base: &Path) -> StateFile {
        let slot = |i: u8| {
            let mut p = base.as_os_str().to_owned();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        StateFile {
            paths: [slot(0), slot(1)],
            seq: 0,
            known: false,
        }
    }

    /// The newest intact state, if any slot holds one.
    pub fn read(&mut self) -> Result<Option<Vec<u8>>, StateFileError> {
        let mut best: Option<(u64, Vec<u8>)> = None;
        for p in &self.paths {
            let buf = match std::fs::read(p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
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
        // Opened for each write: a simulated datacenter holds many agents in one process,
        // and a held descriptor per agent would exhaust its file limit.
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        f.write_all_at(&buf, 0).map_err(io)?;
        f.set_len(buf.len() as u64).map_err(io)?;
        self.seq = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
