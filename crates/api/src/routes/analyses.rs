//! Analyses of checkpoints: ask for one, list a run's, read one or some of its records (CSV
//! with `Accept: text/csv`).

use super::{typed, wants};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Id, JsonBody, Query};
use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::service::{AnalysisRequest, AnalysisView};
use domain::RecordFilter;
use uuid::Uuid;

#[utoipa::path(post, path = "/v1/runs/{id}/analyses", tag = "analyses",
    params(("id" = uuid::Uuid, Path)), request_body = AnalysisRequest,
    responses((status = 201, body = AnalysisView), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn request(
    State(state): State<AppState>,
    Id(run): Id,
    body: JsonBody<AnalysisRequest>,
) -> ApiResult<Response> {
    let view = create(&state, run, &body.value).await?;
    let location =
        HeaderValue::from_str(&format!("/v1/analyses/{}", view.id)).map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response())
}

/// Queues an analysis of one of `run`'s checkpoints: what `POST /v1/runs/{id}/analyses` and
/// the dashboard's form on a run's page ask for.
pub(crate) async fn create(
    state: &AppState,
    run: Uuid,
    req: &AnalysisRequest,
) -> ApiResult<AnalysisView> {
    req.validate().map_err(ApiError::invalid)?;
    let attempts = state.config.lease.max_attempts;
    Ok(state
        .store
        .request_analysis(run, req.epoch, &req.spec, attempts)
        .await?)
}

#[utoipa::path(get, path = "/v1/runs/{id}/analyses", tag = "analyses",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "without their records", body = Vec<AnalysisView>)))]
pub async fn of_run(
    State(state): State<AppState>,
    Id(run): Id,
) -> ApiResult<Json<Vec<AnalysisView>>> {
    Ok(Json(state.store.analyses_of_run(run).await?))
}

#[utoipa::path(get, path = "/v1/analyses/{id}", tag = "analyses",
    params(("id" = uuid::Uuid, Path), RecordFilter),
    responses((status = 200, description = "with its records, those the query's fields match \
        (all without a query); CSV of them with Accept: text/csv",
        body = AnalysisView), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Id(id): Id,
    Query(filter): Query<RecordFilter>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mut view = state.store.analysis(id).await?;
    view.records.retain(|r| filter.keeps(r));
    if wants(&headers, "text/csv") {
        return Ok(typed(
            "text/csv; charset=utf-8",
            domain::csv::analysis_csv(&view.records),
        ));
    }
    Ok(Json(view).into_response())
}
