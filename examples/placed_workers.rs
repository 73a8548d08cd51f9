//! A supervised service whose workers are placed by resources: the program asks the
//! datacenter (not a machine) for `worker` actors of 0.25 cpu and 64 MB each, under a
//! `one_for_one` supervisor; the kernel places each worker in an executor process on
//! an agent with room, and when a worker panics, is killed for its memory limit, or its
//! machine dies, the supervisor hears it and starts the worker again elsewhere.
//!
//! The same binary is the framework and the executor: `run_if_requested` at the top of
//! `main` turns the process into an executor when an agent starts it as one.
//!
//! With `plexus dev` running in the same directory:
//!
//! ```text
//! cargo run --example placed_workers -- --dev .plexus/dev --demo
//! ```
//!
//! Against a cluster: `--config NODE.toml --master master@HOST:PORT` (the node's
//! certificate with the client role). Without `--demo` it reads commands on stdin:
//! `ping W`, `panic W TEXT`, `hog W MB`, `extra NAME` (one more worker, unique per host,
//! reported when placed), `where`, `quit`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use plexus::actors::{Node, RemoteMessage};
use plexus::{
    ChildEvent, ChildSpec, Datacenter, DatacenterConfig, Intensity, OneForOne, Requirements,
};
use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

/// What a worker does.
#[derive(Debug, RemoteMessage)]
enum Work {
    /// Answers who and where it is.
    Ping(RpcReplyPort<String>),
    /// Panics with this text.
    Panic(String),
    /// Takes this many MB of memory (past its limit, its executor is OOM-killed).
    Hog(u64),
}

/// A worker; its argument is its name.
struct Worker;

impl Actor for Worker {
    type Msg = Work;
    type State = (String, Vec<Vec<u8>>);
    type Arguments = String;

    async fn pre_start(
        &self,
        _: ActorRef<Work>,
        name: String,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok((name, Vec::new()))
    }

    async fn handle(
        &self,
        _: ActorRef<Work>,
        msg: Work,
        (name, hoard): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Work::Ping(reply) => {
                let at = std::env::var("PLEXUS_SANDBOX").unwrap_or_default();
                let answer = format!("{name} in process {} ({at})", std::process::id());
                if reply.send(answer).is_err() {
                    tracing::debug!("the caller stopped waiting");
                }
            }
            Work::Panic(text) => panic!("{text}"),
            Work::Hog(mb) => {
                for _ in 0..mb {
                    // Touched, so the memory is really taken.
                    hoard.push(vec![1u8; 1 << 20]);
                }
            }
        }
        Ok(())
    }
}

struct Args {
    config: Option<PathBuf>,
    master: Option<String>,
    dev: Option<PathBuf>,
    workers: usize,
    mem_mb: u64,
    cpus: f64,
    unique_host: bool,
    demo: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        config: None,
        master: None,
        dev: None,
        workers: 3,
        mem_mb: 64,
        cpus: 0.25,
        unique_host: false,
        demo: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => a.config = Some(val()?.into()),
            "--master" => a.master = Some(val()?),
            "--dev" => a.dev = Some(val()?.into()),
            "--workers" => a.workers = val()?.parse().context("--workers")?,
            "--mem-mb" => a.mem_mb = val()?.parse().context("--mem-mb")?,
            "--cpus" => a.cpus = val()?.parse().context("--cpus")?,
            "--unique-host" => a.unique_host = true,
            "--demo" => a.demo = true,
            other => {
                bail!("unknown argument {other:?} (see the top of examples/placed_workers.rs)")
            }
        }
    }
    Ok(a)
}

