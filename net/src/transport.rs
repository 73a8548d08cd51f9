//! The transport abstraction shared by QUIC and the simulated network.
//!
//! A [`Transport`] dials peers and accepts their connections; each connection becomes a
//! [`Link`] after the handshake: a [`FrameSender`] that batches frames into large writes,
//! a [`FrameReceiver`] that splits the byte stream back into frames, and the peer's
//! [`Hello`]. Both implementations share the framing, batching and handshake code here,
//! so the conformance suite tests one behaviour.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::codec::{self, CodecError};
use crate::roles::Roles;

/// Version of the node-to-node protocol; peers of another version are refused.
pub const PROTOCOL_VERSION: u32 = 9;

/// How long a peer may take to send its [`Hello`].
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors of transports and links.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket or file operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A file could not be read or written.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("binding {addr} (UDP, the `listen` setting): {reason}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// TLS material is missing or invalid.
    #[error("tls error: {0}")]
    Tls(String),
    /// A peer could not be reached or refused the connection.
    #[error("cannot connect to {peer}: {reason}")]
    Connect {
        /// The peer dialed.
        peer: String,
        /// Why it failed.
        reason: String,
    },
    /// The peer was reached but the TLS handshake failed: it refused this node's
    /// certificate, or this node refused the peer's.
    #[error("connection to {peer} refused in the TLS handshake: {reason}")]
    Refused {
        /// The peer dialed.
        peer: String,
        /// Why, as TLS told it.
        reason: String,
    },
    /// The handshake failed (version, cluster or identity mismatch, or timeout).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The connection was closed, for the reason given by whoever closed it.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The stream ended inside a frame.
    #[error("connection ended inside a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// A frame could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Why a link was closed, as its closer tells the peer: a kind to decide on, and a text
/// for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// What kind of close.
    pub kind: CloseKind,
    /// What happened, for logs.
    pub text: String,
}

impl CloseReason {
    /// A close of `kind`, said as `text`.
    pub fn new(kind: CloseKind, text: impl Into<String>) -> Self {
        CloseReason {
            kind,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Kinds of link close that a peer tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// Any other reason (see the text).
    Other,
    /// One of two links between the same nodes, dialed at once, is closed: the session
    /// goes on over the other.
    Duplicate,
    /// The link broke (a write failed, the connection was lost).
    Lost,
    /// The node is leaving or halting.
    Leaving,
    /// Its send buffer went over its limit.
    Overflow,
}

impl CloseKind {
    /// The kind's number on the wire (QUIC's application close code, past a base).
    pub fn code(self) -> u32 {
        match self {
            CloseKind::Other => 0,
            CloseKind::Duplicate => 1,
            CloseKind::Lost => 2,
            CloseKind::Leaving => 3,
            CloseKind::Overflow => 4,
        }
    }

    /// The kind of a wire number (unknown numbers are `Other`).
    pub fn from_code(code: u64) -> Self {
        match code {
            1 => CloseKind::Duplicate,
            2 => CloseKind::Lost,
            3 => CloseKind::Leaving,
            4 => CloseKind::Overflow,
            _ => CloseKind::Other,
        }
    }
}

/// Who this node is, as told to peers in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalIdentity {
    /// Cluster name.
    pub cluster: String,
    /// Node name.
    pub name: String,
    /// Incarnation: changes every time the node starts.
    pub incarnation: u64,
    /// The address peers can dial this node at.
    pub addr: SocketAddr,
    /// What this node may do (on QUIC, what its certificate says).
    pub roles: Roles,
}

impl LocalIdentity {
    fn hello(&self, dial: Option<DialTag>) -> Hello {
        let tag = dial.unwrap_or_default();
        Hello {
            protocol: PROTOCOL_VERSION,
            cluster: self.cluster.clone(),
            name: self.name.clone(),
            incarnation: self.incarnation,
            addr: self.addr,
            dial: tag.dial,
            replaces: tag.replaces,
        }
    }
}

/// Names one connection between two nodes: the incarnation of the node that dialed it and
/// that node's number for the dial. Both ends know it, so both can speak of "that link".
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LinkKey {
    /// Incarnation of the dialing node.
    pub dialer_incarnation: u64,
    /// The dialer's number for this dial.
    pub dial: u64,
}

/// What a dialer tells the acceptor about its dial.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DialTag {
    /// The dialer's number for this dial (unique within its incarnation).
    pub dial: u64,
    /// The link of the dialer's last session with the acceptor, when the dialer lost that
    /// session and dials to start a new one. An acceptor still holding a session on that
    /// very link knows it is dead; any other duplicate connection is a dial race.
    pub replaces: Option<LinkKey>,
}

