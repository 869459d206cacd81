//! A typed, blocking HTTP client of the stepwise API ([`Client`]), used by the CLI and the
//! workers, and what both workers share: their configuration ([`worker::WorkerConfig`]),
//! the lease keeper that heartbeats beside the work ([`worker::LeaseKeeper`]) and the
//! claim loop ([`worker::claim_loop`]). Blocking, because the workers' callers are plain
//! threads doing tensor work; there is no async runtime to keep free.

pub mod worker;

use domain::service::{
    AnalysisRequest, AnalysisResult, AnalysisView, CheckpointRegistration, CheckpointView, Claim,
    ClaimRequest, ClaimsView, Completion, EventBatch, ExperimentImport, ExperimentSubmission,
    ExperimentSummary, ExperimentView, FailureKind, FailureReport, FigureList, HeartbeatReply,
    ImportSubmission, JobKind, JobState, LeaseProof, Page, Refusal, RunSubmission, RunView,
    WorkerCapacity, WorkerEvent, WorkerView,
};
use domain::{BlockSummary, ExperimentSpec, FieldError, MetricRecord, RecordFilter};
use reqwest::blocking::multipart::{Form, Part};
use reqwest::blocking::{RequestBuilder, Response};
pub use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// An RFC 9457 problem as the API sends it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    /// No connection to the API was ever made: most likely a wrong URL or an API not started.
    #[error("cannot reach the API at {base}: {source}")]
    Unreachable {
        base: String,
        source: reqwest::Error,
    },
    #[error("{status}: {}{}", .problem.detail, fields(&.problem.errors))]
    Api {
        status: StatusCode,
        problem: Problem,
    },
    #[error("{url}: unexpected reply: {message}")]
    Decode { url: String, message: String },
}

