//! What a newcomer meets first, with real `plexus` processes on 127.0.0.x: the README's
//! two-node recipe with the files it names, joining that fails and says why, `plexus run`
//! (output, exit codes, timeouts, Ctrl-C, roles), what the API refuses, and help and
//! error texts that name what is wrong.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use plexus::client::{Client, KillAnswer};

fn plexus() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plexus"));
    c.env_remove("RUST_LOG").env_remove("PLEXUS_API");
    c
}

fn run(args: &[&str], cwd: &Path) -> Output {
    plexus().args(args).current_dir(cwd).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A process killed (and reaped) when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(args: &[&str], cwd: &Path, log: PathBuf) -> Running {
        let f = std::fs::File::create(&log).unwrap();
        let child = plexus()
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Running { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`; fails with the log.
    fn wait_log(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {needle:?} within {timeout:?}; log:\n{}", self.log());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it gives a value; fails after `timeout` naming `what`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn the_readme_two_node_recipe_works_with_the_files_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir(dir.path().join("examples")).unwrap();
    for f in ["node1.toml", "node2.toml"] {
        std::fs::copy(
            repo.join("examples").join(f),
            dir.path().join("examples").join(f),
        )
        .unwrap();
    }
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    // The recipe's commands, in the README's order, from the checkout's top directory.
    let steps = [
        "plexus certs init certs",
        "plexus certs issue certs node1 --role client",
        "plexus certs issue certs node2 --role client",
        "plexus node --config examples/node1.toml",
        "plexus node --config examples/node2.toml",
    ];
    let mut at = 0;
    for s in steps {
        let i = readme[at..]
            .find(s)
            .unwrap_or_else(|| panic!("the README no longer says {s:?} (in this order)"));
        at += i + s.len();
    }
    for s in &steps[..3] {
        let args: Vec<&str> = s.split(' ').skip(1).collect();
        let o = run(&args, dir.path());
        assert!(o.status.success(), "{s}: {}", text(&o.stderr));
    }
    let n1 = Running::spawn(
        &["node", "--config", "examples/node1.toml"],
        dir.path(),
        dir.path().join("n1.log"),
    );
    let n2 = Running::spawn(
        &["node", "--config", "examples/node2.toml"],
        dir.path(),
        dir.path().join("n2.log"),
    );
    n1.wait_log("peer up node=node1 peer=node2", Duration::from_secs(30));
    n2.wait_log("peer up node=node2 peer=node1", Duration::from_secs(30));
}

/// An agent whose master is unreachable, or that holds a certificate of another CA, says
/// so at error level on its own side, and gives up after `--register-timeout`.
#[test]
fn a_node_that_cannot_join_says_why_and_an_agent_can_give_up() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours");
    let theirs = dir.path().join("theirs");
    plexus_net::tls::init_ca(&ours, "plexus").unwrap();
    plexus_net::tls::init_ca(&theirs, "plexus").unwrap();
    let node_toml = |ca: &Path, name: &str, ip: &str| {
        let role = if name == "master" {
            plexus_net::Role::Master
        } else {
            plexus_net::Role::Agent
        };
        let t = certs_as(ca, name, role);
        let f = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &f,
            format!(
                "name = \"{name}\"\nlisten = \"{ip}:{}\"\nstate_dir = \"{}\"\n\
                 [tls]\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
                 [agent]\nresources = \"cpus:1;mem:256\"\n",
                free_udp(ip),
                dir.path().join(name).display(),
                t.ca_cert.unwrap().display(),
                t.cert.unwrap().display(),
                t.key.unwrap().display(),
            ),
        )
        .unwrap();
        f
    };
    // Nothing listens at the master's address.
    let nobody = format!("master@127.0.0.1:{}", free_udp("127.0.0.1"));
    let f = node_toml(&ours, "lonely", "127.0.0.2");
    let f = f.to_str().unwrap();
    let t = Instant::now();
    let o = run(
        &[
            "agent",
            "--master",
            &nobody,
            "--config",
            f,
            "--register-timeout",
            "5s",
        ],
        dir.path(),
    );
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30), "gave up in time");
    assert!(
        err.contains("ERROR") && err.contains("cannot join master") && err.contains("unreachable"),
        "{err}"
    );
    assert!(
        err.contains(&nobody.replace("master@", "")),
        "names the address: {err}"
    );
    assert!(err.contains("register_timeout"), "{err}");

    // A master of our CA; an agent with a certificate of another CA is refused.
    let m = node_toml(&ours, "master", "127.0.0.1");
    let api = format!("127.0.0.1:{}", free_tcp("127.0.0.1"));
    let master = Running::spawn(
        &[
            "master",
            "--config",
            m.to_str().unwrap(),
            "--api-listen",
            &api,
        ],
        dir.path(),
        dir.path().join("master.log"),
    );
    master.wait_log("master started", Duration::from_secs(30));
    let addr = std::fs::read_to_string(&m).unwrap();
    let listen = addr.lines().find(|l| l.starts_with("listen")).unwrap();
    let master_at = format!("master@{}", listen.split('"').nth(1).unwrap());
    let f = node_toml(&theirs, "stranger", "127.0.0.3");
    let o = run(
        &[
            "agent",
            "--master",
            &master_at,
            "--config",
            f.to_str().unwrap(),
            "--register-timeout",
            "5s",
        ],
        dir.path(),
    );
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("ERROR") && err.contains("cannot join master") && err.contains("refused"),
        "{err}"
    );
}

/// A `plexus dev` process on its own addresses and state dir.
struct Dev {
    _proc: Running,
    api: String,
    dir: tempfile::TempDir,
}

impl Dev {
    fn start(extra_toml: &str) -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let api = format!("127.0.0.1:{}", free_tcp("127.0.0.1"));
        let cfg = dir.path().join("dev.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:{}\"\nstate_dir = \"{}\"\n\
                 [master]\napi_listen = \"{api}\"\nallocation_interval = \"100ms\"\n\
                 [agent]\nresources = \"cpus:2;mem:2048;disk:1000\"\nkill_grace = \"1s\"\n{extra_toml}",
                free_udp("127.0.0.1"),
                dir.path().join("state").display(),
            ),
        )
        .unwrap();
        let proc = Running::spawn(
            &["dev", "--config", cfg.to_str().unwrap()],
            dir.path(),
            dir.path().join("dev.log"),
        );
        let api = format!("http://{api}");
        // The client looks for the token the master leaves for it at every try: until
        // the master has started, there is none.
        wait_for("the dev agent to register", Duration::from_secs(60), || {
            let c = Client::new(&api);
            c.agents().ok().filter(|a| a.len() == 1).map(|_| ())
        });
        Dev {
            _proc: proc,
            api,
            dir,
        }
    }

    fn cli(&self, args: &[&str]) -> Command {
        let mut c = plexus();
        c.current_dir(self.dir.path())
            .env("PLEXUS_API", &self.api)
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cli(args).output().unwrap()
    }
}

#[test]
fn run_prints_the_output_and_exits_with_the_commands_code() {
    let d = Dev::start("");
    let o = d.run(&[
        "run",
        "--",
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2; exit 3",
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(3), "{out}\n{err}");
    assert!(out.contains("to-stdout"), "{out}");
    assert!(
        err.contains("to-stderr") && err.contains("TASK_FAILED"),
        "{err}"
    );

    let o = d.run(&["run", "--quiet", "--", "sh", "-c", "echo hidden"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!text(&o.stdout).contains("hidden"));

    // Not found: a launch failure, reported before any RUNNING.
    let o = d.run(&["run", "--", "no-such-command-plexus"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(127), "{err}");
    assert!(
        err.contains("TASK_FAILED") && err.contains("not found in PATH"),
        "{err}"
    );
    assert!(!err.contains("TASK_RUNNING"), "{err}");

    // --timeout: killed, exit 124; it then shows as killed, and killing it again is an error.
    let o = d.run(&[
        "run",
        "--timeout",
        "1s",
        "--name",
        "a-rather-long-job-name-for-ps",
        "--",
        "sleep",
        "30",
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(124), "{err}");
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("submitted "))
        .unwrap()
        .to_string();
    let c = Client::new(&d.api);
    wait_for(
        "the timed-out job to be killed",
        Duration::from_secs(30),
        || (c.task(&id).ok()?.state == "TASK_KILLED").then_some(()),
    );
    let o = d.run(&["kill", &id]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("already ended"),
        "{}",
        text(&o.stderr)
    );
    let ps = text(&d.run(&["ps", "--all"]).stdout);
    let line = ps.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(
        line.contains("a-rather-long-job-n…"),
        "names cut with a mark: {line}"
    );
    assert!(
        line.contains("TASK_KILLED") && line.contains("0.1") && line.contains(" admin "),
        "the owner is the principal that submitted it: {line}"
    );
}

#[test]
fn ctrl_c_cancels_an_attached_run() {
    let d = Dev::start("");
    let mut child = d
        .cli(&["run", "--", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let c = Client::new(&d.api);
    let id = wait_for("the job to run", Duration::from_secs(30), || {
        c.tasks()
            .ok()?
            .into_iter()
            .find(|t| t.state == "TASK_RUNNING")
            .map(|t| t.task_id)
    });
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    wait_for("the job to be killed", Duration::from_secs(30), || {
        (c.task(&id).ok()?.state == "TASK_KILLED").then_some(())
    });
}

#[test]
fn roles_from_weights_and_quotas_can_be_used_from_the_cli() {
    let d = Dev::start("[master.weights]\nprod = 2.0\n");
    let o = d.run(&["run", "--role", "prod", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = d.run(&["run", "--role", "nope", "--", "true"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("\"nope\"") && err.contains("prod"), "{err}");
}

#[test]
fn what_no_agent_could_run_is_refused_naming_the_field_and_limit() {
    let d = Dev::start("");
    let c = Client::new(&d.api);
    let job = |cpus: f64, mem: u64, argv: &[&str]| {
        common::kcluster::job(argv.iter().map(|s| s.to_string()).collect(), cpus, mem)
    };
    for (j, wanted) in [
        (job(0.0, 64, &["true"]), "cpus"),
        (job(1e308, 64, &["true"]), "cpus"),
        (job(3.0, 64, &["true"]), "largest agent has (2)"),
        (job(0.5, u64::MAX, &["true"]), "mem"),
        (job(0.5, 4096, &["true"]), "largest agent has (2048 MB)"),
        (
            job(0.5, 64, &["echo", "a\0b"]),
            "argv[1] contains a NUL byte",
        ),
    ] {
        let e = c.submit(&j).unwrap_err().to_string();
        assert!(e.contains("400") && e.contains(wanted), "{e}");
    }
    // From the command line, before anything is sent.
    for bad in ["-1", "NaN", "inf", "1e308"] {
        let o = d.run(&["run", "--cpus", bad, "--", "true"]);
        let err = text(&o.stderr);
        assert!(
            !o.status.success() && err.contains("cpus") && err.contains(bad),
            "{bad}: {err}"
        );
    }
    // Unknown query parameters are errors, not silently ignored.
    let id = c.submit(&job(0.1, 32, &["true"])).unwrap();
    let url = format!("{}/api/v1/tasks/{id}/logs?stream=stderr", d.api);
    let r = ureq_get(&url);
    assert_eq!(r.0, 400, "{}", r.1);
    assert!(r.1.contains("stream"), "{}", r.1);
    let m = ureq_get(&format!("{}/metrics", d.api));
    assert!(m.1.contains("plexus_jobs_pending"), "{}", m.1);
    // The master's inbox is bounded, and nothing was shed.
    assert!(
        m.1.contains("plexus_master_inbox_limit_msgs 65536"),
        "{}",
        m.1
    );
    assert!(
        m.1.contains(
            "# TYPE plexus_master_inbox_shed_total counter\nplexus_master_inbox_shed_total 0\n"
        ),
        "{}",
        m.1
    );
    assert!(matches!(c.kill("no-such-task"), Err(e) if e.to_string().contains("404")));
    let done = wait_for("the job to end", Duration::from_secs(30), || {
        c.task(&id).ok().filter(|t| t.state == "TASK_FINISHED")
    });
    assert_eq!(done.exit_code, Some(0));
    assert!(matches!(c.kill(&id).unwrap(), KillAnswer::AlreadyEnded(_)));
}

/// Status and body of a GET with the token the CLI finds for `url`'s API.
fn ureq_get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let host_port = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let token =
        std::fs::read_to_string(plexus::client::credential_path(host_port).unwrap()).unwrap();
    let mut r = agent
        .get(url)
        .header("Authorization", format!("Bearer {}", token.trim()))
        .call()
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

#[test]
fn help_lists_only_flags_that_do_something() {
    let dir = tempfile::tempdir().unwrap();
    let help = |cmd: &str| text(&run(&[cmd, "--help"], dir.path()).stdout);
    let cases: [(&str, &[&str], &[&str]); 6] = [
        (
            "dev",
            &["--api-listen", "--resources"],
            &["--peer", "--dev"],
        ),
        ("master", &["--api-listen", "--peer"], &["--resources"]),
        (
            "agent",
            &["--resources", "--register-timeout"],
            &["--api-listen"],
        ),
        ("kill", &["--api"], &["--json"]),
        ("logs", &["--api"], &["--json"]),
        ("run", &["--timeout", "--quiet", "--role", "--disk"], &[]),
    ];
    for (cmd, has, lacks) in cases {
        let h = help(cmd);
        for f in has {
            assert!(h.contains(f), "{cmd} --help lacks {f}:\n{h}");
        }
        for f in lacks {
            assert!(
                !h.contains(&format!("{f} ")),
                "{cmd} --help lists {f}:\n{h}"
            );
        }
    }
}

#[test]
fn startup_errors_name_the_key_or_path_and_value_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("n.toml");
    let cases = [
        ("listen = \"localhost:7400\"\n", "localhost:7400"),
        ("node_down_timeout = 3\n", "\"3s\""),
        ("typo_key = 1\n", "typo_key"),
    ];
    for (toml, wanted) in cases {
        std::fs::write(&cfg, format!("{toml}[tls]\ndev = true\n")).unwrap();
        let o = run(&["node", "--config", cfg.to_str().unwrap()], dir.path());
        let err = text(&o.stderr);
        assert!(!o.status.success() && err.contains(wanted), "{toml}: {err}");
        let line = err.lines().find(|l| l.contains("error")).unwrap();
        let tail = line.rsplit(": ").next().unwrap();
        assert_eq!(line.matches(tail).count(), 1, "said once: {line}");
    }
    // A port in use names the address.
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let sd = dir.path().join("s");
    let o = run(
        &[
            "node",
            "--dev",
            "--listen",
            &addr,
            "--state-dir",
            sd.to_str().unwrap(),
        ],
        dir.path(),
    );
    let err = text(&o.stderr);
    assert!(!o.status.success() && err.contains(&addr), "{err}");
    assert_eq!(err.matches("os error 98").count(), 1, "{err}");
}
