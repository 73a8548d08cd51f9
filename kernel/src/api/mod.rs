//! The operator HTTP API (actix-web), served by the master's process.
//!
//! - `GET /health` (`ok`, or 503 while no master actor runs), `GET /metrics` (Prometheus text)
//! - `GET /api/v1/state`, `GET /api/v1/agents`, `GET /api/v1/tasks`, `GET /api/v1/tasks/{id}`
//! - `POST /api/v1/jobs`: a [`SubmitJob`] body, `{"argv": ["sh", "-c", "echo hi"],
//!   "cpus": 0.5, "mem": 64, "disk": 0, "name": "hello", "role": "prod"}`; only `argv` is
//!   required. Answers `201 {"task_id": "..."}`, or `400` naming the bad field and its
//!   limit.
//! - `POST /api/v1/tasks/{id}/kill`: `200`; `404` for an unknown task, `409` for one that
//!   has already ended.
//! - `GET /api/v1/tasks/{id}/logs?file=stdout&offset=0`: at most 1 MiB of the task's
//!   `stdout` or `stderr` from byte `offset`; the `X-Next-Offset` header says where to go
//!   on. Other query parameters are refused.
//!
//! Errors are JSON `{"error": "..."}` with a 4xx/5xx status naming the problem.
//!
//! The server runs under its own supervisor ([`ApiSupervisor`], see [`server`]) in the
//! master's process.

pub mod server;

pub use server::{ApiMsg, ApiServer, ApiSpec, ApiSupervisor, ApiSupervisorMsg};

use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use ractor::call_t;
use serde::{Deserialize, Serialize};

use plexus_actors::Node;

use crate::ids::{AgentId, FrameworkId, TaskId};
use crate::jobs::{JobEvent, JobRequest, Jobs, KillError};
use crate::protocol::{agent_name, AgentMsg, AgentStatus, ClusterState, MasterMsg, MASTER_NAME};
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
}

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
}

/// Fewest cpus a job may ask for (as Mesos: a task needs some cpu to be scheduled fairly).
pub const MIN_JOB_CPUS: f64 = 0.01;
/// Least memory a job may ask for, MB (less cannot start a process under a cgroup limit).
pub const MIN_JOB_MEM_MB: u64 = 4;
/// Most cpus any job may ask for, whatever the agents.
pub const MAX_JOB_CPUS: f64 = 65_536.0;
/// Most memory or disk any job may ask for, MB (64 TiB).
pub const MAX_JOB_MB: u64 = 64 << 20;
/// Most bytes a job's command and arguments may take together: what an agent re-registers
/// for every task it runs must stay far below a message's size limit.
pub const MAX_JOB_ARGV_BYTES: usize = 64 << 10;
/// Most arguments a job's command may have.
pub const MAX_JOB_ARGS: usize = 4_096;
/// Most bytes a job's name may take.
pub const MAX_JOB_NAME_BYTES: usize = 1_024;

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
        if self.argv.len() > MAX_JOB_ARGS {
            return Err(format!(
                "argv has {} arguments; at most {MAX_JOB_ARGS}",
                self.argv.len()
            ));
        }
        let argv_bytes: usize = self.argv.iter().map(String::len).sum();
        if argv_bytes > MAX_JOB_ARGV_BYTES {
            return Err(format!(
                "argv takes {argv_bytes} bytes; at most {MAX_JOB_ARGV_BYTES} (pass large data in a file)"
            ));
        }
        if let Some(n) = self
            .name
            .as_deref()
            .filter(|n| n.len() > MAX_JOB_NAME_BYTES)
        {
            return Err(format!(
                "name takes {} bytes; at most {MAX_JOB_NAME_BYTES}",
                n.len()
            ));
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
}

impl ResponseError for ApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(serde_json::json!({ "error": self.message }))
    }
}

async fn state(ctx: &ApiContext) -> Result<ClusterState, ApiError> {
    // Looked up each time: a master restarted by its supervisor is another actor.
    let master = ctx
        .node
        .whereis::<MasterMsg>(MASTER_NAME)
        .await
        .map_err(|e| ApiError::unavailable(format!("master: {e}")))?
        .ok_or_else(|| ApiError::unavailable("master: restarting"))?;
    call_t!(master, MasterMsg::State, 5000)
        .map_err(|e| ApiError::unavailable(format!("master: {e}")))
}

