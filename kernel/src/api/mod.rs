//! The operator HTTP API (actix-web), served by the master's process.
//!
//! - `GET /health` (`ok`, or 503 while no master actor runs), `GET /metrics` (Prometheus text)
//! - `GET /api/v1/state`: the cluster in brief ([`ClusterSummary`]: agents, frameworks,
//!   resources, tasks counted by state).
//! - `GET /api/v1/tasks` and `GET /api/v1/agents`: lists, one [`Page`] at a time,
//!   `{"items": [...], "next": "id"}`; pass `next` as `after` for the following page
//!   (`null`: none). `limit` is 1 to 1,000 (default 100) and a page stops at about
//!   1 MiB. Tasks can be filtered by `state` (`TASK_RUNNING`, …, `PENDING`), `active`
//!   (`true`: not ended), `agent_id`, `framework_id` and `role`.
//! - `GET /api/v1/tasks/{id}`: one task.
//! - `POST /api/v1/jobs`: a [`SubmitJob`] body, `{"argv": ["sh", "-c", "echo hi"],
//!   "cpus": 0.5, "mem": 64, "disk": 0, "name": "hello", "role": "prod"}`; only `argv` is
//!   required. Answers `201 {"task_id": "..."}`, or `400` naming the bad field and its
//!   limit.
//! - `POST /api/v1/tasks/{id}/kill`: `200`; `404` for an unknown task, `409` for one that
//!   has already ended.
//! - `GET /api/v1/tasks/{id}/logs?file=stdout&offset=0`: at most 1 MiB of the task's
//!   `stdout` or `stderr` from byte `offset` of the stream (counting every byte the task
//!   wrote; output rotated away is skipped); the `X-Next-Offset` header says where to go
//!   on. Other query parameters are refused.
//!
//! Errors are JSON `{"error": "..."}` with a 4xx/5xx status naming the problem.
//!
//! Every endpoint but `/health` needs `Authorization: Bearer TOKEN` (`401` without it);
//! the `Host` header must name this server (`421` otherwise); a request must arrive,
//! headers and body, and be answered within `master.api_request_timeout` (`408`). See [`auth`].
//!
//! The server runs under its own supervisor ([`ApiSupervisor`], see [`server`]) in the
//! master's process, on its own thread. Every read is served from what the master last
//! published ([`ReadModel`], at most `publish_interval` old) and the jobs framework's
//! snapshot, never by asking the master actor: however many readers there are, and
//! however large the answers, the master's loop — failure detection, allocation —
//! does not wait for them, and each answer is bounded by its page.

pub mod auth;
pub mod server;

pub use server::{ApiMsg, ApiServer, ApiSpec, ApiSupervisor, ApiSupervisorMsg};

use actix_web::{web, App, HttpMessage, HttpResponse, HttpServer, ResponseError};
use ractor::call_t;
use serde::{Deserialize, Serialize};

use plexus_actors::Node;

use crate::acl::Action;
use crate::ids::{AgentId, FrameworkId, TaskId};
use auth::Principal;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::jobs::{JobEvent, JobMap, JobRequest, JobStatus, Jobs, KillError};
use crate::master::{ClusterView, ReadModel};
use crate::protocol::{
    agent_name, AgentMsg, AgentState, AgentStatus, FrameworkState, InboxStats, MasterMsg, TaskInfo,
    MASTER_NAME,
};
use crate::reason::Reason;
use crate::resources::Resources;
use crate::task::TaskState;

/// What the API serves from.
#[derive(Clone)]
pub struct ApiContext {
    /// The built-in jobs framework.
    pub jobs: Jobs,
    /// The master's node (to reach agents for logs).
    pub node: Node,
    /// What the master publishes: every read is served from it, off the master's loop.
    pub reads: ReadModel,
    /// Who may call, and by which host names.
    pub access: Arc<auth::ApiAccess>,
    /// Roles' weights and quotas operators set (the master applies them).
    pub roles: crate::master::config::SharedRoles,
    /// With several masters, this one's replica: while another leads, requests are
    /// sent there (307 to the leader's API) or refused until one leads (503).
    pub standby: Option<Arc<crate::registry::replica::Replica>>,
}

/// Where a request to a master of several goes: `None` to serve it here (this master
/// leads, or the path is this process's own: `/health`, `/metrics`), else the answer
/// sending it to the leader.
fn elsewhere(
    standby: Option<&crate::registry::replica::Replica>,
    req: &actix_web::dev::ServiceRequest,
) -> Option<HttpResponse> {
    let r = standby?;
    if r.lease().term().is_some() || matches!(req.path(), "/health" | "/metrics") {
        return None;
    }
    let Some(api) = r.leader_api() else {
        return Some(
            ApiError::status(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "no master leads yet (an election is under way): try again shortly".to_string(),
            )
            .error_response(),
        );
    };
    let at = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |p| p.as_str());
    Some(
        HttpResponse::TemporaryRedirect()
            .insert_header((actix_web::http::header::LOCATION, format!("{api}{at}")))
            .json(serde_json::json!({ "error": "this master does not lead", "leader": api })),
    )
}

/// Longest a request may take from its first byte to its answer, body included (a body
/// sent a byte at a time does not hold a connection longer), unless configured.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Longest a client may take to send a request's headers.
pub const HEADERS_TIMEOUT_MS: u64 = 5_000;
/// How long an idle connection is kept open for a client's next request. Longer than a
/// busy server takes to come back to a connection, so that a client sending its next
/// request on it does not meet a connection closed meanwhile (a reset).
pub const KEEP_ALIVE_MS: u64 = 60_000;

