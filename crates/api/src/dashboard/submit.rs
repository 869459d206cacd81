//! The dashboard's submission page: a spec file as `stepwise submit` takes it (a run, or an
//! experiment when it has `configs`) written into a form, with a run's analysis plan and,
//! for runs made of weights trained elsewhere, their files (an experiment's named after
//! their runs). It goes through the same checks and store calls as `POST /v1/runs`,
//! `/v1/experiments`, `/v1/runs/import` and `/v1/experiments/import`; a refused submission
//! comes back as the form, as it was written, with every reason.

use super::pages::{render, Nav};
use super::reasons;
use super::session::{check_csrf, Session};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_id, Query};
use crate::routes::import::Upload;
use crate::routes::{datasets, experiments, import, runs};
use crate::AppState;
use askama::Template;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use domain::service::{
    AnalysisPlan, CheckpointSelection, DatasetView, ExperimentImport, ExperimentSubmission,
    ImportSubmission, RunSubmission, UploadedWeights,
};
use domain::{AnalysisSpec, SpecError, SpecFile};
use serde::Deserialize;

/// The README's quick run, the spec a fresh form starts from.
const QUICK_RUN: &str = include_str!("../../../../experiments/quick.toml");

/// What the form holds besides the file: kept to be shown again when refused (a browser
/// cannot be given the file back).
#[derive(Debug, Default)]
pub struct Fields {
    /// TOML, a run's or an experiment's.
    spec: String,
    /// A run's analysed checkpoints: `final` (also when empty), `every:K`, `epochs:A,B,…`
    /// or `none`.
    analysis: String,
    /// A run's analysis settings (the plan's `spec`) that differ from the defaults, TOML.
    settings: String,
    /// Where the uploaded file's state dict is (as `stepwise submit --key/--strip-prefix`).
    key: String,
    strip_prefix: String,
}

#[derive(Template)]
#[template(path = "submit.html")]
pub struct SubmitPage {
    nav: Nav,
    csrf: String,
    fields: Fields,
    copy_of: Option<Copied>,
    /// Why the last submission was refused, one line per reason.
    errors: Vec<String>,
    datasets: Vec<DatasetView>,
}

/// What the form was filled from.
pub struct Copied {
    /// Its page, and what to call it.
    page: String,
    what: String,
    /// The name of the file a run was made of.
    weights: Option<String>,
}

/// `?run=ID` or `?experiment=ID`: the form filled with that submission, to change and send
/// again.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyQuery {
    run: Option<String>,
    experiment: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(copy): Query<CopyQuery>,
) -> ApiResult<Html<String>> {
    let (fields, copy_of) = match (copy.run, copy.experiment) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "copy a run or an experiment, not both",
            ))
        }
        (Some(id), None) => {
            let run = state.store.run(parse_id(&id)?).await?;
            let plan = run.analysis.as_ref();
            let reading = |part: fn(&UploadedWeights) -> &Option<String>| {
                run.weights
                    .as_ref()
                    .and_then(|w| part(w).clone())
                    .unwrap_or_default()
            };
            let fields = Fields {
                spec: run.spec.to_toml(),
                analysis: plan.map_or("none".into(), |p| p.checkpoints.to_string()),
                settings: plan.map(|p| p.spec.changes_toml()).unwrap_or_default(),
                key: reading(|w| &w.key),
                strip_prefix: reading(|w| &w.strip_prefix),
            };
            let copied = Copied {
                page: format!("/runs/{}", run.id),
                what: format!("run {}", run.label),
                weights: run.weights.as_ref().map(|w| w.file_name.clone()),
            };
            (fields, Some(copied))
        }
        (None, Some(id)) => {
            let experiment = state.store.experiment(parse_id(&id)?).await?;
            let fields = Fields {
                spec: experiment.spec.to_toml(),
                analysis: "final".into(),
                ..Fields::default()
            };
            let copied = Copied {
                page: format!("/experiments/{}", experiment.id),
                what: format!("experiment {}", experiment.name),
                weights: None,
            };
            (fields, Some(copied))
        }
        (None, None) => {
            let fields = Fields {
                spec: QUICK_RUN.to_string(),
                analysis: "final".into(),
                ..Fields::default()
            };
            (fields, None)
        }
    };
    show(&state, &session, fields, copy_of, vec![]).await
}

