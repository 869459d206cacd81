//! The dashboard's pages: what each shows, gathered from the store and rendered by the
//! askama templates in `templates/` (which escape every value; only SVG drawn by
//! `figures`, whose text plotters escapes, is inserted as markup). A module per page —
//! `list` (`/`), `run`, `experiment`, `compare` (with the blocks side by side that the
//! experiment's page shows too) —; here what they share: the header, number formats, the
//! cancel, retry and delete buttons (and the page that asks before a delete), CSV downloads.

use super::session::{check_csrf, CsrfForm, Session};
use crate::error::{ApiError, ApiResult};
use crate::routes::figures::Drawn;
use crate::routes::runs::remove_run_files;
use crate::routes::typed;
use crate::AppState;
use askama::Template;
use axum::extract::{Form, Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use chrono::{DateTime, Utc};
use domain::service::{duration, JobState};

mod compare;
mod experiment;
mod list;
mod run;

pub use compare::{compare, compare_blocks_csv};
pub use experiment::{
    experiment, experiment_blocks_csv, experiment_claims_csv, experiment_summary_csv,
};
pub use list::{runs, runs_partial};
pub use run::{analyse, analysis_csv, log_text, metrics_csv, run, run_partial};

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

/// `1 analysis`, `2 analyses`.
fn counted(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1048575 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1048576.0),
    }
}

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

/// Whether a run in `status` can be cancelled (`cancelling` ones are being cancelled),
/// and whether it can be retried: as the store decides.
fn can_cancel(status: JobState) -> bool {
    matches!(status, JobState::Queued | JobState::Running)
}

fn can_retry(status: JobState) -> bool {
    matches!(status, JobState::Failed | JobState::Cancelled)
}

/// Whether a run in `status` can be deleted: no job of it runs (the store refuses while one
/// does, also an analysis of a finished run).
fn can_delete(status: JobState) -> bool {
    status.is_final()
}

/// The dashboard's cancel, retry and delete buttons, of a run or of a whole experiment.
#[derive(Clone, Copy)]
pub enum Button {
    CancelRun,
    RetryRun,
    DeleteRun,
    CancelExperiment,
    RetryExperiment,
    DeleteExperiment,
}

impl Button {
    /// Does what the button says, then goes back to the page it is on (after a delete, to
    /// the runs page).
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
            Self::DeleteRun => {
                let dir = store.delete_run(id).await?;
                remove_run_files(&state, &dir).await;
                return Ok(Redirect::to("/"));
            }
            Self::DeleteExperiment => {
                for dir in store.delete_experiment(id).await? {
                    remove_run_files(&state, &dir).await;
                }
                return Ok(Redirect::to("/"));
            }
        }?;
        Ok(Redirect::to(&format!("/{page}/{id}")))
    }
}

/// The page that asks before a run or an experiment is deleted, saying what goes with it.
#[derive(Template)]
#[template(path = "delete.html")]
pub struct DeletePage {
    nav: Nav,
    csrf: String,
    /// "run" or "experiment".
    what: &'static str,
    name: String,
    /// Its page, and where the delete button posts.
    page: String,
    /// What is removed with it.
    consequences: String,
}

/// `GET /runs/{id}/delete`: what deleting the run removes, and the button.
pub async fn delete_run(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> ApiResult<Html<String>> {
    let id = crate::extract::parse_id(&id)?;
    let run = state.store.run(id).await?;
    let files: Vec<_> = state
        .store
        .checkpoints(id)
        .await?
        .into_iter()
        .filter(|c| !c.removed)
        .collect();
    let bytes: u64 = files.iter().map(|c| c.size).sum();
    let analyses = state.store.analyses_of_run(id).await?.len();
    let weights = match &run.weights {
        Some(w) => format!(", the uploaded weights {} ({})", w.file_name, size(w.size)),
        None => String::new(),
    };
    render(&DeletePage {
        nav: Nav::of(&session),
        csrf: session.csrf.clone(),
        what: "run",
        name: run.name.clone().unwrap_or_else(|| run.label.clone()),
        page: format!("/runs/{id}"),
        consequences: format!(
            "Removed with it, from the checkpoint store and the database: {} ({}){weights}, \
             {}, its metrics, attempts and log.",
            counted(files.len(), "checkpoint file", "checkpoint files"),
            size(bytes),
            counted(analyses, "analysis", "analyses"),
        ),
    })
}

/// `GET /experiments/{id}/delete`: what deleting the experiment removes, and the button.
pub async fn delete_experiment(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> ApiResult<Html<String>> {
    let id = crate::extract::parse_id(&id)?;
    let experiment = state.store.experiment(id).await?;
    render(&DeletePage {
        nav: Nav::of(&session),
        csrf: session.csrf.clone(),
        what: "experiment",
        name: experiment.name.clone(),
        page: format!("/experiments/{id}"),
        consequences: format!(
            "Removed with it, from the checkpoint store and the database: its runs ({}) with \
             their checkpoint files, analyses, metrics, attempts and logs.",
            experiment.runs.len(),
        ),
    })
}

/// A CSV table the browser saves under `file` instead of showing it.
fn csv_download(file: &str, body: String) -> Response {
    download("text/csv; charset=utf-8", file, body)
}

/// A body of `content_type` the browser saves under `file` instead of showing it.
fn download(content_type: &'static str, file: &str, body: String) -> Response {
    let mut response = typed(content_type, body);
    if let Ok(v) = format!("attachment; filename=\"{file}\"").parse() {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    response.into_response()
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
    }
}
