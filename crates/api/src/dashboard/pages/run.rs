//! One run's page (`/runs/{id}`): live progress, attempts, checkpoints, log, analyses.

use super::list::RunItem;
use super::{
    can_cancel, can_delete, can_retry, csv_download, download, duration, number, render, size,
    when, FigureItem, Nav,
};
use crate::dashboard::reasons;
use crate::dashboard::session::{check_csrf, Session};
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::routes::figures::{draw_all, results, RunResults};
use crate::routes::{analyses, runs};
use crate::AppState;
use askama::Template;
use axum::extract::{Form, Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use domain::service::{
    AnalysisRequest, AnalysisView, AttemptView, JobState, RunView, UploadedWeights,
};
use domain::{AnalysisRecord, AnalysisSpec, MetricName, MetricRecord, PassTime, SpecError, Split};
use serde::Deserialize;
use std::collections::BTreeMap;
use uuid::Uuid;

pub struct AttemptItem {
    what: String,
    attempt: u32,
    worker: String,
    started: String,
    took: String,
    outcome: &'static str,
    failure: String,
    error: String,
}

impl AttemptItem {
    fn of(a: &AttemptView) -> Self {
        Self {
            what: match a.epoch {
                Some(e) => format!("{} (epoch {e})", a.kind),
                None => a.kind.to_string(),
            },
            attempt: a.attempt,
            worker: a.worker.clone(),
            started: when(a.started_at),
            took: a
                .ended_at
                .map(|e| duration((e - a.started_at).num_milliseconds() as f64 / 1000.0))
                .unwrap_or_default(),
            outcome: a.outcome.map_or("running", |o| match o {
                JobState::Queued => "requeued",
                o => o.as_str(),
            }),
            failure: a.failure_kind.map(|k| k.to_string()).unwrap_or_default(),
            error: a.error.clone().unwrap_or_default(),
        }
    }
}

pub struct LogItem {
    at: String,
    attempt: String,
    level: String,
    message: String,
}

pub struct CheckpointItem {
    id: Uuid,
    file: String,
    attempt: u32,
    epoch: u32,
    step: u64,
    size: String,
    sha256: String,
    removed: bool,
    /// On disk and at an epoch's end (not a stop inside one): one an analysis can take.
    analysable: bool,
}

/// What changes while a run trains; the run page refreshes it from `live_url`.
pub struct RunLive {
    live_url: String,
    id: Uuid,
    csrf: String,
    finished: bool,
    /// The analyses' states; when it changes the page reloads to show their results.
    analyses: String,
    /// Where each running analysis is: its epoch and what it computes now.
    analysing: Vec<(u32, String)>,
    status: &'static str,
    item: RunItem,
    step: String,
    failure: String,
    can_cancel: bool,
    can_retry: bool,
    can_delete: bool,
    attempts: Vec<AttemptItem>,
    logs: Vec<LogItem>,
    checkpoints: Vec<CheckpointItem>,
    figures: Vec<FigureItem>,
}

#[derive(Template)]
#[template(path = "run_live.html")]
pub struct RunLivePartial {
    live: RunLive,
}

/// One column per metric, one row per block.
pub struct BlockTable {
    split: &'static str,
    columns: Vec<&'static str>,
    rows: Vec<BlockRow>,
}

pub struct BlockRow {
    index: u32,
    block: String,
    kind: &'static str,
    cells: Vec<String>,
}

/// The per-block values of an analysis: means over examples, all examples, no path
/// position; the test split when analysed, else the train split.
fn block_table(records: &[AnalysisRecord]) -> BlockTable {
    let per_block = |r: &&AnalysisRecord| r.is_block_mean();
    let split = if records
        .iter()
        .filter(per_block)
        .any(|r| r.split == Split::Test)
    {
        Split::Test
    } else {
        Split::Train
    };
    let chosen: Vec<&AnalysisRecord> = records
        .iter()
        .filter(per_block)
        .filter(|r| r.split == split)
        .collect();
    let mut columns: Vec<MetricName> = chosen.iter().map(|r| r.name).collect();
    columns.sort();
    columns.dedup();
    let mut rows: BTreeMap<u32, BlockRow> = BTreeMap::new();
    for r in &chosen {
        let index = r.block_index.unwrap_or_default();
        let row = rows.entry(index).or_insert_with(|| BlockRow {
            index,
            block: r.block.map(|b| b.to_string()).unwrap_or_default(),
            kind: r.kind.map_or("", |k| k.as_str()),
            cells: vec![String::new(); columns.len()],
        });
        if let Some(c) = columns.iter().position(|n| *n == r.name) {
            row.cells[c] = number(r.value);
        }
    }
    BlockTable {
        split: split.as_str(),
        columns: columns.iter().map(|n| n.as_str()).collect(),
        rows: rows.into_values().collect(),
    }
}

/// What the run page says of every analysis, in its list and atop the one shown in full.
pub struct AnalysisItem {
    id: Uuid,
    epoch: u32,
    status: &'static str,
    /// The whole time, as the list gives it.
    duration: String,
    /// The whole time and each pass's.
    took: String,
    /// "2000 train, 2000 test".
    examples: String,
    alpha: String,
    /// The settings that differ from the defaults (`gradient = "skip"; …`): what tells two
    /// analyses of one checkpoint apart.
    settings: String,
    error: String,
    /// The one the page shows in full.
    shown: bool,
}

impl AnalysisItem {
    fn of(analysis: &AnalysisView, shown: bool) -> Self {
        Self {
            id: analysis.id,
            epoch: analysis.epoch,
            status: analysis.status.as_str(),
            duration: analysis.seconds.map(duration).unwrap_or_default(),
            took: analysis
                .seconds
                .map(|s| PassTime::took(s, &analysis.passes))
                .unwrap_or_default(),
            examples: domain::SplitExamples::describe(&analysis.examples),
            // With the train loss it ends at, where the records are at hand.
            alpha: analysis
                .selected_alpha
                .map(|a| match domain::unroll_train_loss(&analysis.records, a) {
                    Some(train_loss) => format!("{a} ({train_loss})"),
                    None => format!("{a}"),
                })
                .unwrap_or_default(),
            settings: analysis.spec.changes_inline(),
            error: analysis.last_error.clone().unwrap_or_default(),
            shown,
        }
    }
}

/// The analysis the run page shows in full: its figures and per-block table.
pub struct AnalysisSection {
    head: AnalysisItem,
    notes: Vec<String>,
    figures: Vec<FigureItem>,
    table: BlockTable,
}

#[derive(Template)]
#[template(path = "run.html")]
pub struct RunPage {
    nav: Nav,
    title: String,
    run: RunItem,
    tags: Vec<String>,
    live: RunLive,
    spec: String,
    /// The learning rate of every epoch, as the spec resolves it.
    schedule: String,
    identity: String,
    plan: String,
    /// Where the run is made of uploaded weights.
    weights: Option<UploadedWeights>,
    /// Every analysis of the run, by epoch.
    analyses: Vec<AnalysisItem>,
    /// The one asked for, else the newest that succeeded, else the newest: one in full,
    /// as a run analysed at every few epochs of 300 would make a page of many megabytes.
    analysis: Option<AnalysisSection>,
    /// Where the run has checkpoints on disk.
    analyse: Option<AnalyseForm>,
}

/// The form that asks for an analysis of one of the run's checkpoints.
pub struct AnalyseForm {
    csrf: String,
    /// The epochs of the run's checkpoints on disk, newest first.
    epochs: Vec<u32>,
    epoch: u32,
    /// The analysis settings that differ from the defaults, TOML: at first the run's plan's.
    settings: String,
    /// Why the last request was refused, one line per reason.
    errors: Vec<String>,
}

/// What a refused request asked for, shown again with why.
struct Refused {
    epoch: Option<u32>,
    settings: String,
    errors: Vec<String>,
}

fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

async fn run_live(state: &AppState, run: &RunView, session: &Session) -> ApiResult<RunLive> {
    let (attempts, logs, checkpoints, analyses) = (
        state.store.attempts(run.id).await?,
        state.store.logs(run.id, 40).await?,
        state.store.checkpoints(run.id).await?,
        state.store.analyses_of_run(run.id).await?,
    );
    let training = results(state, run.id, run.label.clone(), false).await?;
    let figures = draw_all(vec![training])
        .await?
        .into_iter()
        .map(FigureItem::from)
        .collect();
    Ok(RunLive {
        live_url: format!("/partials/runs/{}", run.id),
        id: run.id,
        csrf: session.csrf.clone(),
        finished: run.status.is_final() && analyses.iter().all(|a| a.status.is_final()),
        analyses: analyses
            .iter()
            .map(|a| format!("{}:{}", a.epoch, a.status))
            .collect::<Vec<_>>()
            .join(" "),
        analysing: analyses
            .iter()
            .filter_map(|a| Some((a.epoch, a.progress.as_ref()?.describe())))
            .collect(),
        status: run.status.as_str(),
        item: RunItem::of(run),
        step: format!("step {} of {}", run.step, run.total_steps),
        failure: match (&run.failure_kind, &run.last_error) {
            (Some(kind), Some(error)) => format!("{kind}: {error}"),
            (Some(kind), None) => kind.to_string(),
            (None, Some(error)) => error.clone(),
            (None, None) => String::new(),
        },
        can_cancel: can_cancel(run.status),
        can_retry: can_retry(run.status),
        can_delete: can_delete(run.status),
        attempts: attempts.iter().map(AttemptItem::of).collect(),
        logs: logs
            .into_iter()
            .map(|l| LogItem {
                at: l.at.format("%H:%M:%S").to_string(),
                attempt: l.attempt.map(|a| a.to_string()).unwrap_or_default(),
                level: l.level,
                message: l.message,
            })
            .collect(),
        checkpoints: checkpoints
            .into_iter()
            .map(|c| CheckpointItem {
                analysable: c.is_epoch_end_on_disk(),
                id: c.id,
                file: c.file_name,
                attempt: c.attempt,
                epoch: c.epoch,
                step: c.step,
                size: size(c.size),
                sha256: c.sha256.chars().take(12).collect(),
                removed: c.removed,
            })
            .collect(),
        figures,
    })
}

async fn analysis_section(label: &str, analysis: AnalysisView) -> ApiResult<AnalysisSection> {
    let head = AnalysisSection {
        head: AnalysisItem::of(&analysis, true),
        notes: analysis.notes.clone(),
        figures: vec![],
        table: block_table(&analysis.records),
    };
    let figures = draw_all(vec![RunResults {
        label: label.to_string(),
        training: vec![],
        analysis: Some(analysis),
        history: vec![],
        left_out: None,
    }])
    .await?
    .into_iter()
    .map(FigureItem::from)
    .collect();
    Ok(AnalysisSection { figures, ..head })
}

/// The run page's query: which analysis to show in full.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunPageQuery {
    analysis: Option<String>,
}

