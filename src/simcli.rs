//! `plexus sim`: run one seed, sweep a range of seeds, or replay a seed with its full
//! trace. A sweep runs each seed in its own process (`plexus sim --seed N`), so any seed
//! it reports replays byte for byte with `plexus sim --replay N`.
//!
//! The simulation runs in its own program, `plexus-sim` (which `plexus sim` hands over
//! to): a simulated datacenter makes millions of small, short-lived allocations on one
//! thread, which mimalloc serves fastest (a fifth faster than the system allocator, a
//! few percent faster than jemalloc), while the nodes of `plexus` pass messages between
//! threads, where mimalloc is a third slower.

use std::io::{IsTerminal, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use plexus_sim::{run, Defect, FaultRates, SimConfig, SimReport, SupervisedService, Swarm};

/// The simulation's own program, installed next to `plexus`.
pub const SIM_PROGRAM: &str = "plexus-sim";

/// Flags of `plexus sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Run this seed.
    #[arg(long, conflicts_with_all = ["seeds", "replay"])]
    pub seed: Option<u64>,
    /// Sweep seeds A..B (B excluded) or A..=B, each in its own process.
    #[arg(long, value_name = "A..B")]
    pub seeds: Option<String>,
    /// Replay one seed and print its whole trace.
    #[arg(long, value_name = "SEED")]
    pub replay: Option<u64>,
    /// Agents (machines).
    #[arg(long, default_value_t = 5)]
    pub agents: usize,
    /// Frameworks.
    #[arg(long, default_value_t = 2)]
    pub frameworks: usize,
    /// Tasks each framework keeps running.
    #[arg(long, default_value_t = 10)]
    pub tasks: usize,
    /// Supervised user workers (0: none).
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Simulated time under faults, e.g. `10m`, `1h`.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Simulated time after faults heal, before the final checks.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub settle: Duration,
    /// Fault rates: `swarm` (rates, agents up to twice `--agents`, frameworks up to twice
    /// `--frameworks` and the offer limit drawn from the seed), `none`, `default`, or
    /// `default*K` (every default rate times K).
    #[arg(long, default_value = "swarm")]
    pub faults: String,
    /// Machine crashes per simulated hour (overrides `--faults`).
    #[arg(long)]
    pub crash_rate: Option<f64>,
    /// Chance that a crashed machine loses its state directory (overrides `--faults`).
    #[arg(long)]
    pub lose_state: Option<f64>,
    /// Partitions per simulated hour (overrides `--faults`).
    #[arg(long)]
    pub partition_rate: Option<f64>,
    /// Node pauses per simulated hour (overrides `--faults`).
    #[arg(long)]
    pub pause_rate: Option<f64>,
    /// Probability that a batch of messages is lost, breaking its connection (overrides
    /// `--faults`).
    #[arg(long)]
    pub drop_rate: Option<f64>,
    /// Share of tasks that crash (overrides `--faults`).
    #[arg(long)]
    pub task_failure_rate: Option<f64>,
    /// Master crashes per simulated hour, at least a minute apart (overrides `--faults`).
    #[arg(long)]
    pub master_crash_rate: Option<f64>,
    /// Crashes of the leading master's machine per simulated hour (overrides `--faults`).
    #[arg(long)]
    pub leader_crash_rate: Option<f64>,
    /// Partitions cutting the leading master (and some agents) off, per simulated hour
    /// (overrides `--faults`).
    #[arg(long)]
    pub leader_isolation_rate: Option<f64>,
    /// Masters: 1 runs alone; 3 or 5 elect a leader with Raft.
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Agents' disks failing writes (full, tearing writes or failing syncs), per simulated
    /// hour (overrides `--faults`).
    #[arg(long)]
    pub disk_fault_rate: Option<f64>,
    /// Heartbeat period of every node.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Silence after which a node is declared down.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub node_down: Duration,
    /// Most offers one framework gets per allocation cycle (the master's `offer_limit`;
    /// a swarm draws its own).
    #[arg(long, default_value_t = 64)]
    pub offer_limit: u32,
    /// Bytes of padding in every task's command (at most 65536): with `--max-frame-bytes`
    /// small beside them, agents' registrations outgrow a message and go in parts.
    #[arg(long, default_value_t = 0)]
    pub argv_bytes: usize,
    /// The largest frame every simulated link carries.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_frame_bytes: u32,
    /// Switch on a deliberate defect to see the invariants catch it: `drop-acks`,
    /// `forget-completed`, `forget-kills`, `send-unwritten`.
    #[arg(long)]
    pub defect: Option<String>,
    /// Trace lines printed before a violation.
    #[arg(long, default_value_t = 40)]
    pub tail: usize,
    /// Seeds run at once in a sweep.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Print only the one-line result (used by sweeps).
    #[arg(long, hide = true)]
    pub line: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); e.g. 90s, 10m, 1h"))
}