async fn show(
    state: &AppState,
    session: &Session,
    fields: Fields,
    copy_of: Option<Copied>,
    errors: Vec<String>,
) -> ApiResult<Html<String>> {
    render(&SubmitPage {
        nav: Nav::of(session),
        csrf: session.csrf.clone(),
        fields,
        copy_of,
        errors,
        datasets: datasets::available(state).await?,
    })
}

/// The form's parts, in the page's order: `csrf`, the text fields, then the files
/// `weights` (a browser sends the field empty, with no file name, when none was chosen).
pub async fn submit(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    form: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    let mut form = import::open_form(
        form,
        "the form has `csrf`, `spec`, the analysis fields, then `weights`",
    )?;
    let (mut csrf, mut fields) = (String::new(), Fields::default());
    // Parsed and checked when the first file comes, before it is received: a refused
    // submission costs no upload.
    let mut parsed: Option<ApiResult<Parsed>> = None;
    let mut uploads: Vec<(usize, Upload)> = vec![];
    // A form that cannot be read is shown nothing of: the browser's Back button has it.
    let unread = |e| {
        let mut e = import::part_error(e);
        e.detail
            .push_str("; your browser's Back button returns to the form");
        e
    };
    while let Some(field) = form.next_field().await.map_err(unread)? {
        let name = field.name().unwrap_or("").to_string();
        if name == "weights" {
            check_csrf(&session, &csrf)?;
            let Some(file_name) = field.file_name().filter(|n| !n.is_empty()) else {
                continue;
            };
            let file_name = file_name.to_string();
            if parsed.is_none() {
                parsed = Some(Parsed::checked_for_files(&state, &fields).await);
            }
            let received = match &parsed {
                Some(Ok(submission)) => match submission.run_of_file(&file_name, &uploads) {
                    Ok(index) => import::receive(&state.config.checkpoint_dir, field)
                        .await
                        .map(|upload| uploads.push((index, upload))),
                    Err(e) => Err(e),
                },
                _ => break,
            };
            if let Err(e) = received {
                parsed = Some(Err(e));
                break;
            }
            continue;
        }
        if parsed.is_some() {
            return Err(ApiError::bad_request(format!(
                "the part `{name}` comes after the files: the form's files come last"
            )));
        }
        let text = import::read_small(field, state.config.max_body_bytes).await?;
        let text = String::from_utf8(text)
            .map_err(|_| ApiError::bad_request(format!("the part `{name}` is not UTF-8")))?;
        let slot = match name.as_str() {
            "csrf" => &mut csrf,
            "spec" => &mut fields.spec,
            "analysis" => &mut fields.analysis,
            "settings" => &mut fields.settings,
            "key" => &mut fields.key,
            "strip_prefix" => &mut fields.strip_prefix,
            _ => return Err(ApiError::bad_request(format!("unexpected part {name:?}"))),
        };
        *slot = text;
    }
    check_csrf(&session, &csrf)?;
    let submitted = match parsed.unwrap_or_else(|| Parsed::of(&fields)) {
        Ok(submission) => submission.create(&state, uploads).await,
        Err(refused) => Err(refused),
    };
    match submitted {
        Ok(page) => Ok(Redirect::to(&page).into_response()),
        Err(refused) if refused.status.is_client_error() => {
            let status = refused.status;
            let page = show(&state, &session, fields, None, reasons(refused)).await?;
            Ok((status, page).into_response())
        }
        Err(e) => Err(e),
    }
}

/// What the form submits, its text parsed: a run (made of one uploaded file or trained), or
/// an experiment (its runs made of files named after them, the others trained).
enum Parsed {
    Run(ImportSubmission),
    Experiment(ExperimentImport),
}

