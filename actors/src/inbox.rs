//! Bounded inboxes: how a node sheds load instead of queueing without limit.
//!
//! A ractor mailbox has no bound, so an actor that falls behind (or a peer that floods
//! it) grows its queue until the process runs out of memory. An actor that must not
//! fall behind without limit asks its node for a bounded inbox
//! ([`Node::bound_inbox`](crate::Node::bound_inbox)): the node counts the messages it
//! delivered from other nodes and the actor has not yet taken, and once `limit_msgs` are
//! queued it sheds what arrives — a cast is dropped, a call is answered with an error
//! saying so — and counts it. The actor calls [`InboxGauge::handled`] as it takes each
//! message.
//!
//! Messages from the actor's own node are not counted (the node cannot see them), so
//! the count is a lower bound of the queue: shedding starts only when at least
//! `limit_msgs` messages from peers really are waiting. Shedding is safe for the kernel's
//! protocols because each of them already survives lost messages (updates are resent
//! until acknowledged, registrations are retried, calls time out).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One actor's inbox count, shared by its node and the actor.
#[derive(Debug)]
pub(crate) struct Inbox {
    limit_msgs: usize,
    queued_msgs: AtomicUsize,
    shed_total: AtomicU64,
}

impl Inbox {
    pub(crate) fn new(limit_msgs: usize) -> Arc<Inbox> {
        assert!(limit_msgs > 0, "an inbox holds at least one message");
        Arc::new(Inbox {
            limit_msgs,
            queued_msgs: AtomicUsize::new(0),
            shed_total: AtomicU64::new(0),
        })
    }

    /// Counts one more queued message; false (counting it as shed) when the inbox is
    /// full.
    pub(crate) fn admit(&self) -> bool {
        let admitted = self
            .queued_msgs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < self.limit_msgs).then_some(q + 1)
            })
            .is_ok();
        if !admitted {
            self.shed_total.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    pub(crate) fn limit_msgs(&self) -> usize {
        self.limit_msgs
    }

    pub(crate) fn shed_total(&self) -> u64 {
        self.shed_total.load(Ordering::Relaxed)
    }
}

/// The actor's side of a bounded inbox. Dropping it lifts the bound.
pub struct InboxGauge {
    pub(crate) inbox: Arc<Inbox>,
    /// The node holding the bound, and the actor's pid there.
    pub(crate) owner: Option<(std::sync::Weak<crate::node::NodeInner>, u64)>,
}

impl std::fmt::Debug for InboxGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxGauge")
            .field("inbox", &self.inbox)
            .finish()
    }
}

impl InboxGauge {
    /// The actor took a message.
    pub fn handled(&self) {
        // Messages from the actor's own node were never counted: stay at zero.
        let r = self
            .inbox
            .queued_msgs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| q.checked_sub(1));
        debug_assert!(r.is_ok() || r == Err(0));
    }

    /// Messages from peers delivered and not yet taken (a lower bound of the queue).
    pub fn queued_msgs(&self) -> usize {
        self.inbox.queued_msgs.load(Ordering::Acquire)
    }

    /// The bound.
    pub fn limit_msgs(&self) -> usize {
        self.inbox.limit_msgs
    }

    /// Messages shed since the inbox was bounded.
    pub fn shed_total(&self) -> u64 {
        self.inbox.shed_total()
    }
}

impl Drop for InboxGauge {
    fn drop(&mut self) {
        if let Some((node, pid)) = self.owner.take() {
            if let Some(node) = node.upgrade() {
                node.release_inbox(pid, &self.inbox);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_inbox_sheds_until_a_message_is_taken() {
        let inbox = Inbox::new(2);
        let g = InboxGauge {
            inbox: inbox.clone(),
            owner: None,
        };
        g.handled();
        assert_eq!(g.queued_msgs(), 0, "local messages do not count");
        assert!(inbox.admit() && inbox.admit());
        assert!(!inbox.admit());
        assert_eq!((g.queued_msgs(), g.shed_total()), (2, 1));
        g.handled();
        assert!(inbox.admit());
        assert_eq!((g.queued_msgs(), g.shed_total()), (2, 1));
    }
}