/// This program's node: from `--config`, or, with `--dev DIR`, a client certificate
/// issued from the development cluster's CA in `DIR/tls`.
async fn start_node(a: &Args) -> anyhow::Result<(Node, String)> {
    if let Some(dir) = &a.dev {
        let tls_dir = dir.join("tls");
        let mine = tempfile::tempdir()?.keep();
        std::fs::copy(tls_dir.join("ca.pem"), mine.join("ca.pem")).with_context(|| {
            format!(
                "no development cluster in {} (run `plexus dev` first)",
                dir.display()
            )
        })?;
        let name = format!("workers-{}", std::process::id());
        let (cert, key) =
            plexus::net::tls::issue(&tls_dir, &mine, &name, plexus::net::Role::Client)?;
        let settings = plexus::config::NodeSettings {
            name,
            listen: "127.0.0.1:0".parse()?,
            tls: plexus::config::TlsSettings {
                ca_cert: Some(mine.join("ca.pem")),
                cert: Some(cert),
                key: Some(key),
                dev: false,
            },
            state_dir: mine.join("state"),
            ..Default::default()
        };
        let master = a
            .master
            .clone()
            .unwrap_or_else(|| "dev@127.0.0.1:7400".into());
        let node = Node::start(&settings).await?;
        return Ok((node, master));
    }
    let config = a
        .config
        .as_deref()
        .context("--config NODE.toml or --dev DIR")?;
    let settings = plexus::config::load_node(Some(config), &[])?;
    let master = a.master.clone().context("--master NAME@HOST:PORT")?;
    Ok((Node::start(&settings).await?, master))
}

fn print(line: String) {
    println!("{line}");
}

fn describe(e: &ChildEvent) -> String {
    match e {
        ChildEvent::Started {
            child,
            agent,
            task_id,
            starts,
            ..
        } => format!(
            "started {child} on {} (task {task_id}, start {starts})",
            agent.as_deref().unwrap_or("?")
        ),
        ChildEvent::Failed { child, error, .. } => format!("failed {child}: {error}"),
        ChildEvent::Terminated { child, reason, .. } => {
            format!(
                "terminated {child}: {}",
                reason.as_deref().unwrap_or("normal")
            )
        }
        ChildEvent::NotStarted { child, error } => format!("not-started {child}: {error}"),
        ChildEvent::GaveUp { child } => format!("gave-up {child}"),
    }
}

async fn child(
    sup: &ActorRef<plexus::kernel::datacenter::supervisor::OneForOneMsg>,
    name: &str,
) -> anyhow::Result<ActorRef<Work>> {
    let cell = call_t!(
        sup,
        |r| plexus::kernel::datacenter::supervisor::OneForOneMsg::Child(name.to_string(), r),
        5000
    )?
    .with_context(|| format!("no running child {name:?}"))?;
    Ok(cell.into())
}

fn main() -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    plexus::logging::init(plexus::logging::LogFormat::Text, &filter)?;
    plexus::executor::run_if_requested(|types| types.register("worker", || Worker));
    let a = parse_args()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(a))
}