/// A task as listed by the API and `plexus ps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// Task id.
    pub task_id: TaskId,
    /// Name.
    pub name: String,
    /// State (`TASK_RUNNING`, …), or `PENDING` while not placed.
    pub state: String,
    /// Its agent.
    pub agent_id: Option<AgentId>,
    /// Reason of the last update.
    pub reason: Option<Reason>,
    /// Message of the last update.
    pub message: String,
    /// Why it is not placed yet.
    pub why_not_placed: Option<String>,
    /// Its framework.
    pub framework_id: Option<FrameworkId>,
    /// Command.
    pub argv: Vec<String>,
    /// What it asked for.
    pub resources: Resources,
    /// The role it runs in, when the jobs framework knows it.
    pub role: Option<String>,
    /// How its command ended (shell-style), once it has.
    pub exit_code: Option<i32>,
    /// State changes seen by the jobs framework.
    pub history: Vec<JobEvent>,
    /// The principal that submitted it, when the jobs framework knows it.
    #[serde(default)]
    pub owner: Option<String>,
    /// The OS user it runs as (`None`: its agent's default user).
    #[serde(default)]
    pub user: Option<String>,
    /// For an actor task: its actor's type.
    #[serde(default)]
    pub actor_type: Option<String>,
    /// For an actor task: the executor node its actor runs on.
    #[serde(default)]
    pub actor_node: Option<String>,
}

/// Body of `POST /api/v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// Command and arguments.
    pub argv: Vec<String>,
    /// Cpus (fractional).
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Memory, MB.
    #[serde(default = "default_mem")]
    pub mem: u64,
    /// Disk, MB.
    #[serde(default)]
    pub disk: u64,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Role: `*` (the default) or one the jobs framework serves.
    #[serde(default)]
    pub role: Option<String>,
    /// The OS user to run as (`None`: the agent's default); the ACLs must allow it.
    #[serde(default)]
    pub user: Option<String>,
}

/// Fewest cpus a job may ask for (as Mesos: a task needs some cpu to be scheduled fairly).
pub const MIN_JOB_CPUS: f64 = 0.01;
/// Least memory a job may ask for, MB (less cannot start a process under a cgroup limit).
pub const MIN_JOB_MEM_MB: u64 = 4;
/// Most cpus any job may ask for, whatever the agents.
pub const MAX_JOB_CPUS: f64 = 65_536.0;
/// Most memory or disk any job may ask for, MB (64 TiB).
pub const MAX_JOB_MB: u64 = 64 << 20;
/// Most bytes a job's command and arguments may take together (as any task's).
pub const MAX_JOB_ARGV_BYTES: usize = crate::protocol::MAX_TASK_ARGV_BYTES;
/// Most arguments a job's command may have.
pub const MAX_JOB_ARGS: usize = crate::protocol::MAX_TASK_ARGS;
/// Most bytes a job's name may take.
pub const MAX_JOB_NAME_BYTES: usize = crate::protocol::MAX_TASK_NAME_BYTES;

impl SubmitJob {
    /// Checks what no agent could ever run: the error names the field, the value and the
    /// limit. `largest` is every agent's total, to compare with (empty: no agent yet).
    pub fn validate(&self, largest: &[Resources]) -> Result<Resources, String> {
        if self.argv.is_empty() || self.argv[0].trim().is_empty() {
            return Err("argv: the command must not be empty".into());
        }
        if let Some(i) = self.argv.iter().position(|a| a.contains('\0')) {
            return Err(format!(
                "argv[{i}] contains a NUL byte, which no command can receive"
            ));
        }
        if self.name.as_deref().is_some_and(|n| n.contains('\0')) {
            return Err("name contains a NUL byte".into());
        }
        let name = self.name.as_deref().unwrap_or_default();
        if let Some(p) = crate::protocol::command_size_problem(&self.argv, name) {
            return Err(p);
        }
        if !self.cpus.is_finite() || !(MIN_JOB_CPUS..=MAX_JOB_CPUS).contains(&self.cpus) {
            return Err(format!(
                "cpus must be a number from {MIN_JOB_CPUS} to {MAX_JOB_CPUS}, not {}",
                self.cpus
            ));
        }
        if !(MIN_JOB_MEM_MB..=MAX_JOB_MB).contains(&self.mem) {
            return Err(format!(
                "mem must be from {MIN_JOB_MEM_MB} to {MAX_JOB_MB} MB, not {}",
                self.mem
            ));
        }
        if self.disk > MAX_JOB_MB {
            return Err(format!(
                "disk must be at most {MAX_JOB_MB} MB, not {}",
                self.disk
            ));
        }
        if let Some(r) = &self.role {
            crate::resources::validate_role(r).map_err(|e| format!("role {r:?}: {e}"))?;
        }
        let want = Resources {
            cpus_milli: (self.cpus * 1000.0).round() as u64,
            mem_mb: self.mem,
            disk_mb: self.disk,
            ..Default::default()
        };
        if !largest.is_empty() && !largest.iter().any(|t| t.contains(&want)) {
            let most = |f: fn(&Resources) -> u64| largest.iter().map(f).max().unwrap_or(0);
            let (cpus, mem, disk) = (
                most(|t| t.cpus_milli),
                most(|t| t.mem_mb),
                most(|t| t.disk_mb),
            );
            let field = if want.cpus_milli > cpus {
                format!(
                    "cpus {} is more than the largest agent has ({})",
                    self.cpus,
                    cpus as f64 / 1000.0
                )
            } else if want.mem_mb > mem {
                format!(
                    "mem {} MB is more than the largest agent has ({mem} MB)",
                    self.mem
                )
            } else if want.disk_mb > disk {
                format!(
                    "disk {} MB is more than the largest agent has ({disk} MB)",
                    self.disk
                )
            } else {
                "no single agent has all of cpus, mem and disk asked for".to_string()
            };
            return Err(format!("no agent could ever run this job: {field}"));
        }
        Ok(want)
    }
}

fn default_cpus() -> f64 {
    0.1
}
fn default_mem() -> u64 {
    32
}

/// An API error: status and message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: actix_web::http::StatusCode,
    message: String,
}

impl ApiError {
    fn bad(m: impl Into<String>) -> Self {
        ApiError {
            status: actix_web::http::StatusCode::BAD_REQUEST,
            message: m.into(),
        }
    }
    fn conflict(m: impl Into<String>) -> Self {
        ApiError {
            status: actix_web::http::StatusCode::CONFLICT,
            message: m.into(),
        }
    }
    fn not_found(m: impl Into<String>) -> Self {
        ApiError {
            status: actix_web::http::StatusCode::NOT_FOUND,
            message: m.into(),
        }
    }
    fn unavailable(m: impl Into<String>) -> Self {
        ApiError {
            status: actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            message: m.into(),
        }
    }
    fn status(status: actix_web::http::StatusCode, m: impl Into<String>) -> Self {
        ApiError {
            status,
            message: m.into(),
        }
    }
}

