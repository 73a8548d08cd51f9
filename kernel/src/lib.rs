//! plexus-kernel: the datacenter operating system — master, agents, frameworks and tasks
//! as actors, the allocator, the containerizer, status updates and the operator HTTP API.
//!
//! The kernel is built on [`plexus_actors`](../plexus_actors/index.html) nodes; it knows
//! nothing of sockets or QUIC.
