//! plexus-sim: a whole datacenter in one process on the simulated network, with a fault
//! plan drawn from a seed, invariant checkers and a replayable trace.
//!
//! The master, agents and frameworks are the real kernel actors on real `Node`s; only
//! the network ([`plexus_net::SimNetwork`]) and the processes ([`SimContainerizer`]) are
//! simulated. Everything runs on one current-thread tokio runtime with paused time, so a
//! simulated hour passes in seconds, and everything random is drawn from the seed.
//!
//! ```no_run
//! use plexus_sim::{run, SimConfig};
//! let report = run(SimConfig { seed: 7, ..SimConfig::default() });
//! assert!(report.violations.is_empty(), "{:?}", report.violations);
//! ```
//!
//! Replays are byte for byte within a fresh process (actor ids come from process-wide
//! counters), which is why `plexus sim` runs each seed of a sweep in its own process.

#![warn(missing_docs)]

pub mod bench;
pub mod containerizer;
pub mod disk;
pub mod faults;
pub mod framework;
pub mod invariants;
pub mod trace;
pub mod workload;
pub mod world;

pub use containerizer::{Machines, SimContainerizer};
pub use disk::{DiskFault, SimDisk};
pub use faults::{Fault, FaultPlan, FaultRates, Swarm};
pub use trace::{Recorder, Violation};
pub use workload::{SimContext, SupervisedService, Workload};
pub use world::{run, Defect, SimConfig, SimReport};
