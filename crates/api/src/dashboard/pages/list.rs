//! The runs page (`/`): runs with live progress, experiments, workers.

use super::{duration, percent, render, when, Nav};
use crate::dashboard::session::Session;
use crate::error::ApiResult;
use crate::extract::{parse_cursor, Query};
use crate::routes::runs::run_filter;
use crate::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Html;
use axum::Extension;
use chrono::Utc;
use domain::service::{analyses_pending, JobState, RunView};
use domain::Arch;
use serde::Deserialize;
use uuid::Uuid;

/// A run as a row of the runs table.
pub struct RunItem {
    pub(super) id: Uuid,
    pub(super) title: String,
    pub(super) experiment: Option<Uuid>,
    pub(super) status: &'static str,
    pub(super) arch: String,
    pub(super) dataset: String,
    pub(super) progress: String,
    pub(super) percent: u32,
    pub(super) eta: String,
    pub(super) best: String,
    pub(super) created: String,
    /// Made of uploaded weights rather than trained here.
    pub(super) imported: bool,
}

impl RunItem {
    pub(super) fn of(run: &RunView) -> Self {
        let fraction = if run.total_steps > 0 {
            run.step as f64 / run.total_steps as f64
        } else if run.status == JobState::Succeeded {
            1.0
        } else {
            0.0
        };
        let epochs = format!("{}/{} epochs", run.epochs_done, run.epochs);
        Self {
            id: run.id,
            title: run.name.clone().unwrap_or_else(|| run.label.clone()),
            experiment: run.experiment_id,
            status: run.status.as_str(),
            arch: run.arch.clone(),
            dataset: run.dataset.clone(),
            progress: match run.analyses_pending {
                0 => epochs,
                n => format!("{epochs} · {}", analyses_pending(n as usize)),
            },
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
    pub(super) live_url: String,
    pub(super) rows: Vec<RunItem>,
    pub(super) next_page: Option<String>,
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
    pub(super) status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) experiment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cursor: Option<String>,
    /// The experiments list's own page (the runs page shows both lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) experiments_cursor: Option<String>,
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

pub(super) async fn runs_table(state: &AppState, q: &RunsQuery) -> ApiResult<RunsTable> {
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
    /// The run it works on (id and name), the job's kind and how far it is.
    job: Option<(Uuid, String, String, String)>,
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
            job: w
                .job
                .as_ref()
                .map(|j| (j.run_id, j.run(), j.kind.to_string(), j.doing())),
            presence: w.presence(Utc::now()),
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
    /// Seen within `WORKER_SEEN_WITHIN`, and those seen only before.
    workers: Vec<WorkerItem>,
    gone: Vec<WorkerItem>,
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
    // Workers not seen lately are folded away: pods restarted under new names would
    // otherwise fill the table for a week.
    let (live, gone): (Vec<_>, Vec<_>) = state
        .store
        .workers()
        .await?
        .into_iter()
        .partition(|w| w.live);
    let (workers, gone) = (
        live.iter().map(WorkerItem::of).collect(),
        gone.iter().map(WorkerItem::of).collect(),
    );
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
        workers,
        gone,
    })
}

pub async fn runs_partial(
    State(state): State<AppState>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Html<String>> {
    let table = runs_table(&state, &q.cleaned()).await?;
    render(&RunsPartial { table })
}
