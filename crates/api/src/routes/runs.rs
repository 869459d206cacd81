//! `/v1/runs`: submit, list, read, cancel, retry, delete; metric series, logs, attempts,
//! checkpoints.

use super::{created, idempotency, typed, wants};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Id, JsonBody, Query};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::service::{
    AttemptView, CheckpointView, JobState, LogLine, Page, RunSubmission, RunView,
};
use domain::{Arch, MetricName, MetricRecord, Split};
use serde::Deserialize;
use store::{Idempotency, RunFilter, Submitted};
use utoipa::IntoParams;

#[utoipa::path(post, path = "/v1/runs", tag = "runs", request_body = RunSubmission,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "the same key and body replay the first response; another body is 422")),
    responses((status = 201, body = RunView), (status = 200, description = "replayed", body = RunView),
        (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<RunSubmission>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, &body.sha256)?;
    let submitted = create(&state, &body.value, idem).await?;
    Ok(created(submitted, |r| format!("/v1/runs/{}", r.id)))
}

/// Checks a run's submission (its fields, then its dataset) and stores it with its `train`
/// job: the API's submission and the dashboard's.
pub async fn create(
    state: &AppState,
    submission: &RunSubmission,
    idem: Option<Idempotency>,
) -> ApiResult<Submitted<RunView>> {
    submission.validate().map_err(ApiError::invalid)?;
    super::datasets::check_run(state, &submission.spec).await?;
    Ok(state
        .store
        .submit_run(submission, idem.as_ref(), state.config.lease.max_attempts)
        .await?)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// queued, running, cancelling, succeeded, failed or cancelled
    status: Option<String>,
    /// resnet, single, avgpool or wide
    arch: Option<String>,
    /// Runs with this tag among theirs
    tag: Option<String>,
    /// An experiment's id: its runs
    experiment: Option<String>,
    /// A run's name, exactly (an experiment's runs are named `experiment/configuration/seedN`)
    name: Option<String>,
    /// `next_cursor` of the previous page
    cursor: Option<String>,
    /// 1 to 200 (default 50; larger values are clamped)
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(ListQuery),
    responses((status = 200, body = Page<RunView>), (status = 400, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<RunView>>> {
    let filter = RunFilter {
        name: name_filter(q.name)?,
        ..run_filter(
            q.status.as_deref(),
            q.arch.as_deref(),
            q.tag,
            q.experiment.as_deref(),
        )?
    };
    let cursor = crate::extract::parse_cursor(q.cursor.as_deref())?;
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    Ok(Json(state.store.list_runs(&filter, cursor, limit).await?))
}

/// The filter of a runs listing from its query parameters (the API's and the dashboard's).
pub fn run_filter(
    status: Option<&str>,
    arch: Option<&str>,
    tag: Option<String>,
    experiment: Option<&str>,
) -> ApiResult<RunFilter> {
    if let Some(Err(bad)) = tag.as_deref().map(domain::spec::check_tag) {
        return Err(ApiError::bad_request(format!("tag: {bad}")));
    }
    Ok(RunFilter {
        status: status
            .map(|s| s.parse::<JobState>())
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("status: {e}")))?,
        arch: arch
            .map(|a| a.parse::<Arch>())
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("arch: {e}")))?,
        tag,
        experiment: experiment.map(crate::extract::parse_id).transpose()?,
        name: None,
    })
}

/// A name to look up exactly; one no name can be (it holds a control character, say) is a
/// 400 rather than an empty page, and the database is never asked with a NUL.
pub fn name_filter(name: Option<String>) -> ApiResult<Option<String>> {
    if let Some(Err(bad)) = name
        .as_deref()
        .map(|n| domain::spec::check_text(n, 200, false))
    {
        return Err(ApiError::bad_request(format!("name: {bad}")));
    }
    Ok(name)
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = RunView), (status = 404, body = Problem)))]
pub async fn get(State(state): State<AppState>, Id(id): Id) -> ApiResult<Json<RunView>> {
    Ok(Json(state.store.run(id).await?))
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "cancelled, or cancelling until the worker's next heartbeat", body = RunView),
        (status = 409, body = Problem)))]
pub async fn cancel(State(state): State<AppState>, Id(id): Id) -> ApiResult<Json<RunView>> {
    Ok(Json(state.store.cancel_run(id).await?))
}

