//! The train state that travels in every checkpoint's metadata, next to the run spec.

use domain::Schedule;
use serde::{Deserialize, Serialize};

/// Metadata keys of a training checkpoint (values are JSON, except the code version).
pub const META_SPEC: &str = "spec";
pub const META_TRAIN_STATE: &str = "train_state";
pub const META_METRICS: &str = "metrics";
pub const META_CODE_VERSION: &str = "code_version";

/// Where training stands. Randomness is counter-based (see `cifar::rng`): with the seed,
/// the position (`epoch`, `batch`) is the complete generator state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Completed epochs.
    pub epoch: u32,
    /// Batches of the next epoch already trained (non-zero only when stopped mid-epoch).
    pub batch: u32,
    /// Optimizer steps so far.
    pub step: u64,
    /// The learning rate of the last step.
    pub lr: f64,
    pub schedule: Schedule,
    pub rng: RngState,
    /// Training totals of the unfinished epoch, so its metrics stay exact across a resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningTotals>,
    /// Where the run's weights came from when they were trained elsewhere
    /// ([`crate::import`]); carried on by a run resumed from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportedWeights>,
}

impl TrainState {
    /// Whether a run of `epochs` epochs has nothing left to train from here: it stands at
    /// the end of its last epoch (as an import of weights does).
    pub fn ends(&self, epochs: u32) -> bool {
        self.epoch >= epochs && self.batch == 0
    }
}

/// A weights file trained elsewhere that a run started from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedWeights {
    /// The file as it was named to the import.
    pub file: String,
    /// The hex sha256 of the whole file.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub algorithm: String,
    pub seed: u64,
}

impl RngState {
    pub fn new(seed: u64) -> Self {
        Self {
            algorithm: "chacha8, one stream per (seed, purpose, epoch, batch)".into(),
            seed,
        }
    }
}

/// Sums over an epoch's training batches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningTotals {
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
    /// Seconds spent in training steps.
    pub seconds: f64,
}
