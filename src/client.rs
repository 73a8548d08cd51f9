//! The CLI's client commands: they talk to the master's HTTP API.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, Context};
use plexus_kernel::api::{ClusterSummary, Page, SubmitJob, TaskView, MAX_PAGE_ITEMS};
use plexus_kernel::protocol::AgentState;
use serde::de::DeserializeOwned;

/// An API client.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// The bearer token sent with every request (see [`Client::new`]).
    token: Option<String>,
    /// The token was given ([`Client::with_token`]): it goes wherever a redirect leads,
    /// instead of the one found for there.
    given: bool,
}

/// Where the CLI keeps the tokens of the APIs it may call: `PLEXUS_CREDENTIALS_DIR`, or
/// `~/.config/plexus/credentials`.
pub fn credentials_dir() -> Option<std::path::PathBuf> {
    if let Some(d) = std::env::var_os("PLEXUS_CREDENTIALS_DIR") {
        return Some(d.into());
    }
    let home = std::env::var_os("HOME")?;
    Some(std::path::Path::new(&home).join(".config/plexus/credentials"))
}

/// The file holding the token for the API at `host_port` (`127.0.0.1:5050`).
pub fn credential_path(host_port: &str) -> Option<std::path::PathBuf> {
    let file: String = host_port
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(credentials_dir()?.join(format!("{file}.token")))
}

/// The token for the API at `base`: `PLEXUS_TOKEN`, else the first line of
/// `PLEXUS_TOKEN_FILE`, else the one the master left for the CLI (see
/// [`credential_path`]).
fn find_token(base: &str) -> Option<String> {
    if let Ok(t) = std::env::var("PLEXUS_TOKEN") {
        return Some(t.trim().to_string());
    }
    let path = match std::env::var_os("PLEXUS_TOKEN_FILE") {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let host_port = base.split("://").last()?.split('/').next()?;
            credential_path(host_port)?
        }
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().next().map(|l| l.trim().to_string())
}

/// How the master whose API is at `base` answers a read, its redirects not followed:
/// 200 when it leads, 307 from a standby sending its clients to the leader, 503 while no
/// master leads; none without an answer within `timeout`.
pub fn leadership_status(base: &str, token: Option<&str>, timeout: Duration) -> Option<u16> {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let bearer = token.map(|t| format!("Bearer {t}"));
    let url = format!("{}/api/v1/state", base.trim_end_matches('/'));
    let r = with_auth(http.get(&url), bearer).call().ok()?;
    Some(r.status().as_u16())
}

/// Of several masters' [`leadership_status`] answers, the place of the one leader: the
/// only one answering itself while every other sends its clients away.
pub fn single_leader(statuses: &[Option<u16>]) -> Option<usize> {
    let mut leading = (0..statuses.len()).filter(|i| statuses[*i] == Some(200));
    let leader = leading.next()?;
    let others_follow = statuses
        .iter()
        .enumerate()
        .all(|(i, s)| i == leader || *s == Some(307));
    (leading.next().is_none() && others_follow).then_some(leader)
}

/// Most redirects one request follows (a standby master sends it to the leader).
pub const MAX_REDIRECTS: usize = 3;

/// `r` with the `Authorization` header `bearer`, if any.
fn with_auth<B>(r: ureq::RequestBuilder<B>, bearer: Option<String>) -> ureq::RequestBuilder<B> {
    match bearer {
        Some(b) => r.header("Authorization", b),
        None => r,
    }
}

/// The base (`scheme://host:port`) of an absolute URL.
fn base_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

fn err_of(e: ureq::Error, what: &str) -> anyhow::Error {
    anyhow!("{what}: {e}")
}

/// The API's `{"error": ...}` text of a failed answer (or its whole body).
fn error_text(r: &mut ureq::http::Response<ureq::Body>) -> String {
    let body = match r.body_mut().read_to_string() {
        Ok(b) => b,
        Err(e) => return format!("(unreadable answer: {e})"),
    };
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or(body)
}

