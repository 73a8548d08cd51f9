//! The simulation's record: its trace (kept by the simulated network, so messages,
//! faults and checks interleave in one timeline) and the invariant violations found.

use std::sync::{Arc, Mutex};

use plexus_net::SimNetwork;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name (e.g. `no-task-lost`).
    pub invariant: &'static str,
    /// Simulated time since the start, in milliseconds.
    pub at_ms: u64,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] at {:.3} s: {}",
            self.invariant,
            self.at_ms as f64 / 1000.0,
            self.message
        )
    }
}

/// Shared by everything in one simulation that notes events or finds violations.
#[derive(Clone)]
pub struct Recorder {
    net: SimNetwork,
    start: tokio::time::Instant,
    violations: Arc<Mutex<Vec<Violation>>>,
}

impl Recorder {
    /// A recorder writing into `net`'s trace.
    pub fn new(net: SimNetwork) -> Self {
        Recorder {
            net,
            start: tokio::time::Instant::now(),
            violations: Arc::default(),
        }
    }

    /// Simulated milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Adds a line to the trace.
    pub fn note(&self, line: std::fmt::Arguments<'_>) {
        self.net.note(line);
    }

    /// Records a violation (and traces it).
    pub fn violation(&self, invariant: &'static str, message: String) {
        self.net
            .note(format_args!("VIOLATION {invariant}: {message}"));
        self.violations
            .lock()
            .expect("violations lock")
            .push(Violation {
                invariant,
                at_ms: self.now_ms(),
                message,
            });
    }

    /// The violations so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.violations.lock().expect("violations lock").clone()
    }
}