/// CORS for pages of `origins` (none: no CORS header is ever sent, so no page of
/// another origin can read an answer).
fn cors_for(origins: &[String]) -> Option<actix_cors::Cors> {
    if origins.is_empty() {
        return None;
    }
    use actix_web::http::header;
    let cors = origins
        .iter()
        .fold(actix_cors::Cors::default(), |c, o| c.allowed_origin(o))
        .allowed_methods(["GET", "POST"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers(["X-Next-Offset"])
        .max_age(3600);
    Some(cors)
}

/// Lets a request through to its handler, or answers it: `421` for a `Host` that does
/// not name this server, `401` for a missing or unknown credential (but `/health`).
fn gate(access: &auth::ApiAccess, req: &actix_web::dev::ServiceRequest) -> Result<(), ApiError> {
    use actix_web::http::{header, StatusCode};
    let text = |h| req.headers().get(h).and_then(|v| v.to_str().ok());
    let host = text(header::HOST);
    if !access.host_allowed(host) {
        return Err(ApiError::status(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {:?} does not name this server (allowed: {}; add names to master.api_hosts)",
                host.unwrap_or(""),
                access.hosts().join(", ")
            ),
        ));
    }
    if req.path() == "/health" {
        return Ok(());
    }
    // A bearer token, else (over HTTPS) a client certificate of the cluster CA.
    let principal = access
        .authenticate(text(header::AUTHORIZATION))
        .cloned()
        .or_else(|| {
            req.conn_data::<auth::PeerCert>()
                .and_then(|c| access.cert_principal(c))
        });
    match principal {
        Some(p) => {
            req.extensions_mut().insert(p);
            Ok(())
        }
        None => Err(ApiError::status(
            StatusCode::UNAUTHORIZED,
            "a credential is needed: `Authorization: Bearer TOKEN` (the CLI finds the master's own token by itself), \
             or over HTTPS a client certificate of the cluster CA",
        )),
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        if self.status == actix_web::http::StatusCode::UNAUTHORIZED {
            r.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
        }
        r.json(serde_json::json!({ "error": self.message }))
    }
}

/// The master's latest published view; 503 while no master runs here (restarting, or
/// its supervisor gave up) or none has published yet: a view nobody keeps up to date is
/// not served.
async fn view(ctx: &ApiContext) -> Result<Arc<ClusterView>, ApiError> {
    master_running(ctx).await?;
    let v = ctx.reads.current();
    if v.generation == 0 {
        return Err(ApiError::unavailable("master: starting"));
    }
    Ok(v)
}

/// Whether a master actor runs on this node, as a 503 naming the problem when not.
async fn master_running(ctx: &ApiContext) -> Result<(), ApiError> {
    let master = ctx
        .node
        .whereis::<MasterMsg>(MASTER_NAME)
        .await
        .map_err(|e| ApiError::unavailable(format!("master: {e}")))?;
    match master {
        Some(m) if m.get_status() == ractor::ActorStatus::Running => Ok(()),
        _ => Err(ApiError::unavailable(
            "master: not running (restarting, or its supervisor gave up)",
        )),
    }
}

/// `ok` while a master actor runs on this node; 503 naming the problem while there is
/// none (restarting, or stopped for good): a process that answers is not enough.
async fn health(ctx: web::Data<ApiContext>) -> Result<HttpResponse, ApiError> {
    master_running(&ctx).await?;
    Ok(HttpResponse::Ok().body("ok\n"))
}

/// A task as the API shows it, from what the master knows of it (`t`) and what the
/// jobs framework knows (`j`); at least one of them is there.
fn task_view(t: Option<&TaskInfo>, j: Option<&JobStatus>) -> Option<TaskView> {
    let mut v = match (t, j) {
        (Some(t), _) => TaskView {
            task_id: t.task_id.clone(),
            name: t.name.clone(),
            state: t.state.mesos_name().into(),
            agent_id: (!t.agent_id.is_empty()).then(|| t.agent_id.clone()),
            reason: t.reason,
            message: t.message.clone(),
            why_not_placed: None,
            framework_id: Some(t.framework_id.clone()),
            argv: t.argv.clone(),
            resources: t.resources.total(),
            role: None,
            exit_code: None,
            history: Vec::new(),
            owner: None,
            user: None,
            actor_type: t.actor_type.clone(),
            actor_node: t.actor_node.clone(),
        },
        (None, Some(j)) => TaskView {
            task_id: j.task_id.clone(),
            name: j.name.clone(),
            state: job_state(j).into(),
            agent_id: j.agent_id.clone(),
            reason: None,
            message: String::new(),
            why_not_placed: None,
            framework_id: None,
            argv: j.argv.clone(),
            resources: j.resources.clone(),
            role: None,
            exit_code: None,
            history: Vec::new(),
            owner: None,
            user: None,
            actor_type: None,
            actor_node: None,
        },
        (None, None) => return None,
    };
    if let Some(j) = j {
        // Pending, or killed before the master heard of it: the job says it best.
        if j.state.is_none() || j.state == Some(TaskState::Killed) && t.is_none() {
            v.state = job_state(j).into();
        }
        v.why_not_placed = j.why_not_placed.clone();
        v.role = Some(j.role.clone());
        v.resources = j.resources.clone();
        v.exit_code = j.history.iter().rev().find_map(|e| e.exit_code);
        v.history = j.history.clone();
        v.owner = j.owner.clone();
        v.user = j.user.clone();
    }
    Some(v)
}

fn job_state(j: &JobStatus) -> &'static str {
    j.state.map(|s| s.mesos_name()).unwrap_or(PENDING)
}

/// The state the API shows for a job not yet placed.
pub const PENDING: &str = "PENDING";

/// One task by id, from a view and the jobs.
fn find_task(v: &ClusterView, jobs: &JobMap, id: &str) -> Option<TaskView> {
    task_view(v.tasks.get(id).map(|t| &**t), jobs.get(id).map(|j| &**j))
}