/// `s` with what a URL query value may not hold percent-escaped.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// TLS for an HTTPS API: the cluster CA (`PLEXUS_CA`) as the only root, and the client
/// certificate `PLEXUS_CERT` with its key `PLEXUS_KEY`, when given.
fn tls_from_env() -> anyhow::Result<ureq::tls::TlsConfig> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let read = |var: &str| -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = std::env::var_os(var) else {
            return Ok(None);
        };
        std::fs::read(&path)
            .map(Some)
            .with_context(|| format!("reading {var}={}", std::path::Path::new(&path).display()))
    };
    let mut b = TlsConfig::builder();
    if let Some(pem) = read("PLEXUS_CA")? {
        let ca = Certificate::from_pem(&pem).context("PLEXUS_CA: not a PEM certificate")?;
        b = b.root_certs(RootCerts::new_with_certs(&[ca]));
    }
    match (read("PLEXUS_CERT")?, read("PLEXUS_KEY")?) {
        (Some(cert), Some(key)) => {
            let cert =
                Certificate::from_pem(&cert).context("PLEXUS_CERT: not a PEM certificate")?;
            let key = PrivateKey::from_pem(&key).context("PLEXUS_KEY: not a PEM private key")?;
            b = b.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        (None, None) => {}
        _ => anyhow::bail!("give both PLEXUS_CERT and PLEXUS_KEY, or neither"),
    }
    Ok(b.build())
}

/// What the master said to a kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillAnswer {
    /// The kill is under way.
    Killing,
    /// The task had already ended (the master's words).
    AlreadyEnded(String),
}

