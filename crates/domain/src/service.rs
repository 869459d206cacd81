//! The messages of the REST API, shared by the server (`api`), its client (`client`), the
//! workers and the CLI: submissions, the views users read, and the worker protocol (claim,
//! heartbeat, events, checkpoint registration, completion, failure).

use crate::spec::{Errors, SpecError};
use crate::{
    AnalysisProgress, AnalysisRecord, AnalysisSpec, ExperimentSpec, MetricRecord, PassTime,
    RunSpec, Split, SplitExamples,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;
use uuid::Uuid;

/// Timestamps on the wire are RFC 3339 in UTC.
pub use chrono::{DateTime, Utc};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                crate::variant_named(s, Self::ALL, Self::as_str)
            }
        }
    };
}

string_enum!(
    /// The life of a job (and of a run: the state of its train job).
    JobState {
        Queued => "queued",
        Running => "running",
        Cancelling => "cancelling",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl JobState {
    /// Whether the job will not change again without a retry.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

string_enum!(
    JobKind {
        Train => "train",
        Analyze => "analyze",
    }
);

string_enum!(
    /// Why a job failed. Only `infrastructure` failures are retried.
    FailureKind {
        /// The worker was lost, its lease expired, or the checkpoint store failed it (full,
        /// unmounted): retried, resuming from the latest registered checkpoint that reads
        /// intact, up to the configured number of attempts.
        Infrastructure => "infrastructure",
        /// The loss or a parameter became non-finite.
        Diverged => "diverged",
        /// The job cannot run as specified (e.g. its dataset is missing on the worker, or
        /// the checkpoint to analyse is damaged).
        Invalid => "invalid",
        /// A bug or an unexpected error.
        Internal => "internal",
    }
);

impl FailureKind {
    pub fn is_retried(self) -> bool {
        self == Self::Infrastructure
    }
}

/// Which of a run's checkpoints are analysed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CheckpointSelection {
    /// The checkpoint after the last epoch.
    #[default]
    Final,
    /// Every k epochs (and the final one).
    Every(u32),
    /// These epochs (and the final one); 0 is the initial weights, before the first step.
    Epochs(Vec<u32>),
}

/// A run's analysis plan: which checkpoints, and what analysis (metrics, splits, example
/// counts) of each.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisPlan {
    #[serde(default)]
    pub checkpoints: CheckpointSelection,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub spec: AnalysisSpec,
}

impl AnalysisPlan {
    /// Whether the checkpoint at the end of `epoch` of a run of `epochs` is analysed.
    pub fn wants(&self, epoch: u32, epochs: u32) -> bool {
        let selected = match &self.checkpoints {
            CheckpointSelection::Final => false,
            CheckpointSelection::Every(k) => epoch >= 1 && epoch.is_multiple_of(*k),
            CheckpointSelection::Epochs(list) => list.contains(&epoch),
        };
        epoch == epochs || (selected && epoch <= epochs)
    }

    /// The epochs analysed in a run of `epochs` epochs (0: the initial weights).
    pub fn epochs(&self, epochs: u32) -> Vec<u32> {
        (0..=epochs).filter(|&e| self.wants(e, epochs)).collect()
    }

    pub fn validate(&self, epochs: u32) -> Result<(), SpecError> {
        let mut e = Errors::default();
        self.checkpoints.check("checkpoints", epochs, &mut e);
        if let Err(bad) = self.spec.validate() {
            e.extend_prefixed("spec.", bad);
        }
        e.finish()
    }
}

/// As [`CheckpointSelection::from_str`] reads it.
impl std::fmt::Display for CheckpointSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Final => f.write_str("final"),
            Self::Every(k) => write!(f, "every:{k}"),
            Self::Epochs(list) => {
                let list: Vec<String> = list.iter().map(u32::to_string).collect();
                write!(f, "epochs:{}", list.join(","))
            }
        }
    }
}

impl std::str::FromStr for CheckpointSelection {
    type Err = String;

