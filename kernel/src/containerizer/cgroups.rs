//! cgroups for task isolation: v2 (unified) or v1 (`memory`, `cpu` and `pids` hierarchies).
//!
//! Each task gets its own cgroup under `plexus/<agent>/<task>`, nested in the agent's own
//! cgroup. Memory is limited (no swap), cpu is capped with the CFS quota (so a busy task is
//! throttled, never killed), the number of processes and threads is capped by the `pids`
//! controller where the machine has it (a fork loop stops there), and an OOM kill or a
//! refused fork is read back from the cgroup's event counters.

use std::path::{Path, PathBuf};

/// Which cgroup interface the machine offers to this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMode {
    /// The unified hierarchy, with the `cpu` and `memory` controllers.
    V2 {
        /// Directory under which task cgroups are made.
        base: PathBuf,
    },
    /// Separate `memory`, `cpu` and (where mounted) `pids` hierarchies.
    V1 {
        /// Base directory in the memory hierarchy.
        memory: PathBuf,
        /// Base directory in the cpu hierarchy.
        cpu: PathBuf,
        /// Base directory in the pids hierarchy, if the machine has one.
        pids: Option<PathBuf>,
    },
    /// No usable cgroups; tasks get rlimits instead.
    Unavailable {
        /// Why.
        why: String,
    },
}

const ROOT: &str = "/sys/fs/cgroup";

/// This process's cgroup path in the hierarchy of `controller` (v1), or the unified one
/// (`controller` empty).
fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        hit.then(|| path.trim_start_matches('/').to_string())
    })
}

fn usable_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

impl CgroupMode {
    /// Detects what this machine allows, preparing `plexus/<agent>` directories.
    pub fn detect(agent: &str) -> CgroupMode {
        let root = Path::new(ROOT);
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory")
            && controllers.split_whitespace().any(|c| c == "cpu")
        {
            let base = root.join("plexus").join(agent);
            let ctrls = if controllers.split_whitespace().any(|c| c == "pids") {
                "+cpu +memory +pids"
            } else {
                "+cpu +memory"
            };
            let enable = |dir: &Path| std::fs::write(dir.join("cgroup.subtree_control"), ctrls);
            let r = usable_dir(&base).and_then(|_| {
                if let Err(e) = enable(root) {
                    // Often already enabled, or not ours to change: the next two say.
                    tracing::debug!("enabling controllers at {}: {e}", root.display());
                }
                enable(&root.join("plexus")).map_err(|e| format!("enabling controllers: {e}"))?;
                enable(&base).map_err(|e| format!("enabling controllers: {e}"))
            });
            return match r {
                Ok(()) => CgroupMode::V2 { base },
                Err(why) => CgroupMode::Unavailable {
                    why: format!("cgroup v2: {why}"),
                },
            };
        }
        let mem_root = root.join("memory");
        let cpu_root = ["cpu", "cpu,cpuacct"]
            .iter()
            .map(|d| root.join(d))
            .find(|p| p.join("cpu.cfs_quota_us").exists());
        match cpu_root {
            Some(cpu_root) if mem_root.join("memory.limit_in_bytes").exists() => {
                let memory = mem_root.join(own_path("memory").unwrap_or_default()).join("plexus").join(agent);
                let cpu = cpu_root.join(own_path("cpu").unwrap_or_default()).join("plexus").join(agent);
                let pids_root = root.join("pids");
                let pids = pids_root
                    .join("cgroup.procs")
                    .exists()
                    .then(|| pids_root.join(own_path("pids").unwrap_or_default()).join("plexus").join(agent))
                    .filter(|p| usable_dir(p).is_ok());
                match usable_dir(&memory).and_then(|_| usable_dir(&cpu)) {
                    Ok(()) => CgroupMode::V1 { memory, cpu, pids },
                    Err(why) => CgroupMode::Unavailable { why: format!("cgroup v1: {why}") },
                }
            }
            _ => CgroupMode::Unavailable {
                why: format!("neither cgroup v2 with cpu+memory nor cgroup v1 cpu and memory hierarchies under {ROOT}"),
            },
        }
    }

