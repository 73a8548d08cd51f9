//! The failure detector: a plain type deciding when a silent peer is down.
//!
//! Every frame from a peer counts as a sign of life. A peer silent for longer than the
//! timeout is declared down. With heartbeats every `interval` and the check run every
//! `interval`, a crashed peer is declared down between `timeout` and
//! `timeout + interval` after its last frame.

use std::time::Duration;

/// Tracks one peer's silence. Times are offsets from any fixed origin (the node's start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureDetector {
    timeout: Duration,
    last_heard: Duration,
}

/// What the detector concludes about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Heard from recently enough.
    Alive,
    /// Silent for longer than the timeout, by this much.
    Down {
        /// How long the peer has been silent.
        silent_for: Duration,
    },
}

impl FailureDetector {
    /// Starts tracking at `now` (counts as a sign of life).
    pub fn new(now: Duration, timeout: Duration) -> Self {
        FailureDetector {
            timeout,
            last_heard: now,
        }
    }

    /// Records a sign of life at `now`. Going back in time is ignored.
    pub fn heard(&mut self, now: Duration) {
        self.last_heard = self.last_heard.max(now);
    }

    /// The verdict at `now`.
    pub fn check(&self, now: Duration) -> Verdict {
        let silent_for = now.saturating_sub(self.last_heard);
        if silent_for > self.timeout {
            Verdict::Down { silent_for }
        } else {
            Verdict::Alive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn down_only_after_timeout() {
        let ms = Duration::from_millis;
        let mut d = FailureDetector::new(ms(0), ms(1000));
        assert_eq!(d.check(ms(1000)), Verdict::Alive);
        assert_eq!(
            d.check(ms(1001)),
            Verdict::Down {
                silent_for: ms(1001)
            }
        );
        d.heard(ms(900));
        assert_eq!(d.check(ms(1800)), Verdict::Alive);
        d.heard(ms(100)); // stale: ignored
        assert!(matches!(d.check(ms(1950)), Verdict::Down { .. }));
    }

    proptest! {
        #[test]
        fn verdict_is_silence_versus_timeout(events in proptest::collection::vec(0u64..10_000, 1..50), probe in 0u64..20_000, timeout in 1u64..5_000) {
            let ms = Duration::from_millis;
            let mut d = FailureDetector::new(ms(0), ms(timeout));
            for e in &events { d.heard(ms(*e)); }
            let last = events.iter().copied().max().unwrap();
            let down = probe > last && probe - last > timeout;
            prop_assert_eq!(matches!(d.check(ms(probe)), Verdict::Down { .. }), down);
        }
    }
}
