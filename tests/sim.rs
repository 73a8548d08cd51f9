//! The datacenter simulation through the `plexus sim` command: a seed replays byte for
//! byte, a sweep with faults passes, and a deliberately broken build is caught.

use std::process::Command;

fn plexus(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(args)
        .output()
        .expect("running plexus");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// The one-line result of a single run.
fn result_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("plexus sim "))
        .unwrap_or_else(|| panic!("no result line in {out:?}"))
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let run = |seed: &str| {
        let (_, out) = plexus(&[
            "sim",
            "--line",
            "--seed",
            seed,
            "--duration",
            "5m",
            "--faults",
            "default*3",
        ]);
        let line = result_line(&out).to_string();
        (
            field(&line, "trace_hash").to_string(),
            field(&line, "trace_lines").to_string(),
            field(&line, "faults").to_string(),
        )
    };
    let a = run("11");
    let b = run("11");
    assert_eq!(a, b, "seed 11 twice");
    assert_ne!(a.2, "0", "the run had faults: {a:?}");
    let c = run("12");
    assert_ne!(a.0, c.0, "another seed, another trace");
    // The replay prints the whole trace, whose lines the hash covers.
    let (_, full) = plexus(&[
        "sim",
        "--replay",
        "11",
        "--duration",
        "5m",
        "--faults",
        "default*3",
    ]);
    let traced = full
        .lines()
        .filter(|l| !l.starts_with("plexus sim "))
        .count();
    assert_eq!(
        traced.to_string(),
        a.1,
        "the replay prints every traced line"
    );
}

/// Thirty seeds keep the test run short (a debug build simulates a seed of three
/// masters in about four seconds); `plexus sim --seeds 1..1001` on a release build is
/// the full sweep.
#[test]
fn a_sweep_of_30_seeds_with_faults_keeps_every_invariant() {
    let (ok, out) = plexus(&["sim", "--seeds", "1..31", "--jobs", "2"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("plexus sim_sweep seeds=30 passed=30 failed=0"),
        "{out}"
    );
}

/// Agents whose tasks outgrow a message (30 KB of command per task, frames of 256 KiB):
/// their registrations go in parts and frameworks' launches stay within a message,
/// through crashes, partitions and restarts.
#[test]
fn a_sweep_with_agent_state_larger_than_a_message_keeps_every_invariant() {
    let (ok, out) = plexus(&[
        "sim",
        "--seeds",
        "1..7",
        "--tasks",
        "40",
        "--argv-bytes",
        "30000",
        "--max-frame-bytes",
        "262144",
        "--jobs",
        "2",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("plexus sim_sweep seeds=6 passed=6 failed=0"),
        "{out}"
    );
}

#[test]
fn a_broken_build_is_caught_and_the_seed_replays() {
    let (ok, out) = plexus(&[
        "sim",
        "--seeds",
        "1..21",
        "--masters",
        "1",
        "--defect",
        "drop-acks",
        "--jobs",
        "2",
    ]);
    assert!(
        !ok,
        "agents dropping acknowledgements went unnoticed: {out}"
    );
    assert!(out.contains("failed="), "{out}");
    // The summary names a seed and the command that replays it.
    let replay = out
        .lines()
        .find_map(|l| {
            l.split_once("plexus sim --replay ")
                .map(|x| x.1.to_string())
        })
        .unwrap_or_else(|| panic!("no replay command in {out}"));
    let args: Vec<&str> = replay.split_whitespace().collect();
    let mut cmd = vec!["sim", "--seed"];
    cmd.extend(args.iter().copied());
    let (ok, again) = plexus(&cmd);
    assert!(!ok, "the reported seed fails again when replayed: {again}");
    assert!(
        again.contains("updates-acknowledged") || again.contains("no-task-lost"),
        "{again}"
    );
    assert!(
        again.contains("last "),
        "the last events are printed: {again}"
    );
}

#[test]
fn a_crashing_master_is_restarted_and_loses_no_task() {
    // Ten master crashes in ten simulated minutes (a minute apart), nothing else.
    let (ok, out) = plexus(&[
        "sim",
        "--line",
        "--seed",
        "5",
        "--faults",
        "none",
        "--master-crash-rate",
        "60",
    ]);
    let line = result_line(&out);
    assert!(ok, "{out}");
    assert_eq!(field(line, "violations"), "0", "{out}");
    assert!(field(line, "faults").parse::<u32>().unwrap() >= 5, "{line}");
}

#[test]
fn seeds_that_found_bugs_keep_passing() {
    // 62: an agent kept a master ref that had ended before it watched it, and never
    // registered again. 686: a spawn that arrived on the link of a session already
    // declared down started a child no supervisor knew of.
    // Both with one master, as when they were found.
    for seeds in ["62..=62", "686..=686"] {
        let (ok, out) = plexus(&[
            "sim",
            "--seeds",
            seeds,
            "--masters",
            "1",
            "--leader-crash-rate",
            "0",
            "--leader-isolation-rate",
            "0",
            "--jobs",
            "1",
        ]);
        assert!(ok && out.contains("passed=1 failed=0"), "{out}");
    }
    // With three masters. 363: a placed actor's reference ended before its start was
    // answered, and its supervisor, not knowing it yet, never heard of its end. 522: an
    // agent's change made outside a message's usual path stayed unwritten, and the
    // update waiting for it was never resent. 253: an executor's link dropped and came
    // back, and the end of the actor it hosted never reached its agent. 663: a machine
    // crashed while a task's process was starting, and the process lived on. 907: a
    // framework subscribed twice in a row and kept a suppression it thought undone. 350: a
    // task to kill was called unknown by a leader its agent could not reach, and ran on.
    for seeds in [
        "363..=363",
        "522..=522",
        "253..=253",
        "663..=663",
        "907..=907",
        "350..=350",
    ] {
        let (ok, out) = plexus(&["sim", "--seeds", seeds, "--jobs", "1"]);
        assert!(ok && out.contains("passed=1 failed=0"), "{out}");
    }
}

/// Three masters whose leader crashes, or is cut off with some agents, every two
/// simulated minutes on average, and nothing else: one leader at a time, every
/// acknowledged registry write kept, every agent registered with the leader at the end.
#[test]
fn leader_crashes_and_isolations_keep_one_leader_and_every_write() {
    let (ok, out) = plexus(&[
        "sim",
        "--seeds",
        "1..9",
        "--faults",
        "none",
        "--leader-crash-rate",
        "30",
        "--leader-isolation-rate",
        "30",
        "--jobs",
        "2",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("plexus sim_sweep seeds=8 passed=8 failed=0"),
        "{out}"
    );
}
