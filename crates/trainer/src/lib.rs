//! `stepwise-trainer`: claims train jobs from the API and runs them with `train::Trainer`,
//! reporting through [`ApiSink`]: the resolved spec, throttled progress, each epoch's
//! metrics, and every checkpoint registered as soon as it is durable. Cancel (seen by the
//! lease keeper's heartbeat) and SIGTERM stop at the next step with a checkpoint; a lost
//! lease aborts before anything more is written. The train job of a run made of uploaded
//! weights imports them (`train::import`) instead, reporting the same way.

use candle_core::Device;
use client::worker::{JobContext, JobEnd, LeaseKeeper, PROGRESS_EVERY};
use client::Client;
use domain::service::{CheckpointRegistration, FailureKind, UploadedWeights, WorkerEvent};
use domain::MetricName;
use domain::RunSpec;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use train::{
    EventSink, ImportedWeights, Outcome, ResumeCandidate, SinkError, TrainError, TrainEvent,
    TrainState, Trainer, META_TRAIN_STATE,
};

#[derive(Debug, thiserror::Error)]
#[error("the lease is lost; stopping without further writes")]
struct LeaseLost;

/// Reports training events to the API under a job's lease.
pub struct ApiSink<'a> {
    client: &'a Client,
    keeper: &'a LeaseKeeper,
    /// Set to make the trainer checkpoint and stop at its next step.
    stop: &'a AtomicBool,
    shutdown: &'a AtomicBool,
    last_progress: Instant,
    total_steps: u64,
    /// The run's uploaded weights, where it is made of them.
    weights: Option<&'a UploadedWeights>,
}

impl ApiSink<'_> {
    fn send(&self, events: Vec<WorkerEvent>) -> Result<(), SinkError> {
        self.keeper
            .lease_bound(self.client)
            .events(self.keeper.job, self.keeper.lease_token, events)
            .map_err(|e| self.refused(e))
    }

    /// A refused write: a 409 means the lease is gone.
    fn refused(&self, e: client::ClientError) -> SinkError {
        if e.is_lease_lost() {
            self.keeper.mark_lost();
            Box::new(LeaseLost)
        } else {
            Box::new(e)
        }
    }
}

impl EventSink for ApiSink<'_> {
    fn event(&mut self, event: &TrainEvent<'_>) -> Result<(), SinkError> {
        if self.keeper.lost() {
            return Err(Box::new(LeaseLost));
        }
        if self.keeper.cancelled() || self.shutdown.load(Ordering::SeqCst) {
            self.stop.store(true, Ordering::SeqCst);
        }
        match event {
            TrainEvent::Started {
                spec,
                start_step,
                total_steps,
                ..
            } => {
                self.total_steps = *total_steps;
                let identity = spec.data.identity.as_ref();
                let data = format!(
                    "{} ({})",
                    spec.data.dataset,
                    identity.map_or("", |i| i.fingerprint.as_str())
                );
                let label = spec.model.label();
                let message = match self.weights {
                    Some(w) => format!(
                        "importing {} (sha256 {}) as {label} after {} epochs on {data}",
                        w.file_name,
                        w.sha256,
                        spec.epochs()
                    ),
                    None => format!(
                        "training {label} on {data} from step {start_step} of {total_steps}"
                    ),
                };
                self.send(vec![
                    WorkerEvent::Started {
                        resolved_spec: Box::new((*spec).clone()),
                        step: *start_step,
                        total_steps: *total_steps,
                    },
                    log("info", message),
                ])
            }
            TrainEvent::Step { epoch, step, .. } => {
                if self.last_progress.elapsed() >= PROGRESS_EVERY {
                    self.last_progress = Instant::now();
                    self.send(vec![WorkerEvent::Progress {
                        epoch: *epoch,
                        step: *step,
                        total_steps: self.total_steps,
                    }])?;
                }
                Ok(())
            }
            TrainEvent::Evaluating { .. } | TrainEvent::Checkpointing { .. } => Ok(()),
            TrainEvent::Epoch { epoch, records } => {
                let value = |name, split| {
                    records
                        .iter()
                        .find(|r| r.name == name && r.split == split && r.block.is_none())
                        .map_or(f64::NAN, |r| r.value)
                };
                let test = Some(domain::Split::Test);
                let summary = format!(
                    "epoch {epoch}: train loss {:.4}, test loss {:.4}, test accuracy {:.4}",
                    value(MetricName::Loss, Some(domain::Split::Train)),
                    value(MetricName::Loss, test),
                    value(MetricName::Accuracy, test),
                );
                self.send(vec![
                    WorkerEvent::Epoch {
                        epoch: *epoch,
                        records: records.to_vec(),
                    },
                    log("info", summary),
                ])
            }
            TrainEvent::Checkpoint {
                epoch,
                batch,
                step,
                file_name,
                file,
            } => {
                let registration = CheckpointRegistration {
                    lease_token: self.keeper.lease_token,
                    file_name: file_name.to_string(),
                    epoch: *epoch,
                    batch: *batch,
                    step: *step,
                    sha256: file.sha256.clone(),
                    size: file.size,
                };
                self.keeper
                    .lease_bound(self.client)
                    .register_checkpoint(self.keeper.job, &registration)
                    .map_err(|e| self.refused(e))?;
                self.last_progress = Instant::now();
                self.send(vec![WorkerEvent::Progress {
                    epoch: *epoch,
                    step: *step,
                    total_steps: self.total_steps,
                }])
            }
            TrainEvent::CheckpointRemoved { file_name } => {
                self.send(vec![WorkerEvent::CheckpointRemoved {
                    file_name: file_name.to_string(),
                }])
            }
        }
    }

    /// The epochs whose checkpoints analyses wait for, asked of the API by a heartbeat now;
    /// once the lease is gone, an error: a successor may resume from these files.
    fn keep_epochs(&self) -> Result<Vec<u32>, SinkError> {
        self.keeper
            .keep_epochs()
            .ok_or_else(|| Box::new(LeaseLost) as SinkError)
    }
}

