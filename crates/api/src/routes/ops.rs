//! Operations: liveness, readiness (the database answers), Prometheus metrics.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = String), (status = 503, description = "the database does not answer")))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")))?;
    Ok("ready\n")
}

#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Without the database the request metrics are still worth serving.
    let counts = crate::telemetry::Counts {
        jobs: state.store.job_counts().await.unwrap_or_default(),
        queue_waits: state.store.queue_waits().await.unwrap_or_default(),
        workers: state.store.live_worker_counts().await.unwrap_or_default(),
    };
    Ok(super::typed(
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        state.telemetry.encode(&counts),
    ))
}
