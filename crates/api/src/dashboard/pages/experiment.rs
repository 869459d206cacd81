//! One experiment's page (`/experiments/{id}`): configurations over seeds, Table 1, the
//! claims, blocks side by side and figures.

use super::compare::{side_by_side, SideBySide};
use super::list::{runs_table, RunsQuery, RunsTable};
use super::{
    can_cancel, can_delete, can_retry, csv_download, percent, render, when, FigureItem, Nav,
};
use crate::dashboard::session::Session;
use crate::error::ApiResult;
use crate::routes::blocks;
use crate::routes::experiments::comparison;
use crate::routes::figures::{draw_all, experiment_results, left_out};
use crate::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, Response};
use axum::Extension;
use domain::claims;
use domain::service::LeftOut;
use uuid::Uuid;

pub struct ConfigItem {
    label: String,
    runs: u32,
    succeeded: u32,
    accuracy: String,
}

#[derive(Template)]
#[template(path = "experiment.html")]
pub struct ExperimentPage {
    nav: Nav,
    id: Uuid,
    name: String,
    created: String,
    configs: Vec<ConfigItem>,
    table: RunsTable,
    figures: Vec<FigureItem>,
    /// Table 1 as text: headings and a row per configuration.
    paper_header: [&'static str; 6],
    paper_rows: Vec<[String; 6]>,
    paper_note: &'static str,
    claims: Vec<claims::Verdict>,
    blocks: Vec<SideBySide>,
    blocks_csv: String,
    /// When the runs are shorter than the paper's schedules.
    schedule_note: Option<String>,
    /// Seeds whose analyses the table, claims, figures and blocks leave out, and why.
    left_out: Vec<LeftOut>,
    legend: &'static str,
    csrf: String,
    /// Whether some run is queued or running, and whether some failed or was cancelled.
    can_cancel: bool,
    can_retry: bool,
    /// Whether every run has ended (the store refuses while a job runs).
    can_delete: bool,
}

pub async fn experiment(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> ApiResult<Html<String>> {
    let id = crate::extract::parse_id(&id)?;
    let experiment = state.store.experiment(id).await?;
    let results = experiment_results(&state, &experiment).await?;
    let (paper_table, claims) = comparison(&experiment, &results);
    let left_out = left_out(&experiment.runs, &results);
    let blocks = side_by_side(&blocks::of_results(&results));
    let figures = draw_all(results)
        .await?
        .into_iter()
        .map(FigureItem::from)
        .collect();
    let table = runs_table(
        &state,
        &RunsQuery {
            experiment: Some(id.to_string()),
            ..RunsQuery::default()
        },
    )
    .await?;
    render(&ExperimentPage {
        nav: Nav::of(&session),
        id,
        name: experiment.name.clone(),
        created: when(experiment.created_at),
        configs: experiment
            .configs
            .iter()
            .map(|c| ConfigItem {
                label: c.label.clone(),
                runs: c.runs,
                succeeded: c.succeeded,
                accuracy: match (c.test_accuracy_mean, c.test_accuracy_sd) {
                    (Some(m), Some(sd)) => format!("{} ± {}", percent(m), percent(sd)),
                    (Some(m), None) => percent(m),
                    _ => String::new(),
                },
            })
            .collect(),
        table,
        figures,
        paper_header: domain::paper::TABLE_HEADER,
        paper_rows: paper_table.iter().map(|row| row.cells()).collect(),
        paper_note: domain::paper::TABLE_NOTE,
        claims,
        blocks,
        blocks_csv: format!("/experiments/{id}/blocks.csv"),
        schedule_note: domain::claims::short_schedule_note(&experiment.spec.runs()),
        left_out,
        legend: domain::claims::LEGEND,
        csrf: session.csrf.clone(),
        can_cancel: experiment.runs.iter().any(|r| can_cancel(r.status)),
        can_retry: experiment.runs.iter().any(|r| can_retry(r.status)),
        can_delete: experiment.runs.iter().all(|r| can_delete(r.status)),
    })
}

pub async fn experiment_summary_csv(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = crate::extract::parse_id(&id)?;
    let experiment = state.store.experiment(id).await?;
    Ok(csv_download(
        &format!("summary-{id}.csv"),
        domain::csv::to_csv(&experiment.configs),
    ))
}

pub async fn experiment_blocks_csv(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = crate::extract::parse_id(&id)?;
    let experiment = state.store.experiment(id).await?;
    let summaries = blocks::of_experiment_runs(&state, &experiment).await?;
    Ok(csv_download(
        &format!("blocks-{id}.csv"),
        domain::csv::to_csv(&summaries),
    ))
}

pub async fn experiment_claims_csv(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = crate::extract::parse_id(&id)?;
    let experiment = state.store.experiment(id).await?;
    let results = experiment_results(&state, &experiment).await?;
    Ok(csv_download(
        &format!("claims-{id}.csv"),
        domain::csv::to_csv(comparison(&experiment, &results).1),
    ))
}
