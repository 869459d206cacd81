//! What the API's integration tests share: the app over a test database, and requests.

#![allow(dead_code)] // each test file uses its own part

use api::{AppState, Config};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use tower::ServiceExt;

pub struct TestApp {
    pub router: Router,
    pub checkpoints: tempfile::TempDir,
    _data: tempfile::TempDir,
}

/// The API over `pool`, with its own checkpoint and data directories and `vars` set.
pub fn spawn_app(pool: PgPool, vars: &[(&str, &str)]) -> TestApp {
    let checkpoints = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), "unused: the pool is given".into()),
        (
            "STEPWISE_CHECKPOINT_DIR".into(),
            checkpoints.path().display().to_string(),
        ),
        (
            "STEPWISE_DATA_DIR".into(),
            data.path().display().to_string(),
        ),
    ]);
    for (k, v) in vars {
        env.insert(k.to_string(), v.to_string());
    }
    let config = Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let state = AppState::new(store::Store::from_pool(pool), config);
    TestApp {
        router: api::app(state),
        checkpoints,
        _data: data,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestApp {
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map_or(String::new(), |v| v.to_str().unwrap().to_string());
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            content_type,
            headers,
            body: body.to_vec(),
        }
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).unwrap()).await
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None).await
    }

    pub async fn post(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::POST, uri, Some(body)).await
    }

    /// Claims a job of `kind` (`train` or `analyze`) as worker `worker` with a CPU and a
    /// terabyte, as the workers do; the claim's JSON (job id, lease token, directory, …).
    pub async fn claim(&self, kind: &str, worker: &str) -> Value {
        let capacity = serde_json::json!({"memory": "host", "budget_mib": 1 << 20});
        self.claim_with(kind, worker, capacity).await
    }

    /// [`Self::claim`] with the worker's memory and budget (`capacity`).
    pub async fn claim_with(&self, kind: &str, worker: &str, capacity: Value) -> Value {
        let body = serde_json::json!({"kinds": [kind], "worker": worker, "capacity": capacity});
        let claim = self.post("/v1/worker/claim", body).await;
        assert_eq!(claim.status, StatusCode::OK, "{}", claim.text());
        claim.json()
    }

    /// Claims the oldest queued training as a worker would and sends it `events`; the
    /// claim's JSON.
    pub async fn start_training(&self, events: Value) -> Value {
        let claim = self.claim("train", "gpu-7").await;
        let job = claim["job_id"].as_str().unwrap();
        let body = serde_json::json!({"lease_token": claim["lease_token"], "events": events});
        let reply = self
            .post(&format!("/v1/worker/jobs/{job}/events"), body)
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
        claim
    }

    /// Writes and registers the checkpoint of `epoch` in the claimed training's directory.
    pub async fn register_checkpoint(&self, claim: &Value, epoch: u32) {
        use sha2::Digest;
        let dir = self
            .checkpoints
            .path()
            .join(claim["directory"].as_str().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let (file, content) = (format!("epoch-{epoch:04}.safetensors"), b"weights");
        std::fs::write(dir.join(&file), content).unwrap();
        let registration = serde_json::json!({"lease_token": claim["lease_token"],
            "file_name": file, "epoch": epoch, "batch": 0, "step": 10 * epoch,
            "size": content.len(), "sha256": hex::encode(sha2::Sha256::digest(content))});
        let job = claim["job_id"].as_str().unwrap();
        let registered = self
            .post(&format!("/v1/worker/jobs/{job}/checkpoints"), registration)
            .await;
        assert_eq!(
            registered.status,
            StatusCode::CREATED,
            "{}",
            registered.text()
        );
    }

    /// Completes a claimed job (training, or an analysis with `analysis`, an
    /// `AnalysisResult`) as succeeded.
    pub async fn complete(&self, claim: &Value, analysis: Option<Value>) {
        let job = claim["job_id"].as_str().unwrap();
        let mut body = serde_json::json!({"lease_token": claim["lease_token"]});
        if let Some(analysis) = analysis {
            body["analysis"] = analysis;
        }
        let done = self
            .post(&format!("/v1/worker/jobs/{job}/complete"), body)
            .await;
        assert_eq!(done.json()["state"], "succeeded", "{}", done.text());
    }

    /// Trains and analyses the oldest queued run as the workers would, over the worker API:
    /// claims its training, sends `events`, registers a one-epoch checkpoint, completes;
    /// then claims the analysis that queued and completes it with `analysis` (an
    /// `AnalysisResult`). Returns the run's id.
    pub async fn train_and_analyse(&self, events: Value, analysis: Value) -> String {
        let claim = self.start_training(events).await;
        self.register_checkpoint(&claim, 1).await;
        self.complete(&claim, None).await;
        let analysing = self.claim("analyze", "gpu-8").await;
        self.complete(&analysing, Some(analysis)).await;
        claim["run_id"].as_str().unwrap().to_string()
    }

    /// Requests an analysis of `run` (`request`, an `AnalysisRequest`) and performs it as an
    /// analyzer would, completing it with `analysis` (an `AnalysisResult`).
    pub async fn analyse(&self, run: &str, request: Value, analysis: Value) {
        let requested = self
            .post(&format!("/v1/runs/{run}/analyses"), request)
            .await;
        assert_eq!(
            requested.status,
            StatusCode::CREATED,
            "{}",
            requested.text()
        );
        let analysing = self.claim("analyze", "gpu-8").await;
        self.complete(&analysing, Some(analysis)).await;
    }

    /// The verdict on `claim` (`C1`…) of an experiment's claims, as `experiment show` reads
    /// them.
    pub async fn verdict(&self, experiment: &str, claim: &str) -> Value {
        let claims = self
            .get(&format!("/v1/experiments/{experiment}/claims"))
            .await
            .json();
        let found = claims["claims"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["claim"] == claim);
        found
            .cloned()
            .unwrap_or_else(|| panic!("no {claim}: {claims}"))
    }

    /// Submits an experiment of one narrow ResNet-8 configuration trained for one epoch on
    /// `seeds`; returns its id.
    pub async fn submit_experiment(&self, name: &str, seeds: &[u64]) -> String {
        let body = serde_json::json!({"spec": {
            "name": name, "seeds": seeds,
            "data": {"dataset": "shapes10"}, "train": {"epochs": 1},
            "configs": [{"model": {"arch": "resnet", "depth": 8, "width": 4}}]}});
        let created = self.post("/v1/experiments", body).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
        created.json()["id"].as_str().unwrap().to_string()
    }
}

/// The states of an experiment's runs (in an `ExperimentView` as JSON), in its order.
pub fn run_statuses(experiment: &Value) -> Vec<String> {
    experiment["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect()
}

/// A `multipart/form-data` body of `parts` (name, file name, bytes) and its content type.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "stepwise-test-boundary";
    let mut body = Vec::new();
    for (name, file_name, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let file = file_name.map_or(String::new(), |f| format!("; filename=\"{f}\""));
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The files below `dir`, relative to it, sorted.
pub fn files_below(dir: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = vec![];
    walk(dir, dir, &mut out);
    out.sort();
    out
}
