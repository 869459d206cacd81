//! The dashboard's pages: what each shows, gathered from the store and rendered by the
//! askama templates in `templates/` (which escape every value; only SVG drawn by
//! `figures`, whose text plotters escapes, is inserted as markup). A module per page —
//! `list` (`/`), `run`, `experiment`, `compare` (with the blocks side by side that the
//! experiment's page shows too) —; here what they share: the header, number formats, the
//! cancel and retry buttons, CSV downloads.

use super::session::{check_csrf, CsrfForm, Session};
use crate::error::{ApiError, ApiResult};
use crate::routes::figures::Drawn;
use crate::routes::typed;
use crate::AppState;
use askama::Template;
use axum::extract::{Form, Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use chrono::{DateTime, Utc};
use domain::service::JobState;

mod compare;
mod experiment;
mod list;
mod run;

pub use compare::{compare, compare_blocks_csv};
pub use experiment::{
    experiment, experiment_blocks_csv, experiment_claims_csv, experiment_summary_csv,
};
pub use list::{runs, runs_partial};
pub use run::{analyse, analysis_csv, metrics_csv, run, run_partial};

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
}