pub async fn run(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(query): Query<RunPageQuery>,
) -> ApiResult<Html<String>> {
    let id = crate::extract::parse_id(&id)?;
    let shown = query
        .analysis
        .as_deref()
        .map(crate::extract::parse_id)
        .transpose()?;
    render(&run_page(&state, &session, id, shown, None).await?)
}

/// The run's page, showing analysis `shown` in full (see [`RunPage::analysis`]).
async fn run_page(
    state: &AppState,
    session: &Session,
    id: Uuid,
    shown: Option<Uuid>,
    refused: Option<Refused>,
) -> ApiResult<RunPage> {
    let run = state.store.run(id).await?;
    let live = run_live(state, &run, session).await?;
    let listed = state.store.analyses_of_run(id).await?;
    let chosen = match shown {
        Some(shown) => Some(listed.iter().find(|a| a.id == shown).ok_or_else(|| {
            ApiError::not_found(format!("analysis {shown} is not one of run {id}'s"))
        })?),
        None => listed
            .iter()
            .rev()
            .find(|a| a.status == JobState::Succeeded)
            .or(listed.last()),
    };
    let analysis = match chosen {
        // The list comes without records; a finished analysis is read with them.
        Some(a) if a.status == JobState::Succeeded => {
            let full = state.store.analysis(a.id).await?;
            Some(analysis_section(&run.label, full).await?)
        }
        Some(a) => Some(analysis_section(&run.label, a.clone()).await?),
        None => None,
    };
    let chosen = chosen.map(|a| a.id);
    let analyses = listed
        .iter()
        .map(|a| AnalysisItem::of(a, Some(a.id) == chosen))
        .collect();
    let mut epochs: Vec<u32> = live
        .checkpoints
        .iter()
        .filter(|c| c.analysable)
        .map(|c| c.epoch)
        .collect();
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    epochs.dedup();
    let analyse = epochs.first().map(|&newest| {
        let refused = refused.unwrap_or_else(|| Refused {
            epoch: None,
            settings: run
                .analysis
                .as_ref()
                .map(|p| p.spec.changes_toml())
                .unwrap_or_default(),
            errors: vec![],
        });
        AnalyseForm {
            csrf: session.csrf.clone(),
            epoch: refused
                .epoch
                .filter(|e| epochs.contains(e))
                .unwrap_or(newest),
            epochs: epochs.clone(),
            settings: refused.settings,
            errors: refused.errors,
        }
    });
    let shown = run.resolved_spec.as_ref().unwrap_or(&run.spec);
    Ok(RunPage {
        nav: Nav::of(session),
        title: run.name.clone().unwrap_or_else(|| run.label.clone()),
        run: RunItem::of(&run),
        tags: run.tags.clone(),
        live,
        spec: pretty(shown),
        schedule: shown
            .train
            .schedule(shown.model.arch)
            .describe(shown.epochs()),
        identity: shown.data.identity.as_ref().map(pretty).unwrap_or_default(),
        plan: run.analysis.as_ref().map(pretty).unwrap_or_default(),
        weights: run.weights.clone(),
        analyses,
        analysis,
        analyse,
    })
}