/// The first frame each side sends on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// Cluster name of the sender.
    pub cluster: String,
    /// Node name of the sender (checked against its certificate).
    pub name: String,
    /// Incarnation of the sender.
    pub incarnation: u64,
    /// The address the sender listens on.
    pub addr: SocketAddr,
    /// The dialer's number for this dial (0 in the acceptor's hello).
    pub dial: u64,
    /// See [`DialTag::replaces`] (`None` in the acceptor's hello).
    pub replaces: Option<LinkKey>,
}

/// A handshaken connection to one peer.
pub struct Link {
    /// The peer's handshake.
    pub peer: Hello,
    /// The peer's roles, from its certificate (not from anything it said).
    pub peer_roles: Roles,
    /// True when this side dialed.
    pub outbound: bool,
    /// Sends frames to the peer.
    pub tx: FrameSender,
    /// Receives frames from the peer.
    pub rx: FrameReceiver,
    /// Which connection this is, as both ends name it.
    pub key: LinkKey,
    /// The link the dialer's lost session ran on, if it said so (see [`DialTag`]).
    pub replaces: Option<LinkKey>,
}

impl Link {
    /// A handshaken link: `dial` is `Some` on the dialing side.
    pub(crate) fn new(
        local: &LocalIdentity,
        peer: Hello,
        peer_roles: Roles,
        dial: Option<DialTag>,
        tx: FrameSender,
        rx: FrameReceiver,
    ) -> Link {
        let (key, replaces) = match dial {
            Some(t) => (
                LinkKey {
                    dialer_incarnation: local.incarnation,
                    dial: t.dial,
                },
                t.replaces,
            ),
            None => (
                LinkKey {
                    dialer_incarnation: peer.incarnation,
                    dial: peer.dial,
                },
                peer.replaces,
            ),
        };
        Link {
            peer,
            peer_roles,
            outbound: dial.is_some(),
            tx,
            rx,
            key,
            replaces,
        }
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("peer_roles", &self.peer_roles)
            .field("outbound", &self.outbound)
            .field("key", &self.key)
            .field("replaces", &self.replaces)
            .finish()
    }
}

/// A peer to dial: node name and address.
pub use plexus_config::PeerAddr;

/// Moves frames between this node and its peers.
pub trait Transport: Send + Sync + 'static {
    /// This node's identity.
    fn identity(&self) -> &LocalIdentity;
    /// Dials `peer` and completes the handshake, telling the peer `tag`.
    fn dial_tagged(
        &self,
        peer: PeerAddr,
        tag: DialTag,
    ) -> BoxFuture<'static, Result<Link, NetError>>;
    /// Dials `peer` and completes the handshake (dial number 0, replacing nothing).
    fn dial(&self, peer: PeerAddr) -> BoxFuture<'static, Result<Link, NetError>> {
        self.dial_tagged(peer, DialTag::default())
    }
    /// The next accepted and handshaken connection; `None` once the transport is shut down.
    /// Refused connections are logged, not returned.
    fn accept(&self) -> BoxFuture<'_, Option<Link>>;
    /// Stops accepting and closes every connection.
    fn shutdown(&self);
    /// The largest frame this transport sends or accepts, in bytes.
    fn max_frame_bytes(&self) -> usize;
}

/// Queued bytes above which [`FrameSender::ready`] waits (senders that await it slow
/// down to the peer's pace).
pub const SEND_HIGH_WATER_BYTES: usize = 8 * 1024 * 1024;
/// Most bytes a link queues for its peer. A frame that would take the queue past it is
/// not queued: the link closes instead, with a reason naming the limit, so its
/// sessions end as when the peer is lost (supervisors hear a node-down termination)
/// rather than the node's memory growing without bound behind a peer that does not
/// read. A link always takes at least two largest frames.
pub const SEND_BUFFER_LIMIT_BYTES: usize = 64 * 1024 * 1024;

struct SendState {
    buf: BytesMut,
    closed: Option<CloseReason>,
    /// Closed because the buffer limit was reached: what is queued need not be flushed.
    overflowed: bool,
}

struct SendShared {
    state: Mutex<SendState>,
    data: Notify,
    space: Notify,
    max_frame: usize,
    high_water: usize,
    limit_bytes: usize,
}

impl SendShared {
    fn close(&self, reason: CloseReason) {
        let mut st = self.state.lock().expect("send state lock");
        if st.closed.is_none() {
            st.closed = Some(reason);
        }
        drop(st);
        self.data.notify_one();
        self.space.notify_waiters();
    }
}

struct CloseOnDrop(Arc<SendShared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0
            .close(CloseReason::new(CloseKind::Other, "link dropped"));
    }
}

