//! `sim`: an in-memory network for simulations and tests.
//!
//! Nodes bind fake socket addresses on a shared [`SimNetwork`]; links are in-memory pipes
//! carrying the same framed byte stream as QUIC. Faults come from one seeded RNG: each
//! batch of frames may be dropped or delayed (delays never reorder a pipe), directed
//! partitions silence traffic between sets of nodes, and a crashed node's links go silent
//! without any close, as a machine that vanished would. Every dial, delivery, drop and
//! close is appended to a trace; under a current-thread tokio runtime with paused time the
//! same seed gives the same trace, byte for byte.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::roles::Roles;
use tracing::{debug, warn};

use crate::transport::{
    handshake, send_queue, BoxFuture, ChunkSource, CloseKind, CloseReason, DialTag, FrameReceiver,
    FrameSender, Hello, Link, LocalIdentity, NetError, PeerAddr, SendQueue, Transport,
};

/// Message-level faults applied to every pipe.
#[derive(Debug, Clone, PartialEq)]
pub struct SimFaults {
    /// Probability that a batch of frames is lost.
    pub drop_rate: f64,
    /// Smallest one-way delay.
    pub min_delay: Duration,
    /// Largest one-way delay.
    pub max_delay: Duration,
    /// A lost batch breaks its connection (both ends see it close), as a QUIC
    /// connection that cannot get its packets through gives up, instead of the
    /// connection silently skipping the batch.
    pub break_on_loss: bool,
}

impl Default for SimFaults {
    fn default() -> Self {
        SimFaults {
            drop_rate: 0.0,
            min_delay: Duration::from_micros(50),
            max_delay: Duration::from_micros(50),
            break_on_loss: false,
        }
    }
}

struct PipeCtl {
    from: String,
    to: String,
    dead: AtomicBool,
}

struct RawConn {
    dialer: String,
    /// The dialer's roles (what a certificate would prove on a real network).
    dialer_roles: Roles,
    tx: FrameSender,
    rx: FrameReceiver,
}

struct Listener {
    name: String,
    roles: Roles,
    tx: mpsc::UnboundedSender<RawConn>,
}

struct SimState {
    rng: ChaCha8Rng,
    faults: SimFaults,
    start: Instant,
    listeners: BTreeMap<SocketAddr, Listener>,
    blocked: BTreeSet<(String, String)>,
    pipes: Vec<Weak<PipeCtl>>,
    trace: VecDeque<String>,
    /// Describes frame bodies in kept trace lines.
    describe: Option<FrameDescriber>,
    /// Lines kept in `trace` (the oldest go first); the hash covers every line.
    keep: usize,
    hash: u64,
    lines: u64,
    /// A reusable line buffer (when no lines are kept).
    scratch: String,
}

/// Says what a frame body from one node to another holds, for the kept trace (see
/// [`SimNetwork::describe_frames_with`]): called as `f(from, to, body)`.
pub type FrameDescriber = Arc<dyn Fn(&str, &str, &[u8]) -> String + Send + Sync>;

/// The frames in a delivered chunk (`u32` little-endian length, then the body), described.
fn describe_chunk(from: &str, to: &str, chunk: &[u8], describe: &FrameDescriber) -> String {
    let mut out = Vec::new();
    let mut rest = chunk;
    while rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(body) = rest.get(4..4 + len) else {
            out.push("(partial frame)".to_string());
            break;
        };
        out.push(describe(from, to, body));
        rest = &rest[4 + len..];
    }
    out.join(", ")
}

impl SimState {
    fn log(&mut self, line: std::fmt::Arguments<'_>) {
        self.log_with(line, None);
    }

    /// Logs a delivery; its frames are described in a kept trace.
    fn log_delivery(&mut self, from: &str, to: &str, chunk: &[u8]) {
        let h = fnv(chunk);
        let len = chunk.len();
        self.log_with(
            format_args!("deliver {from}->{to} {len}B #{h:016x}"),
            Some((from, to, chunk)),
        );
    }