#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "queued again; resumes from its latest checkpoint", body = RunView),
        (status = 409, body = Problem)))]
pub async fn retry(State(state): State<AppState>, Id(id): Id) -> ApiResult<Json<RunView>> {
    Ok(Json(
        state
            .store
            .retry_run(id, state.config.lease.max_attempts)
            .await?,
    ))
}

#[utoipa::path(delete, path = "/v1/runs/{id}", tag = "runs", params(("id" = uuid::Uuid, Path)),
    responses((status = 204, description = "deleted with its files"), (status = 409, body = Problem)))]
pub async fn delete(State(state): State<AppState>, Id(id): Id) -> ApiResult<StatusCode> {
    let dir = state.store.delete_run(id).await?;
    remove_run_files(&state, &dir).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a deleted run's directory from the checkpoint store.
pub(crate) async fn remove_run_files(state: &AppState, dir: &str) {
    let path = state.config.checkpoint_dir.join(dir);
    match tokio::fs::remove_dir_all(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // The rows are gone; files left behind are unreachable, so say so and go on.
        Err(e) => tracing::warn!("deleting {}: {e}", path.display()),
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// loss, accuracy, intermediate_accuracy, grad_norm_ratio, …
    #[param(value_type = Option<String>)]
    name: Option<MetricName>,
    /// train or test
    #[param(value_type = Option<String>)]
    split: Option<Split>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/metrics", tag = "runs",
    params(("id" = uuid::Uuid, Path), MetricsQuery),
    responses((status = 200, description = "per-epoch records; CSV with Accept: text/csv",
        body = Vec<Object>), (status = 404, body = Problem)))]
pub async fn metrics(
    State(state): State<AppState>,
    Id(id): Id,
    Query(q): Query<MetricsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let records: Vec<MetricRecord> = state.store.metrics(id, q.name, q.split).await?;
    if wants(&headers, "text/csv") {
        return Ok(typed(
            "text/csv; charset=utf-8",
            domain::csv::metrics_csv(&records),
        ));
    }
    Ok(Json(records).into_response())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// The newest lines, 1 to 10000 (default 200).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/logs", tag = "runs",
    params(("id" = uuid::Uuid, Path), LogsQuery),
    responses((status = 200, description = "JSON, or lines with Accept: text/plain", body = Vec<LogLine>)))]
pub async fn logs(
    State(state): State<AppState>,
    Id(id): Id,
    Query(q): Query<LogsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let lines = state
        .store
        .logs(id, q.limit.unwrap_or(200).clamp(1, MAX_LOG_LINES))
        .await?;
    if wants(&headers, "text/plain") {
        return Ok(typed("text/plain; charset=utf-8", log_text(&lines)));
    }
    Ok(Json(lines).into_response())
}

/// The most log lines one request returns.
pub(crate) const MAX_LOG_LINES: u32 = 10_000;

/// Log lines as text, a line each: time, level, attempt, message.
pub(crate) fn log_text(lines: &[LogLine]) -> String {
    lines
        .iter()
        .map(|l| {
            let attempt = l.attempt.map_or(String::new(), |a| format!(" attempt {a}"));
            format!(
                "{} {}{attempt}: {}\n",
                l.at.to_rfc3339(),
                l.level,
                l.message
            )
        })
        .collect()
}

#[utoipa::path(get, path = "/v1/runs/{id}/attempts", tag = "runs",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "every claim of the run's jobs by a worker and how it ended, oldest first",
        body = Vec<AttemptView>), (status = 404, body = Problem)))]
pub async fn attempts(
    State(state): State<AppState>,
    Id(id): Id,
) -> ApiResult<Json<Vec<AttemptView>>> {
    Ok(Json(state.store.attempts(id).await?))
}

#[utoipa::path(get, path = "/v1/runs/{id}/checkpoints", tag = "runs",
    params(("id" = uuid::Uuid, Path)), responses((status = 200, body = Vec<CheckpointView>)))]
pub async fn checkpoints(
    State(state): State<AppState>,
    Id(id): Id,
) -> ApiResult<Json<Vec<CheckpointView>>> {
    Ok(Json(state.store.checkpoints(id).await?))
}
