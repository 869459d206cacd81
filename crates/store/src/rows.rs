//! Rows as Postgres returns them, and their conversion into the API's views.

use crate::Result;
use chrono::{DateTime, Utc};
use domain::service::{
    AnalysisView, AttemptView, CheckpointRef, CheckpointView, ExperimentSummary, FailureKind,
    JobKind, JobState, LogLine, RunView, WorkerAnalysis, WorkerCapacity, WorkerJob, WorkerView,
};
use sqlx::types::Json;
use uuid::Uuid;

/// The columns of a run view: the run, its train job and its best test accuracy.
pub(crate) const RUN_VIEW: &str = "
    SELECT r.id, r.experiment_id, r.label, r.name, r.tags, r.arch, r.dataset, r.status,
           r.epochs, r.epochs_done, r.step, r.total_steps, r.progress_at,
           r.attempt_started_at, r.attempt_start_step, r.spec, r.resolved_spec,
           r.analysis_plan, r.weights, r.created_at, r.updated_at,
           j.attempt, j.failure_kind, j.last_error,
           (SELECT max(m.value) FROM metrics m
             WHERE m.run_id = r.id AND m.name = 'accuracy' AND m.split = 'test'
               AND m.block = '') AS best_test_accuracy,
           (SELECT count(*) FROM analyses a
             WHERE a.run_id = r.id AND a.status IN ('queued', 'running', 'cancelling'))
             AS analyses_pending
      FROM runs r JOIN jobs j ON j.run_id = r.id AND j.kind = 'train'";

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    id: Uuid,
    experiment_id: Option<Uuid>,
    label: String,
    name: Option<String>,
    tags: Vec<String>,
    arch: String,
    dataset: String,
    status: String,
    epochs: i32,
    epochs_done: i32,
    step: i64,
    total_steps: i64,
    progress_at: Option<DateTime<Utc>>,
    attempt_started_at: Option<DateTime<Utc>>,
    attempt_start_step: Option<i64>,
    spec: Json<domain::RunSpec>,
    resolved_spec: Option<Json<domain::RunSpec>>,
    analysis_plan: Option<Json<domain::service::AnalysisPlan>>,
    weights: Option<Json<domain::service::UploadedWeights>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    attempt: i32,
    failure_kind: Option<String>,
    last_error: Option<String>,
    best_test_accuracy: Option<f64>,
    analyses_pending: i64,
}

