//! The CLI's client commands: they talk to the master's HTTP API.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, Context};
use plexus_kernel::api::{SubmitJob, TaskView};
use plexus_kernel::protocol::{AgentState, ClusterState};
use serde::de::DeserializeOwned;

/// An API client.
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

fn err_of(e: ureq::Error, what: &str) -> anyhow::Error {
    anyhow!("{what}: {e}")
}

impl Client {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:5050`).
    pub fn new(base: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    fn check(
        &self,
        mut r: ureq::http::Response<ureq::Body>,
        what: &str,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        if r.status().is_success() {
            return Ok(r);
        }
        let body = r.body_mut().read_to_string().unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(body);
        Err(anyhow!("{what}: {} {msg}", r.status()))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let r = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| err_of(e, &format!("GET {url} (is a master running? see --api)")))?;
        let mut r = self.check(r, &format!("GET {path}"))?;
        r.body_mut()
            .read_json()
            .map_err(|e| err_of(e, "reading the answer"))
    }

    /// Submits a job; returns its task id.
    pub fn submit(&self, job: &SubmitJob) -> anyhow::Result<String> {
        let url = format!("{}/api/v1/jobs", self.base);
        let r = self
            .agent
            .post(&url)
            .send_json(job)
            .map_err(|e| err_of(e, &format!("POST {url}")))?;
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
        self.get("/api/v1/tasks")
    }

    /// The whole cluster state (`GET /api/v1/state`).
    pub fn state(&self) -> anyhow::Result<ClusterState> {
        self.get("/api/v1/state")
    }

    /// All agents.
    pub fn agents(&self) -> anyhow::Result<Vec<AgentState>> {
        self.get("/api/v1/agents")
    }

    /// Kills a task.
    pub fn kill(&self, id: &str) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/tasks/{id}/kill", self.base);
        let r = self
            .agent
            .post(&url)
            .send_empty()
            .map_err(|e| err_of(e, &format!("POST {url}")))?;
        self.check(r, &format!("killing {id}"))?;
        Ok(())
    }

    /// Bytes of a task's file from `offset`, and the next offset.
    pub fn logs(&self, id: &str, file: &str, offset: u64) -> anyhow::Result<(Vec<u8>, u64)> {
        let url = format!(
            "{}/api/v1/tasks/{id}/logs?file={file}&offset={offset}",
            self.base
        );
        let r = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| err_of(e, &format!("GET {url}")))?;
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

/// `plexus run`: submits, then (unless detached) prints each state change until the task
/// ends; the exit status is 0 only for `TASK_FINISHED`.
pub fn run(c: &Client, job: SubmitJob, detach: bool, json: bool) -> anyhow::Result<bool> {
    let id = c.submit(&job)?;
    if detach {
        if json {
            println!("{}", serde_json::json!({ "task_id": id }));
        } else {
            println!("{id}");
        }
        return Ok(true);
    }
    if !json {
        println!("submitted {id}");
    }
    let mut shown = 0;
    let mut last_why = None;
    loop {
        let t = c.task(&id)?;
        for e in t.history.iter().skip(shown) {
            if json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                let reason = e
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                let on = t
                    .agent_id
                    .as_deref()
                    .map(|a| format!(" on {a}"))
                    .unwrap_or_default();
                println!("{}{on}{reason} {}", e.state.mesos_name(), e.message);
            }
            shown += 1;
        }
        if t.state == "PENDING" && t.why_not_placed != last_why {
            if let Some(w) = &t.why_not_placed {
                if !json {
                    println!("pending: {w}");
                }
            }
            last_why = t.why_not_placed.clone();
        }
        if terminal(&t.state) {
            return Ok(t.state == "TASK_FINISHED");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `plexus ps`.
pub fn ps(c: &Client, all: bool, json: bool) -> anyhow::Result<()> {
    let tasks: Vec<TaskView> = c
        .tasks()?
        .into_iter()
        .filter(|t| all || !terminal(&t.state))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    println!(
        "{:<28} {:<16} {:<18} {:<10} DETAIL",
        "TASK", "NAME", "STATE", "AGENT"
    );
    for t in tasks {
        let detail = t
            .why_not_placed
            .clone()
            .or(t.reason.clone())
            .unwrap_or_default();
        let name: String = t.name.chars().take(16).collect();
        println!(
            "{:<28} {name:<16} {:<18} {:<10} {detail}",
            t.task_id,
            t.state,
            t.agent_id.unwrap_or_default()
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
