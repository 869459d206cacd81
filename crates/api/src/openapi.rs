//! The OpenAPI 3 document served at `/openapi.json` (and rendered at `/docs`).

use crate::error::Problem;
use crate::routes::{
    analyses, blocks, checkpoints, datasets, experiments, figures, import, ops, runs, worker,
    workers,
};
use domain::service::*;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "stepwise", description = "Training runs of the ResNet variants of \"Residual Connections Encourage Iterative Inference\" and their block-wise metrics. Users authenticate with STEPWISE_API_TOKEN, workers with STEPWISE_WORKER_TOKEN (bearer). Errors are RFC 9457 problem+json."),
    paths(
        runs::submit, import::import, runs::list, runs::get, runs::cancel, runs::retry, runs::delete,
        runs::metrics, runs::logs, runs::attempts, runs::checkpoints, checkpoints::file,
        analyses::request, analyses::of_run, analyses::get,
        experiments::submit, import::import_experiment, experiments::list, experiments::get, experiments::claims, experiments::report,
        experiments::cancel, experiments::retry, experiments::delete,
        figures::run_list, figures::run_figure, figures::experiment_list, figures::experiment_figure,
        figures::runs_list, figures::runs_figure, blocks::of_runs, blocks::of_experiment,
        datasets::list, workers::list,
        worker::claim, worker::heartbeat, worker::events, worker::register_checkpoint,
        worker::complete, worker::fail, worker::refuse, worker::release,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(
        Problem, RunSubmission, ImportSubmission, import::ImportForm, UploadedWeights,
        ExperimentImport, import::ExperimentImportForm, RunView, Page<RunView>, CheckpointView, AnalysisView,
        AnalysisRequest, AnalysisPlan, CheckpointSelection, ExperimentSubmission,
        ExperimentView, ExperimentSummary, ClaimsView, LeftOut, Page<ExperimentSummary>, ConfigSummary, AttemptView, LogLine, DatasetView, JobState, JobKind, FailureKind,
        ClaimRequest, Claim, CheckpointRef, AnalysisTask, LeaseProof, HeartbeatReply,
        WorkerEvent, EventBatch, CheckpointRegistration, AnalysisResult, Completion,
        FailureReport, Refusal, WorkerCapacity, domain::Memory, WorkerView, WorkerJob, WorkerAnalysis,
        worker::JobStateReply,
        FigureList, domain::BlockSummary,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