async fn run(a: Args) -> anyhow::Result<()> {
    let (node, master) = start_node(&a).await?;
    node.join(master.parse().context("--master")?);
    let dc = Datacenter::connect(&node, DatacenterConfig::new("placed-workers")).await?;
    print(format!("connected as framework {}", dc.framework_id()));
    let mut req = Requirements::new(a.cpus, a.mem_mb).timeout(Duration::from_secs(120));
    if a.unique_host {
        req = req.unique_host("worker");
    }
    let specs = (1..=a.workers)
        .map(|i| {
            let name = format!("w{i}");
            ChildSpec::new::<Work, _>(&name, "worker", &name, req.clone())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (tx, mut events) = mpsc::unbounded_channel();
    let intensity = Intensity {
        max_restarts: 5,
        period: Duration::from_secs(30),
        ..Intensity::default()
    };
    let (sup, _) = Actor::spawn(
        None,
        OneForOne::new(dc.clone(), intensity).observed(tx),
        specs,
    )
    .await?;
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<String>();
    if !a.demo {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
    } else {
        drop(lines_tx);
    }
    let mut started = 0;
    let mut extras: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
    loop {
        tokio::select! {
            Some(e) = events.recv() => {
                print(describe(&e));
                if let ChildEvent::Started { .. } = e {
                    started += 1;
                    if a.demo {
                        demo_step(&sup, started, a.workers).await?;
                        if started == a.workers + 1 {
                            print("demo done".into());
                            break;
                        }
                    }
                }
            }
            Some(line) = lines.recv() => {
                let words: Vec<&str> = line.split_whitespace().collect();
                let r = command(&dc, &sup, &words, &req, &mut extras).await;
                match r {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => print(format!("error {e:#}")),
                }
            }
            else => break,
        }
    }
    sup.stop(None);
    dc.shutdown().await;
    Ok(())
}

/// The demonstration: once every worker runs, ping them all and make one panic; once it
/// is back, ping it again.
async fn demo_step(
    sup: &ActorRef<plexus::kernel::datacenter::supervisor::OneForOneMsg>,
    started: usize,
    workers: usize,
) -> anyhow::Result<()> {
    if started == workers {
        for i in 1..=workers {
            let w = child(sup, &format!("w{i}")).await?;
            print(format!("pong {}", call_t!(w, Work::Ping, 10_000)?));
        }
        let w1 = child(sup, "w1").await?;
        w1.cast(Work::Panic("boom (a demonstration panic)".into()))?;
    } else if started == workers + 1 {
        let w1 = child(sup, "w1").await?;
        print(format!("pong {}", call_t!(w1, Work::Ping, 10_000)?));
    }
    Ok(())
}

/// Carries out one stdin command; true to quit.
async fn command(
    dc: &Datacenter,
    sup: &ActorRef<plexus::kernel::datacenter::supervisor::OneForOneMsg>,
    words: &[&str],
    req: &Requirements,
    extras: &mut BTreeMap<String, tokio::task::JoinHandle<()>>,
) -> anyhow::Result<bool> {
    match words {
        ["ping", w] => {
            let w = child(sup, w).await?;
            print(format!("pong {}", call_t!(w, Work::Ping, 10_000)?));
        }
        ["panic", w, text @ ..] => child(sup, w).await?.cast(Work::Panic(text.join(" ")))?,
        ["hog", w, mb] => child(sup, w).await?.cast(Work::Hog(mb.parse()?))?,
        ["where"] => {
            for i in 1.. {
                let name = format!("w{i}");
                match call_t!(
                    sup,
                    |r| plexus::kernel::datacenter::supervisor::OneForOneMsg::Child(
                        name.clone(),
                        r
                    ),
                    5000
                )? {
                    Some(c) => print(format!(
                        "where {name} {}",
                        dc.agent_of(&c).as_deref().unwrap_or("?")
                    )),
                    None if i > 64 => break,
                    None => continue,
                }
            }
        }
        ["extra", name] => {
            let req = req
                .clone()
                .unique_host("worker")
                .timeout(Duration::from_secs(600));
            let p = dc.request::<Work, _>(None, "worker", &name.to_string(), req)?;
            let name = name.to_string();
            let task = p.task_id().clone();
            // Said once known (past the first wait for offers), then again when placed.
            let mut reasons = p.reasons();
            let why = loop {
                let now = reasons.borrow_and_update().clone();
                match now {
                    Some(w) if w != "waiting for offers" => break Some(w),
                    None => break None,
                    Some(_) => {
                        if reasons.changed().await.is_err() {
                            break None;
                        }
                    }
                }
            };
            if let Some(why) = why {
                print(format!("pending {name} (task {task}): {why}"));
            }
            let dc = dc.clone();
            let n = name.clone();
            extras.insert(
                name,
                tokio::spawn(async move {
                    match p.placed().await {
                        Ok(c) => print(format!(
                            "placed {n} on {}",
                            dc.agent_of(&c).as_deref().unwrap_or("?")
                        )),
                        Err(e) => print(format!("error {n}: {e}")),
                    }
                }),
            );
        }
        ["quit"] => return Ok(true),
        [] => {}
        other => print(format!("error unknown command {other:?}")),
    }
    Ok(false)
}
