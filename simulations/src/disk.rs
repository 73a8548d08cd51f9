//! Simulated disks: each machine's files in memory, with the faults a real disk has.
//!
//! A [`SimDisk`] keeps the agent's checkpoint slots of one machine, twice: what the
//! machine's page cache holds (what reads see) and what is durable on the device (what
//! survives a power loss). A write that succeeds is both, as
//! [`RealDisk`](plexus_kernel::agent::RealDisk)'s writes are synced before they return.
//! A disk fault makes writes fail in one of the ways real ones do:
//!
//! - [`DiskFault::Full`]: no space left; nothing is written.
//! - [`DiskFault::Torn`]: an I/O error part way; the file holds a prefix of the new bytes
//!   (in the cache and on the device).
//! - [`DiskFault::LostSync`]: the bytes reach the cache but the sync fails; reads see the
//!   new bytes until the machine loses power, and then the old ones.
//!
//! The agent must not count on a write that failed, and must read back a usable state
//! after any of them (the state file's checksums and two slots cover a torn slot).
//! [`SimDisk::power_loss`] drops what was never synced, as a machine crash does, and
//! [`SimDisk::forget_under`] loses a machine's files altogether.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use plexus_kernel::statefile::Disk;

/// How a faulty disk fails its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// No space left on the device; nothing is written.
    Full,
    /// An I/O error part way through: a prefix of the bytes is written.
    Torn,
    /// The sync fails: the bytes are cached but not durable.
    LostSync,
}

impl DiskFault {
    /// Every kind, for drawing one.
    pub const ALL: [DiskFault; 3] = [DiskFault::Full, DiskFault::Torn, DiskFault::LostSync];
}

impl std::fmt::Display for DiskFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DiskFault::Full => "full",
            DiskFault::Torn => "tearing writes",
            DiskFault::LostSync => "failing syncs",
        })
    }
}

/// Files share their bytes between the two views: a synced file is one allocation.
#[derive(Debug, Default)]
struct Files {
    /// What reads see.
    cached: BTreeMap<PathBuf, Arc<[u8]>>,
    /// What survives a power loss.
    durable: BTreeMap<PathBuf, Arc<[u8]>>,
    fault: Option<DiskFault>,
}

/// One machine's simulated disk.
#[derive(Debug, Default)]
pub struct SimDisk {
    files: Mutex<Files>,
}

fn io_error(kind: std::io::ErrorKind, what: &str) -> std::io::Error {
    std::io::Error::new(kind, format!("{what} (simulated)"))
}

/// How much of `bytes` a torn write leaves: a prefix whose length is a function of the
/// bytes, so that runs repeat; never all of them.
fn torn_len(bytes: &[u8]) -> usize {
    let share = (crc32fast::hash(bytes) % 1000) as usize;
    bytes.len() * share / 1000
}

impl SimDisk {
    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().expect("disk lock")
    }

    /// Makes writes fail in the way of `fault`, or (`None`) succeed again.
    pub fn set_fault(&self, fault: Option<DiskFault>) {
        self.files().fault = fault;
    }

    /// The machine lost power: every write that was not synced is gone.
    pub fn power_loss(&self) {
        let mut f = self.files();
        f.cached = f.durable.clone();
    }

    /// Forgets every file under `dir` (the machine lost its state).
    pub fn forget_under(&self, dir: &Path) {
        let mut f = self.files();
        f.cached.retain(|p, _| !p.starts_with(dir));
        f.durable.retain(|p, _| !p.starts_with(dir));
    }
}

impl Disk for SimDisk {
    /// Directories are implied by the files' paths.
    fn create_dir_all(&self, _path: &Path) -> std::io::Result<()> {
        Ok(())
    }

    fn is_real(&self) -> bool {
        false
    }

    fn read(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.files().cached.get(path).map(|b| b.to_vec()))
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let mut f = self.files();
        let path = path.to_path_buf();
        match f.fault {
            None => {
                let bytes: Arc<[u8]> = Arc::from(bytes);
                f.cached.insert(path.clone(), bytes.clone());
                f.durable.insert(path, bytes);
                Ok(())
            }
            Some(DiskFault::Full) => Err(io_error(
                std::io::ErrorKind::StorageFull,
                "no space left on device",
            )),
            Some(DiskFault::Torn) => {
                let part: Arc<[u8]> = Arc::from(&bytes[..torn_len(bytes)]);
                f.cached.insert(path.clone(), part.clone());
                f.durable.insert(path, part);
                Err(io_error(std::io::ErrorKind::Other, "input/output error"))
            }
            Some(DiskFault::LostSync) => {
                f.cached.insert(path, Arc::from(bytes));
                Err(io_error(
                    std::io::ErrorKind::Other,
                    "input/output error on sync",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_kernel::statefile::StateFile;

    #[test]
    fn a_simulated_disk_keeps_the_disk_contract_and_fills_up() {
        let d = Arc::new(SimDisk::default());
        plexus_kernel::statefile::disk_contract(d.clone(), Path::new("/sim/m1"));
        d.set_fault(Some(DiskFault::Full));
        let p = Path::new("/sim/m1/x");
        let e = d.write(p, b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(d.read(p).unwrap(), None, "a full disk writes nothing");
        d.set_fault(None);
        d.write(p, b"x").unwrap();
        d.forget_under(Path::new("/sim/m1"));
        assert_eq!(d.read(p).unwrap(), None);
    }

    /// A state file written through every kind of failing write, then read after a
    /// power loss, gives the newest state whose write succeeded (or, for a failed sync
    /// read before any power loss, the one being written).
    #[test]
    fn a_state_file_survives_torn_writes_and_lost_syncs() {
        let base = Path::new("/sim/m1/ck");
        for fault in DiskFault::ALL {
            let d = Arc::new(SimDisk::default());
            let mut f = StateFile::on(d.clone(), base);
            f.write(b"state one").unwrap();
            f.write(b"state two, a little longer").unwrap();
            d.set_fault(Some(fault));
            f.write(b"state three, which fails").unwrap_err();
            f.write(b"state three, which fails again").unwrap_err();
            let before = StateFile::on(d.clone(), base).read().unwrap();
            if fault == DiskFault::LostSync {
                assert_eq!(
                    before.as_deref(),
                    Some(&b"state three, which fails again"[..])
                );
            } else {
                assert_eq!(
                    before.as_deref(),
                    Some(&b"state two, a little longer"[..]),
                    "{fault}"
                );
            }
            d.power_loss();
            let after = StateFile::on(d.clone(), base).read().unwrap();
            assert_eq!(
                after.as_deref(),
                Some(&b"state two, a little longer"[..]),
                "{fault}"
            );
            // Once the disk is well again, writing continues where it left off.
            d.set_fault(None);
            f.write(b"state four").unwrap();
            d.power_loss();
            let now = StateFile::on(d.clone(), base).read().unwrap();
            assert_eq!(now.as_deref(), Some(&b"state four"[..]), "{fault}");
        }
    }
}
