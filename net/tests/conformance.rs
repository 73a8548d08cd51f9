//! One conformance suite, run against the QUIC transport and the simulated network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plexus_net::tls::{self, TlsMaterial};
use plexus_net::{
    CloseKind, LocalIdentity, NetError, PeerAddr, QuicTransport, SimFaults, SimNetwork, Transport,
};

const MAX: u32 = 64 * 1024;

/// Makes transports for the suite.
trait Net {
    fn node(&self, name: &str, cluster: &str) -> Arc<dyn Transport>;
}

struct Quic {
    dir: tempfile::TempDir,
}

impl Quic {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        tls::init_ca(dir.path(), "test").unwrap();
        Quic { dir }
    }
    fn material(&self, name: &str) -> TlsMaterial {
        let (c, k) = tls::issue(
            self.dir.path(),
            self.dir.path(),
            name,
            plexus_net::Roles::ALL,
        )
        .unwrap();
        TlsMaterial::load(&self.dir.path().join("ca.pem"), &c, &k).unwrap()
    }
}

fn ident(name: &str, cluster: &str, addr: SocketAddr) -> LocalIdentity {
    LocalIdentity {
        cluster: cluster.into(),
        name: name.into(),
        incarnation: 7,
        addr,
        roles: plexus_net::Roles::ALL,
    }
}

impl Net for Quic {
    fn node(&self, name: &str, cluster: &str) -> Arc<dyn Transport> {
        let m = self.material(name);
        QuicTransport::bind(
            ident(name, cluster, "127.0.0.1:0".parse().unwrap()),
            &m,
            MAX,
        )
        .unwrap()
    }
}

struct Sim {
    net: SimNetwork,
    next: std::sync::atomic::AtomicU16,
}

impl Sim {
    fn new(seed: u64) -> Self {
        Sim {
            net: SimNetwork::new(seed, SimFaults::default()),
            next: 1000.into(),
        }
    }
}

impl Net for Sim {
    fn node(&self, name: &str, cluster: &str) -> Arc<dyn Transport> {
        let port = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let addr = SocketAddr::from(([10, 0, 0, 1], port));
        self.net.bind(ident(name, cluster, addr), MAX).unwrap()
    }
}

fn addr_of(t: &Arc<dyn Transport>) -> PeerAddr {
    PeerAddr {
        name: t.identity().name.clone(),
        addr: t.identity().addr,
    }
}

async fn connect(
    a: &Arc<dyn Transport>,
    b: &Arc<dyn Transport>,
) -> (plexus_net::Link, plexus_net::Link) {
    let dial = a.dial(addr_of(b));
    let (la, lb) = tokio::join!(dial, b.accept());
    (la.unwrap(), lb.unwrap())
}

async fn connects_and_identifies(net: &dyn Net) {
    let a = net.node("alpha", "c1");
    let b = net.node("beta", "c1");
    let (la, lb) = connect(&a, &b).await;
    assert_eq!(la.peer.name, "beta");
    assert_eq!(lb.peer.name, "alpha");
    assert_eq!(lb.peer.incarnation, 7);
    assert_eq!(lb.peer.addr, a.identity().addr);
    assert!(la.outbound && !lb.outbound);
}

async fn delivers_in_order_both_ways(net: &dyn Net) {
    let a = net.node("alpha", "c1");
    let b = net.node("beta", "c1");
    let (la, lb) = connect(&a, &b).await;
    const N: u64 = 20_000;
    let pump = |link: plexus_net::Link| async move {
        let tx = link.tx.clone();
        let mut rx = link.rx;
        let sender = tokio::spawn(async move {
            for i in 0..N {
                tx.ready().await;
                tx.send(&(i, "payload")).unwrap();
            }
            tx
        });
        for i in 0..N {
            let (got, _s): (u64, String) = rx.next_decoded().await.unwrap().unwrap();
            assert_eq!(got, i, "frames arrive in order");
        }
        sender.await.unwrap()
    };
    let (_ta, _tb) = tokio::join!(pump(la), pump(lb));
}