    /// `final`, `every:K` or `epochs:A,B,…` (the command line's and the dashboard's
    /// spelling of a selection).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?}: expected final, every:K or epochs:A,B,…");
        match text.trim().split_once(':') {
            None if text.trim() == "final" => Ok(Self::Final),
            Some(("every", k)) => k.trim().parse().map(Self::Every).map_err(|_| bad()),
            Some(("epochs", list)) => list
                .split(',')
                .map(|e| e.trim().parse())
                .collect::<Result<_, _>>()
                .map(Self::Epochs)
                .map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl CheckpointSelection {
    /// Checks the selection against a run of `epochs` epochs, naming `field` in errors.
    pub(crate) fn check(&self, field: &str, epochs: u32, e: &mut Errors) {
        match self {
            Self::Final => {}
            Self::Every(k) => e.range(&format!("{field}.every"), *k, 1, epochs),
            Self::Epochs(list) => e.epoch_list(&format!("{field}.epochs"), list, 1, epochs),
        }
    }
}

/// `POST /v1/runs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSubmission {
    #[schema(value_type = Object)]
    pub spec: RunSpec,
    /// Without a plan, no checkpoint is analysed (one can be asked for later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisPlan>,
}

impl RunSubmission {
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut e = Errors::default();
        check_run(&self.spec, self.analysis.as_ref(), &mut e);
        e.finish()
    }
}

fn check_run(spec: &RunSpec, analysis: Option<&AnalysisPlan>, e: &mut Errors) {
    if let Err(bad) = spec.validate() {
        e.extend_prefixed("spec.", bad);
    }
    if let Some(plan) = analysis {
        if let Err(bad) = plan.validate(spec.epochs()) {
            e.extend_prefixed("analysis.", bad);
        }
    }
}

/// `POST /v1/runs/import`, its `submission` part: a run made of weights trained elsewhere
/// (the `weights` part, a state dict under stepwise's tensor names as safetensors or a
/// `torch.save` file). A trainer loads them into the model the spec describes, strictly,
/// evaluates them as after the spec's last epoch and checkpoints them, as `stepwise model
/// import` does; the plan then analyses that one checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportSubmission {
    #[schema(value_type = Object)]
    pub spec: RunSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisPlan>,
    /// The state dict is this entry of a `torch.save`d dict (e.g. `state_dict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Taken off the front of every tensor name (e.g. DataParallel's `module.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<String>,
}

impl ImportSubmission {
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut e = Errors::default();
        check_run(&self.spec, self.analysis.as_ref(), &mut e);
        let epochs = self.spec.epochs();
        if let Some(plan) = &self.analysis {
            if plan.epochs(epochs) != [epochs] {
                e.push(
                    "analysis.checkpoints",
                    format!(
                        "an imported run has one checkpoint, after its last epoch ({epochs}): \
                         use \"final\""
                    ),
                );
            }
        }
        check_reading(&self.key, &self.strip_prefix, &mut e);
        e.finish()
    }
}

/// The fields saying where an uploaded file's state dict is: plain text.
fn check_reading(key: &Option<String>, strip_prefix: &Option<String>, e: &mut Errors) {
    for (field, text) in [("key", key), ("strip_prefix", strip_prefix)] {
        if let Some(Err(bad)) = text
            .as_deref()
            .map(|t| crate::spec::check_text(t, 200, false))
        {
            e.push(field, bad);
        }
    }
}

/// The weights a run was made of (`POST /v1/runs/import`), as the API stored them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UploadedWeights {
    /// The file's name as uploaded.
    pub file_name: String,
    /// Where the API stored it, relative to the checkpoint store (`runs/<run>/weights`).
    pub path: String,
    /// The hex SHA-256 of the whole file; the trainer checks the file against it.
    pub sha256: String,
    pub size: u64,
    /// As submitted ([`ImportSubmission`]).
    pub key: Option<String>,
    pub strip_prefix: Option<String>,
}

/// `POST /v1/experiments`: every configuration × seed becomes a run, analysed at its final
/// checkpoint with the experiment's analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSubmission {
    #[schema(value_type = Object)]
    pub spec: ExperimentSpec,
}

impl ExperimentSubmission {
    pub fn validate(&self) -> Result<(), SpecError> {
        self.spec.validate().map_err(|e| e.within("spec."))
    }
}

/// `POST /v1/experiments/import`, its `submission` part: an experiment some of whose runs
/// are made of weights trained elsewhere, each uploaded in a part named
/// `weights/<configuration label>/<seed>` and read as `key` and `strip_prefix` say (as in
/// [`ImportSubmission`]); its other runs train as in `POST /v1/experiments`. A run made of
/// weights has one checkpoint, after the last epoch, which the experiment's analysis takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentImport {
    #[schema(value_type = Object)]
    pub spec: ExperimentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<String>,
}