fn fault_rates(s: &str) -> anyhow::Result<FaultRates> {
    match s {
        "none" => Ok(FaultRates::none()),
        "default" => Ok(FaultRates::default()),
        other => match other.strip_prefix("default*") {
            Some(k) => {
                let k: f64 = k
                    .parse()
                    .map_err(|_| anyhow!("bad --faults {other:?}: {k:?} is not a number"))?;
                if !(k.is_finite() && k >= 0.0) {
                    bail!("bad --faults {other:?}: the factor must be a non-negative number");
                }
                Ok(FaultRates::default().scaled(k))
            }
            None => bail!("bad --faults {other:?}: use swarm, none, default or default*K"),
        },
    }
}

fn rates(a: &SimArgs, mut r: FaultRates) -> anyhow::Result<FaultRates> {
    let check = |name: &str, v: f64, max: f64| {
        if v.is_finite() && (0.0..=max).contains(&v) {
            Ok(v)
        } else {
            Err(anyhow!("--{name} must be between 0 and {max}, not {v}"))
        }
    };
    if let Some(v) = a.crash_rate {
        r.crashes_per_hour = check("crash-rate", v, 1e6)?;
    }
    if let Some(v) = a.lose_state {
        r.lose_state = check("lose-state", v, 1.0)?;
    }
    if let Some(v) = a.partition_rate {
        r.partitions_per_hour = check("partition-rate", v, 1e6)?;
    }
    if let Some(v) = a.pause_rate {
        r.pauses_per_hour = check("pause-rate", v, 1e6)?;
    }
    if let Some(v) = a.drop_rate {
        r.drop_rate = check("drop-rate", v, 0.5)?;
    }
    if let Some(v) = a.task_failure_rate {
        r.task_failure_rate = check("task-failure-rate", v, 1.0)?;
    }
    if let Some(v) = a.master_crash_rate {
        r.master_crashes_per_hour = check("master-crash-rate", v, 60.0)?;
    }
    if let Some(v) = a.disk_fault_rate {
        r.disk_faults_per_hour = check("disk-fault-rate", v, 1e6)?;
    }
    if let Some(v) = a.leader_crash_rate {
        r.leader_crashes_per_hour = check("leader-crash-rate", v, 1e6)?;
    }
    if let Some(v) = a.leader_isolation_rate {
        r.leader_isolations_per_hour = check("leader-isolation-rate", v, 1e6)?;
    }
    Ok(r)
}

fn config(a: &SimArgs, seed: u64, keep_trace: usize) -> anyhow::Result<SimConfig> {
    if a.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if !(1..=7).contains(&a.masters) {
        bail!("--masters must be from 1 to 7, not {}", a.masters);
    }
    if a.node_down < a.heartbeat * 2 {
        bail!("--node-down must be at least twice --heartbeat");
    }
    let defect = match a.defect.as_deref() {
        None => None,
        Some(d) => match Defect::ALL.iter().find(|(name, _)| *name == d) {
            Some((_, defect)) => Some(*defect),
            None => {
                let known: Vec<&str> = Defect::ALL.iter().map(|(n, _)| *n).collect();
                bail!("unknown --defect {d:?} (known: {})", known.join(", "))
            }
        },
    };
    let mut workloads: Vec<std::sync::Arc<dyn plexus_sim::Workload>> = Vec::new();
    if a.workers > 0 {
        workloads.push(std::sync::Arc::new(SupervisedService::new(
            a.workers,
            Duration::from_secs(300),
            seed ^ 0x776f_726b,
        )));
    }
    let (base, agents, frameworks, offer_limit) = if a.faults == "swarm" {
        let w = Swarm::draw(seed, a.agents, a.frameworks);
        (w.faults, w.agents, w.frameworks, w.offer_limit)
    } else {
        (
            fault_rates(&a.faults)?,
            a.agents,
            a.frameworks,
            a.offer_limit,
        )
    };
    anyhow::ensure!(
        a.argv_bytes <= plexus_kernel::protocol::MAX_TASK_ARGV_BYTES - 16,
        "--argv-bytes {} is more than a task's command may take ({} bytes with its name)",
        a.argv_bytes,
        plexus_kernel::protocol::MAX_TASK_ARGV_BYTES
    );
    anyhow::ensure!(
        (64 << 10..=plexus_config::MAX_FRAME_LIMIT).contains(&a.max_frame_bytes),
        "--max-frame-bytes {} must be from 65536 to {}",
        a.max_frame_bytes,
        plexus_config::MAX_FRAME_LIMIT
    );
    Ok(SimConfig {
        seed,
        agents,
        frameworks,
        tasks_per_framework: a.tasks,
        duration: a.duration,
        settle: a.settle,
        faults: rates(a, base)?,
        heartbeat_interval: a.heartbeat,
        node_down_timeout: a.node_down,
        offer_limit,
        argv_bytes: a.argv_bytes,
        max_frame_bytes: a.max_frame_bytes,
        keep_trace,
        defect,
        workloads,
        masters: a.masters,
        ..SimConfig::default()
    })
}

