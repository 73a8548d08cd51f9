//! A user's own actors in the simulated datacenter: a supervised service keeps its
//! workers running through worker bugs and machine crashes.

use std::sync::Arc;
use std::time::Duration;

use plexus_sim::{run, FaultRates, SimConfig, SupervisedService};

#[test]
fn a_supervised_service_survives_worker_bugs_and_machine_crashes() {
    let svc = SupervisedService::new(4, Duration::from_secs(120), 99);
    let report = run(SimConfig {
        seed: 4,
        agents: 4,
        frameworks: 1,
        duration: Duration::from_secs(1800),
        faults: FaultRates::default().scaled(3.0),
        workloads: vec![Arc::new(svc.clone())],
        keep_trace: 400,
        ..SimConfig::default()
    });
    assert!(
        report.violations.is_empty(),
        "{:#?}\n{}",
        report.violations,
        report.trace_tail.join("\n")
    );
    let (failed, reported, running) = svc.counts();
    assert!(failed >= 5, "workers failed {failed} times");
    assert!(
        reported > failed,
        "machine crashes took workers down too ({reported} ends for {failed} bugs)"
    );
    assert_eq!(running, 4, "every worker is back");
    assert!(report.faults > 0);
}

#[test]
fn a_clean_run_has_no_faults_and_no_violations() {
    let report = run(SimConfig {
        seed: 1,
        faults: FaultRates::none(),
        ..SimConfig::default()
    });
    assert_eq!(report.faults, 0);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert!(report.tasks_launched >= 20, "{}", report.tasks_launched);
}
