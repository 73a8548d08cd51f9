//! Simulated disks: each machine's files in memory, with the faults a real disk has.
//!
//! A [`SimDisk`] keeps the agent's checkpoint slots of one machine. It can be made full
//! (writes fail with "no space left on device" until space returns), and it forgets a
//! machine's files when the machine comes back without its state. Writes are whole and
//! synced when they return, as [`RealDisk`](plexus_kernel::agent::RealDisk)'s are; a
//! write torn by a crash can only be the one in flight, which the agent never counted
//! on (the state file's checksums and two slots cover it, tested in `kernel::statefile`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use plexus_kernel::statefile::Disk;

/// One machine's simulated disk.
#[derive(Debug, Default)]
pub struct SimDisk {
    files: Mutex<BTreeMap<PathBuf, Vec<u8>>>,
    full: AtomicBool,
}

impl SimDisk {
    /// Makes writes fail (`true`) or succeed again (`false`).
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// Forgets every file under `dir` (the machine lost its state).
    pub fn forget_under(&self, dir: &Path) {
        self.files
            .lock()
            .expect("disk lock")
            .retain(|p, _| !p.starts_with(dir));
    }
}

impl Disk for SimDisk {
    fn read(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.files.lock().expect("disk lock").get(path).cloned())
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            ));
        }
        self.files
            .lock()
            .expect("disk lock")
            .insert(path.to_path_buf(), bytes.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_simulated_disk_keeps_the_disk_contract_and_fills_up() {
        let d = Arc::new(SimDisk::default());
        plexus_kernel::statefile::disk_contract(d.clone(), Path::new("/sim/m1"));
        d.set_full(true);
        let p = Path::new("/sim/m1/x");
        let e = d.write(p, b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        d.set_full(false);
        d.write(p, b"x").unwrap();
        d.forget_under(Path::new("/sim/m1"));
        assert_eq!(d.read(p).unwrap(), None);
    }
}
