use domain::DatasetIdentity;
use resnet::memory::Work;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] resnet::Error),
    #[error(transparent)]
    Data(#[from] cifar::DataError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("invalid spec: {0}")]
    Spec(#[from] domain::SpecError),
    #[error("diverged at epoch {epoch} step {step}: {cause}; the last good checkpoint is kept")]
    Diverged {
        epoch: u32,
        step: u64,
        cause: String,
    },
    #[error("the run was trained on {expected} ({expected_fp}) but the data found is {found} ({found_fp})", expected = .expected.name, expected_fp = .expected.fingerprint, found = .found.name, found_fp = .found.fingerprint)]
    DatasetMismatch {
        expected: Box<DatasetIdentity>,
        found: Box<DatasetIdentity>,
    },
    #[error("{path}: cannot resume: {reason}")]
    Resume { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("event sink: {0}")]
    Sink(#[from] crate::SinkError),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    /// Names the batch size to lower when `self` is the GPU running out of memory in `work`
    /// at `batch`.
    pub(crate) fn name_batch_if_out_of_memory(self, work: Work, batch: usize) -> Self {
        use resnet::memory::{is_out_of_memory, name_batch_if_out_of_memory};
        match self {
            Self::Candle(c) if is_out_of_memory(&c) => {
                name_batch_if_out_of_memory(c.into(), work, batch).into()
            }
            Self::Model(e) => name_batch_if_out_of_memory(e, work, batch).into(),
            e => e,
        }
    }
}