impl ExperimentImport {
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut e = Errors::default();
        if let Err(bad) = self.spec.validate() {
            e.extend_prefixed("spec.", bad);
        }
        check_reading(&self.key, &self.strip_prefix, &mut e);
        e.finish()
    }

    /// The run a weights part names (`weights/<configuration label>/<seed>`), as its index
    /// in [`ExperimentSpec::runs`].
    pub fn run_of_part(&self, name: &str) -> Result<usize, String> {
        let labels = self.spec.labels();
        let seeds = &self.spec.seeds;
        let found = name
            .strip_prefix("weights/")
            .and_then(|run| run.rsplit_once('/'))
            .and_then(|(label, seed)| {
                let config = labels.iter().position(|l| l == label)?;
                let seed: u64 = seed.parse().ok()?;
                let seed = seeds.iter().position(|&s| s == seed)?;
                Some(config * seeds.len() + seed)
            });
        found.ok_or_else(|| {
            format!(
                "the part {name:?} names no run of the experiment: weights/<label>/<seed> with \
                 a label of {} and a seed of {seeds:?}",
                labels.join(", ")
            )
        })
    }

    /// The run an uploaded file is named after — its directory name
    /// ([`crate::ExperimentRun::dir_name`], `<label>-seed<seed>`) and an extension, e.g.
    /// `resnet-20-seed0.safetensors` — as its index in [`ExperimentSpec::runs`]: how the
    /// dashboard's form, which sends files under one field, tells them apart.
    pub fn run_of_file(&self, file_name: &str) -> Result<usize, String> {
        let runs = self.spec.runs();
        runs.iter()
            .position(|run| {
                file_name
                    .strip_prefix(&run.dir_name())
                    .is_some_and(|extension| extension.starts_with('.'))
            })
            .ok_or_else(|| {
                let names: Vec<String> = runs.iter().map(|r| r.dir_name()).collect();
                format!(
                    "the file {file_name:?} is named after no run of the experiment: name each \
                     file after its run, {}, and an extension (e.g. .safetensors)",
                    names.join(", ")
                )
            })
    }
}

/// `POST /v1/runs/{id}/analyses`: analyse one registered checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisRequest {
    /// Default: the run's latest epoch checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub spec: AnalysisSpec,
}

impl AnalysisRequest {
    pub fn validate(&self) -> Result<(), SpecError> {
        self.spec.validate().map_err(|e| e.within("spec."))
    }
}

/// A run as users see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub id: Uuid,
    pub experiment_id: Option<Uuid>,
    pub label: String,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub arch: String,
    pub dataset: String,
    pub status: JobState,
    pub epochs: u32,
    pub epochs_done: u32,
    pub step: u64,
    pub total_steps: u64,
    /// Seconds to the end of training at the recent pace, while running.
    pub eta_seconds: Option<f64>,
    pub best_test_accuracy: Option<f64>,
    /// Its analyses queued or running: a run whose training succeeded may still be being
    /// analysed.
    #[serde(default)]
    pub analyses_pending: u32,
    /// Claims of the train job so far.
    pub attempts: u32,
    pub failure_kind: Option<FailureKind>,
    pub last_error: Option<String>,
    #[schema(value_type = Object)]
    pub spec: RunSpec,
    /// The spec with the dataset identity and normalisation filled in by the trainer.
    #[schema(value_type = Option<Object>)]
    pub resolved_spec: Option<RunSpec>,
    pub analysis: Option<AnalysisPlan>,
    /// Runs made of uploaded weights (`POST /v1/runs/import`): the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<UploadedWeights>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A time span as people read it: "0.4 s", "42 s", "3 min", "1 h 2 min".
pub fn duration(seconds: f64) -> String {
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

/// "1 analysis pending", "3 analyses pending".
pub fn analyses_pending(n: usize) -> String {
    match n {
        1 => "1 analysis pending".into(),
        n => format!("{n} analyses pending"),
    }
}

/// One page of a list, newest first; pass `next_cursor` as `cursor` for the next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointView {
    pub id: Uuid,
    pub run_id: Uuid,
    pub attempt: u32,
    pub file_name: String,
    pub epoch: u32,
    pub batch: u32,
    pub step: u64,
    pub sha256: String,
    pub size: u64,
    /// Deleted by the run's retention policy: listed, no longer downloadable.
    pub removed: bool,
    pub created_at: DateTime<Utc>,
}