fn log(level: &str, message: String) -> WorkerEvent {
    WorkerEvent::Log {
        level: level.into(),
        message,
    }
}

/// Runs one claimed train job to its end.
pub fn run_job(job: &JobContext<'_>) -> JobEnd {
    match train_claim(job) {
        Ok(end) => end,
        Err(_) if job.keeper.lost() => JobEnd::Abandoned,
        Err(e) => {
            let need = match &e {
                TrainError::Model(e) => e.memory_need(),
                _ => None,
            };
            JobEnd::failed(failure_kind(&e), e.to_string(), need)
        }
    }
}

/// How a failed train job is reported; only `infrastructure` is retried.
fn failure_kind(e: &TrainError) -> FailureKind {
    match e {
        TrainError::Diverged { .. } => FailureKind::Diverged,
        TrainError::Spec(_) | TrainError::DatasetMismatch { .. } | TrainError::Data(_) => {
            FailureKind::Invalid
        }
        TrainError::Model(e) if e.is_memory() => FailureKind::Invalid,
        // The checkpoint store failing (full, unmounted) is the machine's fault: checkpoints
        // are written by `resnet::checkpoint`, old ones pruned by `train`.
        TrainError::Io { .. } | TrainError::Sink(_) => FailureKind::Infrastructure,
        TrainError::Model(e) if e.is_io() => FailureKind::Infrastructure,
        // A checkpoint that reads intact but cannot be resumed (its metadata): another
        // attempt would read the same bytes. Damaged ones are passed over before this.
        TrainError::Model(e) if e.is_unusable_checkpoint() => FailureKind::Invalid,
        _ => FailureKind::Internal,
    }
}