/// `ok` while a master actor runs on this node; 503 naming the problem while there is
/// none (restarting, or stopped for good): a process that answers is not enough.
async fn health(ctx: web::Data<ApiContext>) -> Result<HttpResponse, ApiError> {
    let master = ctx
        .node
        .whereis::<MasterMsg>(MASTER_NAME)
        .await
        .map_err(|e| ApiError::unavailable(format!("master: {e}")))?;
    match master {
        Some(m) if m.get_status() == ractor::ActorStatus::Running => {
            Ok(HttpResponse::Ok().body("ok\n"))
        }
        _ => Err(ApiError::unavailable(
            "master: not running (restarting, or its supervisor gave up)",
        )),
    }
}

/// Tasks known to the master and pending jobs, merged, by task id.
pub fn task_views(s: &ClusterState, jobs: &Jobs) -> Vec<TaskView> {
    let mut out: std::collections::BTreeMap<TaskId, TaskView> = s
        .tasks
        .iter()
        .map(|t| {
            (
                t.task_id.clone(),
                TaskView {
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
                },
            )
        })
        .collect();
    for j in jobs.list() {
        let v = out.entry(j.task_id.clone()).or_insert_with(|| TaskView {
            task_id: j.task_id.clone(),
            name: j.name.clone(),
            state: j.state.map(|s| s.mesos_name()).unwrap_or("PENDING").into(),
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
        });
        if j.state.is_none() || j.state == Some(TaskState::Killed) && v.framework_id.is_none() {
            v.state = j.state.map(|s| s.mesos_name()).unwrap_or("PENDING").into();
        }
        v.why_not_placed = j.why_not_placed.clone();
        v.role = Some(j.role.clone());
        v.resources = j.resources.clone();
        v.exit_code = j.history.iter().rev().find_map(|e| e.exit_code);
        v.history = j.history.clone();
    }
    out.into_values().collect()
}

async fn get_state(ctx: web::Data<ApiContext>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state(&ctx).await?))
}

async fn get_agents(ctx: web::Data<ApiContext>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state(&ctx).await?.agents))
}

async fn get_tasks(ctx: web::Data<ApiContext>) -> Result<HttpResponse, ApiError> {
    let s = state(&ctx).await?;
    Ok(HttpResponse::Ok().json(task_views(&s, &ctx.jobs)))
}

async fn get_task(
    ctx: web::Data<ApiContext>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let s = state(&ctx).await?;
    task_views(&s, &ctx.jobs)
        .into_iter()
        .find(|t| t.task_id == *id)
        .map(|t| HttpResponse::Ok().json(t))
        .ok_or_else(|| ApiError::not_found(format!("no task {:?}", id.as_str())))
}

async fn submit(
    ctx: web::Data<ApiContext>,
    body: web::Json<SubmitJob>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let totals: Vec<Resources> = state(&ctx)
        .await?
        .agents
        .into_iter()
        .map(|a| a.total)
        .collect();
    let resources = b.validate(&totals).map_err(ApiError::bad)?;
    let id = ctx
        .jobs
        .submit(JobRequest {
            name: b.name,
            argv: b.argv,
            resources,
            role: b.role,
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
    tokio::time::timeout(wait, ctx.jobs.durable())
        .await
        .map_err(|_| {
            ApiError::unavailable(format!(
                "the jobs store could not be written within {DURABLE_WAIT_MS} ms (see the master's log); \
                 the request is kept and is written once the store can be"
            ))
        })
}

async fn kill(ctx: web::Data<ApiContext>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
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
    id: web::Path<String>,
    q: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    let s = state(&ctx).await?;
    let agent = task_views(&s, &ctx.jobs)
        .into_iter()
        .find(|t| t.task_id == *id)
        .ok_or_else(|| ApiError::not_found(format!("no task {:?}", id.as_str())))?
        .agent_id
        .ok_or_else(|| {
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
    let bytes = call_t!(
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
        .insert_header(("X-Next-Offset", (offset + bytes.len() as u64).to_string()))
        .content_type("application/octet-stream")
        .body(bytes))
}

/// Prometheus text for a cluster state and the jobs waiting for placement.
pub fn metrics_text(s: &ClusterState, pending_jobs: usize) -> String {
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
    for t in &s.tasks {
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

async fn metrics(ctx: web::Data<ApiContext>) -> Result<HttpResponse, ApiError> {
    let s = state(&ctx).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics_text(&s, ctx.jobs.pending_count())))
}

/// Serves the API on `listener` (already bound); the returned server runs until stopped.
pub fn serve(
    listener: std::net::TcpListener,
    ctx: ApiContext,
) -> std::io::Result<actix_web::dev::Server> {
    let server = HttpServer::new(move || {
        App::new()
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
            .default_service(web::to(|| async {
                ApiError::not_found("no such endpoint").error_response()
            }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
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
}