/// A duration as one shell word (`75s`, `250ms`).
fn flag_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The flags that reproduce this run (everything but the seed selection).
fn same_flags(a: &SimArgs) -> Vec<String> {
    let mut v = vec![
        format!("--agents={}", a.agents),
        format!("--frameworks={}", a.frameworks),
        format!("--tasks={}", a.tasks),
        format!("--workers={}", a.workers),
        format!("--duration={}", flag_duration(a.duration)),
        format!("--settle={}", flag_duration(a.settle)),
        format!("--faults={}", a.faults),
        format!("--heartbeat={}", flag_duration(a.heartbeat)),
        format!("--node-down={}", flag_duration(a.node_down)),
        format!("--offer-limit={}", a.offer_limit),
        format!("--argv-bytes={}", a.argv_bytes),
        format!("--max-frame-bytes={}", a.max_frame_bytes),
        format!("--masters={}", a.masters),
    ];
    if let Some(d) = &a.defect {
        v.push(format!("--defect={d}"));
    }
    let rates = [
        ("crash-rate", a.crash_rate),
        ("lose-state", a.lose_state),
        ("partition-rate", a.partition_rate),
        ("pause-rate", a.pause_rate),
        ("drop-rate", a.drop_rate),
        ("task-failure-rate", a.task_failure_rate),
        ("master-crash-rate", a.master_crash_rate),
        ("disk-fault-rate", a.disk_fault_rate),
        ("leader-crash-rate", a.leader_crash_rate),
        ("leader-isolation-rate", a.leader_isolation_rate),
    ];
    for (k, x) in rates {
        if let Some(x) = x {
            v.push(format!("--{k}={x}"));
        }
    }
    v
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn result_line(r: &SimReport, wall: Duration) -> String {
    format!(
        "plexus sim seed={} trace_hash={:016x} trace_lines={} tasks={} faults={} violations={} wall_s={:.2} peak_rss_mb={:.0}",
        r.seed,
        r.trace_hash,
        r.trace_lines,
        r.tasks_launched,
        r.faults,
        r.violations.len(),
        wall.as_secs_f64(),
        peak_rss_mb()
    )
}

fn print_violations(a: &SimArgs, r: &SimReport) {
    println!(
        "seed {} broke {} invariant check(s):",
        r.seed,
        r.violations.len()
    );
    for v in &r.violations {
        println!("  {v}");
    }
    let tail = &r.trace_tail[r.trace_tail.len().saturating_sub(a.tail)..];
    println!("last {} events (time in µs):", tail.len());
    for l in tail {
        println!("  {l}");
    }
    println!(
        "replay: plexus sim --replay {} {}",
        r.seed,
        same_flags(a).join(" ")
    );
}

/// Faults the simulation injects into actors (a master crash) are panics the trace
/// already records: they are not printed (nor their backtraces symbolized).
fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let text = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !text.starts_with("fault injected") {
            default(info);
        }
    }));
}

