//! Handlers in process (`oneshot` on the router) against a fresh Postgres database per
//! test (`#[sqlx::test]`; DATABASE_URL with a role that may create databases).

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{files_below, multipart, run_statuses, spawn_app, Reply, TestApp};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;

fn run_body(epochs: u32) -> Value {
    json!({
        "spec": {
            "model": {"arch": "resnet", "depth": 8, "width": 4},
            "data": {"dataset": "shapes10"},
            "train": {"epochs": epochs}
        },
        "analysis": {"checkpoints": "final", "spec": {"max_examples": 50}}
    })
}

fn assert_problem(reply: &Reply, status: StatusCode, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    assert_eq!(reply.content_type, "application/problem+json", "{what}");
    let problem = reply.json();
    assert_eq!(problem["status"], status.as_u16(), "{what}");
    assert!(problem["detail"].is_string(), "{what}");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn bad_input_gets_the_right_4xx_problem_and_never_a_5xx(pool: PgPool) {
    let app = spawn_app(pool, &[("STEPWISE_MAX_BODY_BYTES", "65536")]);
    let raw = |method: Method, uri: &str, body: &str, content_type: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let json_type = "application/json";
    let huge = format!(r#"{{"spec": {{"name": "{}"}}}}"#, "x".repeat(100_000));
    let cases: Vec<(&str, Request<Body>, StatusCode, Option<&str>)> = vec![
        (
            "malformed JSON",
            raw(Method::POST, "/v1/runs", "{\"spec\": ", json_type),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "not JSON at all",
            raw(Method::POST, "/v1/runs", "depth=8", json_type),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "wrong content type",
            raw(Method::POST, "/v1/runs", "{}", "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            "wrong type",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": "deep"}, "data": {"dataset": "shapes10"}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.model.depth"),
        ),
        (
            "unknown field",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "colour": 1}, "data": {"dataset": "shapes10"}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.model"),
        ),
        (
            "unknown top-level field",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": 8}, "data": {"dataset": "shapes10"}}, "priority": 1}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "depth out of range",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": 9}, "data": {"dataset": "shapes10"}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.model.depth"),
        ),
        (
            "negative epochs",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": 8}, "data": {"dataset": "shapes10"}, "train": {"epochs": -1}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.train.epochs"),
        ),
        (
            "enormous epochs",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": 8}, "data": {"dataset": "shapes10"}, "train": {"epochs": 100000000000000000000}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.train.epochs"),
        ),
        (
            "epochs above the limit",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": 8}, "data": {"dataset": "shapes10"}, "train": {"epochs": 20000}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.train.epochs"),
        ),
        (
            "width too large",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": 8, "width": 4096}, "data": {"dataset": "shapes10"}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.model.width"),
        ),
        (
            "unknown dataset",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": 8}, "data": {"dataset": "imagenet"}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.data.dataset"),
        ),
        (
            "path-like dataset",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": 8}, "data": {"dataset": "../../etc"}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.data.dataset"),
        ),
        (
            "classes do not fit",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": 8, "classes": 100}, "data": {"dataset": "shapes10"}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.model.classes"),
        ),
        (
            "analysis epoch past the end",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": 8}, "data": {"dataset": "shapes10"}, "train": {"epochs": 2}}, "analysis": {"checkpoints": {"epochs": [5]}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("analysis.checkpoints.epochs"),
        ),
        (
            "a NUL in a run's name",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"name": "a\u0000b", "model": {"arch": "resnet", "depth": 8}, "data": {"dataset": "shapes10"}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.name"),
        ),
        (
            "a terminal escape in an experiment's description",
            raw(
                Method::POST,
                "/v1/experiments",
                r#"{"spec": {"name": "x", "description": "\u001b[2J", "data": {"dataset": "shapes10"}, "configs": [{"model": {"arch": "resnet", "depth": 8}}]}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.description"),
        ),
        (
            "a plan's analysis out of range",
            raw(
                Method::POST,
                "/v1/runs",
                r#"{"spec": {"model": {"arch": "resnet", "depth": 8}, "data": {"dataset": "shapes10"}}, "analysis": {"spec": {"max_examples": 0}}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("analysis.spec.max_examples"),
        ),
        (
            "an analysis request out of range",
            raw(
                Method::POST,
                "/v1/runs/01a21a64-27b3-72c4-b1b6-317c64c6a598/analyses",
                r#"{"spec": {"alphas": []}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.alphas"),
        ),
        (
            "an experiment's analysis out of range",
            raw(
                Method::POST,
                "/v1/experiments",
                r#"{"spec": {"name": "x", "data": {"dataset": "shapes10"}, "analysis": {"margin": 2}, "configs": [{"model": {"arch": "resnet", "depth": 8}}]}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.analysis.margin"),
        ),
        (
            "huge body",
            raw(Method::POST, "/v1/runs", &huge, json_type),
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
        (
            "bad experiment",
            raw(
                Method::POST,
                "/v1/experiments",
                r#"{"spec": {"name": "x", "data": {"dataset": "shapes10"}, "configs": [{"model": {"arch": "resnet", "depth": 10}}]}}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.configs[0].model.depth"),
        ),
        (
            "path-like id",
            raw(
                Method::GET,
                "/v1/runs/..%2F..%2Fetc%2Fpasswd",
                "",
                json_type,
            ),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "not an id",
            raw(Method::GET, "/v1/runs/42", "", json_type),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "unknown id",
            raw(
                Method::GET,
                "/v1/runs/01a21a64-27b3-72c4-b1b6-317c64c6a598",
                "",
                json_type,
            ),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            "bad status filter",
            raw(Method::GET, "/v1/runs?status=sleeping", "", json_type),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "unknown architecture filter",
            raw(Method::GET, "/v1/runs?arch=deep", "", json_type),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "a NUL in the filters",
            raw(Method::GET, "/v1/runs?tag=%00", "", json_type),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "a NUL in a run name filter",
            raw(Method::GET, "/v1/runs?name=a%00", "", json_type),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "a NUL in an experiment name filter",
            raw(Method::GET, "/v1/experiments?name=%00", "", json_type),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "unknown query parameter",
            raw(Method::GET, "/v1/runs?colour=red", "", json_type),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "negative limit",
            raw(Method::GET, "/v1/runs?limit=-5", "", json_type),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "bad cursor",
            raw(Method::GET, "/v1/runs?cursor=zzz", "", json_type),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "unknown metric",
            raw(
                Method::GET,
                "/v1/runs/01a21a64-27b3-72c4-b1b6-317c64c6a598/metrics?name=speed",
                "",
                json_type,
            ),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "no such endpoint",
            raw(Method::GET, "/v2/runs", "", json_type),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            "wrong method",
            raw(Method::PUT, "/v1/runs", "", json_type),
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
        (
            "claim without kinds",
            raw(
                Method::POST,
                "/v1/worker/claim",
                r#"{"kinds": [], "worker": "w", "capacity": {"memory": "host", "budget_mib": 1}}"#,
                json_type,
            ),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "a NUL in a worker's name",
            raw(
                Method::POST,
                "/v1/worker/claim",
                r#"{"kinds": ["train"], "worker": "w\u0000", "capacity": {"memory": "host", "budget_mib": 1}}"#,
                json_type,
            ),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "heartbeat of nothing",
            raw(
                Method::POST,
                "/v1/worker/jobs/01a21a64-27b3-72c4-b1b6-317c64c6a598/heartbeat",
                r#"{"lease_token": "01a21a64-27b3-72c4-b1b6-317c64c6a598"}"#,
                json_type,
            ),
            StatusCode::CONFLICT,
            None,
        ),
        (
            "heartbeat with a bad token",
            raw(
                Method::POST,
                "/v1/worker/jobs/01a21a64-27b3-72c4-b1b6-317c64c6a598/heartbeat",
                r#"{"lease_token": "x"}"#,
                json_type,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("lease_token"),
        ),
    ];
    for (what, request, status, field) in cases {
        let reply = app.send(request).await;
        assert_problem(&reply, status, what);
        if let Some(field) = field {
            let problem = reply.json();
            let fields: Vec<&str> = problem["errors"]
                .as_array()
                .unwrap_or_else(|| panic!("{what}: no errors in {problem}"))
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            assert!(
                fields.iter().any(|f| f.starts_with(field)),
                "{what}: {fields:?} does not name {field}"
            );
        }
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn tokens_guard_users_and_workers_separately(pool: PgPool) {
    let app = spawn_app(
        pool,
        &[
            ("STEPWISE_API_TOKEN", "user-secret"),
            ("STEPWISE_WORKER_TOKEN", "worker-secret"),
        ],
    );
    let with = |uri: &str, token: Option<&str>| {
        let mut b = Request::builder().uri(uri);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Body::empty()).unwrap()
    };
    assert_problem(
        &app.send(with("/v1/runs", None)).await,
        StatusCode::UNAUTHORIZED,
        "no token",
    );
    assert_problem(
        &app.send(with("/v1/runs", Some("worker-secret"))).await,
        StatusCode::UNAUTHORIZED,
        "worker token for users",
    );
    assert_eq!(
        app.send(with("/v1/runs", Some("user-secret"))).await.status,
        StatusCode::OK
    );
    // Uploads are routed apart (their own limits) behind the same token.
    let upload = |token: &str| {
        let mut request = with("/v1/runs/import", Some(token));
        *request.method_mut() = Method::POST;
        request
    };
    assert_problem(
        &app.send(upload("worker-secret")).await,
        StatusCode::UNAUTHORIZED,
        "worker token for an upload",
    );
    assert_problem(
        &app.send(upload("user-secret")).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "the user's upload, without a form",
    );
    let claim = |token: &str| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/worker/claim")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"kinds": ["train"], "worker": "w",
                    "capacity": {"memory": "host", "budget_mib": 1}}"#,
            ))
            .unwrap()
    };
    assert_problem(
        &app.send(claim("user-secret")).await,
        StatusCode::UNAUTHORIZED,
        "user token for workers",
    );
    assert_eq!(
        app.send(claim("worker-secret")).await.status,
        StatusCode::NO_CONTENT
    );
    // Operations stay open for probes and scrapers.
    assert_eq!(
        app.send(with("/healthz", None)).await.status,
        StatusCode::OK
    );
    assert_eq!(app.send(with("/readyz", None)).await.status, StatusCode::OK);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn concurrent_submissions_with_one_idempotency_key_make_one_run(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let request = |body: &Value| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/runs")
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "submit-once")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let body = run_body(1);
    let replies =
        futures_join_all((0..50).map(|_| app.router.clone().oneshot(request(&body)))).await;
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for response in replies {
        let response = response.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        created += (response.status() == StatusCode::CREATED) as usize;
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!((ids.len(), created), (1, 1));
    // The same key with another body is refused.
    let other = app.send(request(&run_body(2))).await;
    assert_problem(
        &other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "same key, other body",
    );
    let list = app.get("/v1/runs").await.json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

/// Drives futures concurrently on this test's runtime.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = vec![];
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_job_refused_for_memory_fails_as_invalid_when_no_worker_seen_has_more(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let run = app.post("/v1/runs", run_body(2)).await;
    let run_id = run.json()["id"].as_str().unwrap().to_string();
    let no_capacity = app
        .post(
            "/v1/worker/claim",
            json!({"kinds": ["train"], "worker": "w"}),
        )
        .await;
    assert_problem(
        &no_capacity,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no capacity",
    );
    assert!(
        no_capacity.text().contains("capacity"),
        "{}",
        no_capacity.text()
    );
    let capacity = json!({"memory": "gpu", "budget_mib": 16_000});
    let claim = app.claim_with("train", "w", capacity.clone()).await;
    let workers = app.get("/v1/workers").await.json();
    assert_eq!(workers[0]["name"], "w");
    assert_eq!(workers[0]["capacity"], capacity);
    let held = &workers[0]["job"];
    assert_eq!(held["run_id"], run_id.as_str());
    assert_eq!(
        (&held["epochs_done"], &held["epochs"]),
        (&json!(0), &json!(2))
    );
    assert_eq!(held["analysis"], Value::Null, "a train job");
    assert_eq!(held["run_name"], Value::Null);
    assert_eq!(held["run_label"], "resnet-8");
    let uri = format!(
        "/v1/worker/jobs/{}/refuse",
        claim["job_id"].as_str().unwrap()
    );
    let refusal = |memory: &str| {
        json!({"lease_token": claim["lease_token"], "memory": memory, "need_mib": 30_000,
               "error": "training at batch size 4096 needs an estimated 30000 MiB"})
    };
    let bad = app.post(&uri, refusal("disk")).await;
    assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY, "unknown memory");
    let reply = app.post(&uri, refusal("gpu")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["state"], "failed");
    let view = app.get(&format!("/v1/runs/{run_id}")).await.json();
    assert_eq!(view["failure_kind"], "invalid");
    let error = view["last_error"].as_str().unwrap();
    assert!(
        error.ends_with("no worker seen in the last 10 minutes has 30000 MiB of GPU memory"),
        "{error}"
    );
    let again = app.post(&uri, refusal("gpu")).await;
    assert_problem(&again, StatusCode::CONFLICT, "the lease ended");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_workers_log_and_error_are_kept_even_with_a_nul_in_them(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let run = app.post("/v1/runs", run_body(2)).await;
    let run_id = run.json()["id"].as_str().unwrap().to_string();
    let claim = app.claim("train", "w").await;
    let job = claim["job_id"].as_str().unwrap();
    let token = &claim["lease_token"];
    let log = json!({"lease_token": token, "events": [
        {"type": "log", "level": "warn", "message": "read \u{0} from the data file"}]});
    let reply = app
        .post(&format!("/v1/worker/jobs/{job}/events"), log)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    let failure = json!({"lease_token": token, "kind": "invalid", "error": "bad\u{0}byte"});
    let reply = app
        .post(&format!("/v1/worker/jobs/{job}/fail"), failure)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let view = app.get(&format!("/v1/runs/{run_id}")).await.json();
    assert_eq!(view["last_error"], "bad\u{FFFD}byte");
    let logs = app.get(&format!("/v1/runs/{run_id}/logs")).await.json();
    let messages: Vec<&str> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.contains(&"read \u{FFFD} from the data file"),
        "{messages:?}"
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn workers_register_only_verified_files_inside_their_directory(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let run = app.post("/v1/runs", run_body(2)).await;
    assert_eq!(run.status, StatusCode::CREATED, "{}", run.text());
    let run_id = run.json()["id"].as_str().unwrap().to_string();
    let claim = app.claim("train", "w").await;
    let job = claim["job_id"].as_str().unwrap();
    let token = claim["lease_token"].as_str().unwrap();
    let directory = claim["directory"].as_str().unwrap();
    assert_eq!(directory, format!("runs/{run_id}/attempt-1"));
    let dir = app.checkpoints.path().join(directory);
    std::fs::create_dir_all(&dir).unwrap();
    let content = b"not really safetensors";
    std::fs::write(dir.join("epoch-0001.safetensors"), content).unwrap();
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(content));
    let register = |file: &str, sha: &str, size: usize| {
        json!({"lease_token": token, "file_name": file, "epoch": 1, "batch": 0, "step": 10,
               "sha256": sha, "size": size})
    };
    let uri = format!("/v1/worker/jobs/{job}/checkpoints");
    for bad in [
        "../attempt-2/epoch-0001.safetensors",
        "/etc/passwd",
        ".hidden",
        "a/b",
        "",
    ] {
        let reply = app.post(&uri, register(bad, &digest, content.len())).await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, bad);
    }
    let missing = app
        .post(&uri, register("epoch-0002.safetensors", &digest, 1))
        .await;
    assert_problem(&missing, StatusCode::UNPROCESSABLE_ENTITY, "missing file");
    let wrong = app
        .post(
            &uri,
            register("epoch-0001.safetensors", &"0".repeat(64), content.len()),
        )
        .await;
    assert_problem(&wrong, StatusCode::UNPROCESSABLE_ENTITY, "wrong digest");
    let ok = app
        .post(
            &uri,
            register("epoch-0001.safetensors", &digest, content.len()),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());
    let checkpoint_id = ok.json()["id"].as_str().unwrap().to_string();
    // A stale token is refused.
    let stale = app
        .post(&uri, json!({"lease_token": "01a21a64-27b3-72c4-b1b6-317c64c6a598", "file_name": "epoch-0001.safetensors",
            "epoch": 1, "batch": 0, "step": 10, "sha256": digest, "size": content.len()}))
        .await;
    assert_problem(&stale, StatusCode::CONFLICT, "stale token");
    // The file is served back byte for byte.
    let file = app
        .get(&format!("/v1/checkpoints/{checkpoint_id}/file"))
        .await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.body, content);
    // Metrics reported by the worker are served as JSON and CSV, and drawn.
    let events = json!({"lease_token": token, "events": [
        {"type": "epoch", "epoch": 1, "records": [
            {"name": "accuracy", "split": "test", "epoch": 1, "value": 0.5},
            {"name": "loss", "split": "test", "epoch": 1, "value": 1.5},
            {"name": "intermediate_accuracy", "split": "test", "epoch": 1, "block": "s2.b0", "block_index": 2, "value": 0.4}]},
        {"type": "log", "level": "info", "message": "epoch 1 done <b>"}]});
    let reply = app
        .post(&format!("/v1/worker/jobs/{job}/events"), events)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    let metrics = app
        .get(&format!(
            "/v1/runs/{run_id}/metrics?name=accuracy&split=test"
        ))
        .await
        .json();
    assert_eq!(
        metrics,
        json!([{"name": "accuracy", "split": "test", "epoch": 1, "value": 0.5}])
    );
    let csv = app
        .send(
            Request::builder()
                .uri(format!("/v1/runs/{run_id}/metrics?name=loss"))
                .header(header::ACCEPT, "text/csv")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(csv.content_type.starts_with("text/csv"));
    assert_eq!(
        csv.text(),
        "name,split,epoch,block,block_index,value\nloss,test,1,,,1.5\n"
    );
    let figures = app.get(&format!("/v1/runs/{run_id}/figures")).await.json();
    let names = figures["figures"].as_array().unwrap();
    assert!(
        names.iter().any(|n| n == "fig5_intermediate_resnet-8"),
        "{figures}"
    );
    let svg = app
        .get(&format!(
            "/v1/runs/{run_id}/figures/fig5_intermediate_resnet-8.svg"
        ))
        .await;
    assert_eq!(svg.content_type, "image/svg+xml");
    assert!(svg.text().starts_with("<svg"));
    let png = app
        .get(&format!(
            "/v1/runs/{run_id}/figures/fig5_intermediate_resnet-8.png"
        ))
        .await;
    assert_eq!(png.content_type, "image/png");
    assert!(png.body.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", png.text());
    let pdf = app
        .get(&format!(
            "/v1/runs/{run_id}/figures/fig5_intermediate_resnet-8.pdf"
        ))
        .await;
    assert_problem(&pdf, StatusCode::NOT_FOUND, "another format");
    assert!(
        pdf.text().contains("{name}.svg or {name}.png"),
        "{}",
        pdf.text()
    );
    assert_problem(
        &app.get(&format!("/v1/runs/{run_id}/figures/fig99.svg"))
            .await,
        StatusCode::NOT_FOUND,
        "no figure",
    );
    let logs = app.get(&format!("/v1/runs/{run_id}/logs")).await.json();
    assert!(logs
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["message"] == "epoch 1 done <b>"));
    // Deleting a running run is refused; once cancelled (its worker stopped and released
    // it) it goes with its files.
    assert_problem(
        &app.call(Method::DELETE, &format!("/v1/runs/{run_id}"), None)
            .await,
        StatusCode::CONFLICT,
        "delete running",
    );
    assert_eq!(
        app.call(Method::POST, &format!("/v1/runs/{run_id}/cancel"), None)
            .await
            .json()["status"],
        "cancelling"
    );
    let done = app
        .post(
            &format!("/v1/worker/jobs/{job}/release"),
            json!({"lease_token": token}),
        )
        .await;
    assert_eq!(done.json()["state"], "cancelled");
    let deleted = app
        .call(Method::DELETE, &format!("/v1/runs/{run_id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(!app
        .checkpoints
        .path()
        .join(format!("runs/{run_id}"))
        .exists());
    assert_problem(
        &app.get(&format!("/v1/checkpoints/{checkpoint_id}/file"))
            .await,
        StatusCode::NOT_FOUND,
        "deleted checkpoint",
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn runs_named_together_are_drawn_as_their_configurations(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    // Two seeds of one recipe and the same model at another learning rate, each trained
    // for an epoch by a worker that reports the head's accuracy at a last-stage block.
    let mut ids = vec![];
    for (name, seed, lr) in [("a", 0, 0.1), ("b", 1, 0.1), ("slow run/1", 0, 0.05)] {
        let mut body = run_body(1);
        body["spec"]["name"] = json!(name);
        body["spec"]["train"]["seed"] = json!(seed);
        body["spec"]["train"]["schedule"] = json!({"lr": lr});
        let run = app.post("/v1/runs", body).await;
        assert_eq!(run.status, StatusCode::CREATED, "{}", run.text());
        ids.push(run.json()["id"].as_str().unwrap().to_string());
        let claim = app.claim("train", "w").await;
        let events = json!({"lease_token": claim["lease_token"], "events": [
            {"type": "epoch", "epoch": 1, "records": [
                {"name": "accuracy", "split": "test", "epoch": 1, "value": 0.5},
                {"name": "intermediate_accuracy", "split": "test", "epoch": 1,
                 "block": "s2.b0", "block_index": 2, "value": 0.4 + seed as f64 / 10.0}]}]});
        let job = claim["job_id"].as_str().unwrap();
        let reply = app
            .post(&format!("/v1/worker/jobs/{job}/events"), events)
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    }
    let all = ids.join(",");
    let listed = app.get(&format!("/v1/figures?runs={all}")).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    let names = listed.json()["figures"].clone();
    // The seeds are one configuration, named by its first run; the other recipe apart, its
    // name as a file's name can hold it.
    for figure in [
        "curves",
        "fig5_intermediate_a",
        "fig5_intermediate_slow-run-1",
    ] {
        assert!(
            names.as_array().unwrap().contains(&json!(figure)),
            "{names}"
        );
    }
    assert!(!names
        .as_array()
        .unwrap()
        .contains(&json!("fig5_intermediate_b")));
    let svg = app
        .get(&format!("/v1/figures/fig5_intermediate_a.svg?runs={all}"))
        .await;
    assert_eq!(svg.content_type, "image/svg+xml");
    assert!(svg.text().contains("a: head on each last-stage block"));
    // One run alone is drawn as its own page draws it.
    let one = app
        .get(&format!("/v1/figures?runs={}", ids[2]))
        .await
        .json();
    let alone = app
        .get(&format!("/v1/runs/{}/figures", ids[2]))
        .await
        .json();
    assert_eq!(one, alone);

    for (query, status, what) in [
        (String::new(), StatusCode::BAD_REQUEST, "no runs parameter"),
        ("?runs=".into(), StatusCode::BAD_REQUEST, "no run"),
        ("?runs=abc".into(), StatusCode::BAD_REQUEST, "not an id"),
        (
            format!("?runs={},{}", ids[0], ids[0]),
            StatusCode::BAD_REQUEST,
            "twice",
        ),
        (
            format!("?runs={}", uuid::Uuid::now_v7()),
            StatusCode::NOT_FOUND,
            "no such run",
        ),
    ] {
        assert_problem(&app.get(&format!("/v1/figures{query}")).await, status, what);
    }
}

/// The runs an experiment's claims leave out (all of configuration `resnet-8`), with why.
async fn left_out(app: &TestApp, experiment: &str) -> Vec<(String, String)> {
    let claims = app
        .get(&format!("/v1/experiments/{experiment}/claims"))
        .await
        .json();
    let text = |v: &Value| v.as_str().unwrap().to_string();
    claims["left_out"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|l| assert_eq!(l["configuration"], "resnet-8", "{claims}"))
        .map(|l| (text(&l["run_id"]), text(&l["reason"])))
        .collect()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn blocks_are_summarised_over_the_seeds_of_each_configuration(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let experiment = app.submit_experiment("seeds", &[0, 1, 2]).await;
    let block = |name: &str, split: &str, index: u32, value: f64| {
        let kind = if index == 0 { "identity" } else { "projection" };
        json!({"name": name, "split": split, "epoch": 1, "block": format!("s{index}.b0"),
            "block_index": index, "kind": kind, "stat": "mean", "value": value, "n": 10})
    };
    let analysis = |cosine: f64| {
        let mut median = block("cosine", "test", 0, 9.0);
        median["stat"] = json!("median");
        json!({"selected_alpha": null, "notes": [], "examples": [], "seconds": 1.0,
            "records": [block("cosine", "test", 0, cosine), median,
                block("cosine", "train", 0, -0.5), block("l2_ratio", "test", 1, 0.5)]})
    };
    // Two seeds trained and analysed; the third, still training, analysed at its initial
    // weights (epoch 0): set aside until it catches up.
    let mut runs = vec![];
    for cosine in [-0.1, -0.3] {
        runs.push(app.train_and_analyse(json!([]), analysis(cosine)).await);
    }
    let training = app.start_training(json!([])).await;
    app.register_checkpoint(&training, 0).await;
    let behind = training["run_id"].as_str().unwrap();
    app.analyse(behind, json!({"epoch": 0}), analysis(5.0))
        .await;
    let third = app.get(&format!("/v1/runs/{behind}/analyses")).await.json();
    assert_eq!(third[0]["status"], "succeeded", "{third}");
    // An analyzer that sends no passes' times (one older than them) is taken.
    assert_eq!(third[0]["passes"], json!([]), "{third}");
    // The claims pool the same seeds: counted in, its positive cosine would turn C1.
    let c1 = app.verdict(&experiment, "C1").await;
    assert_eq!(c1["holds"], true, "{c1}");
    let behind_epoch = "analysed only up to epoch 0, behind another seed's epoch 1";
    assert_eq!(
        left_out(&app, &experiment).await,
        [(behind.to_string(), behind_epoch.to_string())]
    );
    // The report says as much, as `stepwise run` writes one.
    let report = app
        .get(&format!("/v1/experiments/{experiment}/report.md"))
        .await;
    assert_eq!(report.content_type, "text/markdown; charset=utf-8");
    let report = report.text();
    for expected in [
        "# Experiment `seeds`",
        &format!("from experiment {experiment} at "),
        "2 of 3 runs succeeded",
        "| resnet-8 | ",
        "| C1 | resnet-8 | yes | 1 of 1 identity blocks negative",
        &format!("figures: run seeds/resnet-8/seed2 of resnet-8, {behind_epoch}."),
        "](figures/fig2_cosine.svg)", // relative to the report: the experiment's figures
        "[blocks](blocks)",
    ] {
        assert!(report.contains(expected), "{expected}\n{report}");
    }
    let rows = app
        .get(&format!("/v1/experiments/{experiment}/blocks"))
        .await
        .json();
    let brief: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {} {} {:.4} {:.4}",
                r["configuration"].as_str().unwrap(),
                r["epoch"],
                r["name"].as_str().unwrap(),
                r["split"].as_str().unwrap(),
                r["block"].as_str().unwrap(),
                r["kind"].as_str().unwrap(),
                r["runs"],
                r["mean"].as_f64().unwrap(),
                r["sd"].as_f64().unwrap()
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            "resnet-8 1 cosine test s0.b0 identity 2 -0.2000 0.1414",
            "resnet-8 1 cosine train s0.b0 identity 2 -0.5000 0.0000",
            "resnet-8 1 l2_ratio test s1.b0 projection 2 0.5000 0.0000",
        ]
    );
    // The same runs named together are one configuration's seeds, summarised alike, also
    // with the parameter repeated; the one behind alone is its own latest.
    for query in [
        format!("runs={},{},{behind}", runs[0], runs[1]),
        format!("runs={}&runs={}", runs[0], runs[1]),
    ] {
        let together = app.get(&format!("/v1/blocks?{query}")).await;
        assert_eq!(together.status, StatusCode::OK, "{}", together.text());
        assert_eq!(together.json(), rows, "{query}");
    }
    let csv = app
        .send(
            Request::get(format!("/v1/experiments/{experiment}/blocks"))
                .header(header::ACCEPT, "text/csv")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(csv.content_type.starts_with("text/csv"));
    let lines: Vec<String> = csv.text().lines().map(String::from).collect();
    assert_eq!(
        lines[0],
        "configuration,epoch,name,split,block,block_index,kind,runs,mean,sd"
    );
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[3].starts_with("resnet-8,1,l2_ratio,test,s1.b0,1,projection,2,0.5,"));

    // The second seed analysed again at the same epoch with the `skip` gradient — another
    // cosine — is not averaged with the first seed's: one seed each way, the first listed
    // decides. Its positive cosine would otherwise make C1 fail.
    let skip = json!({"epoch": 1, "spec": {"gradient": "skip"}});
    app.analyse(&runs[1], skip, analysis(0.9)).await;
    let rows = app
        .get(&format!("/v1/experiments/{experiment}/blocks"))
        .await
        .json();
    assert_eq!(rows[0]["runs"], 1, "{rows}");
    assert_eq!(rows[0]["mean"], -0.1, "{rows}");
    let c1 = app.verdict(&experiment, "C1").await;
    assert_eq!(c1["holds"], true, "{c1}");
    // Which seeds are left out, and why: in the claims (as `experiment show` prints them)
    // and on the experiment's page.
    let other = "analysed with other settings (gradient, window, margin or unrolling) than \
                 most seeds at the latest analysed epoch";
    assert_eq!(
        left_out(&app, &experiment).await,
        [
            (runs[1].clone(), other.to_string()),
            (behind.to_string(), behind_epoch.to_string()),
        ]
    );
    // And in the figures' lists, which `stepwise figures` reads.
    for figures in [
        format!("/v1/experiments/{experiment}/figures"),
        format!("/v1/figures?runs={},{},{behind}", runs[0], runs[1]),
    ] {
        let listed = app.get(&figures).await.json();
        let reasons: Vec<&str> = listed["left_out"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["reason"].as_str().unwrap())
            .collect();
        assert_eq!(reasons, [other, behind_epoch], "{figures}: {listed}");
        assert!(!listed["figures"].as_array().unwrap().is_empty());
    }
    let compare = format!("/compare?runs={},{},{behind}", runs[0], runs[1]);
    let html = app.get(&compare).await.text();
    assert_eq!(
        html.matches("its analysis left out of the block-wise figures and tables: ")
            .count(),
        2,
        "{html}"
    );
    let escaped = behind_epoch.replace('\'', "&#39;");
    assert!(html.contains(&escaped), "{html}");
    let html = app.get(&format!("/experiments/{experiment}")).await.text();
    assert!(
        html.contains(&format!(
            r#"<a href="/runs/{behind}">seeds/resnet-8/seed2</a>: analysed only up to epoch 0"#
        )),
        "{html}"
    );

    for (uri, status, what) in [
        ("/v1/blocks".to_string(), StatusCode::BAD_REQUEST, "no runs"),
        (
            format!("/v1/blocks?runs={}&name=cosine", runs[0]),
            StatusCode::BAD_REQUEST,
            "unknown parameter",
        ),
        (
            format!("/v1/blocks?runs={}", uuid::Uuid::now_v7()),
            StatusCode::NOT_FOUND,
            "no such run",
        ),
        (
            format!("/v1/experiments/{}/blocks", uuid::Uuid::now_v7()),
            StatusCode::NOT_FOUND,
            "no such experiment",
        ),
    ] {
        assert_problem(&app.get(&uri).await, status, what);
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn openapi_docs_metrics_and_datasets_are_served(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let doc = app.get("/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/runs",
        "/v1/runs/{id}/metrics",
        "/v1/worker/claim",
        "/v1/worker/jobs/{id}/refuse",
        "/v1/experiments/{id}/figures/{file}",
        "/v1/figures/{file}",
        "/v1/experiments/{id}/claims",
        "/v1/experiments/{id}/report.md",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    // The upload is a form of a JSON part and a file, which Swagger UI offers to send.
    let form = &doc["paths"]["/v1/runs/import"]["post"]["requestBody"]["content"]
        ["multipart/form-data"]["schema"];
    let form = match form.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => form,
    };
    assert_eq!(form["properties"]["weights"]["format"], "binary", "{form}");
    assert!(form["properties"]["submission"].is_object(), "{form}");
    // An analysis' records are sliced by query parameters Swagger UI offers.
    let params = doc["paths"]["/v1/analyses/{id}"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["id", "name", "split", "block", "group", "alpha", "step", "stat"]
    );
    assert!(params[1..].iter().all(|p| p["in"] == "query"), "{params:?}");
    let docs = app.get("/docs/").await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text().contains("swagger"), "{}", docs.text());
    let datasets = app.get("/v1/datasets").await.json();
    assert_eq!(datasets[0], json!({"name": "shapes10", "present": false}));
    app.post("/v1/runs", run_body(1)).await;
    app.post("/v1/runs", run_body(1)).await;
    app.claim("train", "w").await;
    let metrics = app.get("/metrics").await.text();
    assert!(
        metrics.contains(r#"stepwise_jobs{kind="train",state="queued"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stepwise_workers_live{kind="train",memory="host"} 1"#),
        "{metrics}"
    );
    // How long the queue has kept its oldest job: of train jobs only (no analysis queued).
    let waited: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"stepwise_queue_wait_seconds{kind="train"} "#))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap();
    assert!((0.0..60.0).contains(&waited), "{metrics}");
    assert!(
        !metrics.contains(r#"queue_wait_seconds{kind="analyze"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"route="/v1/runs""#), "{metrics}");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn experiments_aggregate_their_runs(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let id = app.submit_experiment("demo", &[0, 1]).await;
    let view = app.get(&format!("/v1/experiments/{id}")).await.json();
    assert_eq!(view["runs"].as_array().unwrap().len(), 2);
    assert_eq!(view["configs"][0]["label"], "resnet-8");
    let runs = app
        .get(&format!("/v1/runs?experiment={id}&limit=1"))
        .await
        .json();
    assert_eq!(runs["items"].as_array().unwrap().len(), 1);
    let cursor = runs["next_cursor"].as_str().unwrap();
    let rest = app
        .get(&format!("/v1/runs?experiment={id}&cursor={cursor}"))
        .await
        .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
    // By name: the experiment, and one of its runs (names are URL-encoded by clients).
    let named = app.get("/v1/experiments?name=demo").await.json();
    assert_eq!(named["items"][0]["id"], id.as_str());
    let none = app.get("/v1/experiments?name=dem").await.json();
    assert_eq!(none["items"], json!([]));
    let run = app
        .get("/v1/runs?name=demo%2Fresnet-8%2Fseed1")
        .await
        .json();
    assert_eq!(run["items"].as_array().unwrap().len(), 1);
    assert_eq!(run["items"][0]["name"], "demo/resnet-8/seed1");
    let figures = app
        .get(&format!("/v1/experiments/{id}/figures"))
        .await
        .json();
    assert_eq!(figures, json!({"figures": [], "left_out": []}));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_experiment_is_cancelled_and_retried_as_a_whole(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let id = app.submit_experiment("whole", &[0, 1]).await;
    let cancelled = app
        .post(&format!("/v1/experiments/{id}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    assert_eq!(run_statuses(&cancelled.json()), ["cancelled", "cancelled"]);
    let again = app
        .post(&format!("/v1/experiments/{id}/cancel"), json!({}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        again.text().contains("no queued or running runs"),
        "{}",
        again.text()
    );
    let retried = app
        .post(&format!("/v1/experiments/{id}/retry"), json!({}))
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text());
    assert_eq!(run_statuses(&retried.json()), ["queued", "queued"]);
    let again = app
        .post(&format!("/v1/experiments/{id}/retry"), json!({}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let unknown = uuid::Uuid::now_v7();
    let missing = app
        .post(&format!("/v1/experiments/{unknown}/cancel"), json!({}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_experiment_is_deleted_with_its_runs_and_files_once_nothing_runs(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let id = app.submit_experiment("doomed", &[0, 1]).await;
    let claim = app.claim("train", "w").await;
    let files = app
        .checkpoints
        .path()
        .join(claim["directory"].as_str().unwrap());
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("epoch-0001.safetensors"), b"weights").unwrap();
    let uri = format!("/v1/experiments/{id}");
    // A worker may still write into a run's directory: refused while it runs, and while
    // it is being cancelled.
    let refused = app.call(Method::DELETE, &uri, None).await;
    assert_problem(&refused, StatusCode::CONFLICT, "delete while running");
    assert!(
        refused.text().contains("a job running"),
        "{}",
        refused.text()
    );
    app.post(&format!("{uri}/cancel"), json!({})).await;
    let refused = app.call(Method::DELETE, &uri, None).await;
    assert_problem(&refused, StatusCode::CONFLICT, "delete while cancelling");
    let (job, token) = (
        claim["job_id"].as_str().unwrap(),
        claim["lease_token"].as_str().unwrap(),
    );
    let stopped = app
        .post(
            &format!("/v1/worker/jobs/{job}/release"),
            json!({"lease_token": token}),
        )
        .await;
    assert_eq!(stopped.json()["state"], "cancelled", "{}", stopped.text());
    let deleted = app.call(Method::DELETE, &uri, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
    assert!(!files.exists(), "the run's files are deleted with it");
    assert_problem(
        &app.get(&uri).await,
        StatusCode::NOT_FOUND,
        "deleted experiment",
    );
    let runs = app.get(&format!("/v1/runs?experiment={id}")).await.json();
    assert_eq!(runs["items"], json!([]));
}

/// A POST of a form (its content type and body, from [`form`]) with an idempotency key.
fn form_request(
    uri: &str,
    (content_type, body): (String, Vec<u8>),
    key: Option<&str>,
) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, content_type);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.body(Body::from(body)).unwrap()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn uploaded_weights_become_a_run_whose_train_job_imports_them(pool: PgPool) {
    use sha2::Digest;
    let app = spawn_app(
        pool,
        &[
            ("STEPWISE_MAX_UPLOAD_BYTES", "4096"),
            ("STEPWISE_MAX_BODY_BYTES", "2048"),
        ],
    );
    let upload = |parts: &[(&str, Option<&str>, &[u8])], key: Option<&str>| {
        app.send(form_request("/v1/runs/import", multipart(parts), key))
    };
    // The API checks only that the file begins as safetensors (or a zip) does: whether the
    // tensors are the model's is the trainer's to find (tested in `trainer` and the CLI).
    let mut weights = 20u64.to_le_bytes().to_vec();
    weights.extend_from_slice(br#"{"__metadata__":{}}"#);
    weights.extend_from_slice(&[0; 100]);
    let mut submission = run_body(3);
    submission["strip_prefix"] = json!("module.");
    let text = submission.to_string();
    let parts = [
        ("submission", None, text.as_bytes()),
        ("weights", Some("r8 (trained).safetensors"), &weights[..]),
    ];

    let created = upload(&parts, Some("import-1")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let run = created.json();
    let id = run["id"].as_str().unwrap();
    let sha256 = hex::encode(sha2::Sha256::digest(&weights));
    assert_eq!(
        run["weights"],
        json!({"file_name": "r8 (trained).safetensors", "path": format!("runs/{id}/weights"),
               "sha256": sha256, "size": weights.len(), "key": null, "strip_prefix": "module."})
    );
    assert_eq!(
        (run["status"].as_str(), run["epochs"].as_u64()),
        (Some("queued"), Some(3))
    );
    let stored = app.checkpoints.path();
    assert_eq!(
        std::fs::read(stored.join(format!("runs/{id}/weights"))).unwrap(),
        weights
    );
    let page = app.get(&format!("/runs/{id}")).await.text();
    assert!(
        page.contains("Made of uploaded weights: <code>r8 (trained).safetensors</code>"),
        "{page}"
    );
    // Repeated with its key: the same run, and no second file.
    let replayed = upload(&parts, Some("import-1")).await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.text());
    assert_eq!(replayed.json()["id"], run["id"]);
    assert_eq!(files_below(stored), [format!("runs/{id}/weights")]);

    // Its train job's claim names the file; analyze claims do not.
    let claim = app.claim("train", "w").await;
    assert_eq!(claim["run_id"], run["id"]);
    assert_eq!(claim["weights"], run["weights"]);

    // Bad forms: refused, and nothing is left behind in the checkpoint store.
    let json_body = app.post("/v1/runs/import", submission.clone()).await;
    assert_problem(&json_body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "JSON body");
    let swapped = upload(&[parts[1], parts[0]], None).await;
    assert_problem(&swapped, StatusCode::BAD_REQUEST, "weights first");
    assert!(
        swapped.text().contains("expected the part `submission`"),
        "{}",
        swapped.text()
    );
    let missing = upload(&parts[..1], None).await;
    assert_problem(&missing, StatusCode::BAD_REQUEST, "no weights");
    assert!(
        missing.text().contains("`weights` is missing"),
        "{}",
        missing.text()
    );
    let extra = upload(&[parts[0], parts[1], ("notes", None, b"hi")], None).await;
    assert_problem(&extra, StatusCode::BAD_REQUEST, "a third part");
    let mut bad_spec = submission.clone();
    bad_spec["spec"]["model"]["depth"] = json!(9);
    bad_spec["analysis"]["checkpoints"] = json!({"every": 1});
    let bad_text = bad_spec.to_string();
    let invalid = upload(&[("submission", None, bad_text.as_bytes()), parts[1]], None).await;
    assert_problem(
        &invalid,
        StatusCode::UNPROCESSABLE_ENTITY,
        "bad spec and plan",
    );
    let problem = invalid.json();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["spec.model.depth", "analysis.checkpoints"]);
    let text_file = upload(
        &[parts[0], ("weights", Some("notes.txt"), b"epoch 3: 91%")],
        None,
    )
    .await;
    assert_problem(&text_file, StatusCode::UNPROCESSABLE_ENTITY, "not weights");
    assert!(
        text_file.text().contains("neither safetensors nor"),
        "{}",
        text_file.text()
    );
    let large = [b' '; 5000];
    let too_large = upload(&[parts[0], ("weights", Some("big.pt"), &large[..])], None).await;
    assert_problem(
        &too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "over the upload limit",
    );
    // The submission is held in memory, within the limit of any JSON body.
    let padded = format!("{text}{}", " ".repeat(3000));
    let long = upload(&[("submission", None, padded.as_bytes()), parts[1]], None).await;
    assert_problem(
        &long,
        StatusCode::PAYLOAD_TOO_LARGE,
        "a submission over the body limit",
    );
    let reused_key = upload(
        &[parts[0], ("weights", Some("w"), &weights[..50])],
        Some("import-1"),
    )
    .await;
    assert_problem(
        &reused_key,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the key of other weights",
    );
    assert_eq!(files_below(stored), [format!("runs/{id}/weights")]);
    let runs = app.get("/v1/runs").await.json();
    assert_eq!(runs["items"].as_array().unwrap().len(), 1);

    // Deleted with its run once nothing runs.
    let (job, token) = (
        claim["job_id"].as_str().unwrap(),
        claim["lease_token"].as_str().unwrap(),
    );
    app.post(&format!("/v1/runs/{id}/cancel"), json!({})).await;
    app.post(
        &format!("/v1/worker/jobs/{job}/release"),
        json!({"lease_token": token}),
    )
    .await;
    let deleted = app
        .call(Method::DELETE, &format!("/v1/runs/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
    assert!(files_below(stored).is_empty(), "{:?}", files_below(stored));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn weights_an_api_died_placing_are_kept_or_removed_by_whether_their_run_committed(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone(), &[]);
    let store = store::Store::from_pool(pool);
    let dir = app.checkpoints.path();
    let mut weights = 19u64.to_le_bytes().to_vec();
    weights.extend_from_slice(br#"{"__metadata__":{}}"#);
    let text = run_body(3).to_string();
    let parts = [
        ("submission", None, text.as_bytes()),
        ("weights", Some("w.safetensors"), &weights[..]),
    ];
    let created = app
        .send(form_request("/v1/runs/import", multipart(&parts), None))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let committed = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        files_below(dir),
        [format!("runs/{committed}/weights")],
        "no marker once the row is committed"
    );

    // What an API killed while placing leaves: a marker in uploads/ and the run's weights,
    // committed (the row exists) or not (it never will).
    let database = store.identity().await.unwrap().to_string();
    // `written_for`: the database the marker names (none, as markers written before they
    // named one).
    let marker = |id: &str, days: u64, written_for: &str| {
        let path = dir.join(format!("uploads/placing-{id}"));
        std::fs::write(&path, written_for).unwrap();
        let file = std::fs::File::options().append(true).open(path).unwrap();
        let age = std::time::Duration::from_secs(days * 24 * 3600);
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    };
    let placed = |id: &str, also: &[&str]| {
        for file in std::iter::once(&"weights").chain(also) {
            let path = dir.join(format!("runs/{id}/{file}"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, &weights).unwrap();
        }
    };
    let [lost, unnamed, odd, young, foreign] = [(); 5].map(|_| uuid::Uuid::now_v7().to_string());
    marker(&committed, 2, &database);
    placed(&lost, &[]);
    marker(&lost, 2, &database);
    placed(&unnamed, &[]);
    marker(&unnamed, 2, "");
    // No row, but more than weights in its directory: not what a placement leaves; kept.
    placed(&odd, &["attempt-1/epoch-0001.safetensors"]);
    marker(&odd, 2, &database);
    // Less than a day old: maybe an upload in progress on another replica.
    placed(&young, &[]);
    marker(&young, 0, &database);
    // Written for another database, where its row may well exist: not this API's to settle.
    placed(&foreign, &[]);
    marker(&foreign, 2, &uuid::Uuid::now_v7().to_string());

    let removed = api::routes::import::sweep_uploads(&store, dir)
        .await
        .unwrap();
    assert_eq!(removed, 2, "the lost run's weights, named or not");
    let mut kept = vec![
        format!("runs/{committed}/weights"),
        format!("runs/{odd}/attempt-1/epoch-0001.safetensors"),
        format!("runs/{odd}/weights"),
        format!("runs/{young}/weights"),
        format!("runs/{foreign}/weights"),
        format!("uploads/placing-{odd}"),
        format!("uploads/placing-{young}"),
        format!("uploads/placing-{foreign}"),
    ];
    kept.sort();
    assert_eq!(files_below(dir), kept);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_experiment_is_submitted_with_weights_for_some_of_its_runs(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let upload = |parts: &[(&str, Option<&str>, &[u8])], key: Option<&str>| {
        app.send(form_request(
            "/v1/experiments/import",
            multipart(parts),
            key,
        ))
    };
    let text = json!({"spec": {
        "name": "mixed", "seeds": [0, 1], "data": {"dataset": "shapes10"},
        "train": {"epochs": 2},
        "configs": [{"model": {"arch": "resnet", "depth": 8, "width": 4}}]}})
    .to_string();
    let weights = b"PK\x03\x04 a torch.save file".to_vec();
    let submission = ("submission", None, text.as_bytes());
    let seed1 = ("weights/resnet-8/1", Some("seed1.pt"), &weights[..]);

    let created = upload(&[submission, seed1], Some("mixed-1")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let view = created.json();
    let runs = view["runs"].as_array().unwrap();
    assert_eq!(runs[0]["weights"], Value::Null, "seed 0 trains");
    let run1 = runs[1]["id"].as_str().unwrap();
    assert_eq!(runs[1]["name"], "mixed/resnet-8/seed1");
    assert_eq!(runs[1]["weights"]["path"], format!("runs/{run1}/weights"));
    assert_eq!(runs[1]["weights"]["file_name"], "seed1.pt");
    let stored = app.checkpoints.path();
    assert_eq!(files_below(stored), [format!("runs/{run1}/weights")]);
    let page = app
        .get(&format!("/experiments/{}", view["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        page.text().matches(">imported</span>").count(),
        1,
        "{}",
        page.text()
    );
    let replayed = upload(&[submission, seed1], Some("mixed-1")).await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.text());
    assert_eq!(replayed.json()["id"], view["id"]);
    // The train claims: the imported run's names its file.
    let claims = [app.claim("train", "w").await, app.claim("train", "w").await];
    let claimed: Vec<&Value> = claims.iter().map(|c| &c["weights"]).collect();
    assert_eq!(claimed, [&Value::Null, &runs[1]["weights"]]);

    let refused = [
        (
            vec![submission, ("weights/resnet-8/2", Some("w"), &weights[..])],
            "names no run",
        ),
        (
            vec![submission, ("weights/resnet-20/0", Some("w"), &weights[..])],
            "names no run",
        ),
        (vec![submission, seed1, seed1], "two parts are named"),
        (vec![submission], "no weights"),
        (vec![seed1, submission], "expected the part `submission`"),
    ];
    for (parts, why) in refused {
        let reply = upload(&parts, None).await;
        assert_problem(&reply, StatusCode::BAD_REQUEST, why);
        assert!(reply.text().contains(why), "{}", reply.text());
    }
    assert_eq!(files_below(stored), [format!("runs/{run1}/weights")]);
    let experiments = app.get("/v1/experiments").await.json();
    assert_eq!(experiments["items"].as_array().unwrap().len(), 1);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_analysis_serves_the_records_its_query_names(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    app.submit_experiment("filtered", &[0]).await;
    let unrolled = |group: &str, step: u32, value: f64, n: u32| {
        json!({"name": "unroll_first_order", "split": "train", "epoch": 1, "group": group,
            "alpha": 0.05, "step": step, "stat": "mean", "value": value, "n": n})
    };
    let cosine = |stat: &str, value: f64| {
        json!({"name": "cosine", "split": "test", "epoch": 1, "block": "s0.b0",
            "block_index": 0, "kind": "identity", "stat": stat, "value": value, "n": 10})
    };
    let passes = json!([{"metrics": ["cosine"], "seconds": 0.25},
        {"metrics": ["unroll"], "seconds": 0.5}]);
    let records = json!([
        cosine("mean", -0.1),
        cosine("median", -0.2),
        unrolled("all", 0, 0.1, 10),
        unrolled("misclassified", 0, 0.4, 2),
        unrolled("misclassified", 1, 0.6, 2),
        unrolled("correct", 0, 0.025, 8)
    ]);
    let run = app
        .train_and_analyse(
            json!([]),
            json!({"selected_alpha": 0.05, "notes": [], "examples": [], "seconds": 1.0,
                "passes": passes, "records": records}),
        )
        .await;
    let analyses = app.get(&format!("/v1/runs/{run}/analyses")).await.json();
    let uri = format!("/v1/analyses/{}", analyses[0]["id"].as_str().unwrap());
    // With its passes' times.
    assert_eq!(app.get(&uri).await.json()["passes"], passes);
    let kept = |reply: Reply| reply.json()["records"].as_array().unwrap().clone();
    assert_eq!(
        kept(app.get(&uri).await),
        records.as_array().unwrap().clone()
    );
    let misclassified = app
        .get(&format!(
            "{uri}?name=unroll_first_order&group=misclassified&alpha=0.05&step=1"
        ))
        .await;
    assert_eq!(kept(misclassified), [records[4].clone()]);
    let csv = app
        .send(
            Request::get(format!("{uri}?block=s0.b0&stat=median&split=test"))
                .header(header::ACCEPT, "text/csv")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        csv.text(),
        "name,split,epoch,block,block_index,kind,group,alpha,step,stat,value,n\n\
         cosine,test,1,s0.b0,0,identity,,,,median,-0.2,10\n"
    );
    // A field of the query is named where it is wrong.
    for (query, detail) in [
        ("group=sideways", "group: unknown variant `sideways`"),
        ("step=-1", "step: invalid digit"),
        ("block=stage2", "block: "),
        (
            "colour=red",
            "colour: unknown field `colour`, expected one of `name`",
        ),
    ] {
        let reply = app.get(&format!("{uri}?{query}")).await;
        assert_problem(&reply, StatusCode::BAD_REQUEST, query);
        let problem = reply.json();
        let text = problem["detail"].as_str().unwrap();
        assert!(text.starts_with(detail), "{query}: {text}");
    }
    let metric = app.get(&format!("/v1/runs/{run}/metrics?name=speed")).await;
    assert_problem(&metric, StatusCode::BAD_REQUEST, "unknown metric");
    let text = metric.json()["detail"].as_str().unwrap().to_string();
    assert!(text.starts_with("name: unknown variant `speed`"), "{text}");
}
