//! `stepwise-analyzer`: claims analyze jobs from the API, computes the block-wise metrics
//! of the named checkpoint with `analysis::analyze`, reports where it is every few seconds,
//! and completes the job with the records. [`analyse_checkpoint`] is also what `stepwise
//! analyze` and `stepwise run` use.

use analysis::{analyze, Analysis, Input};
use candle_core::Device;
use client::worker::{JobContext, JobEnd, LeaseKeeper, WorkerConfig, PROGRESS_EVERY};
use client::Client;
use domain::service::{AnalysisResult, CheckpointRef, FailureKind, WorkerEvent};
use domain::{AnalysisProgress, AnalysisSpec, DataSpec, RunSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Train(#[from] train::TrainError),
    #[error(transparent)]
    Analysis(#[from] analysis::Error),
    #[error(transparent)]
    Model(#[from] resnet::Error),
    #[error(transparent)]
    Data(#[from] cifar::DataError),
}

impl AnalyzeError {
    /// The model's error, wherever it arose: reading the checkpoint, loading the model or
    /// analysing it.
    fn model(&self) -> Option<&resnet::Error> {
        match self {
            Self::Model(e)
            | Self::Train(train::TrainError::Model(e))
            | Self::Analysis(analysis::Error::Model(e)) => Some(e),
            _ => None,
        }
    }

    /// How a failed analyze job is reported; only `infrastructure` is retried.
    fn failure_kind(&self) -> FailureKind {
        match (self, self.model()) {
            (Self::Data(_), _) => FailureKind::Invalid,
            (_, Some(e)) if e.is_memory() => FailureKind::Invalid,
            // The checkpoint store failing (unmounted, unreadable) is the machine's fault.
            (_, Some(e)) if e.is_io() => FailureKind::Infrastructure,
            // A damaged file: another attempt would read the same bytes.
            (_, Some(e)) if e.is_unusable_checkpoint() => FailureKind::Invalid,
            _ => FailureKind::Internal,
        }
    }
}

/// The analysis of a checkpoint's model on `data`; `stop` ends it early, `progress` hears
/// where it is (see [`analysis::Input`]).
pub fn analyse_checkpoint(
    checkpoint: &resnet::Checkpoint,
    data: &cifar::Dataset,
    spec: &AnalysisSpec,
    device: &Device,
    stop: Option<&AtomicBool>,
    progress: Option<&(dyn Fn(&AnalysisProgress) + Sync)>,
) -> Result<Analysis, AnalyzeError> {
    let (model, run) = train::load_model_to_measure(checkpoint, device)?;
    let state: train::TrainState = checkpoint.meta_json(train::META_TRAIN_STATE)?;
    let input = Input {
        model: &model,
        run: &run,
        epoch: state.epoch,
        train: &data.train,
        test: &data.test,
        stop,
        progress,
    };
    Ok(analyze(&input, spec)?)
}

/// Runs one claimed analyze job. The analysis runs on its own thread, which this one stops
/// at its next batch when the job is cancelled, the worker shuts down or the lease is lost,
/// and whose progress this one reports.
pub fn run_job(job: &JobContext<'_>) -> JobEnd {
    let JobContext {
        config,
        client,
        claim,
        keeper,
        shutdown,
    } = *job;
    let Some(task) = claim.analysis.clone() else {
        return JobEnd::Failed(
            FailureKind::Internal,
            "an analyze job without a task".into(),
        );
    };
    let config = config.clone();
    // By the name the run was submitted with: the checkpoint's spec holds the dataset's own
    // name, which need not be its directory's.
    let dataset = claim.spec.data.clone();
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let reports = Arc::new(ProgressReports::default());
    std::thread::spawn({
        let (stop, reports) = (stop.clone(), reports.clone());
        move || {
            let hear = |p: &AnalysisProgress| reports.hear(p);
            let _ = tx.send(analyse_task(
                &config,
                &dataset,
                &task.checkpoint,
                &task.spec,
                &stop,
                &hear,
            ));
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(result) => {
                return match result {
                    _ if keeper.lost() => JobEnd::Abandoned,
                    Err(AnalyzeError::Analysis(analysis::Error::Stopped)) => JobEnd::Stopped,
                    Ok(analysis) => JobEnd::Completed(Some(Box::new(AnalysisResult {
                        selected_alpha: analysis.selected_alpha,
                        notes: analysis.notes,
                        examples: analysis.examples,
                        seconds: analysis.seconds,
                        passes: analysis.passes,
                        records: analysis.records,
                    }))),
                    Err(e) => {
                        let need = e.model().and_then(|m| m.memory_need());
                        JobEnd::failed(e.failure_kind(), e.to_string(), need)
                    }
                };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if keeper.cancelled() || keeper.lost() || shutdown.load(Ordering::SeqCst) {
                    stop.store(true, Ordering::Relaxed);
                } else if let Some(progress) = reports.due(Instant::now()) {
                    report(client, keeper, progress);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return JobEnd::Failed(FailureKind::Internal, "the analysis thread panicked".into())
            }
        }
    }
}

/// The analysis' latest progress, handed from its thread to the one that reports it: the
/// first at once, then at most one every [`PROGRESS_EVERY`].
#[derive(Default)]
struct ProgressReports {
    latest: Mutex<Option<AnalysisProgress>>,
    sent_at: Mutex<Option<Instant>>,
}

impl ProgressReports {
    fn hear(&self, progress: &AnalysisProgress) {
        *self.latest.lock().expect("progress mutex") = Some(progress.clone());
    }

    /// The progress to report at `now`, if any is new and the last report is old enough.
    fn due(&self, now: Instant) -> Option<AnalysisProgress> {
        let mut sent_at = self.sent_at.lock().expect("progress mutex");
        if sent_at.is_some_and(|at| now.duration_since(at) < PROGRESS_EVERY) {
            return None;
        }
        let progress = self.latest.lock().expect("progress mutex").take()?;
        *sent_at = Some(now);
        Some(progress)
    }
}

/// Tells the API where the analysis is. A report is retried only until the next is due (it
/// supersedes it); one refused with 409 means the lease is gone, which stops the analysis.
fn report(client: &Client, keeper: &LeaseKeeper, progress: AnalysisProgress) {
    let events = vec![WorkerEvent::Analysing { progress }];
    let client = client.clone().with_patience(PROGRESS_EVERY);
    if let Err(e) = client.events(keeper.job, keeper.lease_token, events) {
        if e.is_lease_lost() {
            keeper.mark_lost();
        }
        tracing::warn!("job {}: reporting progress: {e}", keeper.job);
    }
}

fn analyse_task(
    config: &WorkerConfig,
    dataset: &DataSpec,
    checkpoint: &CheckpointRef,
    spec: &AnalysisSpec,
    stop: &AtomicBool,
    progress: &(dyn Fn(&AnalysisProgress) + Sync),
) -> Result<Analysis, AnalyzeError> {
    let device = resnet::candle_device(config.device)?;
    let checkpoint = resnet::checkpoint::read_registered(
        &config.checkpoint_dir.join(checkpoint.path()),
        &checkpoint.sha256,
    )?;
    let run: RunSpec = checkpoint.meta_json(train::META_SPEC)?;
    let data = cifar::open_trained_on(
        &dataset.dataset,
        run.data.identity.as_ref(),
        &config.data_dir,
        run.data.labels,
    )?;
    analyse_checkpoint(
        &checkpoint,
        &data,
        spec,
        &device,
        Some(stop),
        Some(progress),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{AnalysisKind, Split};
    use std::io::{Error, ErrorKind};

    /// The first progress is reported at once; later ones wait for [`PROGRESS_EVERY`], and
    /// the one reported then is the latest; nothing new, nothing reported.
    #[test]
    fn progress_is_reported_at_once_then_at_most_every_interval_and_only_the_latest() {
        let at = |batch| AnalysisProgress {
            split: Split::Test,
            pass: vec![AnalysisKind::Unroll],
            batch,
            batches: 8,
        };
        let reports = ProgressReports::default();
        let start = Instant::now();
        assert_eq!(reports.due(start), None);
        reports.hear(&at(0));
        assert_eq!(reports.due(start), Some(at(0)));
        reports.hear(&at(1));
        reports.hear(&at(2));
        assert_eq!(reports.due(start + PROGRESS_EVERY / 2), None);
        assert_eq!(reports.due(start + PROGRESS_EVERY), Some(at(2)));
        assert_eq!(reports.due(start + PROGRESS_EVERY * 3), None);
        reports.hear(&at(3));
        assert_eq!(reports.due(start + PROGRESS_EVERY * 3), Some(at(3)));
    }

    #[test]
    fn an_unreadable_checkpoint_is_retried_and_a_damaged_one_or_work_too_large_is_not() {
        let unreadable = resnet::Error::Io {
            path: "runs/r/attempt-1/epoch-0003.safetensors".into(),
            source: Error::new(ErrorKind::NotFound, "no such file or directory"),
        };
        assert_eq!(
            AnalyzeError::Model(unreadable).failure_kind(),
            FailureKind::Infrastructure
        );
        let damaged = resnet::Error::BadCheckpoint {
            path: "runs/r/attempt-1/epoch-0003.safetensors".into(),
            reason: "the file is damaged".into(),
        };
        assert_eq!(
            AnalyzeError::Model(damaged).failure_kind(),
            FailureKind::Invalid
        );
        let too_large = resnet::Error::MemoryBudget {
            work: resnet::memory::Work::Analysis,
            batch: 500,
            memory: resnet::memory::Memory::Gpu,
            field: "analysis.eval_batch_size",
            largest: 100,
            need_mib: 9000,
            budget_mib: 4000,
        };
        let e = AnalyzeError::Analysis(analysis::Error::Model(too_large));
        assert_eq!(e.failure_kind(), FailureKind::Invalid);
        assert_eq!(
            e.model().and_then(|m| m.memory_need()),
            Some((resnet::memory::Memory::Gpu, 9000))
        );
    }
}
