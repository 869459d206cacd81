//! `/v1/experiments`: configurations × seeds submitted at once, read with aggregates.

use super::{created, idempotency};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Id, JsonBody};
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use domain::service::{ExperimentSubmission, ExperimentView};

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

#[utoipa::path(get, path = "/v1/experiments/{id}", tag = "experiments",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "with its runs and, per configuration, the final test accuracy over seeds",
        body = ExperimentView), (status = 404, body = Problem)))]
pub async fn get(State(state): State<AppState>, Id(id): Id) -> ApiResult<Json<ExperimentView>> {
    Ok(Json(state.store.experiment(id).await?))
}
