//! The paper's figures as SVG or PNG, drawn from stored results: a run's (its training
//! metrics, its latest analysis and its blocks over the analysed epochs), an experiment's
//! (every run, seeds of a configuration as mean ± sd), or those of runs named together
//! (grouped into configurations as local run directories are).

use super::typed;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::RunIds;
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use domain::compare::SetAside;
use domain::service::{AnalysisView, ExperimentView, FigureList, LeftOut, RunView};
use domain::{AnalysisRecord, MetricRecord};
use futures_util::{StreamExt, TryStreamExt};
use utoipa::IntoParams;
use uuid::Uuid;

/// The stored results of one run that figures are drawn from.
pub(crate) struct RunResults {
    pub label: String,
    pub training: Vec<MetricRecord>,
    pub analysis: Option<AnalysisView>,
    /// [`figures::Run::history`].
    pub history: Vec<AnalysisRecord>,
    /// Why its latest analysis is not pooled with its seeds', if it is not.
    pub left_out: Option<SetAside>,
}

/// A run's training metrics, its blocks over the analysed epochs and, when
/// `with_analysis`, its latest analysis.
pub(crate) async fn results(
    state: &AppState,
    run: Uuid,
    label: String,
    with_analysis: bool,
) -> ApiResult<RunResults> {
    let store = &state.store;
    let analysis = async {
        match with_analysis {
            true => store.latest_analysis(run).await,
            false => Ok(None),
        }
    };
    let (training, analysis, history) = tokio::try_join!(
        store.metrics(run, None, None),
        analysis,
        store.analysis_history(run, &figures::OVER_TRAINING)
    )?;
    Ok(RunResults {
        label,
        training,
        analysis,
        history,
        left_out: None,
    })
}

/// How many runs' results are read at once: most of a figure's time is the database's
/// (reading and decoding each run's records), which a few connections share out over its
/// cores, while the pool keeps connections for other requests.
const READ_AT_ONCE: usize = 4;

/// [`results`] of each run (id and label), with its latest analysis, in their order.
async fn results_of(state: &AppState, runs: Vec<(Uuid, String)>) -> ApiResult<Vec<RunResults>> {
    // Each future owns its state: a stream of futures borrowing one trips the compiler's
    // proof that the handler's future is `Send`.
    let read = |(run, label): (Uuid, String)| {
        let state = state.clone();
        async move { results(&state, run, label, true).await }
    };
    futures_util::stream::iter(runs)
        .map(read)
        .buffered(READ_AT_ONCE)
        .try_collect()
        .await
}

/// Seeds pooled at their configuration's latest analysed epoch, measured alike
/// ([`domain::compare::pool_seeds`]).
fn pool_seeds(results: &mut [RunResults]) {
    domain::compare::pool_seeds(
        results,
        |r| (&r.label, r.analysis.as_ref().map(AnalysisView::analysed)),
        |r, why| why.apply(&mut r.analysis, &mut r.history, &mut r.left_out),
    );
}

/// The runs whose analyses [`pool_seeds`] left out of `results`, and why.
pub(crate) fn left_out(runs: &[RunView], results: &[RunResults]) -> Vec<LeftOut> {
    runs.iter()
        .zip(results)
        .filter_map(|(run, result)| {
            Some(LeftOut {
                run_id: run.id,
                name: run.name.clone(),
                configuration: result.label.clone(),
                reason: result.left_out?.to_string(),
            })
        })
        .collect()
}

/// Runs as the figures crate takes them.
fn views(runs: &[RunResults]) -> Vec<figures::Run<'_>> {
    runs.iter()
        .map(|r| {
            let analysis = r.analysis.as_ref();
            let analysed = analysis.map(|a| (&a.records[..], a.selected_alpha, &a.spec));
            figures::Run::new(&r.label, &r.training, &r.history, analysed)
        })
        .collect()
}

/// The formats a figure is served in, named by the file's extension.
#[derive(Clone, Copy)]
enum Format {
    Svg,
    Png,
}

impl Format {
    /// The figure's name and format of a file name (`fig2_cosine.svg`).
    fn of(file: &str) -> Option<(&str, Self)> {
        [(".svg", Self::Svg), (".png", Self::Png)]
            .into_iter()
            .find_map(|(extension, format)| Some((file.strip_suffix(extension)?, format)))
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Svg => "image/svg+xml",
            Self::Png => "image/png",
        }
    }

    fn draw(self, figure: &figures::Figure) -> ApiResult<Vec<u8>> {
        match self {
            Self::Svg => figures::svg(figure).map(String::into_bytes),
            Self::Png => figures::png(figure),
        }
        .map_err(ApiError::internal)
    }
}

