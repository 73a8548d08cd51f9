//! QUIC transport: quinn over UDP with mutual TLS (rustls), one connection per peer pair
//! and one bidirectional stream per connection, so per-pair order is preserved.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, info, warn};

use crate::tls::{self, TlsMaterial};
use crate::transport::{
    handshake, send_queue, BoxFuture, ChunkSource, CloseKind, CloseReason, DialTag, FrameReceiver,
    FrameSender, Hello, Link, LocalIdentity, NetError, PeerAddr, SendQueue, Transport,
    HANDSHAKE_TIMEOUT,
};

/// How long a dial waits for the QUIC handshake. UDP gives no refusal when nothing
/// listens, so this bounds a dial to a node that is not up (yet); callers retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Application error code used when plexus closes a connection on purpose.
/// QUIC application close codes: this base plus the [`CloseKind`]'s number.
const CLOSE_CODE_BASE: u32 = 0x100;

fn close_code(kind: CloseKind) -> VarInt {
    VarInt::from_u32(CLOSE_CODE_BASE + kind.code())
}

/// A QUIC endpoint that both dials and accepts plexus links.
pub struct QuicTransport {
    ident: LocalIdentity,
    endpoint: Endpoint,
    incoming: Mutex<mpsc::Receiver<Link>>,
    max_frame: usize,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("ident", &self.ident)
            .finish()
    }
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(60)).expect("static idle timeout"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    t.stream_receive_window(VarInt::from_u32(16 << 20));
    t.receive_window(VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    t.max_concurrent_bidi_streams(VarInt::from_u32(4));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    Arc::new(t)
}

impl QuicTransport {
    /// Binds `ident.addr` and starts accepting peers authenticated by `tls`.
    pub fn bind(
        ident: LocalIdentity,
        tls: &TlsMaterial,
        max_frame: u32,
    ) -> Result<Arc<Self>, NetError> {
        let server_crypto = QuicServerConfig::try_from(tls.server_config()?)
            .map_err(|e| NetError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport_config());
        let client_crypto = QuicClientConfig::try_from(tls.client_config()?)
            .map_err(|e| NetError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport_config());
        let mut endpoint = Endpoint::server(server, ident.addr).map_err(|e| NetError::Bind {
            addr: ident.addr,
            reason: e.to_string(),
        })?;
        endpoint.set_default_client_config(client);
        let mut ident = ident;
        ident.addr = endpoint.local_addr()?;
        // What this node may do is what its certificate says, whatever it was told.
        ident.roles = tls.roles()?;
        let (tx, rx) = mpsc::channel(64);
        let max_frame = max_frame as usize;
        tokio::spawn(accept_loop(endpoint.clone(), ident.clone(), max_frame, tx));
        Ok(Arc::new(QuicTransport {
            ident,
            endpoint,
            incoming: Mutex::new(rx),
            max_frame,
        }))
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    ident: LocalIdentity,
    max_frame: usize,
    out: mpsc::Sender<Link>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let ident = ident.clone();
        let out = out.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match accept_one(incoming, &ident, max_frame).await {
                Ok(link) => {
                    info!(peer = %link.peer.name, %remote, incarnation = link.peer.incarnation, "peer connected");
                    if out.send(link).await.is_err() {
                        debug!(%remote, "transport closed; dropping a new link");
                    }
                }
                Err(e) => warn!(%remote, "refused peer connection: {e}"),
            }
        });
    }
}

async fn accept_one(
    incoming: quinn::Incoming,
    ident: &LocalIdentity,
    max_frame: usize,
) -> Result<Link, NetError> {
    let conn = incoming
        .await
        .map_err(|e| NetError::Handshake(e.to_string()))?;
    let chain = peer_chain(&conn)?;
    let cert = chain[0].clone();
    let (send, recv) = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| NetError::Handshake("peer opened no stream".into()))?
        .map_err(|e| NetError::Handshake(e.to_string()))?;
    let (tx, mut rx) = wire(conn, send, recv, max_frame);
    let roles = tls::peer_roles(&chain).map_err(NetError::Handshake)?;
    let peer = handshake(ident, None, &tx, &mut rx, |h: &Hello| {
        tls::cert_names(&cert, &h.name)
    })
    .await?;
    Ok(Link::new(ident, peer, roles, None, tx, rx))
}

/// The certificate chain the peer presented (its own first), verified by the handshake.
fn peer_chain(conn: &Connection) -> Result<Vec<CertificateDer<'static>>, NetError> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|certs| *certs)
        .filter(|certs| !certs.is_empty())
        .ok_or_else(|| NetError::Handshake("peer presented no certificate".into()))
}

