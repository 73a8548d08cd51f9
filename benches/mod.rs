//! Benchmarks behind `plexus bench`; each prints one figure per line in the shape
//! `plexus <figure> key=value ...`, comparable line by line with `benches/peers/*/run.sh`.

pub mod allocator;
pub mod failover;
pub mod failover_processes;
pub mod launch;
pub mod placed;
pub mod remote;
