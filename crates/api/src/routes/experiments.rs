//! `/v1/experiments`: configurations × seeds submitted at once, listed, read with
//! aggregates.

use super::{created, idempotency};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Id, JsonBody, Query};
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use domain::service::{ExperimentSubmission, ExperimentSummary, ExperimentView, Page};
use serde::Deserialize;
use utoipa::IntoParams;

#[utoipa::path(post, path = "/v1/experiments", tag = "experiments",
    request_body = ExperimentSubmission,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = ExperimentView), (status = 422, body = Problem)))]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<ExperimentSubmission>,
) -> ApiResult<Response> {
    let spec = body.value.spec;
    spec.validate().map_err(|e| {
        let mut e = e;
        for f in &mut e.0 {
            f.field = format!("spec.{}", f.field);
        }
        ApiError::invalid(e)
    })?;
    for (i, config) in spec.configs.iter().enumerate() {
        super::datasets::check(
            &state,
            &spec.data,
            config.model.classes,
            &format!("spec.configs[{i}]."),
        )
        .await?;
    }
    let idem = idempotency(&headers, &body.sha256)?;
    let submitted = state
        .store
        .submit_experiment(&spec, idem.as_ref(), state.config.lease.max_attempts)
        .await?;
    Ok(created(submitted, |e| format!("/v1/experiments/{}", e.id)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `next_cursor` of the previous page
    cursor: Option<String>,
    /// 1 to 200 (default 50; larger values are clamped)
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/experiments", tag = "experiments", params(ListQuery),
    responses((status = 200, description = "newest first, with run counts by outcome",
        body = Page<ExperimentSummary>), (status = 400, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<ExperimentSummary>>> {
    let cursor = crate::extract::parse_cursor(q.cursor.as_deref())?;
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    Ok(Json(state.store.list_experiments(cursor, limit).await?))
}

#[utoipa::path(get, path = "/v1/experiments/{id}", tag = "experiments",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "with its runs and, per configuration, the final test accuracy over seeds",
        body = ExperimentView), (status = 404, body = Problem)))]
pub async fn get(State(state): State<AppState>, Id(id): Id) -> ApiResult<Json<ExperimentView>> {
    Ok(Json(state.store.experiment(id).await?))
}
