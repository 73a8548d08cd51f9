//! The one wall clock of plexus: timestamps for people (status-update times, node
//! incarnations, job ids).
//!
//! Normally the system clock. A simulation calls [`simulate`] on its thread, after which
//! the clock on that thread reads a fixed epoch plus the elapsed `tokio::time` (paused and
//! auto-advanced there), so that a seed replays byte for byte.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

thread_local! {
    static SIMULATED: Cell<Option<(Duration, tokio::time::Instant)>> = const { Cell::new(None) };
}

/// From now on, on this thread, the clock reads `epoch` plus the `tokio::time` elapsed
/// since this call.
pub fn simulate(epoch: Duration) {
    SIMULATED.with(|s| s.set(Some((epoch, tokio::time::Instant::now()))));
}

/// Back to the system clock on this thread.
pub fn real() {
    SIMULATED.with(|s| s.set(None));
}

/// Time since the Unix epoch.
pub fn since_epoch() -> Duration {
    match SIMULATED.with(Cell::get) {
        Some((epoch, base)) => epoch + base.elapsed(),
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Nanoseconds since the Unix epoch (never zero).
pub fn unix_nanos() -> u64 {
    (since_epoch().as_nanos() as u64).max(1)
}
