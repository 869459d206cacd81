//! The worker protocol: claim a job, heartbeat, report events, register checkpoints,
//! complete, fail, refuse (too large for this worker) or release. Every write after the
//! claim carries the lease token; a stale one is answered 409 and the worker abandons the
//! job.

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Id, JsonBody};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::service::{
    CheckpointRegistration, CheckpointView, Claim, ClaimRequest, Completion, EventBatch,
    FailureReport, HeartbeatReply, JobState, LeaseProof, Refusal, WorkerEvent,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::io::Read;
use std::path::Path;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct JobStateReply {
    pub state: JobState,
}

#[utoipa::path(post, path = "/v1/worker/claim", tag = "worker", request_body = ClaimRequest,
    responses((status = 200, body = Claim), (status = 204, description = "nothing queued")))]
pub async fn claim(
    State(state): State<AppState>,
    body: JsonBody<ClaimRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    if req.kinds.is_empty() {
        return Err(ApiError::bad_request("give at least one job kind"));
    }
    if let Err(bad) = domain::spec::check_text(&req.worker, 200, false) {
        return Err(ApiError::bad_request(format!("worker: {bad}")));
    }
    match state
        .store
        .claim(&req.kinds, &req.worker, req.capacity, &state.config.lease)
        .await?
    {
        Some(claim) => Ok(Json(claim).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[utoipa::path(post, path = "/v1/worker/jobs/{id}/heartbeat", tag = "worker",
    params(("id" = uuid::Uuid, Path)), request_body = LeaseProof,
    responses((status = 200, body = HeartbeatReply), (status = 409, body = Problem)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    Id(job): Id,
    body: JsonBody<LeaseProof>,
) -> ApiResult<Json<HeartbeatReply>> {
    Ok(Json(
        state
            .store
            .heartbeat(job, body.value.lease_token, &state.config.lease)
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/worker/jobs/{id}/events", tag = "worker",
    params(("id" = uuid::Uuid, Path)), request_body = EventBatch,
    responses((status = 204), (status = 409, body = Problem)))]
pub async fn events(
    State(state): State<AppState>,
    Id(job): Id,
    body: JsonBody<EventBatch>,
) -> ApiResult<StatusCode> {
    let mut batch = body.value;
    if batch.events.len() > 10_000 {
        return Err(ApiError::bad_request("at most 10000 events per request"));
    }
    for event in &mut batch.events {
        if let WorkerEvent::Log { level, message } = event {
            for text in [level, message] {
                if let Cow::Owned(kept) = stored_text(text) {
                    *text = kept;
                }
            }
        }
    }
    state
        .store
        .record_events(job, batch.lease_token, &batch.events)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/worker/jobs/{id}/checkpoints", tag = "worker",
    params(("id" = uuid::Uuid, Path)), request_body = CheckpointRegistration,
    responses((status = 201, body = CheckpointView), (status = 409, body = Problem),
        (status = 422, description = "not a plain file name, missing, or not matching its size and digest", body = Problem)))]
pub async fn register_checkpoint(
    State(state): State<AppState>,
    Id(job): Id,
    body: JsonBody<CheckpointRegistration>,
) -> ApiResult<Response> {
    let reg = body.value;
    if !domain::service::is_plain_file_name(&reg.file_name) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "file_name must be a plain file name inside the attempt's directory (1-128 of A-Z, a-z, 0-9, '.', '_', '-', not starting with '.')",
        ));
    }
    // The lease is checked before the file is read, and again when the row is written.
    let leased = state.store.check_lease(job, reg.lease_token).await?;
    let path = state
        .config
        .checkpoint_dir
        .join(&leased.directory)
        .join(&reg.file_name);
    let (size, sha256) = tokio::task::spawn_blocking(move || digest(&path))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    if size != reg.size || sha256 != reg.sha256 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{} holds {size} bytes with sha256 {sha256}; the registration says {} bytes, {}",
                reg.file_name, reg.size, reg.sha256
            ),
        ));
    }
    let view = state
        .store
        .register_checkpoint(job, &reg, &state.config.lease)
        .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Size and SHA-256 of a file in the checkpoint store.