/// Tasks known to the master and jobs, merged, in task id order, from after `after`.
fn tasks_from<'a>(
    v: &'a ClusterView,
    jobs: &'a JobMap,
    after: Option<&'a str>,
) -> impl Iterator<Item = TaskView> + 'a {
    use std::ops::Bound;
    let from = || match after {
        Some(a) => Bound::Excluded(TaskId::from(a)),
        None => Bound::Unbounded,
    };
    let mut ts = v.tasks.range((from(), Bound::Unbounded)).peekable();
    let mut js = jobs.range((from(), Bound::Unbounded)).peekable();
    std::iter::from_fn(move || {
        use std::cmp::Ordering::*;
        let order = match (ts.peek(), js.peek()) {
            (None, None) => return None,
            (Some(_), None) => Less,
            (None, Some(_)) => Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        let (t, j) = match order {
            Less => (ts.next().map(|(_, t)| t), None),
            Greater => (None, js.next().map(|(_, j)| j)),
            Equal => (ts.next().map(|(_, t)| t), js.next().map(|(_, j)| j)),
        };
        task_view(t.map(|t| &**t), j.map(|j| &**j))
    })
}

/// Most items in one page of a list.
pub const MAX_PAGE_ITEMS: usize = 1_000;
/// Items in a page when the request does not say.
pub const DEFAULT_PAGE_ITEMS: usize = 100;
/// A page ends once its items take about this many bytes (it holds at least one item),
/// so that what a reader asks for stays small whatever the tasks carry.
pub const PAGE_BUDGET_BYTES: usize = 1 << 20;

/// Query of `GET /api/v1/tasks`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Most tasks in the page (default 100, at most 1,000).
    pub limit: Option<usize>,
    /// Start after this task id (the previous page's `next`).
    pub after: Option<String>,
    /// Only tasks in this state (`TASK_RUNNING`, …, or `PENDING`).
    pub state: Option<String>,
    /// Only tasks that have not ended (`true`) or only ended ones (`false`).
    pub active: Option<bool>,
    /// Only tasks on this agent.
    pub agent_id: Option<String>,
    /// Only tasks of this framework.
    pub framework_id: Option<String>,
    /// Only jobs of this role.
    pub role: Option<String>,
}

/// One page of a list: its items, and where the next page starts (`None`: this was
/// the last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, by id.
    pub items: Vec<T>,
    /// Pass as `after` for the next page.
    pub next: Option<String>,
}

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE_ITEMS),
        Some(n) if (1..=MAX_PAGE_ITEMS).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad(format!(
            "limit must be from 1 to {MAX_PAGE_ITEMS}, not {n}"
        ))),
    }
}

/// Whether `state` names a task state the API shows.
fn known_state(state: &str) -> bool {
    state == PENDING || TaskState::ALL.iter().any(|s| s.mesos_name() == state)
}

fn is_terminal_name(state: &str) -> bool {
    TaskState::ALL
        .iter()
        .any(|s| s.mesos_name() == state && s.is_terminal())
}

impl TaskQuery {
    fn check(&self) -> Result<usize, ApiError> {
        if let Some(s) = self.state.as_deref().filter(|s| !known_state(s)) {
            return Err(ApiError::bad(format!(
                "state {s:?} is not a task state (TASK_RUNNING, TASK_FINISHED, …, or PENDING)"
            )));
        }
        page_limit(self.limit)
    }

    fn matches(&self, t: &TaskView) -> bool {
        self.state.as_deref().is_none_or(|s| t.state == s)
            && self.active.is_none_or(|a| a != is_terminal_name(&t.state))
            && self
                .agent_id
                .as_deref()
                .is_none_or(|a| t.agent_id.as_deref() == Some(a))
            && self
                .framework_id
                .as_deref()
                .is_none_or(|f| t.framework_id.as_deref() == Some(f))
            && self
                .role
                .as_deref()
                .is_none_or(|r| t.role.as_deref() == Some(r))
    }
}

/// About how many bytes a task takes in an answer.
fn view_bytes(t: &TaskView) -> usize {
    const FIXED_BYTES: usize = 512;
    const EVENT_BYTES: usize = 128;
    FIXED_BYTES
        + t.name.len()
        + t.message.len()
        + t.argv.iter().map(|a| a.len() + 4).sum::<usize>()
        + t.history
            .iter()
            .map(|e| EVENT_BYTES + e.message.len())
            .sum::<usize>()
}

/// A page of items from `items` (in id order): at most `limit` of them, taking at most
/// [`PAGE_BUDGET_BYTES`] unless one alone takes more; with where the next one starts.
fn page_of<T>(
    items: impl Iterator<Item = T>,
    limit: usize,
    bytes: impl Fn(&T) -> usize,
    id: impl Fn(&T) -> String,
) -> Page<T> {
    let mut out = Vec::new();
    let mut used = 0;
    let mut items = items.peekable();
    while let Some(t) = items.peek() {
        let b = bytes(t);
        if !out.is_empty() && (out.len() >= limit || used + b > PAGE_BUDGET_BYTES) {
            break;
        }
        used += b;
        out.extend(items.next());
    }
    let next = match items.peek() {
        Some(_) => out.last().map(&id),
        None => None,
    };
    Page { items: out, next }
}

/// A page of tasks, filtered by `q`.
pub fn task_page(
    v: &ClusterView,
    jobs: &JobMap,
    q: &TaskQuery,
    visible: impl Fn(&TaskView) -> bool,
) -> Page<TaskView> {
    let limit = q
        .limit
        .unwrap_or(DEFAULT_PAGE_ITEMS)
        .clamp(1, MAX_PAGE_ITEMS);
    let matching = tasks_from(v, jobs, q.after.as_deref()).filter(|t| q.matches(t) && visible(t));
    page_of(matching, limit, view_bytes, |t| t.task_id.to_string())
}

/// Query of `GET /api/v1/agents`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentQuery {
    /// Most agents in the page (default 100, at most 1,000).
    pub limit: Option<usize>,
    /// Start after this agent id (the previous page's `next`).
    pub after: Option<String>,
}