    /// Logs a line; `chunk`, when the trace is kept and frames are described, is described
    /// after it (outside the hash, so a kept trace hashes as an unkept one).
    fn log_with(&mut self, line: std::fmt::Arguments<'_>, chunk: Option<(&str, &str, &[u8])>) {
        use std::fmt::Write as _;
        let t = self.start.elapsed().as_micros();
        // Reuse the oldest kept line's buffer: no allocation per line once the ring is full.
        let mut buf = if self.keep > 0 && self.trace.len() >= self.keep {
            self.trace.pop_front().unwrap_or_default()
        } else {
            std::mem::take(&mut self.scratch)
        };
        buf.clear();
        write!(buf, "{:>8}.{:03}ms {line}", t / 1000, t % 1000).expect("a String takes any write");
        self.hash = fnv_from(self.hash, buf.as_bytes());
        self.hash = fnv_from(self.hash, b"\n");
        self.lines += 1;
        if let (true, Some((from, to, chunk)), Some(d)) = (self.keep > 0, chunk, &self.describe) {
            write!(buf, " [{}]", describe_chunk(from, to, chunk, d))
                .expect("a String takes any write");
        }
        if self.keep > 0 {
            self.trace.push_back(buf);
        } else {
            self.scratch = buf;
        }
    }

    fn reachable(&self, from: &str, to: &str) -> bool {
        self.blocked.is_empty() || !self.blocked.contains(&(from.to_string(), to.to_string()))
    }
}

/// A simulated network shared by every simulated node.
#[derive(Clone)]
pub struct SimNetwork {
    st: Arc<Mutex<SimState>>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimNetwork")
    }
}

const FNV_OFFSET: u64 = 0xcbf29ce484222325;

