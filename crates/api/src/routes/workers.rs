//! The workers as users see them: which have claimed jobs lately, their memory budgets, and
//! what each runs — why a queued run waits, at a glance.

use crate::error::ApiResult;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use domain::service::WorkerView;

#[utoipa::path(get, path = "/v1/workers", tag = "workers",
    responses((status = 200, description = "the workers seen in the last week, most recently seen first", body = Vec<WorkerView>)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<WorkerView>>> {
    Ok(Json(state.store.workers().await?))
}
