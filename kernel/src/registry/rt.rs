//! openraft's async runtime for the registry: tokio, except that election timeouts are
//! drawn from a generator this thread can seed.
//!
//! A real master draws them from the operating system's randomness, as tokio's runtime
//! for openraft does. A simulation seeds its thread ([`seed_elections`]) so that the
//! same seed elects the same leaders at the same simulated times.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend, TokioInstant};
use rand08::{RngCore, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<rand08::rngs::StdRng>> = const { RefCell::new(None) };
}

/// Draws this thread's election timeouts from `seed` from now on (a simulation's
/// thread); `None` goes back to the operating system's randomness.
pub fn seed_elections(seed: Option<u64>) {
    SEEDED.with(|s| *s.borrow_mut() = seed.map(rand08::rngs::StdRng::seed_from_u64));
}

/// The registry's runtime: [`openraft::TokioRuntime`] with [`ElectionRng`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RegistryRuntime;

/// This thread's seeded generator, or the operating system's.
#[derive(Debug, Default)]
pub struct ElectionRng;

impl RngCore for ElectionRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        SEEDED.with(|s| match s.borrow_mut().as_mut() {
            Some(r) => r.next_u64(),
            None => rand08::thread_rng().next_u64(),
        })
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let n = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&n[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand08::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl AsyncRuntime for RegistryRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = ElectionRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        ElectionRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_thread_draws_the_same_timeouts_again() {
        let draw = || {
            let cfg = openraft::Config {
                election_timeout_min: 400,
                election_timeout_max: 800,
                ..Default::default()
            };
            (0..8)
                .map(|_| cfg.new_rand_election_timeout::<RegistryRuntime>())
                .collect::<Vec<u64>>()
        };
        seed_elections(Some(7));
        let a = draw();
        seed_elections(Some(7));
        assert_eq!(a, draw());
        seed_elections(None);
        assert!(a.iter().all(|t| (400..800).contains(t)));
    }
}