/// The run page's analysis form as sent.
#[derive(Deserialize)]
pub struct AnalyseFields {
    csrf: String,
    epoch: String,
    settings: String,
}

/// Queues an analysis of the chosen checkpoint with the settings written (as `POST
/// /v1/runs/{id}/analyses` does) and goes to it; a refused request comes back as the run's
/// page with the form as it was written and every reason.
pub async fn analyse(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<AnalyseFields>,
) -> ApiResult<Response> {
    check_csrf(&session, &form.csrf)?;
    let id = crate::extract::parse_id(&id)?;
    let epoch = form.epoch.trim().parse::<u32>().map_err(|_| {
        SpecError::one(
            "epoch",
            format!("{:?} is not a checkpoint's epoch", form.epoch),
        )
    });
    let refused = match SpecError::both(epoch, AnalysisSpec::from_toml(&form.settings)) {
        Ok((epoch, spec)) => {
            let request = AnalysisRequest {
                epoch: Some(epoch),
                spec,
            };
            match analyses::create(&state, id, &request).await {
                Ok(view) => {
                    let to = format!("/runs/{id}?analysis={0}#analysis-{0}", view.id);
                    return Ok(Redirect::to(&to).into_response());
                }
                Err(refused) => refused,
            }
        }
        Err(errors) => ApiError::invalid(errors),
    };
    let status = refused.status;
    let page = run_page(
        &state,
        &session,
        id,
        None,
        Some(Refused {
            epoch: form.epoch.trim().parse().ok(),
            settings: form.settings,
            errors: reasons(refused),
        }),
    )
    .await?;
    Ok((status, render(&page)?).into_response())
}

