//! The dashboard's pages: what each shows, gathered from the store and rendered by the
//! askama templates in `templates/` (which escape every value; only SVG drawn by
//! `figures`, whose text plotters escapes, is inserted as markup).

use super::session::{check_csrf, CsrfForm, Session};
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::extract::{parse_cursor, RunIds};
use crate::routes::blocks;
use crate::routes::experiments::comparison;
use crate::routes::figures::{draw_all, experiment_results, results, together, Drawn, RunResults};
use crate::routes::runs::run_filter;
use crate::routes::typed;
use crate::AppState;
use askama::Template;
use axum::extract::{Form, Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use chrono::{DateTime, Utc};
use domain::claims;
use domain::service::{AnalysisView, AttemptView, JobState, RunView, UploadedWeights};
use domain::{
    AnalysisRecord, Arch, BlockId, BlockKind, BlockSummary, MetricName, MetricRecord, Split,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use uuid::Uuid;

pub fn render(page: &impl Template) -> ApiResult<Html<String>> {
    page.render().map(Html).map_err(ApiError::internal)
}

/// The header's state: a log-out form when logging in is needed.
pub struct Nav {
    pub csrf: Option<String>,
}

impl Nav {
    pub fn of(session: &Session) -> Self {
        Self {
            csrf: session.login.then(|| session.csrf.clone()),
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub next: String,
    pub error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub status: String,
    pub detail: String,
}

// ---------------------------------------------------------------- formatting

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn duration(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds < 9.95 {
        return format!("{seconds:.1} s");
    }
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.2}%", 100.0 * fraction)
}

/// Four significant digits, enough to read a metric and short enough for a table.
fn number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.digits$}")
}

fn size(bytes: u64) -> String {
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1048575 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1048576.0),
    }
}

// ---------------------------------------------------------------- runs list

/// A run as a row of the runs table.
pub struct RunItem {
    id: Uuid,
    title: String,
    experiment: Option<Uuid>,
    status: &'static str,
    arch: String,
    dataset: String,
    progress: String,
    percent: u32,
    eta: String,
    best: String,
    created: String,
    /// Made of uploaded weights rather than trained here.
    imported: bool,
}

impl RunItem {
    fn of(run: &RunView) -> Self {
        let fraction = if run.total_steps > 0 {
            run.step as f64 / run.total_steps as f64
        } else if run.status == JobState::Succeeded {
            1.0
        } else {
            0.0
        };
        Self {
            id: run.id,
            title: run.name.clone().unwrap_or_else(|| run.label.clone()),
            experiment: run.experiment_id,
            status: run.status.as_str(),
            arch: run.arch.clone(),
            dataset: run.dataset.clone(),
            progress: format!("{}/{} epochs", run.epochs_done, run.epochs),
            percent: (100.0 * fraction).round().clamp(0.0, 100.0) as u32,
            eta: match (run.status, run.eta_seconds) {
                (JobState::Running, Some(s)) => duration(s),
                _ => String::new(),
            },
            best: run.best_test_accuracy.map(percent).unwrap_or_default(),
            created: when(run.created_at),
            imported: run.weights.is_some(),
        }
    }
}

/// The runs table, which refreshes itself from `live_url`.
pub struct RunsTable {
    live_url: String,
    rows: Vec<RunItem>,
    next_page: Option<String>,
}

#[derive(Template)]
#[template(path = "runs_table.html")]
pub struct RunsPartial {
    table: RunsTable,
}

#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    experiment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
    /// The experiments list's own page (the runs page shows both lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    experiments_cursor: Option<String>,
}

impl RunsQuery {
    /// Empty form fields mean "any".
    fn cleaned(self) -> Self {
        let keep = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        Self {
            status: keep(self.status),
            arch: keep(self.arch),
            tag: keep(self.tag),
            experiment: keep(self.experiment),
            cursor: keep(self.cursor),
            experiments_cursor: keep(self.experiments_cursor),
        }
    }