impl CheckpointView {
    /// Written at an epoch's end (not at a stop inside one) and not removed by the run's
    /// retention policy: a checkpoint an analysis can be asked for.
    pub fn is_epoch_end_on_disk(&self) -> bool {
        self.batch == 0 && !self.removed
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalysisView {
    pub id: Uuid,
    pub run_id: Uuid,
    pub checkpoint_id: Uuid,
    pub epoch: u32,
    pub status: JobState,
    #[schema(value_type = Object)]
    pub spec: AnalysisSpec,
    pub failure_kind: Option<FailureKind>,
    pub last_error: Option<String>,
    pub selected_alpha: Option<f64>,
    pub notes: Vec<String>,
    /// Examples analysed per split.
    #[schema(value_type = Vec<Object>)]
    pub examples: Vec<SplitExamples>,
    pub seconds: Option<f64>,
    /// How long each pass took (empty until the analysis succeeded, and for analyses made
    /// before passes were timed).
    #[schema(value_type = Vec<Object>)]
    pub passes: Vec<PassTime>,
    /// Where the analysis is while it runs (null before its analyzer's first report and once
    /// it ended).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub progress: Option<AnalysisProgress>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Per-block results (empty until the analysis succeeded).
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<AnalysisRecord>,
}

impl AnalysisView {
    /// What decides whether it is pooled with its seeds' analyses.
    pub fn analysed(&self) -> crate::compare::Analysed<'_> {
        crate::compare::Analysed {
            epoch: self.epoch,
            spec: &self.spec,
        }
    }
}

/// One configuration of an experiment, over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConfigSummary {
    pub label: String,
    pub runs: u32,
    pub succeeded: u32,
    /// Final test accuracy, mean and sample standard deviation over finished seeds.
    pub test_accuracy_mean: Option<f64>,
    pub test_accuracy_sd: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExperimentView {
    pub id: Uuid,
    pub name: String,
    #[schema(value_type = Object)]
    pub spec: ExperimentSpec,
    pub created_at: DateTime<Utc>,
    pub configs: Vec<ConfigSummary>,
    pub runs: Vec<RunView>,
}

/// An experiment beside the paper: Table 1 over its runs and claims C1–C7 over its
/// analysed runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClaimsView {
    /// A caution when the runs are shorter than the paper's schedules.
    pub note: Option<String>,
    /// Table 1: per configuration its parameters and train and test errors of each seed,
    /// with the paper's where it gives them.
    pub table: Vec<crate::paper::TableRow>,
    /// One verdict per claim and configuration (or pair): claim, subject, holds (absent
    /// when undecided), measured.
    #[schema(value_type = Vec<Object>)]
    pub claims: Vec<crate::claims::Verdict>,
    /// What each claim tests, with its threshold.
    pub legend: String,
    /// Seeds whose latest analysis Table 1's analysed train errors and the claims leave out
    /// (as the figures and block summaries do): behind their configuration's latest
    /// analysed epoch, or measured otherwise than most seeds there.
    #[serde(default)]
    pub left_out: Vec<LeftOut>,
}

/// The figures drawn of some runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FigureList {
    /// Names to fetch as `…/figures/{name}.svg` or `…/figures/{name}.png`.
    pub figures: Vec<String>,
    /// Seeds whose analyses the block-wise figures leave out, with why.
    #[serde(default)]
    pub left_out: Vec<LeftOut>,
}

/// A seed whose analysis is not pooled with its configuration's others
/// ([`crate::compare::pool_seeds`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeftOut {
    pub run_id: Uuid,
    pub name: Option<String>,
    pub configuration: String,
    /// Why, in words.
    pub reason: String,
}

impl LeftOut {
    /// The run as a terminal names it: by its name, else its id.
    pub fn run(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.run_id.to_string())
    }
}

/// An experiment in the list of experiments: its progress over runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExperimentSummary {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub runs: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Queued, running or cancelling.
    pub active: u32,
}

/// One claim of a job by a worker, and how it ended (`outcome` is absent while it runs;
/// `queued` means it was given back or lost and the job went back to the queue).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub job_id: Uuid,
    pub kind: JobKind,
    /// The analysed checkpoint's epoch, for analyze jobs.
    pub epoch: Option<u32>,
    pub attempt: u32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<JobState>,
    pub failure_kind: Option<FailureKind>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub attempt: Option<u32>,
    pub level: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetView {
    pub name: String,
    /// Present under the data directory (`shapes10` is also generated on first use).
    pub present: bool,
}

/// A training metric as served: the record, flattened.
pub type MetricView = MetricRecord;

/// Query of `GET /v1/runs/{id}/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricQuery {
    pub name: Option<String>,
    pub split: Option<Split>,
}

// ---- The worker protocol ----

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub kinds: Vec<JobKind>,
    /// A name for logs (host and process).
    pub worker: String,
    pub capacity: WorkerCapacity,
}