/// The cluster in brief (`GET /api/v1/state`): everything but the tasks, which are
/// counted here and listed, page by page, by `GET /api/v1/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSummary {
    /// Agents.
    pub agents: Vec<AgentState>,
    /// Frameworks.
    pub frameworks: Vec<FrameworkState>,
    /// Tasks the master knows, by state.
    pub tasks_by_state: BTreeMap<String, usize>,
    /// Jobs waiting for placement.
    pub pending_jobs: usize,
    /// Total resources of active agents.
    pub total: Resources,
    /// Resources held by tasks and offers.
    pub used: Resources,
    /// Outstanding offers.
    pub offers_outstanding: usize,
    /// Duration of the last allocation cycle, in microseconds.
    pub last_allocation_us: u64,
    /// The master's inbox.
    pub inbox: InboxStats,
    /// Roles with a weight or a quota, as in force.
    #[serde(default)]
    pub roles: Vec<crate::master::core::RoleState>,
}

/// Tasks the master knows, by state name (every state, zeros included).
fn tasks_by_state(v: &ClusterView) -> BTreeMap<String, usize> {
    let mut by: BTreeMap<String, usize> = TaskState::ALL
        .iter()
        .map(|t| (t.mesos_name().to_string(), 0))
        .collect();
    for t in v.tasks.values() {
        *by.entry(t.state.mesos_name().to_string()).or_default() += 1;
    }
    by
}

/// The summary of a view.
pub fn summary(v: &ClusterView, pending_jobs: usize) -> ClusterSummary {
    ClusterSummary {
        agents: v.agents.to_vec(),
        frameworks: v.frameworks.to_vec(),
        tasks_by_state: tasks_by_state(v),
        pending_jobs,
        total: v.total.clone(),
        used: v.used.clone(),
        offers_outstanding: v.offers_outstanding,
        last_allocation_us: v.last_allocation_us,
        inbox: v.inbox,
        roles: v.roles.to_vec(),
    }
}

async fn get_state(ctx: web::Data<ApiContext>) -> Result<HttpResponse, ApiError> {
    let v = view(&ctx).await?;
    Ok(HttpResponse::Ok().json(summary(&v, ctx.jobs.pending_count())))
}

async fn get_agents(
    ctx: web::Data<ApiContext>,
    q: web::Query<AgentQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(q.limit)?;
    let v = view(&ctx).await?;
    let after = q.after.as_deref();
    let from = v
        .agents
        .iter()
        .filter(|a| after.is_none_or(|x| a.id.as_str() > x))
        .cloned();
    let page = page_of(from, limit, |_| 256, |a| a.id.to_string());
    Ok(HttpResponse::Ok().json(page))
}

/// Body of `PUT /api/v1/roles/{role}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleChange {
    /// The role's new weight.
    #[serde(default)]
    weight: Option<f64>,
    /// The role's new quota (Mesos resource syntax; empty: none).
    #[serde(default)]
    quota: Option<String>,
}

async fn put_role(
    ctx: web::Data<ApiContext>,
    who: web::ReqData<Principal>,
    role: web::Path<String>,
    body: web::Json<RoleChange>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if b.weight.is_none() && b.quota.is_none() {
        return Err(ApiError::bad("give `weight`, `quota` or both"));
    }
    if b.weight.is_some() {
        allow(&ctx, &who, Action::UpdateWeight { role: &role })?;
    }
    let quota = match b.quota.as_deref() {
        None => None,
        Some(text) => {
            allow(&ctx, &who, Action::UpdateQuota { role: &role })?;
            if text.trim().is_empty() {
                Some(None)
            } else {
                let q = Resources::parse(text)
                    .map_err(|e| ApiError::bad(format!("quota {text:?}: {e}")))?;
                Some(Some(q))
            }
        }
    };
    ctx.roles
        .check(&role, b.weight)
        .map_err(|e| ApiError::bad(format!("role {:?}: {e}", role.as_str())))?;
    if let Some(replica) = &ctx.standby {
        // Several masters: the change is the registry's before it is applied, so the
        // next leader applies it too.
        replicate_role(replica, &role, b.weight, quota.clone()).await?;
    }
    ctx.roles
        .set(&role, b.weight, quota)
        .map_err(|e| ApiError::bad(format!("role {:?}: {e}", role.as_str())))?;
    let master = ctx
        .node
        .whereis::<crate::protocol::MasterMsg>(plexus_actors::names::MASTER_NAME)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .ok_or_else(|| {
            ApiError::unavailable("the master is not running; the change applies when it is")
        })?;
    master
        .cast(crate::protocol::MasterMsg::RolesChanged)
        .map_err(|e| ApiError::unavailable(format!("telling the master: {e}")))?;
    // Applied by the master within its next publish (`GET /api/v1/state` shows `roles`).
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "role": role.as_str() })))
}

/// Writes a role's new weight and/or quota to the registry, as one write.
async fn replicate_role(
    replica: &crate::registry::replica::Replica,
    role: &str,
    weight: Option<f64>,
    quota: Option<Option<crate::resources::Resources>>,
) -> Result<(), ApiError> {
    use crate::registry::RegistryOp;
    let mut ops = Vec::new();
    if let Some(w) = weight {
        ops.push(RegistryOp::SetWeight {
            role: role.to_string(),
            weight_milli: (w * 1000.0).round() as u64,
        });
    }
    if let Some(quota) = quota {
        ops.push(RegistryOp::SetQuota {
            role: role.to_string(),
            quota,
        });
    }
    replica
        .write(RegistryOp::Batch(ops))
        .await
        .map(|_| ())
        .map_err(|e| ApiError::unavailable(format!("recording the change in the registry: {e}")))
}

/// Answers `403` unless the ACLs let `who` do `what`.
fn allow(ctx: &ApiContext, who: &Principal, what: Action<'_>) -> Result<(), ApiError> {
    if ctx.access.acls().allows(&who.0, &what) {
        return Ok(());
    }
    Err(ApiError::status(
        actix_web::http::StatusCode::FORBIDDEN,
        format!("principal {:?} may not {what}", who.0),
    ))
}