    fn url(&self, path: &str) -> String {
        let query = serde_urlencoded::to_string(self).unwrap_or_default();
        if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        }
    }
}

const PAGE_SIZE: u32 = 25;

async fn runs_table(state: &AppState, q: &RunsQuery) -> ApiResult<RunsTable> {
    let filter = run_filter(
        q.status.as_deref(),
        q.arch.as_deref(),
        q.tag.clone(),
        q.experiment.as_deref(),
    )?;
    let cursor = parse_cursor(q.cursor.as_deref())?;
    let page = state.store.list_runs(&filter, cursor, PAGE_SIZE).await?;
    let next_page = page.next_cursor.map(|c| {
        RunsQuery {
            cursor: Some(c),
            status: q.status.clone(),
            arch: q.arch.clone(),
            tag: q.tag.clone(),
            experiment: q.experiment.clone(),
            experiments_cursor: None,
        }
        .url("/")
    });
    let live = RunsQuery {
        experiments_cursor: None,
        ..q.clone()
    };
    Ok(RunsTable {
        live_url: live.url("/partials/runs"),
        rows: page.items.iter().map(RunItem::of).collect(),
        next_page,
    })
}

pub struct ExperimentItem {
    id: Uuid,
    name: String,
    created: String,
    runs: u32,
    succeeded: u32,
    failed: u32,
    active: u32,
}

/// A worker as the front page lists it.
pub struct WorkerItem {
    name: String,
    takes: String,
    budget: String,
    seen: String,
    /// The run it works on, and on what.
    job: Option<(Uuid, String)>,
    /// Without a job: idle, or not seen lately.
    presence: String,
}

impl WorkerItem {
    fn of(w: &domain::service::WorkerView) -> Self {
        Self {
            name: w.name.clone(),
            takes: w
                .kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            budget: w.capacity.to_string(),
            seen: when(w.seen_at),
            job: w.job.as_ref().map(|j| (j.run_id, j.kind.to_string())),
            presence: w.presence(),
        }
    }
}

#[derive(Template)]
#[template(path = "runs.html")]
pub struct RunsPage {
    nav: Nav,
    status: String,
    arch: String,
    tag: String,
    statuses: Vec<&'static str>,
    archs: Vec<&'static str>,
    table: RunsTable,
    experiments: Vec<ExperimentItem>,
    older_experiments: Option<String>,
    workers: Vec<WorkerItem>,
}