async fn enforces_frame_limit(net: &dyn Net) {
    let a = net.node("alpha", "c1");
    let b = net.node("beta", "c1");
    let (la, mut lb) = connect(&a, &b).await;
    let big = vec![0u8; MAX as usize + 1];
    assert!(matches!(la.tx.send(&big), Err(NetError::Codec(_))));
    la.tx.send(&1u32).unwrap();
    assert_eq!(lb.rx.next_decoded::<u32>().await.unwrap(), Some(1));
    la.tx.send_raw(&(MAX + 10).to_le_bytes()).unwrap();
    assert!(matches!(lb.rx.next().await, Err(NetError::Codec(_))));
}

async fn close_reason_reaches_peer(net: &dyn Net) {
    let a = net.node("alpha", "c1");
    let b = net.node("beta", "c1");
    let (la, mut lb) = connect(&a, &b).await;
    la.tx.send(&5u8).unwrap();
    la.tx
        .close_as(CloseKind::Duplicate, "going away for a test");
    assert_eq!(lb.rx.next_decoded::<u8>().await.unwrap(), Some(5));
    match lb.rx.next().await {
        Err(NetError::Closed(r)) => {
            assert!(r.text.contains("going away for a test"), "{r}");
            assert_eq!(
                r.kind,
                CloseKind::Duplicate,
                "the kind of close reaches the peer"
            );
        }
        other => panic!("expected a close with reason, got {other:?}"),
    }
}

async fn refuses_other_cluster(net: &dyn Net) {
    let a = net.node("alpha", "c1");
    let b = net.node("beta", "c2");
    let (res, _) = tokio::join!(a.dial(addr_of(&b)), async {
        tokio::time::timeout(Duration::from_secs(2), b.accept()).await
    });
    let e = res.unwrap_err().to_string();
    assert!(e.contains("cluster"), "{e}");
}

async fn refuses_wrong_name(net: &dyn Net) {
    let a = net.node("alpha", "c1");
    let b = net.node("beta", "c1");
    let mut wrong = addr_of(&b);
    wrong.name = "gamma".into();
    let e = a.dial(wrong).await.unwrap_err().to_string();
    assert!(e.contains("gamma"), "{e}");
}

async fn dial_to_nothing_fails(net: &dyn Net) {
    let a = net.node("alpha", "c1");
    let b = net.node("beta", "c1");
    let target = addr_of(&b);
    b.shutdown();
    drop(b);
    let r = tokio::time::timeout(Duration::from_secs(30), a.dial(target)).await;
    assert!(matches!(r, Ok(Err(_))), "dial to a closed node must fail");
}

macro_rules! suite {
    ($modname:ident, $make:expr, $attr:meta) => {
        mod $modname {
            use super::*;
            #[$attr]
            async fn connects_and_identifies() {
                super::connects_and_identifies(&$make).await
            }
            #[$attr]
            async fn delivers_in_order_both_ways() {
                super::delivers_in_order_both_ways(&$make).await
            }
            #[$attr]
            async fn enforces_frame_limit() {
                super::enforces_frame_limit(&$make).await
            }
            #[$attr]
            async fn close_reason_reaches_peer() {
                super::close_reason_reaches_peer(&$make).await
            }
            #[$attr]
            async fn refuses_other_cluster() {
                super::refuses_other_cluster(&$make).await
            }
            #[$attr]
            async fn refuses_wrong_name() {
                super::refuses_wrong_name(&$make).await
            }
            #[$attr]
            async fn dial_to_nothing_fails() {
                super::dial_to_nothing_fails(&$make).await
            }
        }
    };
}

suite!(
    quic,
    Quic::new(),
    tokio::test(flavor = "multi_thread", worker_threads = 2)
);
suite!(sim, Sim::new(1), tokio::test(start_paused = true));

// --- QUIC only: mutual TLS refusals -------------------------------------------------