/// A task by id, if `who` may see it (`403` if not, `404` if there is none).
fn visible_task(
    ctx: &ApiContext,
    who: &Principal,
    v: &ClusterView,
    id: &str,
) -> Result<TaskView, ApiError> {
    let t = find_task(v, &ctx.jobs.snapshot(), id)
        .ok_or_else(|| ApiError::not_found(format!("no task {id:?}")))?;
    allow(
        ctx,
        who,
        Action::ViewTask {
            owner: t.owner.as_deref(),
        },
    )?;
    Ok(t)
}

async fn get_tasks(
    ctx: web::Data<ApiContext>,
    who: web::ReqData<Principal>,
    q: web::Query<TaskQuery>,
) -> Result<HttpResponse, ApiError> {
    q.check()?;
    let v = view(&ctx).await?;
    let jobs = ctx.jobs.snapshot();
    let acls = ctx.access.acls();
    let page = task_page(&v, &jobs, &q, |t| {
        acls.allows(
            &who.0,
            &Action::ViewTask {
                owner: t.owner.as_deref(),
            },
        )
    });
    Ok(HttpResponse::Ok().json(page))
}

async fn get_task(
    ctx: web::Data<ApiContext>,
    who: web::ReqData<Principal>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let v = view(&ctx).await?;
    Ok(HttpResponse::Ok().json(visible_task(&ctx, &who, &v, &id)?))
}

async fn submit(
    ctx: web::Data<ApiContext>,
    who: web::ReqData<Principal>,
    body: web::Json<SubmitJob>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if let Some(p) = b.user.as_deref().and_then(crate::protocol::user_problem) {
        return Err(ApiError::bad(p));
    }
    let role = b.role.as_deref().unwrap_or(crate::resources::ANY_ROLE);
    allow(
        &ctx,
        &who,
        Action::RunTask {
            role,
            user: b.user.as_deref(),
        },
    )?;
    let totals: Vec<Resources> = view(&ctx)
        .await?
        .agents
        .iter()
        .map(|a| a.total.clone())
        .collect();
    let resources = b.validate(&totals).map_err(ApiError::bad)?;
    let id = ctx
        .jobs
        .submit(JobRequest {
            name: b.name,
            argv: b.argv,
            resources,
            role: b.role,
            owner: Some(who.0.clone()),
            user: b.user,
        })
        .map_err(ApiError::bad)?;
    durable(&ctx).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "task_id": id })))
}

/// Most time a request waits for the jobs framework's store to hold its change.
const DURABLE_WAIT_MS: u64 = 10_000;

/// Waits until the jobs framework's changes so far are in its store; a store that
/// cannot be written (a full disk) answers 503 instead of a change that might be lost.
async fn durable(ctx: &ApiContext) -> Result<(), ApiError> {
    let wait = std::time::Duration::from_millis(DURABLE_WAIT_MS);
    match tokio::time::timeout(wait, ctx.jobs.durable()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(dropped)) => Err(ApiError::unavailable(format!(
            "{dropped}; send the request again (it goes to the master that leads now)"
        ))),
        Err(_) => Err(ApiError::unavailable(format!(
            "the jobs store could not be written within {DURABLE_WAIT_MS} ms (see the master's log); \
             the request is kept and is written once the store can be"
        ))),
    }
}

async fn kill(
    ctx: web::Data<ApiContext>,
    who: web::ReqData<Principal>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let owner = ctx
        .jobs
        .snapshot()
        .get(id.as_str())
        .and_then(|j| j.owner.clone());
    allow(
        &ctx,
        &who,
        Action::KillTask {
            owner: owner.as_deref(),
        },
    )?;
    ctx.jobs.kill(&id).map_err(|e| match e {
        KillError::NoSuchJob(_) => ApiError::not_found(e.to_string()),
        KillError::Ended { .. } => ApiError::conflict(e.to_string()),
    })?;
    durable(&ctx).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "killing": id.as_str() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    offset: u64,
}

async fn logs(
    ctx: web::Data<ApiContext>,
    who: web::ReqData<Principal>,
    id: web::Path<String>,
    q: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    let v = view(&ctx).await?;
    let t = find_task(&v, &ctx.jobs.snapshot(), &id)
        .ok_or_else(|| ApiError::not_found(format!("no task {:?}", id.as_str())))?;
    allow(
        &ctx,
        &who,
        Action::ReadLogs {
            owner: t.owner.as_deref(),
        },
    )?;
    let agent = t.agent_id.ok_or_else(|| {
        ApiError::not_found(format!(
            "task {:?} has not been placed on an agent",
            id.as_str()
        ))
    })?;
    let a = ctx
        .node
        .whereis::<AgentMsg>(&agent_name(&agent))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .ok_or_else(|| ApiError::unavailable(format!("agent {agent} is not reachable")))?;
    let file = q.file.clone().unwrap_or_else(|| "stdout".into());
    let offset = q.offset;
    let (start, bytes) = call_t!(
        a,
        |reply| AgentMsg::ReadFile {
            task_id: id.into_inner().into(),
            file,
            offset,
            reply
        },
        10_000
    )
    .map_err(|e| ApiError::unavailable(format!("agent {agent}: {e}")))?
    .map_err(ApiError::not_found)?;
    Ok(HttpResponse::Ok()
        .insert_header(("X-Next-Offset", (start + bytes.len() as u64).to_string()))
        .content_type("application/octet-stream")
        .body(bytes))
}