pub async fn runs(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Html<String>> {
    let q = q.cleaned();
    let table = runs_table(&state, &q).await?;
    let experiments_cursor = parse_cursor(q.experiments_cursor.as_deref())?;
    let experiments = state
        .store
        .list_experiments(None, experiments_cursor, 20)
        .await?;
    let older_experiments = experiments
        .next_cursor
        .map(|c| format!("/?experiments_cursor={c}"));
    let experiments = experiments
        .items
        .into_iter()
        .map(|e| ExperimentItem {
            id: e.id,
            name: e.name,
            created: when(e.created_at),
            runs: e.runs,
            succeeded: e.succeeded,
            failed: e.failed,
            active: e.active,
        })
        .collect();
    render(&RunsPage {
        nav: Nav::of(&session),
        status: q.status.clone().unwrap_or_default(),
        arch: q.arch.clone().unwrap_or_default(),
        tag: q.tag.clone().unwrap_or_default(),
        statuses: JobState::ALL.iter().map(|s| s.as_str()).collect(),
        archs: Arch::ALL.iter().map(|a| a.as_str()).collect(),
        table,
        experiments,
        older_experiments,
        workers: state
            .store
            .workers()
            .await?
            .iter()
            .map(WorkerItem::of)
            .collect(),
    })
}

pub async fn runs_partial(
    State(state): State<AppState>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Html<String>> {
    let table = runs_table(&state, &q.cleaned()).await?;
    render(&RunsPartial { table })
}

// ---------------------------------------------------------------- runs together

/// A run on the compare page, with the label its figures draw it under.
pub struct ComparedRun {
    item: RunItem,
    label: String,
}

#[derive(Template)]
#[template(path = "compare.html")]
pub struct ComparePage {
    nav: Nav,
    runs: Vec<ComparedRun>,
    figures: Vec<FigureItem>,
    /// The same figures' list on the API.
    api_list: String,
    blocks: Vec<SideBySide>,
    blocks_csv: String,
}

/// `/compare?runs=ID&runs=ID…` (the runs table's checkboxes) or `?runs=ID,ID,…`: the runs'
/// figures drawn together, as `GET /v1/figures?runs=` draws them.
pub async fn compare(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    RunIds(ids): RunIds,
) -> ApiResult<Html<String>> {
    let (runs, results) = together(&state, &ids).await?;
    let runs = runs
        .iter()
        .zip(&results)
        .map(|(run, r)| ComparedRun {
            item: RunItem::of(run),
            label: r.label.clone(),
        })
        .collect();
    let blocks = side_by_side(&blocks::of_results(&results));
    let figures = draw_all(results).await?;
    let ids = ids
        .iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(",");
    render(&ComparePage {
        nav: Nav::of(&session),
        runs,
        figures: figures.into_iter().map(FigureItem::from).collect(),
        api_list: format!("/v1/figures?runs={ids}"),
        blocks,
        blocks_csv: format!("/compare/blocks.csv?runs={ids}"),
    })
}

/// `/compare/blocks.csv?runs=…`: the compare page's blocks side by side, every split.
pub async fn compare_blocks_csv(
    State(state): State<AppState>,
    RunIds(ids): RunIds,
) -> ApiResult<Response> {
    let summaries = blocks::of_run_ids(&state, &ids).await?;
    Ok(csv_download("blocks.csv", domain::csv::to_csv(&summaries)))
}

// ---------------------------------------------------------------- blocks side by side

/// One metric's blocks side by side: a column per configuration, a row per block.
pub struct SideBySide {
    metric: &'static str,
    split: &'static str,
    /// Configurations, each with its seeds.
    columns: Vec<String>,
    rows: Vec<SideBySideRow>,
    /// Shown unfolded: the metrics of the paper's Figures 2–4.
    open: bool,
}

pub struct SideBySideRow {
    block: String,
    projection: bool,
    cells: Vec<String>,
}

/// The summaries as one table per metric, on the test split where the metric has one.
fn side_by_side(summaries: &[BlockSummary]) -> Vec<SideBySide> {
    let mut metrics: Vec<MetricName> = summaries.iter().map(|s| s.name).collect();
    metrics.sort();
    metrics.dedup();
    metrics
        .into_iter()
        .map(|metric| {
            let of_metric = summaries.iter().filter(|s| s.name == metric);
            let split = if of_metric.clone().any(|s| s.split == Split::Test) {
                Split::Test
            } else {
                Split::Train
            };
            let chosen: Vec<&BlockSummary> = of_metric.filter(|s| s.split == split).collect();
            // (label, epoch, seeds)
            let mut configurations: Vec<(&str, u32, u32)> = vec![];
            for s in &chosen {
                match configurations
                    .iter_mut()
                    .find(|(l, ..)| *l == s.configuration)
                {
                    Some((.., seeds)) => *seeds = (*seeds).max(s.runs),
                    None => configurations.push((&s.configuration, s.epoch, s.runs)),
                }
            }
            let mut rows: BTreeMap<BlockId, SideBySideRow> = BTreeMap::new();
            for s in &chosen {
                let row = rows.entry(s.block).or_insert_with(|| SideBySideRow {
                    block: s.block.to_string(),
                    projection: false,
                    cells: vec![String::new(); configurations.len()],
                });
                row.projection |= s.kind == BlockKind::Projection;
                let column = configurations
                    .iter()
                    .position(|(l, ..)| *l == s.configuration)
                    .expect("every configuration has a column");
                row.cells[column] = match s.runs {
                    1 => number(s.mean),
                    _ => format!("{} ± {}", number(s.mean), number(s.sd)),
                };
            }
            SideBySide {
                metric: metric.as_str(),
                split: split.as_str(),
                columns: configurations
                    .iter()
                    .map(|(label, epoch, seeds)| match seeds {
                        1 => format!("{label} (epoch {epoch})"),
                        n => format!("{label} ({n} seeds, epoch {epoch})"),
                    })
                    .collect(),
                rows: rows.into_values().collect(),
                open: matches!(
                    metric,
                    MetricName::Cosine | MetricName::L2Ratio | MetricName::DropAccuracy
                ),
            }
        })
        .collect()
}

// ---------------------------------------------------------------- one run

pub struct FigureItem {
    name: String,
    title: String,
    svg: String,
}

impl From<Drawn> for FigureItem {
    fn from(d: Drawn) -> Self {
        Self {
            name: d.name,
            title: d.title,
            svg: d.svg,
        }
    }
}

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
}

/// What changes while a run trains; the run page refreshes it from `live_url`.
pub struct RunLive {
    live_url: String,
    id: Uuid,
    csrf: String,
    finished: bool,
    /// The analyses' states; when it changes the page reloads to show their results.
    analyses: String,
    status: &'static str,
    item: RunItem,
    step: String,
    failure: String,
    can_cancel: bool,
    can_retry: bool,
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

pub struct AnalysisSection {
    id: Uuid,
    epoch: u32,
    status: &'static str,
    took: String,
    /// "2000 train, 2000 test".
    examples: String,
    alpha: String,
    notes: Vec<String>,
    error: String,
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
    analyses: Vec<AnalysisSection>,
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
    let table = block_table(&analysis.records);
    let head = AnalysisSection {
        id: analysis.id,
        epoch: analysis.epoch,
        status: analysis.status.as_str(),
        took: analysis.seconds.map(duration).unwrap_or_default(),
        examples: domain::SplitExamples::describe(&analysis.examples),
        alpha: analysis
            .selected_alpha
            .map(|a| format!("{a}"))
            .unwrap_or_default(),
        notes: analysis.notes.clone(),
        error: analysis.last_error.clone().unwrap_or_default(),
        figures: vec![],
        table,
    };
    let figures = draw_all(vec![RunResults {
        label: label.to_string(),
        training: vec![],
        analysis: Some(analysis),
        history: vec![],
    }])
    .await?
    .into_iter()
    .map(FigureItem::from)
    .collect();
    Ok(AnalysisSection { figures, ..head })
}

pub async fn run(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> ApiResult<Html<String>> {
    let id = crate::extract::parse_id(&id)?;
    let run = state.store.run(id).await?;
    let live = run_live(&state, &run, &session).await?;
    let mut analyses = vec![];
    for listed in state.store.analyses_of_run(id).await? {
        // The list comes without records; load those of finished analyses.
        let analysis = if listed.status == JobState::Succeeded {
            state.store.analysis(listed.id).await?
        } else {
            listed
        };
        analyses.push(analysis_section(&run.label, analysis).await?);
    }
    let shown = run.resolved_spec.as_ref().unwrap_or(&run.spec);
    render(&RunPage {
        nav: Nav::of(&session),
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
    })
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

/// Whether a run in `status` can be cancelled (`cancelling` ones are being cancelled),
/// and whether it can be retried: as the store decides.
fn can_cancel(status: JobState) -> bool {
    matches!(status, JobState::Queued | JobState::Running)
}

fn can_retry(status: JobState) -> bool {
    matches!(status, JobState::Failed | JobState::Cancelled)
}

/// The dashboard's cancel and retry buttons, of a run or of a whole experiment.
#[derive(Clone, Copy)]
pub enum Button {
    CancelRun,
    RetryRun,
    CancelExperiment,
    RetryExperiment,
}

impl Button {
    /// Does what the button says, then goes back to the page it is on.
    pub async fn press(
        self,
        State(state): State<AppState>,
        Extension(session): Extension<Session>,
        Path(id): Path<String>,
        Form(form): Form<CsrfForm>,
    ) -> ApiResult<Redirect> {
        check_csrf(&session, &form.csrf)?;
        let id = crate::extract::parse_id(&id)?;
        let (store, attempts) = (&state.store, state.config.lease.max_attempts);
        let page = match self {
            Self::CancelRun => store.cancel_run(id).await.map(|_| "runs"),
            Self::RetryRun => store.retry_run(id, attempts).await.map(|_| "runs"),
            Self::CancelExperiment => store.cancel_experiment(id).await.map(|_| "experiments"),
            Self::RetryExperiment => store
                .retry_experiment(id, attempts)
                .await
                .map(|_| "experiments"),
        }?;
        Ok(Redirect::to(&format!("/{page}/{id}")))
    }
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

/// A CSV table the browser saves under `file` instead of showing it.
fn csv_download(file: &str, body: String) -> Response {
    let mut response = typed("text/csv; charset=utf-8", body);
    if let Ok(v) = format!("attachment; filename=\"{file}\"").parse() {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    response.into_response()
}

// ---------------------------------------------------------------- one experiment

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
    legend: &'static str,
    csrf: String,
    /// Whether some run is queued or running, and whether some failed or was cancelled.
    can_cancel: bool,
    can_retry: bool,
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
        legend: domain::claims::LEGEND,
        csrf: session.csrf.clone(),
        can_cancel: experiment.runs.iter().any(|r| can_cancel(r.status)),
        can_retry: experiment.runs.iter().any(|r| can_retry(r.status)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(number(0.123456), "0.1235");
        assert_eq!(number(-0.0012341), "-0.001234");
        assert_eq!(number(12.3456), "12.35");
        assert_eq!(number(0.0), "0");
        assert_eq!(duration(0.42), "0.4 s");
        assert_eq!(duration(42.0), "42 s");
        assert_eq!(duration(150.0), "3 min");
        assert_eq!(duration(3720.0), "1 h 2 min");
    }

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

    #[test]
    fn blocks_side_by_side_have_a_table_per_metric_and_a_column_per_configuration() {
        let summary = |configuration: &str, name, split, block, runs, mean, sd| BlockSummary {
            configuration: configuration.into(),
            epoch: 6,
            name,
            split,
            block: BlockId::new(block, 0),
            block_index: block,
            kind: if block == 1 {
                BlockKind::Projection
            } else {
                BlockKind::Identity
            },
            runs,
            mean,
            sd,
        };
        let tables = side_by_side(&[
            summary("a", MetricName::Cosine, Split::Test, 1, 2, -0.5, 0.25),
            summary("a", MetricName::Cosine, Split::Test, 0, 2, -0.125, 0.0),
            summary("a", MetricName::Cosine, Split::Train, 0, 2, 9.0, 0.0),
            summary(
                "a",
                MetricName::ActivationNorm,
                Split::Train,
                0,
                1,
                3.0,
                0.0,
            ),
            summary("b", MetricName::Cosine, Split::Test, 0, 1, 0.5, 0.0),
        ]);
        let cosine = &tables[0];
        assert_eq!(
            (cosine.metric, cosine.split, cosine.open),
            ("cosine", "test", true)
        );
        assert_eq!(cosine.columns, ["a (2 seeds, epoch 6)", "b (epoch 6)"]);
        let rows: Vec<(&str, bool, Vec<&str>)> = cosine
            .rows
            .iter()
            .map(|r| {
                (
                    r.block.as_str(),
                    r.projection,
                    r.cells.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("s0.b0", false, vec!["-0.1250 ± 0", "0.5000"]),
                ("s1.b0", true, vec!["-0.5000 ± 0.2500", ""]),
            ]
        );
        // A metric measured on the training split only is shown on it, folded.
        let norms = &tables[1];
        assert_eq!(
            (norms.metric, norms.split, norms.open),
            ("activation_norm", "train", false)
        );
        assert_eq!(norms.rows[0].cells, ["3.000"]);
    }
}