pub async fn run_partial(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> ApiResult<Html<String>> {
    let id = crate::extract::parse_id(&id)?;
    let run = state.store.run(id).await?;
    let live = run_live(&state, &run, &session).await?;
    render(&RunLivePartial { live })
}

/// The run's whole log (its newest 10,000 lines) as a text file.
pub async fn log_text(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = crate::extract::parse_id(&id)?;
    let lines = state.store.logs(id, runs::MAX_LOG_LINES).await?;
    Ok(download(
        "text/plain; charset=utf-8",
        &format!("log-{id}.txt"),
        runs::log_text(&lines),
    ))
}

pub async fn metrics_csv(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = crate::extract::parse_id(&id)?;
    let records: Vec<MetricRecord> = state.store.metrics(id, None, None).await?;
    Ok(csv_download(
        &format!("metrics-{id}.csv"),
        domain::csv::metrics_csv(&records),
    ))
}

pub async fn analysis_csv(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = crate::extract::parse_id(&id)?;
    let analysis = state.store.analysis(id).await?;
    Ok(csv_download(
        &format!("analysis-{id}.csv"),
        domain::csv::analysis_csv(&analysis.records),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_table_has_a_column_per_metric_and_a_row_per_block() {
        let rec = |name, block: u32, value| {
            let mut r = AnalysisRecord::new(name, Split::Test, 1, value, 10);
            r.block = Some(domain::BlockId::new(0, block));
            r.block_index = Some(block);
            r.kind = Some(domain::BlockKind::Identity);
            r
        };
        let mut cosine = rec(MetricName::Cosine, 0, -0.25);
        cosine.stat = Some(domain::Stat::Mean);
        let mut median = rec(MetricName::Cosine, 0, 9.0);
        median.stat = Some(domain::Stat::Median);
        let mut unrolled = rec(MetricName::UnrollCosine, 1, 9.0);
        unrolled.step = Some(2);
        let records = vec![
            cosine,
            median,
            unrolled,
            rec(MetricName::DropAccuracy, 1, 0.5),
            rec(MetricName::DropAccuracy, 0, 0.75),
        ];
        let t = block_table(&records);
        assert_eq!(t.split, "test");
        assert_eq!(t.columns, vec!["cosine", "drop_accuracy"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].cells, vec!["-0.2500", "0.7500"]);
        assert_eq!(t.rows[1].cells, vec!["", "0.5000"]);
    }
}
