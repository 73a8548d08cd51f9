//! plexus-sim: a whole datacenter in one process on the simulated network, with a fault
//! plan drawn from a seed, invariant checkers and a replayable trace.