async fn refused(server: Arc<dyn Transport>, client: Arc<dyn Transport>) -> String {
    let r = tokio::time::timeout(Duration::from_secs(15), client.dial(addr_of(&server))).await;
    let e = r.expect("dial must end").expect_err("dial must be refused");
    e.to_string()
}

#[tokio::test]
async fn quic_refuses_certificate_from_another_ca() {
    let q = Quic::new();
    let other = Quic::new();
    let server = q.node("alpha", "c1");
    let client = other.node("beta", "c1");
    refused(server.clone(), client).await;
    // the server keeps serving well-authenticated peers
    let good = q.node("gamma", "c1");
    let (l, _) = connect(&good, &server).await;
    assert_eq!(l.peer.name, "alpha");
}

#[tokio::test]
async fn quic_refuses_peer_without_certificate() {
    let q = Quic::new();
    let server = q.node("alpha", "c1");
    // a client that trusts the CA but presents no certificate
    let ca = rustls::pki_types::CertificateDer::from(
        std::fs::read(q.dir.path().join("ca.pem"))
            .map(|pem| {
                use rustls::pki_types::pem::PemObject;
                rustls::pki_types::CertificateDer::from_pem_slice(&pem)
                    .unwrap()
                    .to_vec()
            })
            .unwrap(),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![tls::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let res = async {
        let conn = ep.connect(server.identity().addr, "alpha")?.await?;
        let (mut s, mut r) = conn.open_bi().await?;
        s.write_all(&[1, 2, 3, 4]).await?;
        let mut buf = [0u8; 8];
        r.read(&mut buf).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let r = tokio::time::timeout(Duration::from_secs(15), res)
        .await
        .unwrap();
    assert!(r.is_err(), "a peer without a certificate must be refused");
}

#[tokio::test]
async fn quic_refuses_certificate_naming_another_node() {
    let q = Quic::new();
    let server = q.node("alpha", "c1");
    // "mallory" holds a valid certificate for "beta" but claims to be "mallory"
    let m = q.material("beta");
    let client = QuicTransport::bind(
        ident("mallory", "c1", "127.0.0.1:0".parse().unwrap()),
        &m,
        MAX,
    )
    .unwrap();
    let e = refused(server, client).await;
    assert!(e.contains("certificate"), "{e}");
}

// --- sim only --------------------------------------------------------------------------

async fn sim_run(seed: u64) -> (u64, usize) {
    let sim = Sim::new(seed);
    sim.net.set_faults(SimFaults {
        drop_rate: 0.2,
        min_delay: Duration::from_micros(100),
        max_delay: Duration::from_millis(5),
        break_on_loss: false,
    });
    let a = sim.node("alpha", "c1");
    let b = sim.node("beta", "c1");
    sim.net.set_faults(SimFaults::default());
    let (la, mut lb) = connect(&a, &b).await;
    sim.net.set_faults(SimFaults {
        drop_rate: 0.2,
        min_delay: Duration::from_micros(100),
        max_delay: Duration::from_millis(5),
        break_on_loss: false,
    });
    let mut got = 0usize;
    for i in 0..500u32 {
        la.tx.send(&i).unwrap();
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    let mut last = None;
    while let Ok(Ok(Some(v))) =
        tokio::time::timeout(Duration::from_secs(1), lb.rx.next_decoded::<u32>()).await
    {
        assert!(last.is_none_or(|l| v > l), "delays never reorder a pipe");
        last = Some(v);
        got += 1;
    }
    (sim.net.trace_hash(), got)
}

#[tokio::test(start_paused = true)]
async fn sim_same_seed_same_trace() {
    let (h1, n1) = sim_run(42).await;
    let (h2, n2) = sim_run(42).await;
    assert_eq!(h1, h2, "same seed, same trace");
    assert_eq!(n1, n2);
    assert!(
        n1 > 0 && n1 < 500,
        "some frames dropped, some delivered: {n1}"
    );
    let (h3, _) = sim_run(43).await;
    assert_ne!(h1, h3, "another seed, another trace");
}

#[tokio::test(start_paused = true)]
async fn sim_partition_silences_and_heal_restores() {
    let sim = Sim::new(3);
    let a = sim.node("alpha", "c1");
    let b = sim.node("beta", "c1");
    let (la, mut lb) = connect(&a, &b).await;
    sim.net.block("alpha", "beta");
    la.tx.send(&1u8).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(1), lb.rx.next()).await;
    assert!(r.is_err(), "blocked direction is silent");
    lb.tx.send(&2u8).unwrap();
    let mut la = la;
    assert_eq!(
        la.rx.next_decoded::<u8>().await.unwrap(),
        Some(2),
        "other direction still flows"
    );
    sim.net.heal();
    la.tx.send(&3u8).unwrap();
    assert_eq!(lb.rx.next_decoded::<u8>().await.unwrap(), Some(3));
    sim.net.crash("beta");
    la.tx.send(&4u8).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(1), lb.rx.next()).await;
    assert!(r.is_err(), "a crashed node's links are silent");
    let e = a.dial(addr_of(&b)).await.unwrap_err();
    assert!(matches!(e, NetError::Connect { .. }));
}

// --- QUIC only: a peer that does not read ------------------------------------------
// (Simulated links deliver whatever is sent, with no flow control to push back.)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_cuts_off_a_peer_that_does_not_read_at_the_send_buffer_limit() {
    let net = Quic::new();
    let a = net.node("alpha", "c1");
    let b = net.node("beta", "c1");
    let (la, mut lb) = connect(&a, &b).await;
    let frame = vec![7u8; MAX as usize - 64];
    let most_frames = 2 * plexus_net::SEND_BUFFER_LIMIT_BYTES / frame.len();
    let mut sent = 0usize;
    let err = loop {
        assert!(sent < most_frames, "the buffer never hit its limit");
        match la.tx.send(&frame) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    let limit = plexus_net::SEND_BUFFER_LIMIT_BYTES.to_string();
    assert!(
        matches!(&err, NetError::Closed(r) if r.kind == CloseKind::Overflow && r.text.contains(&limit)),
        "{err}"
    );
    assert!(sent * frame.len() >= plexus_net::SEND_BUFFER_LIMIT_BYTES - 2 * frame.len());
    // The link is closed for good, and the peer's end of it ends too: with the reason
    // when the close frame reaches it before the end of the stream, else as reset (the
    // stream is reset with the connection, and the two race on a loaded machine).
    assert!(matches!(la.tx.send(&1u8), Err(NetError::Closed(_))));
    let end = loop {
        match lb.rx.next().await {
            Ok(Some(_)) => {}
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    if let Some(reason) = end {
        assert!(
            reason.contains(&limit) || reason.contains("reset by peer"),
            "{reason}"
        );
    }
}

#[test]
fn a_certificate_carries_the_roles_it_was_issued_and_one_without_roles_is_refused() {
    use plexus_net::{Role, Roles};
    let dir = tempfile::tempdir().unwrap();
    tls::init_ca(dir.path(), "test").unwrap();
    let both = Roles::of(&[Role::Master, Role::Agent]);
    let (c, k) = tls::issue(dir.path(), dir.path(), "dev", both).unwrap();
    let m = TlsMaterial::load(&dir.path().join("ca.pem"), &c, &k).unwrap();
    assert_eq!(m.roles().unwrap(), both);
    let e = tls::issue(dir.path(), dir.path(), "x", Roles::NONE).unwrap_err();
    assert!(e.to_string().contains("at least one role"), "{e}");
    // A certificate made without roles (as before roles existed) proves no role.
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.path().join("ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
        ca_key,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let old = rcgen::CertificateParams::new(vec!["old".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let e = tls::cert_roles(old.der()).unwrap_err();
    assert!(e.contains("carries no role"), "{e}");
}