impl RunRow {
    pub(crate) fn view(self) -> Result<RunView> {
        let status = state(&self.status)?;
        // The pace of the current attempt, from its first reported step to the latest.
        let eta_seconds = match (
            status,
            self.progress_at,
            self.attempt_started_at,
            self.attempt_start_step,
        ) {
            (JobState::Running, Some(at), Some(started), Some(start_step))
                if self.step > start_step && at > started =>
            {
                let seconds = (at - started).num_milliseconds() as f64 / 1e3;
                let rate = (self.step - start_step) as f64 / seconds;
                Some((self.total_steps - self.step).max(0) as f64 / rate)
            }
            _ => None,
        };
        Ok(RunView {
            id: self.id,
            experiment_id: self.experiment_id,
            label: self.label,
            name: self.name,
            tags: self.tags,
            arch: self.arch,
            dataset: self.dataset,
            status,
            epochs: self.epochs as u32,
            epochs_done: self.epochs_done as u32,
            step: self.step as u64,
            total_steps: self.total_steps as u64,
            eta_seconds,
            best_test_accuracy: self.best_test_accuracy,
            analyses_pending: self.analyses_pending as u32,
            attempts: self.attempt as u32,
            failure_kind: self.failure_kind.as_deref().map(failure).transpose()?,
            last_error: self.last_error,
            spec: self.spec.0,
            resolved_spec: self.resolved_spec.map(|j| j.0),
            analysis: self.analysis_plan.map(|j| j.0),
            weights: self.weights.map(|j| j.0),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

pub(crate) const CHECKPOINT_COLUMNS: &str = "id, run_id, attempt, directory, file_name, epoch, \
     batch, step, sha256, size, removed, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct CheckpointRow {
    pub id: Uuid,
    pub run_id: Uuid,
    pub attempt: i32,
    pub directory: String,
    pub file_name: String,
    pub epoch: i32,
    pub batch: i32,
    pub step: i64,
    pub sha256: String,
    pub size: i64,
    pub removed: bool,
    pub created_at: DateTime<Utc>,
}

impl CheckpointRow {
    pub(crate) fn view(&self) -> CheckpointView {
        CheckpointView {
            id: self.id,
            run_id: self.run_id,
            attempt: self.attempt as u32,
            file_name: self.file_name.clone(),
            epoch: self.epoch as u32,
            batch: self.batch as u32,
            step: self.step as u64,
            sha256: self.sha256.clone(),
            size: self.size as u64,
            removed: self.removed,
            created_at: self.created_at,
        }
    }

    pub(crate) fn reference(&self) -> CheckpointRef {
        CheckpointRef {
            id: self.id,
            directory: self.directory.clone(),
            file_name: self.file_name.clone(),
            epoch: self.epoch as u32,
            batch: self.batch as u32,
            sha256: self.sha256.clone(),
        }
    }
}

pub(crate) const ANALYSIS_VIEW: &str = "
    SELECT a.id, a.run_id, a.checkpoint_id, a.epoch, a.spec, a.status, a.selected_alpha,
           a.notes, a.examples, a.seconds, a.passes, a.progress, a.created_at, a.finished_at,
           j.failure_kind, j.last_error
      FROM analyses a JOIN jobs j ON j.analysis_id = a.id";

#[derive(sqlx::FromRow)]
pub(crate) struct AnalysisRow {
    id: Uuid,
    run_id: Uuid,
    checkpoint_id: Uuid,
    epoch: i32,
    spec: Json<domain::AnalysisSpec>,
    status: String,
    selected_alpha: Option<f64>,
    notes: Option<Json<Vec<String>>>,
    examples: Option<Json<Vec<domain::SplitExamples>>>,
    seconds: Option<f64>,
    passes: Option<Json<Vec<domain::PassTime>>>,
    progress: Option<Json<domain::AnalysisProgress>>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    failure_kind: Option<String>,
    last_error: Option<String>,
}

impl AnalysisRow {
    pub(crate) fn view(self, records: Vec<domain::AnalysisRecord>) -> Result<AnalysisView> {
        Ok(AnalysisView {
            id: self.id,
            run_id: self.run_id,
            checkpoint_id: self.checkpoint_id,
            epoch: self.epoch as u32,
            status: state(&self.status)?,
            spec: self.spec.0,
            failure_kind: self.failure_kind.as_deref().map(failure).transpose()?,
            last_error: self.last_error,
            selected_alpha: self.selected_alpha,
            notes: self.notes.map(|j| j.0).unwrap_or_default(),
            examples: self.examples.map(|j| j.0).unwrap_or_default(),
            seconds: self.seconds,
            passes: self.passes.map(|j| j.0).unwrap_or_default(),
            progress: self.progress.map(|j| j.0),
            created_at: self.created_at,
            finished_at: self.finished_at,
            records,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct LogRow {
    at: DateTime<Utc>,
    attempt: Option<i32>,
    level: String,
    message: String,
}

impl From<LogRow> for LogLine {
    fn from(r: LogRow) -> Self {
        LogLine {
            at: r.at,
            attempt: r.attempt.map(|a| a as u32),
            level: r.level,
            message: r.message,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ExperimentRow {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
    runs: i64,
    succeeded: i64,
    failed: i64,
    active: i64,
}

impl ExperimentRow {
    pub(crate) fn view(self) -> ExperimentSummary {
        ExperimentSummary {
            id: self.id,
            name: self.name,
            created_at: self.created_at,
            runs: self.runs as u32,
            succeeded: self.succeeded as u32,
            failed: self.failed as u32,
            active: self.active as u32,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AttemptRow {
    job_id: Uuid,
    kind: String,
    epoch: Option<i32>,
    attempt: i32,
    worker: String,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    outcome: Option<String>,
    failure_kind: Option<String>,
    error: Option<String>,
}

impl AttemptRow {
    pub(crate) fn view(self) -> Result<AttemptView> {
        Ok(AttemptView {
            job_id: self.job_id,
            kind: job_kind(&self.kind)?,
            epoch: self.epoch.map(|e| e as u32),
            attempt: self.attempt as u32,
            worker: self.worker,
            started_at: self.started_at,
            ended_at: self.ended_at,
            outcome: self.outcome.as_deref().map(state).transpose()?,
            failure_kind: self.failure_kind.as_deref().map(failure).transpose()?,
            error: self.error,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct WorkerRow {
    name: String,
    kinds: Vec<String>,
    memory: String,
    budget_mib: i64,
    seen_at: DateTime<Utc>,
    live: bool,
    job_id: Option<Uuid>,
    job_kind: Option<String>,
    run_id: Option<Uuid>,
    run_name: Option<String>,
    run_label: Option<String>,
    epochs_done: Option<i32>,
    epochs: Option<i32>,
    analysis_id: Option<Uuid>,
    analysis_epoch: Option<i32>,
    progress: Option<Json<domain::AnalysisProgress>>,
}

impl WorkerRow {
    pub(crate) fn view(self) -> Result<WorkerView> {
        let analysis = match (self.analysis_id, self.analysis_epoch) {
            (Some(id), Some(epoch)) => Some(WorkerAnalysis {
                id,
                epoch: epoch as u32,
                progress: self.progress.map(|p| p.0),
            }),
            _ => None,
        };
        let job = match (self.job_id, self.job_kind, self.run_id) {
            (Some(job_id), Some(kind), Some(run_id)) => Some(WorkerJob {
                job_id,
                kind: job_kind(&kind)?,
                run_id,
                run_name: self.run_name,
                run_label: self.run_label.unwrap_or_default(),
                epochs_done: self.epochs_done.unwrap_or_default() as u32,
                epochs: self.epochs.unwrap_or_default() as u32,
                analysis,
            }),
            _ => None,
        };
        Ok(WorkerView {
            kinds: self
                .kinds
                .iter()
                .map(|k| job_kind(k))
                .collect::<Result<_>>()?,
            capacity: capacity(&self.memory, self.budget_mib)?,
            name: self.name,
            seen_at: self.seen_at,
            live: self.live,
            job,
        })
    }
}

/// A worker's capacity from its row's columns.
pub(crate) fn capacity(memory: &str, budget_mib: i64) -> Result<WorkerCapacity> {
    Ok(WorkerCapacity {
        memory: memory.parse().map_err(|_| corrupt("memory", memory))?,
        budget_mib: budget_mib.max(0) as u64,
    })
}

fn job_kind(s: &str) -> Result<JobKind> {
    s.parse().map_err(|_| corrupt("job kind", s))
}

fn corrupt(what: &str, value: &str) -> crate::StoreError {
    crate::StoreError::Database(sqlx::Error::Decode(
        format!("unexpected {what} {value:?} in the database").into(),
    ))
}

pub(crate) fn state(s: &str) -> Result<JobState> {
    s.parse().map_err(|_| corrupt("job state", s))
}

pub(crate) fn failure(s: &str) -> Result<FailureKind> {
    s.parse().map_err(|_| corrupt("failure kind", s))
}