/// The memory a worker's jobs compute in and its budget there. A claim passes over jobs
/// that a refusal showed to need more; a refused job stays queued while a worker seen
/// lately has enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerCapacity {
    pub memory: crate::Memory,
    pub budget_mib: u64,
}

/// "16000 MiB GPU", "23392 MiB host".
impl fmt::Display for WorkerCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let memory = match self.memory {
            crate::Memory::Gpu => "GPU",
            crate::Memory::Host => "host",
        };
        write!(f, "{} MiB {memory}", self.budget_mib)
    }
}

/// A registered checkpoint, by its place in the checkpoint store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointRef {
    pub id: Uuid,
    /// Relative to the checkpoint store: `runs/<run>/attempt-<n>`.
    pub directory: String,
    pub file_name: String,
    pub epoch: u32,
    pub batch: u32,
    /// Of the whole file, as registered: a reader checks the file against it.
    pub sha256: String,
}

impl CheckpointRef {
    pub fn path(&self) -> String {
        format!("{}/{}", self.directory, self.file_name)
    }
}

/// The reply to a successful claim: the job, its lease, and where it may write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Claim {
    pub job_id: Uuid,
    pub kind: JobKind,
    pub run_id: Uuid,
    /// 1-based claim number of this job.
    pub attempt: u32,
    /// Every write of this attempt carries it; a stale token is answered 409.
    pub lease_token: Uuid,
    pub lease_ttl_seconds: f64,
    pub heartbeat_seconds: f64,
    /// The only directory (relative to the checkpoint store) this attempt may write.
    pub directory: String,
    /// The spec to train (or the spec of the analysed run).
    #[schema(value_type = Object)]
    pub spec: RunSpec,
    /// Train jobs: the registered checkpoints of earlier attempts not pruned, newest first.
    /// The trainer resumes from the first that reads intact (see `train::newest_intact`).
    pub resume_from: Vec<CheckpointRef>,
    /// Train jobs: epochs whose checkpoints the analysis plan needs (never pruned).
    pub keep_epochs: Vec<u32>,
    /// Analyze jobs: what to analyse.
    pub analysis: Option<AnalysisTask>,
    /// Train jobs of runs made of uploaded weights: import them rather than train.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<UploadedWeights>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalysisTask {
    pub analysis_id: Uuid,
    pub checkpoint: CheckpointRef,
    #[schema(value_type = Object)]
    pub spec: AnalysisSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseProof {
    pub lease_token: Uuid,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatReply {
    /// The user cancelled the job: checkpoint, stop, and complete it.
    pub cancel: bool,
    pub lease_expires_at: DateTime<Utc>,
    /// A train job's epochs whose checkpoints in its attempt's directory analyses wait for
    /// (asked of epochs its plan does not keep): training keeps them from pruning meanwhile.
    #[serde(default)]
    pub keep_epochs: Vec<u32>,
}

/// Something a worker reports while it works.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkerEvent {
    /// Training started: the spec with dataset identity and normalisation resolved.
    Started {
        #[schema(value_type = Object)]
        resolved_spec: Box<RunSpec>,
        step: u64,
        total_steps: u64,
    },
    Progress {
        epoch: u32,
        step: u64,
        total_steps: u64,
    },
    /// The metrics of a finished epoch.
    Epoch {
        epoch: u32,
        #[schema(value_type = Vec<Object>)]
        records: Vec<MetricRecord>,
    },
    Log {
        level: String,
        message: String,
    },
    /// The retention policy deleted a checkpoint of this attempt.
    CheckpointRemoved {
        file_name: String,
    },
    /// Where an analyze job's analysis is (sent every few seconds while it runs).
    Analysing {
        #[schema(value_type = Object)]
        progress: AnalysisProgress,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub lease_token: Uuid,
    pub events: Vec<WorkerEvent>,
}

/// A checkpoint written (durably) into the attempt's directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRegistration {
    pub lease_token: Uuid,
    /// A plain file name inside the attempt's directory.
    pub file_name: String,
    pub epoch: u32,
    pub batch: u32,
    pub step: u64,
    pub sha256: String,
    pub size: u64,
}

/// The results of an analyze job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisResult {
    pub selected_alpha: Option<f64>,
    pub notes: Vec<String>,
    /// Examples analysed per split.
    #[schema(value_type = Vec<Object>)]
    pub examples: Vec<SplitExamples>,
    pub seconds: f64,
    /// Each pass's share of `seconds` (none from an analyzer older than this field).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub passes: Vec<PassTime>,
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<AnalysisRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    pub lease_token: Uuid,
    /// Analyze jobs: the results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureReport {
    pub lease_token: Uuid,
    pub kind: FailureKind,
    pub error: String,
}

