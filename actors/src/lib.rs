//! Distribution for ractor: nodes, remote actor references, remote spawn, cross-node
//! supervision and monitors, and a cluster-wide name registry.
