//! What the training loop reports, and where to.

use domain::{MetricRecord, RunSpec};
use resnet::WrittenFile;

#[derive(Debug)]
pub enum TrainEvent<'a> {
    Started {
        spec: &'a RunSpec,
        steps_per_epoch: usize,
        /// Optimizer steps already done (non-zero when resumed).
        start_step: u64,
        total_steps: u64,
    },
    Step {
        /// 1-based epoch in progress.
        epoch: u32,
        step: u64,
        loss: f64,
        lr: f64,
    },
    /// Evaluation is about to run at the end of an epoch.
    Evaluating { epoch: u32 },
    Epoch {
        epoch: u32,
        records: &'a [MetricRecord],
    },
    /// A checkpoint is about to be written; an error from the sink prevents it (a worker
    /// whose lease ran out must not write).
    Checkpointing { epoch: u32, batch: u32 },
    /// A checkpoint was written (durably) into the run's checkpoint directory.
    Checkpoint {
        /// Completed epochs, and batches of the next (0 at an epoch boundary).
        epoch: u32,
        batch: u32,
        step: u64,
        file_name: &'a str,
        file: &'a WrittenFile,
    },
    /// A checkpoint was deleted by the retention policy.
    CheckpointRemoved { file_name: &'a str },
}

pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Receives training events; an error aborts the run.
pub trait EventSink {
    fn event(&mut self, event: &TrainEvent<'_>) -> Result<(), SinkError>;

    /// Epochs whose checkpoints are not to be pruned now, beside those the policy and the
    /// plan keep: the service's, where analyses wait for them. Asked only when pruning
    /// would remove a checkpoint; an error leaves every checkpoint (a worker that lost its
    /// job deletes nothing).
    fn keep_epochs(&self) -> Result<Vec<u32>, SinkError> {
        Ok(Vec::new())
    }
}

/// A sink that ignores everything.
impl EventSink for () {
    fn event(&mut self, _: &TrainEvent<'_>) -> Result<(), SinkError> {
        Ok(())
    }
}