/// Runs `plexus sim`; the process exits non-zero when an invariant broke.
pub fn main(a: SimArgs) -> anyhow::Result<bool> {
    quiet_injected_panics();
    if let Some(range) = &a.seeds {
        return sweep(&a, range);
    }
    let (seed, replay) = match (a.seed, a.replay) {
        (_, Some(s)) => (s, true),
        (Some(s), None) => (s, false),
        (None, None) => (1, false),
    };
    let keep = if replay { usize::MAX } else { a.tail.max(1) };
    let cfg = config(&a, seed, keep)?;
    if !a.line {
        eprintln!(
            "seed {seed}: agents={} frameworks={} offer_limit={} {:?}",
            cfg.agents, cfg.frameworks, cfg.offer_limit, cfg.faults
        );
    }
    let t = Instant::now();
    let r = run(cfg);
    let wall = t.elapsed();
    if replay {
        for l in &r.trace_tail {
            println!("{l}");
        }
    }
    println!("{}", result_line(&r, wall));
    if !r.violations.is_empty() && !a.line {
        print_violations(&a, &r);
    } else if !r.violations.is_empty() {
        for v in &r.violations {
            println!("violation {v}");
        }
    }
    Ok(r.violations.is_empty())
}

fn parse_range(s: &str) -> anyhow::Result<(u64, u64)> {
    let bad = || anyhow!("bad --seeds {s:?}: use A..B or A..=B, e.g. 1..201");
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    let end = if inclusive { b.saturating_add(1) } else { b };
    if end <= a {
        return Err(bad());
    }
    Ok((a, end))
}

struct Outcome {
    seed: u64,
    ok: bool,
    first_violation: Option<String>,
}

fn sweep(a: &SimArgs, range: &str) -> anyhow::Result<bool> {
    let (from, to) = parse_range(range)?;
    config(a, from, 1)?; // validate the flags once, before starting anything
    let exe = std::env::current_exe().context("finding this program")?;
    // `plexus sim ...` or `plexus-sim ...`: the seed runs in the same program.
    let own = exe.file_stem().is_some_and(|n| n == SIM_PROGRAM);
    let total = (to - from) as usize;
    let mut next = from;
    let mut running: Vec<(u64, std::process::Child)> = Vec::new();
    let mut done: Vec<Outcome> = Vec::new();
    let t = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let jobs = a.jobs.max(1);
    while done.len() < total {
        while running.len() < jobs && next < to {
            let sub: &[&str] = if own { &[] } else { &["sim"] };
            let child = Command::new(&exe)
                .args(["--log", "error"])
                .args(sub)
                .args(["--line", "--seed"])
                .arg(next.to_string())
                .args(same_flags(a))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting a seed's process")?;
            running.push((next, child));
            next += 1;
        }
        // Wait for the oldest (seeds take similar times).
        let (seed, child) = running.remove(0);
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with("plexus sim "))
            .unwrap_or("")
            .to_string();
        let first_violation = text
            .lines()
            .find_map(|l| l.strip_prefix("violation "))
            .map(str::to_string)
            .or_else(|| {
                (!out.status.success() && line.is_empty())
                    .then(|| format!("the seed's process failed: {}", out.status))
            });
        done.push(Outcome {
            seed,
            ok: out.status.success() && line.contains("violations=0"),
            first_violation,
        });
        let failed = done.iter().filter(|o| !o.ok).count();
        if tty {
            let width = 40;
            let filled = done.len() * width / total;
            eprint!(
                "\r[{}{}] {}/{} seeds, {} failed, {:.0} s",
                "#".repeat(filled),
                ".".repeat(width - filled),
                done.len(),
                total,
                failed,
                t.elapsed().as_secs_f64()
            );
            if let Err(e) = std::io::stderr().flush() {
                tracing::debug!("progress not shown: {e}");
            }
        } else if done.len() % 100 == 0 || done.len() == total {
            // Not a terminal (a log, CI): a line now and then instead of a bar.
            eprintln!(
                "{}/{} seeds, {} failed, {:.0} s",
                done.len(),
                total,
                failed,
                t.elapsed().as_secs_f64()
            );
        }
    }
    if tty {
        eprintln!();
    }
    let failed: Vec<&Outcome> = done.iter().filter(|o| !o.ok).collect();
    println!(
        "plexus sim_sweep seeds={total} passed={} failed={} wall_s={:.1}",
        total - failed.len(),
        failed.len(),
        t.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        println!("{:<8} {:<60} replay", "SEED", "FIRST VIOLATION");
        for o in &failed {
            let v = o.first_violation.clone().unwrap_or_default();
            let v: String = v.chars().take(60).collect();
            println!(
                "{:<8} {:<60} plexus sim --replay {} {}",
                o.seed,
                v,
                o.seed,
                same_flags(a).join(" ")
            );
        }
    }
    Ok(failed.is_empty())
}