    /// Removes this agent's (empty) base directories.
    pub fn remove_base(&self) {
        match self {
            CgroupMode::V2 { base } => remove_empty(base),
            CgroupMode::V1 { memory, cpu, pids } => {
                remove_empty(memory);
                remove_empty(cpu);
                if let Some(p) = pids {
                    remove_empty(p);
                }
            }
            CgroupMode::Unavailable { .. } => {}
        }
    }

    /// A short description for logs and the API.
    pub fn describe(&self) -> String {
        match self {
            CgroupMode::V2 { base } => format!("cgroups v2 at {}", base.display()),
            CgroupMode::V1 { memory, .. } => format!("cgroups v1 at {}", memory.display()),
            CgroupMode::Unavailable { why } => format!("rlimits only ({why})"),
        }
    }

    /// This agent's base directories (the parents of its task cgroups).
    pub fn bases(&self) -> Vec<PathBuf> {
        match self {
            CgroupMode::V2 { base } => vec![base.clone()],
            CgroupMode::V1 { memory, cpu, pids } => {
                let mut v = vec![memory.clone(), cpu.clone()];
                v.extend(pids.clone());
                v
            }
            CgroupMode::Unavailable { .. } => Vec::new(),
        }
    }

    /// Makes the cgroup of one task with its limits (`max_pids`: processes and threads,
    /// where the machine has the `pids` controller).
    pub fn create(
        &self,
        task: &str,
        cpus_milli: u64,
        mem_mb: u64,
        max_pids: Option<u64>,
    ) -> std::io::Result<TaskCgroup> {
        let name = sanitize(task);
        let pids_max = |dir: &Path| -> std::io::Result<()> {
            match max_pids {
                Some(n) if dir.join("pids.max").exists() => {
                    std::fs::write(dir.join("pids.max"), n.max(1).to_string())
                }
                _ => Ok(()),
            }
        };
        let mem_bytes = (mem_mb.max(4) * 1024 * 1024).to_string();
        let quota = (cpus_milli.max(10) * 100).to_string(); // period 100 ms
        match self {
            CgroupMode::V2 { base } => {
                let dir = base.join(&name);
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("memory.max"), &mem_bytes)?;
                if let Err(e) = std::fs::write(dir.join("memory.swap.max"), "0") {
                    // Without swap accounting there is no swap to cap.
                    tracing::debug!("{}: no swap limit: {e}", dir.display());
                }
                std::fs::write(dir.join("cpu.max"), format!("{quota} 100000"))?;
                pids_max(&dir)?;
                Ok(TaskCgroup {
                    v2: true,
                    dirs: vec![dir],
                })
            }
            CgroupMode::V1 { memory, cpu, pids } => {
                let m = memory.join(&name);
                let c = cpu.join(&name);
                std::fs::create_dir_all(&m)?;
                std::fs::create_dir_all(&c)?;
                std::fs::write(m.join("memory.limit_in_bytes"), &mem_bytes)?;
                // No swap: memory+swap capped at the memory limit where the kernel
                // accounts swap, else swapping discouraged.
                if std::fs::write(m.join("memory.memsw.limit_in_bytes"), &mem_bytes).is_err() {
                    if let Err(e) = std::fs::write(m.join("memory.swappiness"), "0") {
                        tracing::debug!("{}: swappiness left as it is: {e}", m.display());
                    }
                }
                // A new cgroup's period is the kernel's default, 100 ms.
                std::fs::write(c.join("cpu.cfs_quota_us"), &quota)?;
                let mut dirs = vec![m, c];
                if let Some(p) = pids {
                    let p = p.join(&name);
                    std::fs::create_dir_all(&p)?;
                    pids_max(&p)?;
                    dirs.push(p);
                }
                Ok(TaskCgroup { v2: false, dirs })
            }
            CgroupMode::Unavailable { why } => Err(std::io::Error::other(why.clone())),
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One task's cgroup(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCgroup {
    /// True for the unified hierarchy.
    pub v2: bool,
    /// Its directories (v2: one; v1: memory, cpu and, where mounted, pids).
    pub dirs: Vec<PathBuf>,
}

fn counter(file: &Path, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

impl TaskCgroup {
    /// `cgroup.procs` files a process writes its pid to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// True when the kernel OOM-killed a process of the task.
    pub fn oom_killed(&self) -> bool {
        let d = &self.dirs[0];
        if self.v2 {
            counter(&d.join("memory.events"), "oom_kill") > 0
        } else {
            counter(&d.join("memory.oom_control"), "oom_kill") > 0
        }
    }

    /// Sets the task's cpu and memory limits (a pre-started executor taking on a task).
    /// A memory limit below what the task uses fails, leaving the old limit.
    pub fn resize(&self, cpus_milli: u64, mem_mb: u64) -> std::io::Result<()> {
        let mem_bytes = mem_mb.max(4) * 1024 * 1024;
        let quota = cpus_milli.max(10) * 100; // period 100 ms
        if self.v2 {
            let d = &self.dirs[0];
            std::fs::write(d.join("memory.max"), mem_bytes.to_string())?;
            return std::fs::write(d.join("cpu.max"), format!("{quota} 100000"));
        }
        let (m, c) = (&self.dirs[0], &self.dirs[1]);
        let memsw = m.join("memory.memsw.limit_in_bytes");
        let growing = self.mem_limit_bytes().is_some_and(|old| mem_bytes > old);
        // memory+swap is never below memory: raised first when growing, after when not.
        if growing && memsw.exists() {
            std::fs::write(&memsw, mem_bytes.to_string())?;
        }
        std::fs::write(m.join("memory.limit_in_bytes"), mem_bytes.to_string())?;
        if !growing && memsw.exists() {
            std::fs::write(&memsw, mem_bytes.to_string())?;
        }
        std::fs::write(c.join("cpu.cfs_quota_us"), quota.to_string())
    }

    /// The task's memory limit in bytes.
    pub fn mem_limit_bytes(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::read_to_string(self.dirs[0].join(file))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    /// How many forks the `pids` limit refused (0 without a pids controller).
    pub fn forks_refused(&self) -> u64 {
        self.dirs
            .iter()
            .map(|d| d.join("pids.events"))
            .find(|p| p.exists())
            .map_or(0, |p| counter(&p, "max"))
    }

    /// The task's `pids` limit, if it has one.
    pub fn max_pids(&self) -> Option<u64> {
        self.dirs
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join("pids.max")).ok())
            .and_then(|t| t.trim().parse().ok())
    }

    /// How many cpu periods the task was throttled in.
    pub fn throttled_periods(&self) -> u64 {
        let d = if self.v2 {
            &self.dirs[0]
        } else {
            &self.dirs[1]
        };
        counter(&d.join("cpu.stat"), "nr_throttled")
    }

    /// Pids still in the task's cgroup.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(&self.procs_files()[0])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills what is left and removes the cgroup(s).
    pub fn destroy(&self) {
        for pid in self.pids() {
            // SAFETY: kill(2) with a pid read from the task's own cgroup.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for d in &self.dirs {
            remove_empty(d);
        }
    }
}

/// Removes the cgroup directory `dir` (a cgroup is removed with `rmdir` once it has no
/// processes); one already gone is fine, any other failure is logged.
fn remove_empty(dir: &Path) {
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Still emptying: the caller tries again.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            tracing::debug!("cgroup {} is still busy", dir.display())
        }
        Err(e) => tracing::warn!("cannot remove cgroup {}: {e}", dir.display()),
    }
}