fn train_claim(job: &JobContext<'_>) -> Result<JobEnd, TrainError> {
    let JobContext {
        config,
        client,
        claim,
        keeper,
        shutdown,
    } = *job;
    let device = resnet::candle_device(config.device)?;
    let spec = &claim.spec;
    let data_dir = cifar::locate(&spec.data.dataset, &config.data_dir)?;
    let dataset = cifar::Dataset::open(&data_dir, spec.data.labels)?;
    let directory = config.checkpoint_dir.join(&claim.directory);
    let candidates: Vec<ResumeCandidate> = claim
        .resume_from
        .iter()
        .map(|c| ResumeCandidate {
            path: config.checkpoint_dir.join(c.path()),
            sha256: Some(c.sha256.clone()),
        })
        .collect();
    let stop = AtomicBool::new(false);
    let mut sink = ApiSink {
        client,
        keeper,
        stop: &stop,
        shutdown,
        last_progress: Instant::now(),
        total_steps: 0,
        weights: claim.weights.as_ref(),
    };
    let resume = train::newest_intact(&candidates)?;
    let warnings = resume.warnings();
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    if !warnings.is_empty() {
        sink.send(warnings.into_iter().map(|w| log("warn", w)).collect())?;
    }
    let mut trainer = match resume.checkpoint {
        Some(checkpoint) => {
            // A trainer that died (or lost its lease) after registering the run's last
            // checkpoint — its last epoch's, or an import's — before completing the job has
            // left nothing to do: its metrics went before the checkpoint.
            let state: TrainState = checkpoint.meta_json(META_TRAIN_STATE)?;
            if state.ends(spec.epochs()) {
                let message = format!(
                    "{} ends the run (an earlier attempt wrote it): finished",
                    checkpoint.path.display()
                );
                tracing::info!("{message}");
                sink.send(vec![log("info", message)])?;
                return Ok(JobEnd::Completed(None));
            }
            tracing::info!("resuming from {}", checkpoint.path.display());
            Trainer::resume(&checkpoint, None, dataset, &device, directory)?
        }
        None => match &claim.weights {
            Some(weights) => {
                let path = config.checkpoint_dir.join(&weights.path);
                import(weights, &path, spec, dataset, &device, directory, &mut sink)?;
                return Ok(JobEnd::Completed(None));
            }
            None => Trainer::new(spec.clone(), dataset, &device, directory)?,
        },
    };
    trainer.keep_epochs(&claim.keep_epochs);
    Ok(match trainer.run(&mut sink, &stop)? {
        Outcome::Finished => JobEnd::Completed(None),
        Outcome::Stopped { file_name, .. } => {
            tracing::info!("stopped after writing {file_name}");
            JobEnd::Stopped
        }
    })
}

/// Imports uploaded weights at `path` (checked against the digest the API recorded) as a
/// finished run of `spec`, checkpointed into `directory`.
fn import(
    weights: &UploadedWeights,
    path: &Path,
    spec: &RunSpec,
    dataset: cifar::Dataset,
    device: &Device,
    directory: PathBuf,
    sink: &mut ApiSink<'_>,
) -> Result<(), TrainError> {
    let sha256 = resnet::checkpoint::sha256_file(path)?;
    if sha256 != weights.sha256 {
        return Err(resnet::Error::BadWeights {
            path: path.to_path_buf(),
            reason: format!(
                "its sha256 is {sha256}, not the {} uploaded: the file changed in the checkpoint \
                 store",
                weights.sha256
            ),
        }
        .into());
    }
    let tensors = resnet::checkpoint::read_weights(
        path,
        weights.key.as_deref(),
        weights.strip_prefix.as_deref(),
    )?;
    let source = ImportedWeights {
        file: weights.file_name.clone(),
        sha256,
    };
    train::import(
        spec.clone(),
        dataset,
        &tensors,
        source,
        device,
        directory,
        sink,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_checkpoint_store_that_fails_is_retried_and_bad_work_is_not() {
        let full = resnet::Error::Io {
            path: "runs/r/attempt-1/epoch-0003.safetensors".into(),
            source: Error::new(ErrorKind::StorageFull, "no space left on device"),
        };
        assert_eq!(
            failure_kind(&TrainError::Model(full)),
            FailureKind::Infrastructure
        );
        let pruning = TrainError::Io {
            path: "runs/r/attempt-1/epoch-0001.safetensors".into(),
            source: Error::new(ErrorKind::PermissionDenied, "read-only file system"),
        };
        assert_eq!(failure_kind(&pruning), FailureKind::Infrastructure);
        let damaged = resnet::Error::BadCheckpoint {
            path: "runs/r/attempt-1/epoch-0003.safetensors".into(),
            reason: "the file is damaged".into(),
        };
        // Another attempt would read the same file.
        assert_eq!(
            failure_kind(&TrainError::Model(damaged)),
            FailureKind::Invalid
        );
        let diverged = TrainError::Diverged {
            epoch: 2,
            step: 40,
            cause: "loss NaN".into(),
        };
        assert_eq!(failure_kind(&diverged), FailureKind::Diverged);
    }
}