/// Every figure the results support, drawn off the async threads; only `wanted` is
/// rendered, in its format.
async fn draw(
    runs: Vec<RunResults>,
    wanted: Option<(String, Format)>,
) -> ApiResult<Vec<(String, Option<Vec<u8>>)>> {
    tokio::task::spawn_blocking(move || {
        figures::figures(&views(&runs))
            .into_iter()
            .map(|(name, figure)| {
                let drawn = match &wanted {
                    Some((wanted, format)) if *wanted == name => Some(format.draw(&figure)?),
                    _ => None,
                };
                Ok((name, drawn))
            })
            .collect()
    })
    .await
    .map_err(ApiError::internal)?
}

/// A figure drawn as SVG, with the title of its first panel.
pub(crate) struct Drawn {
    pub name: String,
    pub title: String,
    pub svg: String,
}

/// Every figure the results support, each drawn (for the dashboard's pages).
pub(crate) async fn draw_all(runs: Vec<RunResults>) -> ApiResult<Vec<Drawn>> {
    tokio::task::spawn_blocking(move || {
        figures::figures(&views(&runs))
            .into_iter()
            .map(|(name, figure)| {
                Ok(Drawn {
                    title: figure
                        .panels
                        .first()
                        .map(|p| p.title.clone())
                        .unwrap_or_default(),
                    svg: figures::svg(&figure).map_err(ApiError::internal)?,
                    name,
                })
            })
            .collect()
    })
    .await
    .map_err(ApiError::internal)?
}

/// The figures of `runs` (views of them and their results), and which seeds' analyses they
/// leave out.
async fn list(runs: &[RunView], results: Vec<RunResults>) -> ApiResult<Json<FigureList>> {
    let left_out = left_out(runs, &results);
    Ok(Json(FigureList {
        figures: names(results).await?,
        left_out,
    }))
}

/// The names of the figures drawn of `results`.
pub(crate) async fn names(results: Vec<RunResults>) -> ApiResult<Vec<String>> {
    let drawn = draw(results, None).await?;
    Ok(drawn.into_iter().map(|(n, _)| n).collect())
}

async fn one(runs: Vec<RunResults>, file: &str) -> ApiResult<Response> {
    let (name, format) = Format::of(file)
        .ok_or_else(|| ApiError::not_found("figures are served as {name}.svg or {name}.png"))?;
    let drawn = draw(runs, Some((name.to_string(), format))).await?;
    match drawn.into_iter().find(|(n, _)| n == name) {
        Some((_, Some(bytes))) => Ok(typed(format.content_type(), bytes)),
        _ => Err(ApiError::not_found(format!(
            "no figure {name:?} for these results (GET …/figures lists those available)"
        ))),
    }
}

async fn run_results(state: &AppState, raw: &str) -> ApiResult<(Vec<RunView>, Vec<RunResults>)> {
    let id = crate::extract::parse_id(raw)?;
    let run = state.store.run(id).await?;
    let results = vec![results(state, id, run.label.clone(), true).await?];
    Ok((vec![run], results))
}

/// Every run's results (training metrics and latest analysis, seeds pooled at their
/// configuration's latest analysed epoch, measured alike), in the experiment's order.
pub(crate) async fn experiment_results(
    state: &AppState,
    experiment: &ExperimentView,
) -> ApiResult<Vec<RunResults>> {
    let runs = experiment.runs.iter().map(|r| (r.id, r.label.clone()));
    let mut out = results_of(state, runs.collect()).await?;
    pool_seeds(&mut out);
    Ok(out)
}

/// `?runs=ID,ID,…` as OpenAPI documents it; read by [`RunIds`], which also takes `runs`
/// repeated.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RunsQuery {
    /// Run ids, comma-separated or the parameter repeated (at most 100): runs whose specs
    /// differ only in the seed are seeds of one configuration (mean ± sd, those analysed
    /// at its latest analysed epoch, measured alike); configurations of one model that
    /// differ in more are labelled by their runs' names (an experiment's by experiment and
    /// configuration; a run without a name by the end of its id)
    runs: String,
}

/// Runs named together, each with the label of its configuration
/// ([`domain::configuration_labels`]).
pub(crate) async fn labelled(
    state: &AppState,
    ids: &[Uuid],
) -> ApiResult<(Vec<RunView>, Vec<String>)> {
    let mut runs = vec![];
    for &id in ids {
        runs.push(state.store.run(id).await?);
    }
    let names: Vec<String> = runs.iter().map(own_label).collect();
    let specs: Vec<(&str, &domain::RunSpec)> = names
        .iter()
        .zip(&runs)
        .map(|(name, run)| (name.as_str(), &run.spec))
        .collect();
    let labels = domain::configuration_labels(&specs);
    Ok((runs, labels))
}