fn wire(
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    max_frame: usize,
) -> (FrameSender, FrameReceiver) {
    let (tx, queue) = send_queue(max_frame);
    tokio::spawn(writer(queue, send, conn.clone()));
    let rx = FrameReceiver::new(Box::new(QuicChunks { recv, conn }), max_frame);
    (tx, rx)
}

async fn writer(queue: SendQueue, mut send: SendStream, conn: Connection) {
    let mut spare = BytesMut::with_capacity(64 * 1024);
    loop {
        match queue.next(spare).await {
            Ok(batch) => {
                tokio::select! {
                    r = send.write_all(&batch) => {
                        if let Err(e) = r {
                            debug!("link write failed: {e}");
                            queue.close(CloseReason::new(CloseKind::Lost, format!("write failed: {e}")));
                            return;
                        }
                    }
                    // Over the buffer limit while the peer does not read: stop
                    // waiting for it.
                    reason = queue.overflowed() => {
                        conn.close(close_code(reason.kind), reason.text.as_bytes());
                        return;
                    }
                }
                spare = batch;
            }
            Err(reason) => {
                // Let the peer read what was queued before the close, then give the reason.
                if send.finish().is_ok() {
                    let read = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
                    if read.is_err() {
                        debug!("the peer did not read to the close within 2 s");
                    }
                }
                conn.close(close_code(reason.kind), reason.text.as_bytes());
                return;
            }
        }
    }
}

struct QuicChunks {
    recv: RecvStream,
    conn: Connection,
}

fn closed_reason(e: &quinn::ConnectionError) -> CloseReason {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            let code = c.error_code.into_inner();
            let kind = code
                .checked_sub(u64::from(CLOSE_CODE_BASE))
                .map_or(CloseKind::Other, CloseKind::from_code);
            CloseReason::new(kind, String::from_utf8_lossy(&c.reason).into_owned())
        }
        other => CloseReason::new(CloseKind::Lost, other.to_string()),
    }
}

impl ChunkSource for QuicChunks {
    // The writer always closes the connection after finishing its stream: report the
    // close reason rather than a bare end of stream.
    fn end_reason(&mut self) -> BoxFuture<'_, Option<CloseReason>> {
        Box::pin(async move { Some(closed_reason(&self.conn.closed().await)) })
    }

    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, NetError>> {
        Box::pin(async move {
            match self.recv.read_chunk(usize::MAX, true).await {
                Ok(Some(c)) => Ok(Some(c.bytes)),
                Ok(None) => Ok(None),
                Err(quinn::ReadError::ConnectionLost(e)) => {
                    Err(NetError::Closed(closed_reason(&e)))
                }
                Err(e) => match self.conn.close_reason() {
                    Some(c) => Err(NetError::Closed(closed_reason(&c))),
                    None => Err(NetError::Closed(CloseReason::new(
                        CloseKind::Lost,
                        e.to_string(),
                    ))),
                },
            }
        })
    }
}

impl Transport for QuicTransport {
    fn identity(&self) -> &LocalIdentity {
        &self.ident
    }

    fn dial_tagged(
        &self,
        peer: PeerAddr,
        tag: DialTag,
    ) -> BoxFuture<'static, Result<Link, NetError>> {
        let endpoint = self.endpoint.clone();
        let ident = self.ident.clone();
        let max_frame = self.max_frame;
        Box::pin(async move {
            let err = |reason: String| NetError::Connect {
                peer: peer.to_string(),
                reason,
            };
            let connecting = endpoint
                .connect(peer.addr, &peer.name)
                .map_err(|e| err(e.to_string()))?;
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(|_| {
                    err(format!(
                        "no answer within {} ms",
                        CONNECT_TIMEOUT.as_millis()
                    ))
                })?
                .map_err(|e| match e {
                    // The TLS handshake failed: one side refused the other's certificate.
                    quinn::ConnectionError::TransportError(_)
                    | quinn::ConnectionError::ConnectionClosed(_)
                    | quinn::ConnectionError::ApplicationClosed(_) => NetError::Refused {
                        peer: peer.to_string(),
                        reason: e.to_string(),
                    },
                    e => err(e.to_string()),
                })?;
            let roles = peer_chain(&conn)
                .and_then(|c| tls::peer_roles(&c).map_err(NetError::Handshake))
                .map_err(|e| err(e.to_string()))?;
            let (send, recv) = conn.open_bi().await.map_err(|e| err(e.to_string()))?;
            let (tx, mut rx) = wire(conn, send, recv, max_frame);
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
            Ok(Link::new(&ident, hello, roles, Some(tag), tx, rx))
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<Link>> {
        Box::pin(async move { self.incoming.lock().await.recv().await })
    }

    fn shutdown(&self) {
        self.endpoint
            .close(close_code(CloseKind::Leaving), b"node shutting down");
    }
    fn max_frame_bytes(&self) -> usize {
        self.max_frame
    }
}