/// The sending half of a link. Frames are appended to one buffer that the transport's
/// writer drains in large writes, so many small messages share one stream write.
/// Cloning is cheap; the link closes when the last clone is dropped.
#[derive(Clone)]
pub struct FrameSender {
    sh: Arc<SendShared>,
    _guard: Arc<CloseOnDrop>,
}

/// The writer's end of a [`FrameSender`].
pub(crate) struct SendQueue {
    sh: Arc<SendShared>,
}

/// Creates a connected sender and writer queue.
pub(crate) fn send_queue(max_frame: usize) -> (FrameSender, SendQueue) {
    let sh = Arc::new(SendShared {
        state: Mutex::new(SendState {
            // Small to start with (a node may hold thousands of links); it grows with
            // the traffic and keeps its size.
            buf: BytesMut::with_capacity(4 * 1024),
            closed: None,
            overflowed: false,
        }),
        data: Notify::new(),
        space: Notify::new(),
        max_frame,
        high_water: SEND_HIGH_WATER_BYTES,
        limit_bytes: SEND_BUFFER_LIMIT_BYTES.max(2 * max_frame),
    });
    (
        FrameSender {
            sh: sh.clone(),
            _guard: Arc::new(CloseOnDrop(sh.clone())),
        },
        SendQueue { sh },
    )
}

impl FrameSender {
    fn with_buf<R>(
        &self,
        f: impl FnOnce(&mut BytesMut) -> Result<R, CodecError>,
    ) -> Result<R, NetError> {
        let mut st = self.sh.state.lock().expect("send state lock");
        if let Some(r) = &st.closed {
            return Err(NetError::Closed(r.clone()));
        }
        let was_empty = st.buf.is_empty();
        let before = st.buf.len();
        let r = f(&mut st.buf)?;
        if st.buf.len() > self.sh.limit_bytes {
            st.buf.truncate(before);
            let reason = CloseReason::new(
                CloseKind::Overflow,
                format!(
                    "send buffer over its limit of {} bytes (the peer does not keep up)",
                    self.sh.limit_bytes
                ),
            );
            st.closed = Some(reason.clone());
            st.overflowed = true;
            drop(st);
            self.sh.data.notify_one();
            self.sh.space.notify_waiters();
            return Err(NetError::Closed(reason));
        }
        drop(st);
        if was_empty {
            self.sh.data.notify_one();
        }
        Ok(r)
    }

