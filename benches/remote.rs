//! `plexus bench remote`: the distribution layer against its in-process baseline.
//!
//! Starts a second `plexus node` process on loopback, joins it from this process, and
//! prints, one figure per line in the shapes of `benches/peers/erlang/run.sh`:
//! remote call round trip, cast throughput over one connection with small messages,
//! remote spawn latency (spawn request until the started actor is confirmed), then the
//! same call and cast figures for a local ractor actor.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use plexus::builtin::{self, Echo, EchoMsg};
use plexus_actors::Node;
use plexus_config::{NodeSettings, PeerAddr, TlsSettings};
use ractor::{call, Actor, ActorRef};

/// How much work each figure measures.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteOpts {
    /// Calls timed for the round-trip figures.
    #[arg(long, default_value_t = 50_000)]
    pub calls: usize,
    /// Casts sent for the throughput figures.
    #[arg(long, default_value_t = 1_000_000)]
    pub casts: u64,
    /// Remote spawns timed.
    #[arg(long, default_value_t = 20_000)]
    pub spawns: usize,
}

pub(crate) struct Reaper(pub(crate) Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((p * sorted.len() as f64).round() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e6
}

fn lat_line(what: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "plexus {what} p50={:.1} p99={:.1}",
        pct(&v, 0.5),
        pct(&v, 0.99)
    )
}

async fn time_calls(e: &ActorRef<EchoMsg>, n: usize) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..n.min(2000) {
        call!(e, EchoMsg::Count)?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call!(e, EchoMsg::Count)?;
        v.push(t.elapsed());
    }
    Ok(v)
}

async fn cast_rate(e: &ActorRef<EchoMsg>, n: u64) -> anyhow::Result<f64> {
    let before = call!(e, EchoMsg::Count)?;
    let t = Instant::now();
    for _ in 0..n {
        e.cast(EchoMsg::Ping(1))?;
    }
    let got = call!(e, EchoMsg::Count)? - before;
    let dt = t.elapsed().as_secs_f64();
    anyhow::ensure!(got == n, "counted {got} of {n} casts");
    Ok(n as f64 / dt)
}

pub(crate) fn tls_for(dir: &std::path::Path, name: &str) -> anyhow::Result<TlsSettings> {
    tls_with(dir, name, plexus_net::Roles::ALL)
}

/// As [`tls_for`], the certificate naming only `roles`.
pub(crate) fn tls_with(
    dir: &std::path::Path,
    name: &str,
    roles: plexus_net::Roles,
) -> anyhow::Result<TlsSettings> {
    let (c, k) = plexus_net::tls::issue(dir, dir, name, roles)?;
    Ok(TlsSettings {
        ca_cert: Some(dir.join("ca.pem")),
        cert: Some(c),
        key: Some(k),
        dev: false,
    })
}

/// Runs the benchmark, printing each figure as soon as it is measured.
pub async fn run(o: RemoteOpts) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    plexus_net::tls::init_ca(dir.path(), "bench")?;
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let b_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let tb = tls_for(dir.path(), "bench-b")?;
    let cfg = format!(
        "name = \"bench-b\"\ncluster = \"bench\"\nlisten = \"{b_addr}\"\nstate_dir = \"{}\"\n\
         [tls]\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.path().join("b").display(),
        tb.ca_cert.as_ref().context("ca")?.display(),
        tb.cert.as_ref().context("cert")?.display(),
        tb.key.as_ref().context("key")?.display(),
    );
    let cfg_path = dir.path().join("b.toml");
    std::fs::write(&cfg_path, cfg)?;
    let _b = Reaper(
        Command::new(std::env::current_exe()?)
            .args(["--log", "warn", "node", "--config"])
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the second node")?,
    );
    let settings = NodeSettings {
        name: "bench-a".into(),
        cluster: "bench".into(),
        listen: "127.0.0.1:0".parse()?,
        peers: vec![PeerAddr {
            name: "bench-b".into(),
            addr: b_addr,
        }],
        tls: tls_for(dir.path(), "bench-a")?,
        state_dir: dir.path().join("a"),
        ..NodeSettings::default()
    };
    let a = Node::start(&settings).await?;
    a.wait_for_peers(&["bench-b"], Duration::from_secs(30))
        .await?;

    let echo: ActorRef<EchoMsg> = a.spawn_remote("bench-b", builtin::ECHO, &0u64).await?;
    println!(
        "{}",
        lat_line("call_rtt_us", time_calls(&echo, o.calls).await?)
    );
    let sink: ActorRef<EchoMsg> = a.spawn_remote("bench-b", builtin::ECHO, &0u64).await?;
    println!(
        "plexus cast_throughput msgs_per_s={:.0}",
        cast_rate(&sink, o.casts).await?
    );
    for _ in 0..o.spawns.min(1000) {
        a.spawn_remote::<EchoMsg, _>("bench-b", builtin::ONESHOT, &())
            .await?;
    }
    let mut v = Vec::with_capacity(o.spawns);
    for _ in 0..o.spawns {
        let t = Instant::now();
        a.spawn_remote::<EchoMsg, _>("bench-b", builtin::ONESHOT, &())
            .await?;
        v.push(t.elapsed());
    }
    println!("{}", lat_line("remote_spawn_us", v));

    let (local, _) = Actor::spawn(None, Echo, 0).await?;
    println!(
        "{}",
        lat_line("local_call_rtt_us", time_calls(&local, o.calls).await?)
    );
    println!(
        "plexus local_cast_throughput msgs_per_s={:.0}",
        cast_rate(&local, o.casts).await?
    );
    a.leave().await;
    Ok(())
}