/// Runs drawn together: their results under their configurations' labels, seeds pooled at
/// their configuration's latest analysed epoch, measured alike.
pub(crate) async fn together(
    state: &AppState,
    ids: &[Uuid],
) -> ApiResult<(Vec<RunView>, Vec<RunResults>)> {
    let (runs, labels) = labelled(state, ids).await?;
    let ids = runs.iter().map(|r| r.id).zip(labels).collect();
    let mut out = results_of(state, ids).await?;
    pool_seeds(&mut out);
    Ok((runs, out))
}

/// What a run is called where its configuration shares its model's label with another: an
/// experiment's run by its experiment and configuration (`exp/resnet-20/seed1` →
/// `exp-resnet-20`, which its seeds share), another by its name, or without one by the end
/// of its id (the random part of a UUIDv7) — as a figure file's name can hold it.
fn own_label(run: &RunView) -> String {
    let name = match (&run.name, run.experiment_id) {
        (Some(name), Some(_)) => name.rsplit_once('/').map_or(name.as_str(), |(c, _)| c),
        (Some(name), None) => name.as_str(),
        (None, _) => return run.id.simple().to_string()[24..].to_string(),
    };
    name.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .collect()
}

#[utoipa::path(get, path = "/v1/figures", tag = "figures", params(RunsQuery),
    responses((status = 200, body = FigureList), (status = 400, body = Problem),
        (status = 404, body = Problem)))]
pub async fn runs_list(
    State(state): State<AppState>,
    RunIds(ids): RunIds,
) -> ApiResult<Json<FigureList>> {
    let (runs, results) = together(&state, &ids).await?;
    list(&runs, results).await
}

#[utoipa::path(get, path = "/v1/figures/{file}", tag = "figures",
    params(RunsQuery,
        ("file" = String, Path, description = "a listed figure's name + `.svg` or `.png`")),
    responses((status = 200, description = "the figure, by the file's extension",
            content((String = "image/svg+xml"), (Vec<u8> = "image/png"))),
        (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn runs_figure(
    State(state): State<AppState>,
    Path(file): Path<String>,
    RunIds(ids): RunIds,
) -> ApiResult<Response> {
    one(together(&state, &ids).await?.1, &file).await
}

async fn experiment_of(state: &AppState, raw: &str) -> ApiResult<(Vec<RunView>, Vec<RunResults>)> {
    let experiment = state
        .store
        .experiment(crate::extract::parse_id(raw)?)
        .await?;
    let results = experiment_results(state, &experiment).await?;
    Ok((experiment.runs, results))
}

#[utoipa::path(get, path = "/v1/runs/{id}/figures", tag = "figures",
    params(("id" = uuid::Uuid, Path)), responses((status = 200, body = FigureList)))]
pub async fn run_list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<FigureList>> {
    let (runs, results) = run_results(&state, &id).await?;
    list(&runs, results).await
}

#[utoipa::path(get, path = "/v1/runs/{id}/figures/{file}", tag = "figures",
    params(("id" = uuid::Uuid, Path),
        ("file" = String, Path, description = "a listed figure's name + `.svg` or `.png`")),
    responses((status = 200, description = "the figure, by the file's extension",
            content((String = "image/svg+xml"), (Vec<u8> = "image/png"))),
        (status = 404, body = Problem)))]
pub async fn run_figure(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    one(run_results(&state, &id).await?.1, &file).await
}

#[utoipa::path(get, path = "/v1/experiments/{id}/figures", tag = "figures",
    params(("id" = uuid::Uuid, Path)), responses((status = 200, body = FigureList)))]
pub async fn experiment_list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<FigureList>> {
    let (runs, results) = experiment_of(&state, &id).await?;
    list(&runs, results).await
}

#[utoipa::path(get, path = "/v1/experiments/{id}/figures/{file}", tag = "figures",
    params(("id" = uuid::Uuid, Path),
        ("file" = String, Path, description = "a listed figure's name + `.svg` or `.png`")),
    responses((status = 200, description = "the figure, by the file's extension",
            content((String = "image/svg+xml"), (Vec<u8> = "image/png"))),
        (status = 404, body = Problem)))]
pub async fn experiment_figure(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    one(experiment_of(&state, &id).await?.1, &file).await
}