fn fields(errors: &[FieldError]) -> String {
    if errors.len() <= 1 {
        return String::new();
    }
    errors
        .iter()
        .map(|e| format!("\n  {}: {}", e.field, e.message))
        .collect()
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A worker's lease is gone (the API answered 409 Conflict to a worker write).
    pub fn is_lease_lost(&self) -> bool {
        self.status() == Some(StatusCode::CONFLICT)
    }

    /// Worth retrying: the API or its database is briefly unavailable.
    fn is_transient(&self) -> bool {
        match self {
            Self::Http { source, .. } => source.is_connect() || source.is_timeout(),
            Self::Api { status, .. } => {
                status.is_server_error() || *status == StatusCode::REQUEST_TIMEOUT
            }
            Self::Unreachable { .. } | Self::Decode { .. } => false,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Filters of [`Client::list_runs`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<JobState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// What figures are drawn of: a run, an experiment, or runs together (as configurations).
#[derive(Clone, Debug, PartialEq)]
pub enum FiguresOf {
    Run(Uuid),
    Experiment(Uuid),
    Runs(Vec<Uuid>),
}

impl FiguresOf {
    /// The path of the list of figures, or of one figure's `file`.
    fn path(&self, file: Option<&str>) -> String {
        let file = file.map_or(String::new(), |f| format!("/{f}"));
        match self {
            Self::Run(id) => format!("/v1/runs/{id}/figures{file}"),
            Self::Experiment(id) => format!("/v1/experiments/{id}/figures{file}"),
            Self::Runs(ids) => format!("/v1/figures{file}?runs={}", Self::list(ids)),
        }
    }

    /// The path of the blocks side by side of the same runs.
    fn blocks_path(&self) -> String {
        match self {
            Self::Run(id) => format!("/v1/blocks?runs={id}"),
            Self::Experiment(id) => format!("/v1/experiments/{id}/blocks"),
            Self::Runs(ids) => format!("/v1/blocks?runs={}", Self::list(ids)),
        }
    }

    fn list(ids: &[Uuid]) -> String {
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        ids.join(",")
    }
}

#[derive(Deserialize)]
struct StateReply {
    state: JobState,
}

/// The API at one base URL with one bearer token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
    /// How long transient failures are retried before they are returned.
    patience: Duration,
    /// Whether the API has answered this client (or a clone) at least once. Until it has,
    /// a failed connection is returned at once: retrying a wrong URL for the whole
    /// patience only delays the error; patience is for riding out restarts.
    answered: Arc<AtomicBool>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Self> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|source| ClientError::Http {
                url: base.to_string(),
                source,
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            patience: Duration::from_secs(30),
            answered: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Retries transient failures (API restarting, database failing over) for this long.
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends the request `build` makes, retrying transient failures with backoff.
    fn send(&self, path: &str, build: impl Fn(&str) -> RequestBuilder) -> Result<Response> {
        let url = self.url(path);
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            let mut request = build(&url);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let result = match request.send() {
                Ok(response) => {
                    self.answered.store(true, Ordering::Relaxed);
                    check(&url, response)
                }
                Err(source) if source.is_connect() && !self.answered.load(Ordering::Relaxed) => {
                    return Err(ClientError::Unreachable {
                        base: self.base.clone(),
                        source,
                    })
                }
                Err(source) => Err(ClientError::Http {
                    url: url.clone(),
                    source,
                }),
            };
            match result {
                Err(e) if e.is_transient() && started.elapsed() + wait < self.patience => {
                    tracing::debug!("{e}; retrying in {wait:?}");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        json(self.send(path, |u| self.http.get(u))?)
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        json(self.send(path, |u| self.http.post(u).json(body))?)
    }

    fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        json(self.send(path, |u| self.http.post(u))?)
    }

    // ---- users ----

    /// Submits a run; with a key, repeating the call makes no second run.
    pub fn submit_run(&self, submission: &RunSubmission, key: Option<&str>) -> Result<RunView> {
        json(self.send("/v1/runs", |u| {
            let r = self.http.post(u).json(submission);
            match key {
                Some(k) => r.header("Idempotency-Key", k),
                None => r,
            }
        })?)
    }

    /// Submits a run made of weights trained elsewhere: the file `weights` (a state dict as
    /// safetensors or a `torch.save` file) is uploaded with the submission. With a key,
    /// repeating the call makes no second run.
    pub fn import_run(
        &self,
        submission: &ImportSubmission,
        weights: &Path,
        key: Option<&str>,
    ) -> Result<RunView> {
        self.upload("/v1/runs/import", submission, &[("weights", weights)], key)
    }

    /// Submits an experiment some of whose runs are made of weights trained elsewhere:
    /// `weights` names each such run's file by its part, `weights/<label>/<seed>`.
    pub fn import_experiment(
        &self,
        submission: &ExperimentImport,
        weights: &[(String, PathBuf)],
        key: Option<&str>,
    ) -> Result<ExperimentView> {
        let parts: Vec<(&str, &Path)> = weights
            .iter()
            .map(|(part, path)| (part.as_str(), path.as_path()))
            .collect();
        self.upload("/v1/experiments/import", submission, &parts, key)
    }

    /// Posts a form of `submission` (JSON) and the files `parts`, streamed from disk.
    fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        submission: &impl Serialize,
        parts: &[(&str, &Path)],
        key: Option<&str>,
    ) -> Result<T> {
        let text = serde_json::to_string(submission).map_err(|e| ClientError::Decode {
            url: self.url(path),
            message: format!("the submission does not serialise: {e}"),
        })?;
        json(self.send(path, |u| {
            // Built anew for each try: a form is consumed by sending it. Part names go as
            // they are (`weights/<label>/<seed>` is plain ASCII), as curl sends them:
            // reqwest's default would send a name with '/' in RFC 2231's `name*=` form,
            // which form parsers (multer among them) do not read.
            let mut form = Form::new()
                .percent_encode_noop()
                .text("submission", text.clone());
            for &(name, file) in parts {
                // A file that cannot be opened (callers read it first) goes empty, which
                // the API refuses naming the part.
                let part = Part::file(file).unwrap_or_else(|_| Part::bytes(Vec::new()));
                form = form.part(name.to_string(), part);
            }
            let r = self.http.post(u).multipart(form);
            match key {
                Some(k) => r.header("Idempotency-Key", k),
                None => r,
            }
        })?)
    }

    pub fn submit_experiment(
        &self,
        spec: &ExperimentSpec,
        key: Option<&str>,
    ) -> Result<ExperimentView> {
        let body = ExperimentSubmission { spec: spec.clone() };
        json(self.send("/v1/experiments", |u| {
            let r = self.http.post(u).json(&body);
            match key {
                Some(k) => r.header("Idempotency-Key", k),
                None => r,
            }
        })?)
    }

    pub fn list_runs(&self, query: &RunQuery) -> Result<Page<RunView>> {
        json(self.send("/v1/runs", |u| self.http.get(u).query(query))?)
    }

    pub fn run(&self, id: Uuid) -> Result<RunView> {
        self.get(&format!("/v1/runs/{id}"))
    }

    pub fn cancel(&self, id: Uuid) -> Result<RunView> {
        self.post_empty(&format!("/v1/runs/{id}/cancel"))
    }

    pub fn retry(&self, id: Uuid) -> Result<RunView> {
        self.post_empty(&format!("/v1/runs/{id}/retry"))
    }

    pub fn metrics(
        &self,
        id: Uuid,
        name: Option<&str>,
        split: Option<&str>,
    ) -> Result<Vec<MetricRecord>> {
        json(self.metrics_request(id, name, split, "application/json")?)
    }

    pub fn metrics_csv(&self, id: Uuid, name: Option<&str>, split: Option<&str>) -> Result<String> {
        text(self.metrics_request(id, name, split, "text/csv")?)
    }

    fn metrics_request(
        &self,
        id: Uuid,
        name: Option<&str>,
        split: Option<&str>,
        accept: &str,
    ) -> Result<Response> {
        let mut query = vec![];
        if let Some(n) = name {
            query.push(("name", n));
        }
        if let Some(s) = split {
            query.push(("split", s));
        }
        self.get_accepting(&format!("/v1/runs/{id}/metrics"), &query, accept)
    }

    /// A GET with a query, asking for the `accept` media type of those the API serves.
    fn get_accepting(
        &self,
        path: &str,
        query: &(impl Serialize + ?Sized),
        accept: &str,
    ) -> Result<Response> {
        self.send(path, |u| {
            self.http.get(u).query(query).header("Accept", accept)
        })
    }

    /// Deletes a run that has no job running, with its files.
    pub fn delete_run(&self, id: Uuid) -> Result<()> {
        self.send(&format!("/v1/runs/{id}"), |u| self.http.delete(u))?;
        Ok(())
    }

    /// Deletes an experiment with its runs and their files.
    pub fn delete_experiment(&self, id: Uuid) -> Result<()> {
        self.send(&format!("/v1/experiments/{id}"), |u| self.http.delete(u))?;
        Ok(())
    }

    /// The newest `limit` lines of a run's log, oldest first, as the API formats them.
    pub fn logs_text(&self, run: Uuid, limit: u32) -> Result<String> {
        text(self.get_accepting(
            &format!("/v1/runs/{run}/logs"),
            &[("limit", limit)],
            "text/plain",
        )?)
    }

    pub fn checkpoints(&self, run: Uuid) -> Result<Vec<CheckpointView>> {
        self.get(&format!("/v1/runs/{run}/checkpoints"))
    }

    /// Streams a checkpoint's safetensors bytes into `out`; returns how many were written.
    pub fn checkpoint_file(&self, id: Uuid, out: &mut impl std::io::Write) -> Result<u64> {
        let path = format!("/v1/checkpoints/{id}/file");
        let mut response = self.send(&path, |u| self.http.get(u))?;
        response.copy_to(out).map_err(|source| ClientError::Http {
            url: self.url(&path),
            source,
        })
    }

    /// A run's analyses without their records.
    pub fn analyses(&self, run: Uuid) -> Result<Vec<AnalysisView>> {
        self.get(&format!("/v1/runs/{run}/analyses"))
    }

    pub fn request_analysis(&self, run: Uuid, request: &AnalysisRequest) -> Result<AnalysisView> {
        self.post(&format!("/v1/runs/{run}/analyses"), request)
    }

    /// An analysis with its records, those `filter` keeps.
    pub fn analysis(&self, id: Uuid, filter: &RecordFilter) -> Result<AnalysisView> {
        json(self.get_accepting(&format!("/v1/analyses/{id}"), filter, "application/json")?)
    }

    /// An analysis's records `filter` keeps, as CSV.
    pub fn analysis_csv(&self, id: Uuid, filter: &RecordFilter) -> Result<String> {
        text(self.get_accepting(&format!("/v1/analyses/{id}"), filter, "text/csv")?)
    }

    /// The newest `limit` experiments.
    /// Experiments newest first; only those named `name`, when given.
    pub fn experiments(&self, limit: u32, name: Option<&str>) -> Result<Page<ExperimentSummary>> {
        json(self.send("/v1/experiments", |u| {
            let request = self.http.get(u).query(&[("limit", limit)]);
            match name {
                Some(name) => request.query(&[("name", name)]),
                None => request,
            }
        })?)
    }

    pub fn experiment(&self, id: Uuid) -> Result<ExperimentView> {
        self.get(&format!("/v1/experiments/{id}"))
    }

    /// Cancels every queued or running run of the experiment.
    pub fn cancel_experiment(&self, id: Uuid) -> Result<ExperimentView> {
        self.post_empty(&format!("/v1/experiments/{id}/cancel"))
    }

    /// Queues every failed or cancelled run of the experiment again.
    pub fn retry_experiment(&self, id: Uuid) -> Result<ExperimentView> {
        self.post_empty(&format!("/v1/experiments/{id}/retry"))
    }

    /// paper.md's claims over an experiment's analysed runs.
    pub fn experiment_claims(&self, id: Uuid) -> Result<ClaimsView> {
        self.get(&format!("/v1/experiments/{id}/claims"))
    }

    /// The figures drawn of `of`, and the seeds whose analyses they leave out.
    pub fn figure_list(&self, of: &FiguresOf) -> Result<FigureList> {
        self.get(&of.path(None))
    }

    /// A figure's file (`fig2_cosine.svg`, `fig2_cosine.png`) drawn of `of`.
    pub fn figure(&self, of: &FiguresOf, file: &str) -> Result<Vec<u8>> {
        let response = self.send(&of.path(Some(file)), |u| self.http.get(u))?;
        let url = response.url().to_string();
        let bytes = response
            .bytes()
            .map_err(|source| ClientError::Http { url, source })?;
        Ok(bytes.to_vec())
    }

    /// Every block's metrics of the runs of `of` side by side: per configuration, metric,
    /// split and block, mean ± sd over seeds of their latest analyses.
    pub fn block_summaries(&self, of: &FiguresOf) -> Result<Vec<BlockSummary>> {
        self.get(&of.blocks_path())
    }

    // ---- workers ----

    /// The workers seen in the last week, the most recently seen first.
    pub fn workers(&self) -> Result<Vec<WorkerView>> {
        self.get("/v1/workers")
    }

    pub fn claim(
        &self,
        kinds: &[JobKind],
        worker: &str,
        capacity: WorkerCapacity,
    ) -> Result<Option<Claim>> {
        let body = ClaimRequest {
            kinds: kinds.to_vec(),
            worker: worker.to_string(),
            capacity,
        };
        let response = self.send("/v1/worker/claim", |u| self.http.post(u).json(&body))?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        json(response).map(Some)
    }

    pub fn heartbeat(&self, job: Uuid, lease_token: Uuid) -> Result<HeartbeatReply> {
        self.post(
            &format!("/v1/worker/jobs/{job}/heartbeat"),
            &LeaseProof { lease_token },
        )
    }

    pub fn events(&self, job: Uuid, lease_token: Uuid, events: Vec<WorkerEvent>) -> Result<()> {
        let body = EventBatch {
            lease_token,
            events,
        };
        self.send(&format!("/v1/worker/jobs/{job}/events"), |u| {
            self.http.post(u).json(&body)
        })?;
        Ok(())
    }

    pub fn register_checkpoint(
        &self,
        job: Uuid,
        registration: &CheckpointRegistration,
    ) -> Result<CheckpointView> {
        self.post(&format!("/v1/worker/jobs/{job}/checkpoints"), registration)
    }

    pub fn complete(
        &self,
        job: Uuid,
        lease_token: Uuid,
        analysis: Option<AnalysisResult>,
    ) -> Result<JobState> {
        let body = Completion {
            lease_token,
            analysis,
        };
        Ok(self
            .post::<_, StateReply>(&format!("/v1/worker/jobs/{job}/complete"), &body)?
            .state)
    }

    pub fn fail(
        &self,
        job: Uuid,
        lease_token: Uuid,
        kind: FailureKind,
        error: &str,
    ) -> Result<JobState> {
        let body = FailureReport {
            lease_token,
            kind,
            error: error.to_string(),
        };
        Ok(self
            .post::<_, StateReply>(&format!("/v1/worker/jobs/{job}/fail"), &body)?
            .state)
    }

    /// Gives back a job that does not fit this worker's memory: queued for a worker with
    /// more, or failed as invalid when no worker seen lately has enough.
    pub fn refuse(&self, job: Uuid, refusal: &Refusal) -> Result<JobState> {
        Ok(self
            .post::<_, StateReply>(&format!("/v1/worker/jobs/{job}/refuse"), refusal)?
            .state)
    }

    pub fn release(&self, job: Uuid, lease_token: Uuid) -> Result<JobState> {
        Ok(self
            .post::<_, StateReply>(
                &format!("/v1/worker/jobs/{job}/release"),
                &LeaseProof { lease_token },
            )?
            .state)
    }
}

/// A successful response, or the API's problem as an error.
fn check(url: &str, response: Response) -> Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().unwrap_or_default();
    let problem = serde_json::from_str(&body).unwrap_or_else(|_| Problem {
        title: status.canonical_reason().unwrap_or("").to_string(),
        detail: format!("{url}: {}", body.chars().take(500).collect::<String>()),
        errors: vec![],
    });
    Err(ClientError::Api { status, problem })
}

fn json<T: DeserializeOwned>(response: Response) -> Result<T> {
    let url = response.url().to_string();
    let bytes = response.bytes().map_err(|source| ClientError::Http {
        url: url.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
        url,
        message: e.to_string(),
    })
}

fn text(response: Response) -> Result<String> {
    let url = response.url().to_string();
    response
        .text()
        .map_err(|source| ClientError::Http { url, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A port nothing listens on (bound once by us, then released).
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_client_that_never_reached_the_api_fails_at_once() {
        let client = Client::new(&format!("http://127.0.0.1:{}", closed_port()), None).unwrap();
        let error = client.run(Uuid::nil()).unwrap_err();
        assert!(
            matches!(error, ClientError::Unreachable { .. }),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .starts_with("cannot reach the API at http://127.0.0.1:"));
    }

    #[test]
    fn once_the_api_answered_a_lost_connection_is_retried_as_transient() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).unwrap();
            stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .unwrap();
            // The listener is dropped here: the next connection is refused.
        });
        let client = Client::new(&base, None)
            .unwrap()
            .with_patience(Duration::from_millis(300));
        let answered = client.run(Uuid::nil()).unwrap_err();
        assert_eq!(
            answered.status(),
            Some(StatusCode::NOT_FOUND),
            "{answered:?}"
        );
        server.join().unwrap();
        let started = Instant::now();
        let refused = client.clone().run(Uuid::nil()).unwrap_err();
        // The first retry waits 100 ms.
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(
            matches!(&refused, ClientError::Http { source, .. } if source.is_connect()),
            "{refused:?}"
        );
    }
}