fn digest(path: &Path) -> Result<(u64, String), String> {
    let mut file = std::fs::File::open(path).map_err(|e| {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        format!("{}: {e}", name.unwrap_or_default())
    })?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

#[utoipa::path(post, path = "/v1/worker/jobs/{id}/complete", tag = "worker",
    params(("id" = uuid::Uuid, Path)), request_body = Completion,
    responses((status = 200, description = "succeeded: the work is done (a worker stopped early by a cancel releases the job)", body = JobStateReply),
        (status = 409, body = Problem)))]
pub async fn complete(
    State(state): State<AppState>,
    Id(job): Id,
    body: JsonBody<Completion>,
) -> ApiResult<Json<JobStateReply>> {
    let c = body.value;
    let state = state
        .store
        .complete(job, c.lease_token, c.analysis.as_ref())
        .await?;
    Ok(Json(JobStateReply { state }))
}

/// A worker's text (an error, a log line) as the database keeps it: its first 10,000
/// characters, a NUL (which PostgreSQL's text cannot hold) replaced by U+FFFD — a worker
/// reports what it was told, and a failure must not fail to be recorded.
fn stored_text(text: &str) -> Cow<'_, str> {
    let kept = text
        .char_indices()
        .nth(10_000)
        .map_or(text, |(end, _)| &text[..end]);
    if kept.contains('\0') {
        Cow::Owned(kept.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(kept)
    }
}

#[utoipa::path(post, path = "/v1/worker/jobs/{id}/fail", tag = "worker",
    params(("id" = uuid::Uuid, Path)), request_body = FailureReport,
    responses((status = 200, description = "failed, or queued again for infrastructure failures with attempts left", body = JobStateReply),
        (status = 409, body = Problem)))]
pub async fn fail(
    State(state): State<AppState>,
    Id(job): Id,
    body: JsonBody<FailureReport>,
) -> ApiResult<Json<JobStateReply>> {
    let f = body.value;
    let state = state
        .store
        .fail(job, f.lease_token, f.kind, &stored_text(&f.error))
        .await?;
    Ok(Json(JobStateReply { state }))
}

#[utoipa::path(post, path = "/v1/worker/jobs/{id}/refuse", tag = "worker",
    params(("id" = uuid::Uuid, Path)), request_body = Refusal,
    responses((status = 200, description = "queued again for a worker with more memory, or failed (invalid) when no worker seen lately has enough", body = JobStateReply),
        (status = 409, body = Problem)))]
pub async fn refuse(
    State(state): State<AppState>,
    Id(job): Id,
    body: JsonBody<Refusal>,
) -> ApiResult<Json<JobStateReply>> {
    let r = body.value;
    let state = state
        .store
        .refuse(
            job,
            r.lease_token,
            r.memory,
            r.need_mib,
            &stored_text(&r.error),
        )
        .await?;
    Ok(Json(JobStateReply { state }))
}

#[utoipa::path(post, path = "/v1/worker/jobs/{id}/release", tag = "worker",
    params(("id" = uuid::Uuid, Path)), request_body = LeaseProof,
    responses((status = 200, description = "queued again without counting a failure, or cancelled if the user cancelled it", body = JobStateReply),
        (status = 409, body = Problem)))]
pub async fn release(
    State(state): State<AppState>,
    Id(job): Id,
    body: JsonBody<LeaseProof>,
) -> ApiResult<Json<JobStateReply>> {
    let state = state.store.release(job, body.value.lease_token).await?;
    Ok(Json(JobStateReply { state }))
}

#[cfg(test)]
mod tests {
    use super::stored_text;

    #[test]
    fn stored_text_keeps_the_first_ten_thousand_characters_without_nul() {
        assert_eq!(stored_text("out of memory"), "out of memory");
        let long = "é".repeat(10_001);
        let kept = stored_text(&long);
        assert_eq!(kept.chars().count(), 10_000);
        assert!(long.starts_with(&*kept));
        assert_eq!(stored_text(&long[..20_000]).len(), 20_000);
        assert_eq!(stored_text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
    }
}