fn fnv_from(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

fn fnv(bytes: &[u8]) -> u64 {
    fnv_from(FNV_OFFSET, bytes)
}

impl SimNetwork {
    /// A network whose faults are drawn from `seed`.
    pub fn new(seed: u64, faults: SimFaults) -> Self {
        SimNetwork {
            st: Arc::new(Mutex::new(SimState {
                rng: ChaCha8Rng::seed_from_u64(seed),
                faults,
                start: Instant::now(),
                listeners: BTreeMap::new(),
                blocked: BTreeSet::new(),
                pipes: Vec::new(),
                trace: VecDeque::new(),
                describe: None,
                keep: usize::MAX,
                hash: FNV_OFFSET,
                lines: 0,
                scratch: String::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.st.lock().expect("sim network lock")
    }

    /// Replaces the message-level faults.
    pub fn set_faults(&self, faults: SimFaults) {
        self.lock().faults = faults;
    }

    /// Silences traffic from every node of `a` to every node of `b` and back.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        for x in a {
            for y in b {
                self.block(x, y);
                self.block(y, x);
            }
        }
    }

    /// Silences traffic from `from` to `to` only (an asymmetric partition).
    pub fn block(&self, from: &str, to: &str) {
        let mut st = self.lock();
        st.blocked.insert((from.to_string(), to.to_string()));
        st.log(format_args!("block {from}->{to}"));
    }

    /// Removes every partition.
    pub fn heal(&self) {
        let mut st = self.lock();
        st.blocked.clear();
        st.log(format_args!("heal"));
    }

    /// Crashes `node`: its listener goes away and every link touching it goes silent for
    /// good, with no close seen by its peers.
    pub fn crash(&self, node: &str) {
        let mut st = self.lock();
        st.listeners.retain(|_, l| l.name != node);
        st.pipes.retain(|w| match w.upgrade() {
            Some(p) => {
                if p.from == node || p.to == node {
                    p.dead.store(true, Ordering::SeqCst);
                }
                true
            }
            None => false,
        });
        st.log(format_args!("crash {node}"));
    }

    /// The trace kept so far, one event per line (all of it unless
    /// [`SimNetwork::keep_trace`] limited it).
    pub fn trace(&self) -> Vec<String> {
        self.lock().trace.iter().cloned().collect()
    }

    /// Keeps only the last `lines` lines of the trace in memory (the hash still covers
    /// every line); 0 keeps none.
    pub fn keep_trace(&self, lines: usize) {
        let mut st = self.lock();
        st.keep = lines;
        while st.trace.len() > lines {
            st.trace.pop_front();
        }
    }

    /// A hash of the whole trace (every line, kept or not).
    pub fn trace_hash(&self) -> u64 {
        self.lock().hash
    }

    /// Describes each delivered frame in the kept trace with `f` (the layer above knows
    /// what its frames hold; this network only moves bytes). The hash does not change.
    pub fn describe_frames_with(&self, f: FrameDescriber) {
        self.lock().describe = Some(f);
    }

    /// Lines traced so far.
    pub fn trace_lines(&self) -> u64 {
        self.lock().lines
    }

    /// Adds a line of the caller's to the trace (faults, timers, checks), stamped with
    /// the simulated time like every other line.
    pub fn note(&self, line: std::fmt::Arguments<'_>) {
        self.lock().log(line);
    }

    /// Lets traffic from `from` to `to` through again (undoes [`SimNetwork::block`]).
    pub fn unblock(&self, from: &str, to: &str) {
        let mut st = self.lock();
        if st.blocked.remove(&(from.to_string(), to.to_string())) {
            st.log(format_args!("unblock {from}->{to}"));
        }
    }

    /// Binds a node at `ident.addr`.
    pub fn bind(
        &self,
        ident: LocalIdentity,
        max_frame: u32,
    ) -> Result<Arc<SimTransport>, NetError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<RawConn>();
        {
            let mut st = self.lock();
            if st.listeners.contains_key(&ident.addr) {
                return Err(NetError::Io(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use on the simulated network", ident.addr),
                )));
            }
            st.listeners.insert(
                ident.addr,
                Listener {
                    name: ident.name.clone(),
                    roles: ident.roles,
                    tx,
                },
            );
            st.log(format_args!("bind {} {}", ident.name, ident.addr));
        }
        let (links_tx, links_rx) = mpsc::unbounded_channel();
        let me = ident.clone();
        tokio::spawn(async move {
            while let Some(mut raw) = rx.recv().await {
                let me = me.clone();
                let links_tx = links_tx.clone();
                tokio::spawn(async move {
                    let dialer = raw.dialer.clone();
                    let res = handshake(&me, None, &raw.tx, &mut raw.rx, |h: &Hello| {
                        if h.name == dialer {
                            Ok(())
                        } else {
                            Err(format!("peer claims to be {:?} but is {dialer:?}", h.name))
                        }
                    })
                    .await;
                    match res {
                        Ok(peer) => {
                            let link = Link::new(&me, peer, raw.dialer_roles, None, raw.tx, raw.rx);
                            if links_tx.send(link).is_err() {
                                debug!(node = %me.name, "transport closed; dropping a new link");
                            }
                        }
                        Err(e) => warn!(node = %me.name, "refused peer connection: {e}"),
                    }
                });
            }
        });
        Ok(Arc::new(SimTransport {
            net: self.clone(),
            ident,
            incoming: tokio::sync::Mutex::new(links_rx),
            max_frame: max_frame as usize,
        }))
    }

    fn pipe(&self, from: &str, to: &str, max_frame: usize) -> (FrameSender, FrameReceiver) {
        let ctl = Arc::new(PipeCtl {
            from: from.to_string(),
            to: to.to_string(),
            dead: AtomicBool::new(false),
        });
        self.lock().pipes.push(Arc::downgrade(&ctl));
        let (tx, queue) = send_queue(max_frame);
        let (chunk_tx, chunk_rx) = mpsc::unbounded_channel();
        tokio::spawn(pipe_task(self.clone(), ctl, queue, chunk_tx));
        (
            tx,
            FrameReceiver::new(Box::new(SimChunks(chunk_rx)), max_frame),
        )
    }
}

type Delivery = Result<Bytes, CloseReason>;

async fn pipe_task(
    net: SimNetwork,
    ctl: Arc<PipeCtl>,
    queue: SendQueue,
    out: mpsc::UnboundedSender<Delivery>,
) {
    let mut inflight: VecDeque<(Instant, Delivery)> = VecDeque::new();
    let mut last = Instant::now();
    let mut reading = true;
    loop {
        let due = inflight.front().map(|(t, _)| *t);
        if !reading && due.is_none() {
            return;
        }
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                let now = Instant::now();
                while inflight.front().is_some_and(|(t, _)| *t <= now) {
                    let (_, d) = inflight.pop_front().expect("front checked");
                    if ctl.dead.load(Ordering::SeqCst) {
                        continue;
                    }
                    {
                        let mut st = net.lock();
                        match &d {
                            Ok(b) => st.log_delivery(&ctl.from, &ctl.to, b),
                            Err(r) => st.log(format_args!("close {}->{} {r}", ctl.from, ctl.to)),
                        }
                    }
                    if out.send(d).is_err() {
                        queue.close(CloseReason::new(CloseKind::Lost, "peer went away"));
                        reading = false;
                    }
                }
            }
            r = queue.next(BytesMut::new()), if reading => {
                let now = Instant::now();
                let item = match r {
                    Ok(b) => Ok(b.freeze()),
                    Err(reason) => { reading = false; Err(reason) }
                };
                let mut st = net.lock();
                let silent = ctl.dead.load(Ordering::SeqCst) || !st.reachable(&ctl.from, &ctl.to);
                let f = st.faults.clone();
                let dropped = item.is_ok() && (silent || (f.drop_rate > 0.0 && st.rng.random_bool(f.drop_rate.min(1.0))));
                if dropped {
                    let len = item.as_ref().map(|b| b.len()).unwrap_or(0);
                    st.log(format_args!("drop {}->{} {len}B", ctl.from, ctl.to));
                    if f.break_on_loss && !ctl.dead.load(Ordering::SeqCst) {
                        st.log(format_args!("break {}->{}", ctl.from, ctl.to));
                        drop(st);
                        reading = false;
                        let lost = CloseReason::new(CloseKind::Lost, "connection lost");
                        queue.close(lost.clone());
                        last = last.max(now);
                        inflight.push_back((last, Err(lost)));
                    }
                    continue;
                }
                let delay = if f.max_delay > f.min_delay {
                    let span = (f.max_delay - f.min_delay).as_micros() as u64;
                    f.min_delay + Duration::from_micros(st.rng.random_range(0..=span))
                } else {
                    f.min_delay
                };
                drop(st);
                last = last.max(now + delay);
                inflight.push_back((last, item));
            }
        }
    }
}