/// How recently a worker must have claimed or heartbeat to count as live: one that could
/// still take a job another refused (long enough to span a restart, or a poll interval).
pub const WORKER_SEEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(600);

/// A worker the API has seen claim jobs: what it takes, its memory and budget, when it last
/// claimed or heartbeat, and the job it holds now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    pub name: String,
    pub kinds: Vec<JobKind>,
    pub capacity: WorkerCapacity,
    pub seen_at: DateTime<Utc>,
    /// Seen within [`WORKER_SEEN_WITHIN`]: a job another worker refused for want of memory
    /// waits for it if it has enough.
    pub live: bool,
    /// The job it holds a lease on.
    pub job: Option<WorkerJob>,
}

/// How recently a worker without a job must have claimed to be called idle: an idle worker
/// asks for a job every `STEPWISE_POLL_SECS` (2 s unless set), so one quiet for longer has
/// most likely stopped, though it still counts as live for a while.
pub const WORKER_IDLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

impl WorkerView {
    /// How a worker without a job stands at `now`, as the CLI and the dashboard say it.
    pub fn presence(&self, now: DateTime<Utc>) -> String {
        let quiet = (now - self.seen_at).to_std().unwrap_or_default();
        if quiet <= WORKER_IDLE_WITHIN {
            "idle".into()
        } else if self.live {
            format!(
                "quiet for {} min (stopped, or polling slowly)",
                quiet.as_secs() / 60
            )
        } else {
            format!(
                "not seen for over {} min",
                WORKER_SEEN_WITHIN.as_secs() / 60
            )
        }
    }
}

/// The job a worker holds, and how far it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerJob {
    pub job_id: Uuid,
    pub kind: JobKind,
    pub run_id: Uuid,
    /// The run's name, if it has one, and its configuration's label.
    pub run_name: Option<String>,
    pub run_label: String,
    /// The run's epochs trained so far, of `epochs` (a train job's progress).
    pub epochs_done: u32,
    pub epochs: u32,
    /// Of an analyze job: the analysis, and where it is.
    pub analysis: Option<WorkerAnalysis>,
}

/// The analysis an analyze job computes: its id, the epoch of the checkpoint it analyses,
/// and where it is (null before the analyzer's first report).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerAnalysis {
    pub id: Uuid,
    pub epoch: u32,
    #[schema(value_type = Option<Object>)]
    pub progress: Option<AnalysisProgress>,
}

/// A run as `stepwise list` and the workers name it: its name, else its configuration's label
/// in parentheses.
pub fn run_title(name: Option<&str>, label: &str) -> String {
    name.map_or_else(|| format!("({label})"), str::to_string)
}

impl WorkerJob {
    /// The run, named as the runs list names it ([`run_title`]).
    pub fn run(&self) -> String {
        run_title(self.run_name.as_deref(), &self.run_label)
    }

    /// What the job is doing, as the CLI and the dashboard say it after the run's id:
    /// "3/6 epochs", "the checkpoint of epoch 6: test split · unroll · batch 3 of 8".
    pub fn doing(&self) -> String {
        match &self.analysis {
            None => format!("{}/{} epochs", self.epochs_done, self.epochs),
            Some(a) => {
                let at = format!("the checkpoint of epoch {}", a.epoch);
                match &a.progress {
                    Some(p) => format!("{at}: {}", p.describe()),
                    None => at,
                }
            }
        }
    }
}

/// A claimed job that does not fit the worker: it needs `need_mib` of `memory`, more than
/// the worker's budget — the estimate that refused it before it started, or one MiB over
/// the budget of a GPU that ran out of memory while it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub lease_token: Uuid,
    pub memory: crate::Memory,
    pub need_mib: u64,
    /// The worker's error: what needs how much, and which batch size would fit.
    pub error: String,
}

