//! Derive macros for plexus-actors.