impl Client {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:5050`), with the token it
    /// finds for it: `PLEXUS_TOKEN`, the file `PLEXUS_TOKEN_FILE` names, or the one the
    /// master left in [`credentials_dir`].
    pub fn new(base: &str) -> Client {
        Client {
            given: false,
            ..Client::with_token(base, find_token(base))
        }
    }

    /// A client of the API at `base` sending `token` (none: no credential), to wherever
    /// a standby master redirects it too. Over HTTPS
    /// it trusts the cluster CA in `PLEXUS_CA` and presents the client certificate in
    /// `PLEXUS_CERT` and `PLEXUS_KEY` (a `client` certificate names its principal).
    pub fn with_token(base: &str, token: Option<String>) -> Client {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Followed here, with the credential for where they lead (see `exchange`).
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)));
        if base.starts_with("https://") {
            match tls_from_env() {
                Ok(tls) => config = config.tls_config(tls),
                Err(e) => eprintln!("plexus: {e:#}"),
            }
        }
        let agent = config.build().into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent,
            token,
            given: true,
        }
    }

    /// Sends a request (`post`: none for a GET, else a POST with an optional JSON body)
    /// to `path`, following a master's redirects to the leading master (307, at most
    /// [`MAX_REDIRECTS`]) with the credential the CLI has for where they lead.
    fn exchange(
        &self,
        post: Option<Option<&serde_json::Value>>,
        path: &str,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let mut base = self.base.clone();
        let mut token = self.token.clone();
        let method = if post.is_some() { "POST" } else { "GET" };
        for _ in 0..=MAX_REDIRECTS {
            let url = format!("{base}{path}");
            let bearer = token.as_ref().map(|t| format!("Bearer {t}"));
            let sent = match post {
                None => with_auth(self.agent.get(&url), bearer).call(),
                Some(None) => with_auth(self.agent.post(&url), bearer).send_empty(),
                Some(Some(v)) => with_auth(self.agent.post(&url), bearer).send_json(v),
            }
            .map_err(|e| {
                err_of(
                    e,
                    &format!("{method} {url} (is a master running? see --api)"),
                )
            })?;
            let next = (sent.status() == ureq::http::StatusCode::TEMPORARY_REDIRECT)
                .then(|| {
                    sent.headers()
                        .get("Location")?
                        .to_str()
                        .ok()
                        .and_then(base_of)
                })
                .flatten();
            match next {
                Some(next) => {
                    if !self.given {
                        token = find_token(&next).or(token);
                    }
                    base = next;
                }
                None => return Ok(sent),
            }
        }
        Err(anyhow!(
            "{method} {path}: more than {MAX_REDIRECTS} redirects from {} (no master leads?)",
            self.base
        ))
    }

    fn check(
        &self,
        mut r: ureq::http::Response<ureq::Body>,
        what: &str,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        if r.status().is_success() {
            return Ok(r);
        }
        let msg = error_text(&mut r);
        Err(anyhow!("{what}: {} {msg}", r.status()))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let r = self.exchange(None, path)?;
        let mut r = self.check(r, &format!("GET {path}"))?;
        r.body_mut()
            .read_json()
            .map_err(|e| err_of(e, "reading the answer"))
    }

    /// Submits a job; returns its task id.
    pub fn submit(&self, job: &SubmitJob) -> anyhow::Result<String> {
        let body = serde_json::to_value(job).context("encoding the job")?;
        let r = self.exchange(Some(Some(&body)), "/api/v1/jobs")?;
        let mut r = self.check(r, "submitting the job")?;
        let v: serde_json::Value = r
            .body_mut()
            .read_json()
            .map_err(|e| err_of(e, "reading the answer"))?;
        v.get("task_id")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no task id in {v}"))
    }

    /// One task.
    pub fn task(&self, id: &str) -> anyhow::Result<TaskView> {
        self.get(&format!("/api/v1/tasks/{id}"))
    }

    /// All tasks.
    pub fn tasks(&self) -> anyhow::Result<Vec<TaskView>> {
        self.tasks_where("")
    }

    /// The tasks a query (`state=TASK_RUNNING&agent_id=a1`, …) selects, page by page.
    pub fn tasks_where(&self, query: &str) -> anyhow::Result<Vec<TaskView>> {
        self.all_pages("/api/v1/tasks", query)
    }

    /// The cluster in brief (`GET /api/v1/state`).
    pub fn state(&self) -> anyhow::Result<ClusterSummary> {
        self.get("/api/v1/state")
    }

    /// All agents.
    pub fn agents(&self) -> anyhow::Result<Vec<AgentState>> {
        self.all_pages("/api/v1/agents", "")
    }

    /// Every item of a paged list, following each page's `next`.
    fn all_pages<T: DeserializeOwned>(&self, path: &str, query: &str) -> anyhow::Result<Vec<T>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q = format!("limit={MAX_PAGE_ITEMS}");
            if !query.is_empty() {
                q = format!("{q}&{query}");
            }
            if let Some(a) = &after {
                q = format!("{q}&after={}", url_escape(a));
            }
            let page: Page<T> = self.get(&format!("{path}?{q}"))?;
            out.extend(page.items);
            match page.next {
                Some(n) if after.as_ref() != Some(&n) => after = Some(n),
                _ => return Ok(out),
            }
        }
    }

    /// Kills a task; says so when it had already ended.
    pub fn kill(&self, id: &str) -> anyhow::Result<KillAnswer> {
        let mut r = self.exchange(Some(None), &format!("/api/v1/tasks/{id}/kill"))?;
        if r.status() == ureq::http::StatusCode::CONFLICT {
            return Ok(KillAnswer::AlreadyEnded(error_text(&mut r)));
        }
        self.check(r, &format!("killing {id}"))?;
        Ok(KillAnswer::Killing)
    }

    /// Bytes of a task's file from `offset`, and the next offset.
    pub fn logs(&self, id: &str, file: &str, offset: u64) -> anyhow::Result<(Vec<u8>, u64)> {
        let path = format!("/api/v1/tasks/{id}/logs?file={file}&offset={offset}");
        let r = self.exchange(None, &path)?;
        let mut r = self.check(r, &format!("logs of {id}"))?;
        let next = r
            .headers()
            .get("X-Next-Offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(offset);
        let body = r
            .body_mut()
            .read_to_vec()
            .map_err(|e| err_of(e, "reading logs"))?;
        Ok((body, next))
    }
}

fn terminal(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_ERROR"
            | "TASK_LOST"
            | "TASK_DROPPED"
            | "TASK_GONE"
    )
}

/// The exit codes of `plexus run` beyond the command's own (see [`run_exit_code`]).
pub mod exit {
    /// `--timeout` passed before the task ended; the job was killed (as `timeout(1)`).
    pub const TIMEOUT: u8 = 124;
    /// plexus could not run the command or lost track of it: the API refused or could
    /// not be reached, or the task ended `TASK_ERROR`, `TASK_DROPPED`, `TASK_LOST` or
    /// `TASK_GONE`.
    pub const NOT_RUN: u8 = 125;
    /// Interrupted (Ctrl-C): the job was killed (128 + SIGINT).
    pub const INTERRUPTED: u8 = 130;
    /// The task was killed through plexus (`plexus kill`), 128 + SIGKILL as a shell says.
    pub const KILLED: u8 = 137;
}

/// The exit code `plexus run` ends with for a task that ended in `state`: 0 for
/// `TASK_FINISHED`; the command's own exit code for `TASK_FAILED` (128 + N for signal N,
/// 126 when it could not be executed, 127 when it was not found); [`exit::KILLED`] for
/// `TASK_KILLED`; [`exit::NOT_RUN`] for the states in which the command did not run or
/// its end is unknown.
pub fn run_exit_code(state: &str, exit_code: Option<i32>) -> u8 {
    match state {
        "TASK_FINISHED" => 0,
        "TASK_KILLED" => exit::KILLED,
        "TASK_FAILED" => match exit_code {
            Some(c) if (1..=255).contains(&c) => c as u8,
            _ => 1,
        },
        _ => exit::NOT_RUN,
    }
}

/// Ctrl-C seen by `plexus run` (set by its signal handler).
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// While the job runs, Ctrl-C cancels it instead of leaving it running unwatched.
fn catch_sigint() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

/// How `plexus run` waits.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print the task id and return at once.
    pub detach: bool,
    /// JSON lines instead of text (state changes only).
    pub json: bool,
    /// Do not print the task's stdout and stderr.
    pub quiet: bool,
    /// Kill the job if it has not ended this long after submission.
    pub timeout: Option<Duration>,
}

/// Copies what is new in a task's `stdout` or `stderr` to ours.
struct OutputTail {
    file: &'static str,
    offset: u64,
}

impl OutputTail {
    /// Copies everything available now; true when something was copied.
    fn pump(&mut self, c: &Client, id: &str) -> anyhow::Result<bool> {
        let mut any = false;
        loop {
            let (bytes, next) = match c.logs(id, self.file, self.offset) {
                Ok(x) => x,
                // Not placed yet, or its agent is briefly unreachable: try again later.
                Err(_) => return Ok(any),
            };
            if bytes.is_empty() {
                return Ok(any);
            }
            any = true;
            self.offset = next;
            if self.file == "stdout" {
                let mut o = std::io::stdout().lock();
                o.write_all(&bytes)?;
                o.flush()?;
            } else {
                let mut o = std::io::stderr().lock();
                o.write_all(&bytes)?;
                o.flush()?;
            }
        }
    }
}

/// `plexus run`: submits, then (unless detached) prints the task's output as it arrives
/// (state changes go to stderr) until the task ends. Returns the exit code: see
/// [`run_exit_code`] and [`exit`].
pub fn run(c: &Client, job: SubmitJob, o: &RunOptions) -> anyhow::Result<u8> {
    let id = c.submit(&job)?;
    if o.detach {
        if o.json {
            println!("{}", serde_json::json!({ "task_id": id }));
        } else {
            println!("{id}");
        }
        return Ok(0);
    }
    catch_sigint();
    let say = |line: String| {
        if o.json {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    };
    if !o.json {
        say(format!("submitted {id}"));
    }
    let started = std::time::Instant::now();
    let mut tails = [
        OutputTail {
            file: "stdout",
            offset: 0,
        },
        OutputTail {
            file: "stderr",
            offset: 0,
        },
    ];
    let stream = !o.quiet && !o.json;
    let mut shown = 0;
    let mut last_why = None;
    let mut cancelled: Option<u8> = None;
    loop {
        let t = c.task(&id)?;
        for e in t.history.iter().skip(shown) {
            if o.json {
                say(serde_json::to_string(e)?);
            } else {
                let reason = e.reason.map(|r| format!(" ({r})")).unwrap_or_default();
                let on = t
                    .agent_id
                    .as_deref()
                    .map(|a| format!(" on {a}"))
                    .unwrap_or_default();
                say(format!(
                    "{}{on}{reason} {}",
                    e.state.mesos_name(),
                    e.message
                ));
            }
            shown += 1;
        }
        if t.state == "PENDING" && t.why_not_placed != last_why {
            if let (Some(w), false) = (&t.why_not_placed, o.json) {
                say(format!("pending: {w}"));
            }
            last_why = t.why_not_placed.clone();
        }
        let placed = t.agent_id.is_some() && t.state != "PENDING";
        if stream && placed {
            for tail in &mut tails {
                tail.pump(c, &id)?;
            }
        }
        if terminal(&t.state) {
            if stream && placed {
                // What the task wrote last, after its end was reported.
                for tail in &mut tails {
                    while tail.pump(c, &id)? {}
                }
            }
            return Ok(cancelled.unwrap_or_else(|| run_exit_code(&t.state, t.exit_code)));
        }
        if cancelled.is_none() {
            let why = if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                Some((exit::INTERRUPTED, "interrupted".to_string()))
            } else {
                o.timeout.filter(|d| started.elapsed() >= *d).map(|d| {
                    (
                        exit::TIMEOUT,
                        format!(
                            "not ended within --timeout {}",
                            humantime::format_duration(d)
                        ),
                    )
                })
            };
            if let Some((code, what)) = why {
                say(format!("{what}: killing {id}"));
                match c.kill(&id)? {
                    KillAnswer::Killing => cancelled = Some(code),
                    // It ended meanwhile: the next look reports how.
                    KillAnswer::AlreadyEnded(_) => {}
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A name cut to `width` characters, with `…` where it was cut.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// What `plexus ps` says after a task's state: why it is pending, or how it ended.
fn detail(t: &TaskView) -> String {
    if let Some(w) = &t.why_not_placed {
        return w.clone();
    }
    match (&t.reason, t.message.is_empty()) {
        (Some(r), false) => format!("{r}: {}", t.message),
        (Some(r), true) => r.to_string(),
        (None, _) if terminal(&t.state) => t.message.clone(),
        (None, _) => String::new(),
    }
}

/// `plexus ps`.
pub fn ps(c: &Client, all: bool, json: bool) -> anyhow::Result<()> {
    let tasks = c.tasks_where(if all { "" } else { "active=true" })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    println!(
        "{:<28} {:<20} {:<14} {:>6} {:>8} {:<12} {:<10} DETAIL",
        "TASK", "NAME", "STATE", "CPUS", "MEM(MB)", "AGENT", "OWNER"
    );
    for t in tasks {
        // An actor task is named by its actor's type.
        let name = match &t.actor_type {
            Some(ty) => format!("actor:{ty}"),
            None => t.name.clone(),
        };
        println!(
            "{:<28} {:<20} {:<14} {:>6} {:>8} {:<12} {:<10} {}",
            t.task_id,
            fit(&name, 20),
            t.state,
            t.resources.cpus(),
            t.resources.mem_mb,
            t.agent_id.as_deref().unwrap_or("-"),
            fit(t.owner.as_deref().unwrap_or("-"), 10),
            detail(&t)
        );
    }
    Ok(())
}

/// `plexus agents`.
pub fn agents(c: &Client, json: bool) -> anyhow::Result<()> {
    let a = c.agents()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<16} {:<12} {:<24} {:<24} ISOLATION",
        "AGENT", "HOST", "STATUS", "TOTAL", "FREE"
    );
    for x in a {
        let short =
            |r: &plexus_kernel::resources::Resources| format!("cpus:{} mem:{}", r.cpus(), r.mem_mb);
        println!(
            "{:<16} {:<16} {:<12} {:<24} {:<24} {}",
            x.id,
            x.hostname,
            x.status,
            short(&x.total),
            short(&x.free),
            x.isolation
        );
        if let Some(p) = &x.problem {
            println!("    takes no tasks: {p}");
        }
    }
    Ok(())
}

/// `plexus logs`.
pub fn logs(c: &Client, id: &str, file: &str, follow: bool) -> anyhow::Result<()> {
    let mut offset = 0;
    let mut out = std::io::stdout();
    loop {
        let (bytes, next) = c.logs(id, file, offset)?;
        out.write_all(&bytes).context("writing logs")?;
        out.flush()?;
        offset = next;
        if !follow {
            return Ok(());
        }
        if bytes.is_empty() {
            if terminal(&c.task(id)?.state) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::single_leader;

    #[test]
    fn one_leader_is_the_only_one_answering_itself_while_the_others_redirect() {
        assert_eq!(single_leader(&[Some(307), Some(200), Some(307)]), Some(1));
        assert_eq!(
            single_leader(&[Some(200), Some(200)]),
            None,
            "two say they lead"
        );
        assert_eq!(
            single_leader(&[Some(200), Some(503)]),
            None,
            "one still elects"
        );
        assert_eq!(
            single_leader(&[Some(200), None]),
            None,
            "one does not answer"
        );
        assert_eq!(single_leader(&[Some(307), Some(307)]), None);
    }
}