    /// Encodes `value` as one frame and queues it.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), NetError> {
        let max = self.sh.max_frame;
        self.with_buf(|b| codec::encode_frame(value, b, max))
    }

    /// Queues an already-encoded frame body.
    pub fn send_body(&self, body: &[u8]) -> Result<(), NetError> {
        let max = self.sh.max_frame;
        self.with_buf(|b| codec::put_frame(body, b, max))
    }

    /// Queues bytes exactly as given, with no length prefix. Only for testing how peers
    /// handle malformed streams.
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), NetError> {
        self.with_buf(|b| {
            b.extend_from_slice(bytes);
            Ok(())
        })
    }

    /// Waits until the queue is below its high-water mark (or the link is closed).
    pub async fn ready(&self) {
        loop {
            let notified = self.sh.space.notified();
            {
                let st = self.sh.state.lock().expect("send state lock");
                if st.closed.is_some() || st.buf.len() < self.sh.high_water {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Closes the link; the peer is given `reason`.
    pub fn close(&self, reason: &str) {
        self.sh.close(CloseReason::new(CloseKind::Other, reason));
    }

    /// Closes the link with a reason of `kind`.
    pub fn close_as(&self, kind: CloseKind, reason: &str) {
        self.sh.close(CloseReason::new(kind, reason));
    }

    /// The reason the link closed, if it has.
    pub fn closed(&self) -> Option<CloseReason> {
        self.sh
            .state
            .lock()
            .expect("send state lock")
            .closed
            .clone()
    }

    /// Largest frame this link sends.
    pub fn max_frame(&self) -> usize {
        self.sh.max_frame
    }
}

impl SendQueue {
    /// Waits for queued bytes and returns them, leaving `spare` (cleared) as the new
    /// buffer. Returns the close reason once the sender is closed and drained.
    pub(crate) async fn next(&self, mut spare: BytesMut) -> Result<BytesMut, CloseReason> {
        spare.clear();
        loop {
            let notified = self.sh.data.notified();
            {
                let mut st = self.sh.state.lock().expect("send state lock");
                if !st.buf.is_empty() {
                    let full = std::mem::replace(&mut st.buf, spare);
                    drop(st);
                    self.sh.space.notify_waiters();
                    return Ok(full);
                }
                if let Some(r) = &st.closed {
                    return Err(r.clone());
                }
            }
            notified.await;
        }
    }

    /// Marks the link closed from the writer's side (the connection failed).
    pub(crate) fn close(&self, reason: CloseReason) {
        self.sh.close(reason);
    }

    /// Resolves with the close reason once the link closed over its buffer limit: a
    /// writer blocked on a peer that does not read stops waiting for it then.
    pub(crate) async fn overflowed(&self) -> CloseReason {
        loop {
            let notified = self.sh.space.notified();
            {
                let st = self.sh.state.lock().expect("send state lock");
                if st.overflowed {
                    return st
                        .closed
                        .clone()
                        .unwrap_or_else(|| CloseReason::new(CloseKind::Overflow, "overflow"));
                }
            }
            notified.await;
        }
    }
}

/// A source of byte chunks (a QUIC receive stream, a simulated pipe).
pub trait ChunkSource: Send + 'static {
    /// The next chunk; `Ok(None)` at the end of the stream.
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, NetError>>;

    /// After the end of the stream: why the connection closed, if the source can tell.
    fn end_reason(&mut self) -> BoxFuture<'_, Option<CloseReason>> {
        Box::pin(async { None })
    }
}

/// The receiving half of a link: splits the peer's byte stream into frames.
pub struct FrameReceiver {
    src: Box<dyn ChunkSource>,
    buf: BytesMut,
    max_frame: usize,
}

impl FrameReceiver {
    pub(crate) fn new(src: Box<dyn ChunkSource>, max_frame: usize) -> Self {
        FrameReceiver {
            src,
            buf: BytesMut::new(),
            max_frame,
        }
    }

    /// The next frame body; `Ok(None)` when the peer finished cleanly. A frame over the
    /// size limit, or a stream ending inside a frame, is an error.
    pub async fn next(&mut self) -> Result<Option<Bytes>, NetError> {
        loop {
            if let Some(f) = codec::split_frame(&mut self.buf, self.max_frame)? {
                return Ok(Some(f));
            }
            match self.src.next_chunk().await? {
                Some(c) => {
                    if self.buf.is_empty() {
                        self.buf = BytesMut::from(c);
                    } else {
                        self.buf.extend_from_slice(&c);
                    }
                }
                None if self.buf.is_empty() => {
                    return match self.src.end_reason().await {
                        Some(r) => Err(NetError::Closed(r)),
                        None => Ok(None),
                    }
                }
                None => return Err(NetError::Truncated(self.buf.len())),
            }
        }
    }

    /// The next frame, decoded as `T`.
    pub async fn next_decoded<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Result<Option<T>, NetError> {
        match self.next().await? {
            Some(b) => Ok(Some(codec::decode(&b)?)),
            None => Ok(None),
        }
    }
}

/// Exchanges [`Hello`]s on a fresh connection. The dialer speaks first; the acceptor
/// answers only once the dialer's hello passed its checks, so a refused dialer always
/// learns why. `verify` checks the peer's hello against what the transport knows
/// (certificate name, dialed name); on any mismatch the link is closed with the reason,
/// which the peer logs.
pub(crate) async fn handshake(
    local: &LocalIdentity,
    dial: Option<DialTag>,
    tx: &FrameSender,
    rx: &mut FrameReceiver,
    verify: impl FnOnce(&Hello) -> Result<(), String>,
) -> Result<Hello, NetError> {
    let outbound = dial.is_some();
    if outbound {
        tx.send(&local.hello(dial))?;
    }
    let peer = match tokio::time::timeout(HANDSHAKE_TIMEOUT, rx.next_decoded::<Hello>()).await {
        Err(_) => Err("timed out waiting for the peer's hello".to_string()),
        Ok(Err(NetError::Closed(r))) => {
            return Err(NetError::Handshake(format!("peer refused: {r}")))
        }
        Ok(Err(e)) => Err(format!("bad hello: {e}")),
        Ok(Ok(None)) => Err("peer closed before its hello".to_string()),
        Ok(Ok(Some(h))) => Ok(h),
    };
    let check = peer.and_then(|h| {
        if h.protocol != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {} is not ours ({PROTOCOL_VERSION})",
                h.protocol
            ));
        }
        if h.cluster != local.cluster {
            return Err(format!(
                "peer is in cluster {:?}, this node is in {:?}",
                h.cluster, local.cluster
            ));
        }
        if h.name == local.name {
            return Err(format!("peer claims this node's own name {:?}", h.name));
        }
        verify(&h)?;
        Ok(h)
    });
    match check {
        Ok(h) => {
            if !outbound {
                tx.send(&local.hello(None))?;
            }
            Ok(h)
        }
        Err(reason) => {
            tx.close(&format!("handshake refused by {}: {reason}", local.name));
            Err(NetError::Handshake(reason))
        }
    }
}