/// Prometheus text for a view of the cluster and the jobs waiting for placement.
pub fn metrics_text(s: &ClusterView, pending_jobs: usize) -> String {
    let mut m = String::new();
    let mut g = |name: &str, help: &str, lines: Vec<(String, f64)>| {
        // Prometheus names counters `..._total`.
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        m.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in lines {
            m.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let active = s
        .agents
        .iter()
        .filter(|a| a.status == AgentStatus::Active)
        .count();
    g(
        "plexus_agents",
        "Agents by status.",
        vec![
            ("{status=\"active\"}".into(), active as f64),
            (
                "{status=\"unreachable\"}".into(),
                (s.agents.len() - active) as f64,
            ),
        ],
    );
    g(
        "plexus_frameworks",
        "Registered frameworks.",
        vec![(String::new(), s.frameworks.len() as f64)],
    );
    let mut by_state: std::collections::BTreeMap<&str, usize> =
        TaskState::ALL.iter().map(|t| (t.mesos_name(), 0)).collect();
    for t in s.tasks.values() {
        *by_state.entry(t.state.mesos_name()).or_default() += 1;
    }
    g(
        "plexus_tasks",
        "Tasks by state.",
        by_state
            .into_iter()
            .map(|(k, v)| (format!("{{state=\"{k}\"}}"), v as f64))
            .collect(),
    );
    g(
        "plexus_resources_total",
        "Resources of active agents.",
        vec![
            ("{resource=\"cpus\"}".into(), s.total.cpus()),
            ("{resource=\"mem\"}".into(), s.total.mem_mb as f64),
            ("{resource=\"disk\"}".into(), s.total.disk_mb as f64),
        ],
    );
    g(
        "plexus_resources_used",
        "Resources held by tasks and offers.",
        vec![
            ("{resource=\"cpus\"}".into(), s.used.cpus()),
            ("{resource=\"mem\"}".into(), s.used.mem_mb as f64),
            ("{resource=\"disk\"}".into(), s.used.disk_mb as f64),
        ],
    );
    g(
        "plexus_jobs_pending",
        "Jobs submitted but not yet placed on an agent.",
        vec![(String::new(), pending_jobs as f64)],
    );
    g(
        "plexus_offers_outstanding",
        "Offers not yet answered.",
        vec![(String::new(), s.offers_outstanding as f64)],
    );
    g(
        "plexus_allocation_run_seconds",
        "Duration of the last allocation cycle.",
        vec![(String::new(), s.last_allocation_us as f64 / 1e6)],
    );
    g(
        "plexus_master_inbox_queued_msgs",
        "Messages from peers queued for the master.",
        vec![(String::new(), s.inbox.queued_msgs as f64)],
    );
    g(
        "plexus_master_inbox_limit_msgs",
        "Most messages from peers queued for the master before they are shed.",
        vec![(String::new(), s.inbox.limit_msgs as f64)],
    );
    g(
        "plexus_master_inbox_shed_total",
        "Messages from peers the master shed because its inbox was full.",
        vec![(String::new(), s.inbox.shed_total as f64)],
    );
    m
}

/// Prometheus text for the frames this node refused from peers, by operation (every
/// operation listed, so a series exists before its first refusal).
pub fn refusals_text(refused: &std::collections::BTreeMap<plexus_actors::Refused, u64>) -> String {
    use plexus_actors::Refused;
    let name = "plexus_wire_refusals_total";
    let mut m = format!(
        "# HELP {name} Frames refused from authenticated peers, by operation.\n# TYPE {name} counter\n"
    );
    for op in Refused::ALL {
        let n = refused.get(&op).copied().unwrap_or(0);
        m.push_str(&format!("{name}{{op=\"{}\"}} {n}\n", op.as_str()));
    }
    m
}

async fn metrics(ctx: web::Data<ApiContext>) -> Result<HttpResponse, ApiError> {
    let s = view(&ctx).await?;
    let mut text = metrics_text(&s, ctx.jobs.pending_count());
    text.push_str(&refusals_text(&ctx.node.refusals()));
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}

/// Serves the API on `listener` (already bound), over HTTPS when the access settings
/// have TLS; the returned server runs until stopped.
pub fn serve(
    listener: std::net::TcpListener,
    ctx: ApiContext,
) -> std::io::Result<actix_web::dev::Server> {
    let tls = ctx.access.tls().cloned();
    let server = HttpServer::new(move || {
        let access = ctx.access.clone();
        let standby = ctx.standby.clone();
        // Outermost, so a browser's preflight is answered before credentials are asked.
        let cors = cors_for(access.cors_origins());
        App::new()
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service;
                type Answer = std::pin::Pin<
                    Box<
                        dyn std::future::Future<
                            Output = Result<actix_web::dev::ServiceResponse, actix_web::Error>,
                        >,
                    >,
                >;
                let answer: Answer = match gate(&access, &req) {
                    Err(e) => {
                        let r = req.into_response(e.error_response());
                        Box::pin(async move { Ok(r) })
                    }
                    Ok(()) if elsewhere(standby.as_deref(), &req).is_some() => {
                        let answer = elsewhere(standby.as_deref(), &req).expect("checked");
                        let r = req.into_response(answer);
                        Box::pin(async move { Ok(r) })
                    }
                    Ok(()) => {
                        let call = srv.call(req);
                        let limit_ms = access.request_timeout_ms;
                        let limit = std::time::Duration::from_millis(limit_ms);
                        Box::pin(async move {
                            match tokio::time::timeout(limit, call).await {
                                Ok(r) => r,
                                Err(_) => Err(ApiError::status(
                                    actix_web::http::StatusCode::REQUEST_TIMEOUT,
                                    format!("the request took longer than {limit_ms} ms"),
                                )
                                .into()),
                            }
                        })
                    }
                };
                answer
            })
            .wrap(actix_web::middleware::Condition::new(
                cors.is_some(),
                cors.unwrap_or_default(),
            ))
            .app_data(web::Data::new(ctx.clone()))
            .app_data(
                web::JsonConfig::default()
                    .limit(1 << 20)
                    .error_handler(|e, _| {
                        let msg = format!("bad request body: {e}");
                        ApiError::bad(msg).into()
                    }),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::bad(format!("bad query: {e}")).into()),
            )
            .route("/health", web::get().to(health))
            .route("/metrics", web::get().to(metrics))
            .route("/api/v1/state", web::get().to(get_state))
            .route("/api/v1/agents", web::get().to(get_agents))
            .route("/api/v1/tasks", web::get().to(get_tasks))
            .route("/api/v1/tasks/{id}", web::get().to(get_task))
            .route("/api/v1/tasks/{id}/kill", web::post().to(kill))
            .route("/api/v1/tasks/{id}/logs", web::get().to(logs))
            .route("/api/v1/jobs", web::post().to(submit))
            .route("/api/v1/roles/{role}", web::put().to(put_role))
            .default_service(web::to(|| async {
                ApiError::not_found("no such endpoint").error_response()
            }))
    })
    .workers(1)
    .client_request_timeout(std::time::Duration::from_millis(HEADERS_TIMEOUT_MS))
    .keep_alive(std::time::Duration::from_millis(KEEP_ALIVE_MS))
    .on_connect(auth::PeerCert::on_connect)
    .disable_signals();
    let server = match tls {
        Some(cfg) => server.listen_rustls_0_23(listener, cfg)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(argv: Vec<String>) -> SubmitJob {
        serde_json::from_value(serde_json::json!({ "argv": argv })).unwrap()
    }

    #[test]
    fn a_command_too_large_to_re_register_is_refused_naming_the_field_and_the_limit() {
        assert!(job(vec!["true".into()]).validate(&[]).is_ok());
        let big = job(vec!["echo".into(), "x".repeat(MAX_JOB_ARGV_BYTES)]);
        let e = big.validate(&[]).unwrap_err();
        assert!(e.starts_with("argv takes") && e.contains("65536"), "{e}");
        let many = job(vec!["x".to_string(); MAX_JOB_ARGS + 1]);
        let e = many.validate(&[]).unwrap_err();
        assert!(e.contains("4097 arguments") && e.contains("4096"), "{e}");
        let mut named = job(vec!["true".into()]);
        named.name = Some("n".repeat(MAX_JOB_NAME_BYTES + 1));
        assert!(named.validate(&[]).unwrap_err().starts_with("name takes"));
    }

    fn info(id: &str, state: TaskState, agent: &str, argv_bytes: usize) -> Arc<TaskInfo> {
        Arc::new(TaskInfo {
            task_id: id.into(),
            name: id.into(),
            framework_id: "fw".into(),
            agent_id: agent.into(),
            state,
            reason: None,
            message: String::new(),
            resources: Default::default(),
            argv: vec!["x".repeat(argv_bytes)],
            actor_type: None,
            actor_node: None,
        })
    }

    fn pending(id: &str) -> Arc<JobStatus> {
        Arc::new(JobStatus {
            task_id: id.into(),
            name: id.into(),
            argv: vec!["true".into()],
            resources: Resources::new(0.1, 32),
            role: "*".into(),
            state: None,
            why_not_placed: Some("waiting".into()),
            agent_id: None,
            history: vec![],
            kill_requested: false,
            owner: None,
            user: None,
        })
    }

    fn ids(p: &Page<TaskView>) -> Vec<&str> {
        p.items.iter().map(|t| t.task_id.as_str()).collect()
    }

    /// Every page in turn, as a client follows `next`.
    fn walk(v: &ClusterView, jobs: &JobMap, q: TaskQuery) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut q = q;
        loop {
            let p = task_page(v, jobs, &q, |_| true);
            pages.push(ids(&p).into_iter().map(String::from).collect());
            match p.next {
                Some(n) => q.after = Some(n),
                None => return pages,
            }
        }
    }

    #[test]
    fn tasks_and_jobs_are_listed_merged_in_id_order_page_by_page_and_filtered() {
        let mut v = ClusterView::default();
        for (id, state, agent) in [
            ("t1", TaskState::Running, "a1"),
            ("t3", TaskState::Finished, "a2"),
            ("t4", TaskState::Running, "a2"),
        ] {
            v.tasks.insert(id.into(), info(id, state, agent, 4));
        }
        let mut jobs = JobMap::new();
        for id in ["t2", "t5"] {
            jobs.insert(id.into(), pending(id));
        }
        let all = walk(
            &v,
            &jobs,
            TaskQuery {
                limit: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(all, [vec!["t1", "t2"], vec!["t3", "t4"], vec!["t5"]]);
        let q = |f: fn(&mut TaskQuery)| {
            let mut q = TaskQuery::default();
            f(&mut q);
            walk(&v, &jobs, q).concat()
        };
        assert_eq!(q(|q| q.active = Some(true)), ["t1", "t2", "t4", "t5"]);
        assert_eq!(q(|q| q.active = Some(false)), ["t3"]);
        assert_eq!(q(|q| q.state = Some("PENDING".into())), ["t2", "t5"]);
        assert_eq!(q(|q| q.agent_id = Some("a2".into())), ["t3", "t4"]);
        assert_eq!(q(|q| q.role = Some("*".into())), ["t2", "t5"]);
        // The last page says so, even when it is full.
        let p = task_page(
            &v,
            &jobs,
            &TaskQuery {
                limit: Some(5),
                ..Default::default()
            },
            |_| true,
        );
        assert_eq!((p.items.len(), p.next), (5, None));
    }

    #[test]
    fn a_page_stops_at_its_byte_budget_and_always_holds_one_task() {
        let mut v = ClusterView::default();
        let big = PAGE_BUDGET_BYTES / 4;
        for i in 0..7 {
            let id = format!("t{i}");
            v.tasks
                .insert(id.as_str().into(), info(&id, TaskState::Running, "a1", big));
        }
        v.tasks.insert(
            "t9".into(),
            info("t9", TaskState::Running, "a1", 2 * PAGE_BUDGET_BYTES),
        );
        let pages = walk(
            &v,
            &JobMap::new(),
            TaskQuery {
                limit: Some(1000),
                ..Default::default()
            },
        );
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3, 1, 1], "{pages:?}");
    }

    #[test]
    fn bad_list_queries_name_the_parameter_and_the_value() {
        let bad_state = TaskQuery {
            state: Some("RUNNING".into()),
            ..Default::default()
        };
        assert!(bad_state
            .check()
            .unwrap_err()
            .message
            .contains("state \"RUNNING\""));
        let bad_limit = TaskQuery {
            limit: Some(MAX_PAGE_ITEMS + 1),
            ..Default::default()
        };
        assert!(bad_limit
            .check()
            .unwrap_err()
            .message
            .contains("limit must be from 1 to 1000"));
        assert_eq!(TaskQuery::default().check().unwrap(), DEFAULT_PAGE_ITEMS);
    }
}
