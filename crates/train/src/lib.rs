//! Training: [`Sgd`] with saved momentum, the loop in [`Trainer`] (events to an
//! [`EventSink`], evaluation per epoch, checkpoints by policy, stop and exact resume), and
//! [`bench::bench_train`] for throughput.

pub mod bench;
mod checkpoints;
mod error;
mod events;
#[cfg(feature = "cuda")]
mod graph_step;
mod optim;
pub mod selftest;
mod state;
mod trainer;

pub use checkpoints::{
    checkpoint_name, list_checkpoints, newest_intact, resume_candidates, CheckpointStore,
    ResumeCandidate, ResumePoint,
};
pub use error::{Result, TrainError};
pub use events::{EventSink, SinkError, TrainEvent};
pub use optim::{Sgd, SgdConfig};
pub use state::{
    ImportedWeights, RunningTotals, TrainState, META_CODE_VERSION, META_METRICS, META_SPEC,
    META_TRAIN_STATE,
};
pub use trainer::{
    check_memory, check_weights, import, load_model, load_model_to_measure, memory_work, Imported,
    Outcome, Trainer,
};