impl Parsed {
    /// Every reason the text is refused for at once: the spec's and the plan's.
    fn of(fields: &Fields) -> ApiResult<Self> {
        let (spec, analysis) = SpecError::both(SpecFile::from_toml(&fields.spec), plan(fields))
            .map_err(ApiError::invalid)?;
        let text = |t: &str| Some(t.trim().to_string()).filter(|t| !t.is_empty());
        let (key, strip_prefix) = (text(&fields.key), text(&fields.strip_prefix));
        Ok(match spec {
            SpecFile::Run(spec) => Self::Run(ImportSubmission {
                spec,
                analysis,
                key,
                strip_prefix,
            }),
            SpecFile::Experiment(spec) => {
                if !matches!(fields.analysis.trim(), "" | "final")
                    || !fields.settings.trim().is_empty()
                {
                    return Err(invalid(
                        "analysis",
                        "an experiment's runs are analysed as its `analysis_checkpoints` and \
                         `[analysis]` say: leave the checkpoints at final and the settings empty",
                    ));
                }
                Self::Experiment(ExperimentImport {
                    spec,
                    key,
                    strip_prefix,
                })
            }
        })
    }

    /// Parsed, then checked as an import of uploaded weights is: what reads the files and
    /// the datasets.
    async fn checked_for_files(state: &AppState, fields: &Fields) -> ApiResult<Self> {
        let parsed = Self::of(fields)?;
        match &parsed {
            Self::Run(submission) => import::check_run(state, submission).await?,
            Self::Experiment(submission) => {
                submission.validate().map_err(ApiError::invalid)?;
                datasets::check_experiment(state, &submission.spec).await?;
            }
        }
        Ok(parsed)
    }

    /// The run the file `file_name` is for, as its index in the experiment's runs, given
    /// the files received so far: a run takes one file, an experiment one per run, named
    /// after it (`ExperimentImport::run_of_file`).
    fn run_of_file(&self, file_name: &str, received: &[(usize, Upload)]) -> ApiResult<usize> {
        match self {
            Self::Run(_) if received.is_empty() => Ok(0),
            Self::Run(_) => Err(invalid("weights", "a run is made of one file: choose one")),
            Self::Experiment(submission) => {
                let index = submission
                    .run_of_file(file_name)
                    .map_err(|e| invalid("weights", e))?;
                if received.iter().any(|(i, _)| *i == index) {
                    let run = &submission.spec.runs()[index];
                    return Err(invalid(
                        "weights",
                        format!("two files are named after {}: one per run", run.dir_name()),
                    ));
                }
                Ok(index)
            }
        }
    }

    /// Submits it, with the files received for it; returns the page of what it created.
    async fn create(
        self,
        state: &AppState,
        mut uploads: Vec<(usize, Upload)>,
    ) -> ApiResult<String> {
        match self {
            Self::Run(submission) => {
                let run = match uploads.pop() {
                    Some((_, upload)) => {
                        import::create_run(state, &submission, upload, None).await?
                    }
                    None => {
                        let ImportSubmission { spec, analysis, .. } = submission;
                        runs::create(state, &RunSubmission { spec, analysis }, None).await?
                    }
                };
                Ok(format!("/runs/{}", run.into_inner().id))
            }
            Self::Experiment(submission) => {
                let experiment = if uploads.is_empty() {
                    let spec = submission.spec;
                    experiments::create(state, &ExperimentSubmission { spec }, None).await?
                } else {
                    import::create_experiment(state, &submission, uploads, None).await?
                };
                Ok(format!("/experiments/{}", experiment.into_inner().id))
            }
        }
    }
}

/// A run's analysis plan as the form gives it: `none`, or the checkpoints and the settings.
fn plan(fields: &Fields) -> Result<Option<AnalysisPlan>, SpecError> {
    let selection = fields.analysis.trim();
    if selection == "none" {
        return match fields.settings.trim() {
            "" => Ok(None),
            _ => Err(SpecError::one(
                "analysis.spec",
                "settings of no analysis: empty them, or name the checkpoints to analyse",
            )),
        };
    }
    let checkpoints = match selection {
        "" => Ok(CheckpointSelection::Final),
        _ => selection
            .parse()
            .map_err(|bad| SpecError::one("analysis", bad)),
    };
    let spec = AnalysisSpec::from_toml(&fields.settings).map_err(|e| e.within("analysis.spec."));
    let (checkpoints, spec) = SpecError::both(checkpoints, spec)?;
    Ok(Some(AnalysisPlan { checkpoints, spec }))
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(SpecError::one(field, message))
}