struct SimChunks(mpsc::UnboundedReceiver<Delivery>);

impl ChunkSource for SimChunks {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, NetError>> {
        Box::pin(async move {
            match self.0.recv().await {
                Some(Ok(b)) => Ok(Some(b)),
                Some(Err(reason)) => Err(NetError::Closed(reason)),
                None => Ok(None),
            }
        })
    }
}

/// One node's endpoint on a [`SimNetwork`].
pub struct SimTransport {
    net: SimNetwork,
    ident: LocalIdentity,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Link>>,
    max_frame: usize,
}

impl Transport for SimTransport {
    fn identity(&self) -> &LocalIdentity {
        &self.ident
    }

    fn dial_tagged(
        &self,
        peer: PeerAddr,
        tag: DialTag,
    ) -> BoxFuture<'static, Result<Link, NetError>> {
        let net = self.net.clone();
        let ident = self.ident.clone();
        let max_frame = self.max_frame;
        Box::pin(async move {
            let unreachable = |reason: &str| NetError::Connect {
                peer: peer.to_string(),
                reason: reason.to_string(),
            };
            let (listener_name, listener_roles, listener_tx) = {
                let mut st = net.lock();
                let Some(l) = st.listeners.get(&peer.addr) else {
                    st.log(format_args!("dial {}->{} refused", ident.name, peer));
                    return Err(unreachable("nothing listens there"));
                };
                let (name, roles, tx) = (l.name.clone(), l.roles, l.tx.clone());
                if !st.reachable(&ident.name, &name) || !st.reachable(&name, &ident.name) {
                    st.log(format_args!("dial {}->{} partitioned", ident.name, peer));
                    return Err(unreachable("no route (partitioned)"));
                }
                st.log(format_args!("dial {}->{}", ident.name, peer));
                (name, roles, tx)
            };
            let (tx, rx_remote) = net.pipe(&ident.name, &listener_name, max_frame);
            let (tx_remote, mut rx) = net.pipe(&listener_name, &ident.name, max_frame);
            listener_tx
                .send(RawConn {
                    dialer: ident.name.clone(),
                    dialer_roles: ident.roles,
                    tx: tx_remote,
                    rx: rx_remote,
                })
                .map_err(|_| unreachable("listener closed"))?;
            let want = peer.name.clone();
            let hello = handshake(&ident, Some(tag), &tx, &mut rx, move |h: &Hello| {
                if h.name == want {
                    Ok(())
                } else {
                    Err(format!(
                        "dialed {want:?} but the peer says it is {:?}",
                        h.name
                    ))
                }
            })
            .await?;
            Ok(Link::new(&ident, hello, listener_roles, Some(tag), tx, rx))
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<Link>> {
        Box::pin(async move { self.incoming.lock().await.recv().await })
    }

    fn shutdown(&self) {
        let mut st = self.net.lock();
        let name = self.ident.name.clone();
        st.listeners.retain(|_, l| l.name != name);
        st.log(format_args!("shutdown {name}"));
    }
    fn max_frame_bytes(&self) -> usize {
        self.max_frame
    }
}