/// Whether `name` may be registered as a file of an attempt: a plain file name, no path.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Parses JSON into `T`, naming the field of the first error (`spec.model.depth`).
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, JsonError> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let syntax = matches!(
            e.inner().classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let field = e.path().to_string();
        let message = e.inner().to_string();
        if syntax {
            JsonError::Malformed(message)
        } else {
            JsonError::Invalid(SpecError::one(field, message))
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("{0}")]
    Invalid(SpecError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_select_epochs() {
        let every = AnalysisPlan {
            checkpoints: CheckpointSelection::Every(3),
            ..Default::default()
        };
        assert_eq!(every.epochs(10), [3, 6, 9, 10]);
        let listed = AnalysisPlan {
            checkpoints: CheckpointSelection::Epochs(vec![2, 4]),
            ..Default::default()
        };
        assert_eq!(listed.epochs(5), [2, 4, 5]);
        assert_eq!(AnalysisPlan::default().epochs(5), [5]);
        assert!(listed.validate(3).is_err());
        // Epoch 0, the initial weights, only where listed.
        let initial = AnalysisPlan {
            checkpoints: CheckpointSelection::Epochs(vec![0, 3]),
            ..Default::default()
        };
        assert_eq!(initial.epochs(5), [0, 3, 5]);
        assert!(initial.validate(5).is_ok());
        assert_eq!(every.epochs(4), [3, 4]);
    }

    #[test]
    fn selections_are_read_as_written_on_the_command_line() {
        let read = |t: &str| t.parse::<CheckpointSelection>();
        assert_eq!(read("final"), Ok(CheckpointSelection::Final));
        assert_eq!(read(" every:5 "), Ok(CheckpointSelection::Every(5)));
        assert_eq!(
            read("epochs:0, 2,4"),
            Ok(CheckpointSelection::Epochs(vec![0, 2, 4]))
        );
        for selection in [
            CheckpointSelection::Final,
            CheckpointSelection::Every(3),
            CheckpointSelection::Epochs(vec![0, 5]),
        ] {
            assert_eq!(read(&selection.to_string()), Ok(selection));
        }
        for bad in ["", "last", "every:", "every:-1", "epochs:1,x", "final:1"] {
            let err = read(bad).unwrap_err();
            assert!(err.contains("expected final, every:K"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_imported_run_analyses_its_one_checkpoint_and_names_its_state_dict_in_plain_text() {
        let submission: ImportSubmission = parse_json(
            br#"{"spec": {"model": {"arch": "resnet", "depth": 8},
                          "data": {"dataset": "shapes10"}, "train": {"epochs": 4}},
                 "analysis": {"checkpoints": {"epochs": [4]}}, "key": "state_dict"}"#,
        )
        .unwrap();
        assert!(submission.validate().is_ok());
        let fields = |s: &ImportSubmission| -> Vec<String> {
            let errors = s.validate().unwrap_err().0;
            errors.into_iter().map(|e| e.field).collect()
        };
        for checkpoints in [
            CheckpointSelection::Every(2),
            CheckpointSelection::Epochs(vec![0]),
        ] {
            let mut other = submission.clone();
            other.analysis = Some(AnalysisPlan {
                checkpoints,
                ..Default::default()
            });
            assert_eq!(fields(&other), ["analysis.checkpoints"]);
        }
        let mut other = submission.clone();
        other.strip_prefix = Some("module.\u{0}".into());
        other.key = Some(String::new());
        assert_eq!(fields(&other), ["key", "strip_prefix"]);
    }

    #[test]
    fn an_experiments_weights_parts_name_its_runs() {
        let import: ExperimentImport = parse_json(
            br#"{"spec": {"name": "x", "seeds": [3, 7], "data": {"dataset": "shapes10"},
                          "configs": [{"model": {"arch": "resnet", "depth": 8}},
                                      {"label": "narrow", "model": {"arch": "resnet", "depth": 8, "width": 4}}]}}"#,
        )
        .unwrap();
        assert!(import.validate().is_ok());
        let runs = import.spec.runs();
        for run in &runs {
            let index = import
                .run_of_part(&format!("weights/{}/{}", run.label, run.seed))
                .unwrap();
            assert_eq!(
                (&runs[index].label, runs[index].seed),
                (&run.label, run.seed)
            );
        }
        // The dashboard's files, named after the runs' directories.
        for (at, run) in runs.iter().enumerate() {
            for extension in [".safetensors", ".pt", ".tar.gz"] {
                let file = format!("{}{extension}", run.dir_name());
                assert_eq!(import.run_of_file(&file), Ok(at), "{file}");
            }
        }
        for bad in [
            "narrow-seed3",
            "narrow-seed4.pt",
            "narrow-seed3-final.pt",
            "x.pt",
        ] {
            let message = import.run_of_file(bad).unwrap_err();
            assert!(
                message.contains("resnet-8-seed3, resnet-8-seed7, narrow-seed3, narrow-seed7"),
                "{message}"
            );
        }
        for bad in [
            "weights/narrow/4",
            "weights/wide/3",
            "narrow/3",
            "weights/narrow",
            "weights/narrow/x",
        ] {
            let message = import.run_of_part(bad).unwrap_err();
            assert!(
                message.contains("resnet-8, narrow") && message.contains("[3, 7]"),
                "{message}"
            );
        }
    }

    #[test]
    fn selections_serialise_as_documented() {
        let json = |s: &CheckpointSelection| serde_json::to_string(s).unwrap();
        assert_eq!(json(&CheckpointSelection::Final), r#""final""#);
        assert_eq!(json(&CheckpointSelection::Every(5)), r#"{"every":5}"#);
        assert_eq!(
            json(&CheckpointSelection::Epochs(vec![1, 2])),
            r#"{"epochs":[1,2]}"#
        );
    }

    #[test]
    fn file_names_are_plain() {
        assert!(is_plain_file_name("epoch-0003.safetensors"));
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "a\\b",
            "x\0",
            &"a".repeat(129),
        ] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn json_errors_name_the_field_or_say_malformed() {
        let bad = br#"{"spec": {"model": {"arch": "resnet", "depth": "x"}, "data": {"dataset": "shapes10"}}}"#;
        match parse_json::<RunSubmission>(bad) {
            Err(JsonError::Invalid(e)) => assert_eq!(e.0[0].field, "spec.model.depth"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_json::<RunSubmission>(b"{\"spec\": "),
            Err(JsonError::Malformed(_))
        ));
        let unknown =
            br#"{"spec": {"model": {"arch": "resnet"}, "data": {"dataset": "shapes10"}}, "x": 1}"#;
        assert!(matches!(
            parse_json::<RunSubmission>(unknown),
            Err(JsonError::Invalid(_))
        ));
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(0.42), "0.4 s");
        assert_eq!(duration(42.0), "42 s");
        assert_eq!(duration(150.0), "3 min");
        assert_eq!(duration(3720.0), "1 h 2 min");
        let passes = [
            PassTime {
                metrics: vec![crate::AnalysisKind::Cosine, crate::AnalysisKind::Drop],
                seconds: 3.5,
            },
            PassTime {
                metrics: vec![crate::AnalysisKind::Unroll],
                seconds: 130.0,
            },
        ];
        assert_eq!(PassTime::took(133.5, &[]), "2 min");
        assert_eq!(
            PassTime::took(133.5, &passes),
            "2 min (cosine+drop 3.5 s, unroll 2 min)"
        );
    }

    #[test]
    fn a_worker_without_a_job_is_idle_only_while_it_polls() {
        let now = Utc::now();
        let worker = |quiet_secs: i64, live: bool| WorkerView {
            name: "w".into(),
            kinds: vec![JobKind::Train],
            capacity: WorkerCapacity {
                memory: crate::Memory::Host,
                budget_mib: 1000,
            },
            seen_at: now - chrono::Duration::seconds(quiet_secs),
            live,
            job: None,
        };
        assert_eq!(worker(5, true).presence(now), "idle");
        assert_eq!(
            worker(250, true).presence(now),
            "quiet for 4 min (stopped, or polling slowly)"
        );
        assert_eq!(worker(700, false).presence(now), "not seen for over 10 min");
    }

    #[test]
    fn a_workers_job_says_how_far_it_is() {
        let training = WorkerJob {
            job_id: Uuid::nil(),
            kind: JobKind::Train,
            run_id: Uuid::nil(),
            run_name: None,
            run_label: "resnet-8".into(),
            epochs_done: 3,
            epochs: 6,
            analysis: None,
        };
        assert_eq!(training.doing(), "3/6 epochs");
        assert_eq!(training.run(), "(resnet-8)");
        let mut analysis = WorkerAnalysis {
            id: Uuid::nil(),
            epoch: 6,
            progress: None,
        };
        let analysing = |analysis: &WorkerAnalysis| WorkerJob {
            kind: JobKind::Analyze,
            analysis: Some(analysis.clone()),
            ..training.clone()
        };
        assert_eq!(analysing(&analysis).doing(), "the checkpoint of epoch 6");
        analysis.progress = Some(AnalysisProgress {
            split: crate::Split::Test,
            pass: vec![crate::AnalysisKind::Unroll],
            batch: 3,
            batches: 8,
        });
        assert_eq!(
            analysing(&analysis).doing(),
            "the checkpoint of epoch 6: test split · unroll · batch 3 of 8"
        );
    }
}
