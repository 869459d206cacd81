//! Every block's metrics side by side, the numbers behind the block-wise figures: per
//! configuration, metric, split and block, the mean ± sd over its seeds of each run's
//! latest analysis ([`domain::block_summaries`]) — of runs named together, grouped as their
//! figures are, or of an experiment.

use super::{typed, wants};
use crate::error::{ApiResult, Problem};
use crate::extract::{Id, RunIds};
use crate::routes::figures::{labelled, RunResults, RunsQuery};
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::service::ExperimentView;
use domain::BlockSummary;
use uuid::Uuid;

/// The block summaries of runs, each under its configuration's label.
async fn summaries(state: &AppState, runs: Vec<(Uuid, String)>) -> ApiResult<Vec<BlockSummary>> {
    let mut analysed = vec![];
    for (run, label) in runs {
        if let Some(analysis) = state.store.latest_analysis(run).await? {
            analysed.push((label, analysis));
        }
    }
    Ok(domain::block_summaries(
        analysed
            .iter()
            .map(|(l, a)| (l.as_str(), a.analysed(), &a.records[..])),
    ))
}

/// Of runs named together, grouped into configurations as their figures are.
pub(crate) async fn of_run_ids(state: &AppState, ids: &[Uuid]) -> ApiResult<Vec<BlockSummary>> {
    let (runs, labels) = labelled(state, ids).await?;
    summaries(state, runs.iter().map(|r| r.id).zip(labels).collect()).await
}

/// Of an experiment's runs, by configuration.
pub(crate) async fn of_experiment_runs(
    state: &AppState,
    experiment: &ExperimentView,
) -> ApiResult<Vec<BlockSummary>> {
    let runs = experiment.runs.iter().map(|r| (r.id, r.label.clone()));
    summaries(state, runs.collect()).await
}

/// Of results already loaded for their figures.
pub(crate) fn of_results(results: &[RunResults]) -> Vec<BlockSummary> {
    domain::block_summaries(results.iter().filter_map(|r| {
        let analysis = r.analysis.as_ref()?;
        Some((r.label.as_str(), analysis.analysed(), &analysis.records[..]))
    }))
}

/// JSON, or CSV with `Accept: text/csv`.
fn respond(rows: Vec<BlockSummary>, headers: &HeaderMap) -> Response {
    if wants(headers, "text/csv") {
        return typed("text/csv; charset=utf-8", domain::csv::to_csv(&rows));
    }
    Json(rows).into_response()
}

#[utoipa::path(get, path = "/v1/blocks", tag = "figures", params(RunsQuery),
    responses((status = 200, description = "per configuration, metric, split (test first) and block: mean ± sd over its seeds of each run's latest analysis, the seeds analysed at the configuration's latest analysed epoch, measured alike; CSV with Accept: text/csv",
            body = Vec<BlockSummary>),
        (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn of_runs(
    State(state): State<AppState>,
    RunIds(ids): RunIds,
    headers: HeaderMap,
) -> ApiResult<Response> {
    Ok(respond(of_run_ids(&state, &ids).await?, &headers))
}

#[utoipa::path(get, path = "/v1/experiments/{id}/blocks", tag = "experiments",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "per configuration, metric, split (test first) and block: mean ± sd over the seeds' latest analyses, those at the configuration's latest analysed epoch, measured alike; CSV with Accept: text/csv",
            body = Vec<BlockSummary>),
        (status = 404, body = Problem)))]
pub async fn of_experiment(
    State(state): State<AppState>,
    Id(id): Id,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let experiment = state.store.experiment(id).await?;
    Ok(respond(
        of_experiment_runs(&state, &experiment).await?,
        &headers,
    ))
}
