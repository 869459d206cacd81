//! `/v1/experiments`: configurations × seeds submitted at once, listed, read with
//! aggregates.

use super::figures::{experiment_results, left_out, RunResults};
use super::{created, idempotency, typed, wants};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Id, JsonBody, Query};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::claims::{self, Verdict};
use domain::paper::{self, TableRow};
use domain::report::Report;
use domain::service::{
    ClaimsView, ExperimentSubmission, ExperimentSummary, ExperimentView, JobState, Page,
};
use domain::{MetricName, Split};
use serde::Deserialize;
use store::{Idempotency, Submitted};
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
    let idem = idempotency(&headers, &body.sha256)?;
    let submitted = create(&state, &body.value, idem).await?;
    Ok(created(submitted, |e| format!("/v1/experiments/{}", e.id)))
}

/// Checks an experiment's submission (its fields, then its dataset) and stores it with a
/// run and `train` job per configuration and seed: the API's submission and the
/// dashboard's.
pub async fn create(
    state: &AppState,
    submission: &ExperimentSubmission,
    idem: Option<Idempotency>,
) -> ApiResult<Submitted<ExperimentView>> {
    submission.validate().map_err(ApiError::invalid)?;
    super::datasets::check_experiment(state, &submission.spec).await?;
    Ok(state
        .store
        .submit_experiment(
            &submission.spec,
            idem.as_ref(),
            state.config.lease.max_attempts,
        )
        .await?)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// An experiment's name, exactly
    name: Option<String>,
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
    Ok(Json(
        state
            .store
            .list_experiments(
                crate::routes::runs::name_filter(q.name)?.as_deref(),
                cursor,
                limit,
            )
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/experiments/{id}", tag = "experiments",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "with its runs and, per configuration, the final test accuracy over seeds",
        body = ExperimentView), (status = 404, body = Problem)))]
pub async fn get(State(state): State<AppState>, Id(id): Id) -> ApiResult<Json<ExperimentView>> {
    Ok(Json(state.store.experiment(id).await?))
}

#[utoipa::path(post, path = "/v1/experiments/{id}/cancel", tag = "experiments",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "every queued or running run cancelled (a running one at its worker's next heartbeat)",
        body = ExperimentView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(State(state): State<AppState>, Id(id): Id) -> ApiResult<Json<ExperimentView>> {
    Ok(Json(state.store.cancel_experiment(id).await?))
}

#[utoipa::path(post, path = "/v1/experiments/{id}/retry", tag = "experiments",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "every failed or cancelled run queued again; each resumes from its latest checkpoint",
        body = ExperimentView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn retry(State(state): State<AppState>, Id(id): Id) -> ApiResult<Json<ExperimentView>> {
    let max_attempts = state.config.lease.max_attempts;
    Ok(Json(state.store.retry_experiment(id, max_attempts).await?))
}

#[utoipa::path(delete, path = "/v1/experiments/{id}", tag = "experiments",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 204, description = "deleted with its runs and their files"),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete(State(state): State<AppState>, Id(id): Id) -> ApiResult<StatusCode> {
    for dir in state.store.delete_experiment(id).await? {
        super::runs::remove_run_files(&state, &dir).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/experiments/{id}/claims", tag = "experiments",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "paper.md's Table 1 and claims C1–C7 over the runs; CSV of the claims' verdicts with Accept: text/csv",
        body = ClaimsView), (status = 404, body = Problem)))]
pub async fn claims(
    State(state): State<AppState>,
    Id(id): Id,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let experiment = state.store.experiment(id).await?;
    let results = experiment_results(&state, &experiment).await?;
    let view = claims_view(&experiment, &results);
    if wants(&headers, "text/csv") {
        return Ok(typed(
            "text/csv; charset=utf-8",
            domain::csv::to_csv(&view.claims),
        ));
    }
    Ok(Json(view).into_response())
}

fn claims_view(experiment: &ExperimentView, results: &[RunResults]) -> ClaimsView {
    let (table, verdicts) = comparison(experiment, results);
    ClaimsView {
        note: claims::short_schedule_note(&experiment.spec.runs()),
        table,
        claims: verdicts,
        legend: claims::LEGEND.to_string(),
        left_out: left_out(&experiment.runs, results),
    }
}

#[utoipa::path(get, path = "/v1/experiments/{id}/report.md", tag = "experiments",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "report.md, as `stepwise run` writes one of local runs: Table 1 and claims C1–C7 beside paper.md's, the figures linked (relative to this document)",
            content_type = "text/markdown", body = String),
        (status = 404, body = Problem)))]
pub async fn report(State(state): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    let experiment = state.store.experiment(id).await?;
    let results = experiment_results(&state, &experiment).await?;
    let view = claims_view(&experiment, &results);
    let figures = super::figures::names(results)
        .await?
        .into_iter()
        .map(|name| format!("figures/{name}.svg"))
        .collect();
    // The numbers behind the figures: JSON here, CSV with `Accept: text/csv`.
    let blocks = Some("blocks".to_string());
    let report = Report::of_experiment(&experiment, view, None, figures, blocks);
    Ok(typed("text/markdown; charset=utf-8", report.markdown()))
}

/// paper.md's Table 1 and claims over the experiment's runs, configurations by label: each
/// seed's latest analysis, and its final test error when it trained all its epochs.
pub(crate) fn comparison(
    experiment: &ExperimentView,
    results: &[RunResults],
) -> (Vec<TableRow>, Vec<Verdict>) {
    let mut configs: Vec<claims::Config> = vec![];
    for (run, result) in experiment.runs.iter().zip(results) {
        let index = match configs.iter().position(|c| c.label == run.label) {
            Some(i) => i,
            None => {
                configs.push(claims::Config::new(&run.label, &run.spec.model));
                configs.len() - 1
            }
        };
        let config = &mut configs[index];
        if let Some(a) = result
            .analysis
            .as_ref()
            .filter(|a| a.status == JobState::Succeeded)
        {
            config.seeds.push((&a.records, a.selected_alpha));
            config.unroll_bn = a.spec.unroll_bn;
        }
        let last_epoch = result
            .training
            .iter()
            .filter(|r| {
                r.name == MetricName::Accuracy && r.split == Some(Split::Test) && r.block.is_none()
            })
            .max_by_key(|r| r.epoch);
        if let Some(r) = last_epoch.filter(|r| r.epoch == run.epochs) {
            config.test_errors.push(1.0 - r.value);
        }
    }
    (paper::table(&configs), claims::evaluate(&configs))
}
