use domain::DatasetIdentity;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: missing ({what})")]
    Missing { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: truncated at byte offset {offset}: {remaining} bytes left of a {record}-byte record")]
    Truncated {
        path: PathBuf,
        offset: u64,
        remaining: u64,
        record: u64,
    },
    #[error("{path}: byte offset {offset}: label {label} is out of range (the dataset has {classes} classes)")]
    BadLabel {
        path: PathBuf,
        offset: u64,
        label: u32,
        classes: u32,
    },
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{}: could not write the dataset: {source}", .out.display())]
    Writing {
        out: PathBuf,
        source: Box<DataError>,
    },
    #[error("{dir}: no CIFAR binary dataset here (expected data_batch_1..5.bin and test_batch.bin, or train.bin and test.bin, directly or in cifar-10-batches-bin/ or cifar-100-binary/)")]
    NotADataset { dir: PathBuf },
    #[error("dataset {name:?} is not in {dir}: {hint}")]
    Unknown {
        name: String,
        dir: PathBuf,
        hint: String,
    },
    #[error(
        "the run was trained on {} ({}), and no dataset in {} holds that data{}",
        .expected.name,
        .expected.fingerprint,
        .dir.display(),
        .found.as_ref().map_or(String::new(), |(path, f)| format!(" ({} holds {})", path.display(), f.fingerprint))
    )]
    NotTrainedOn {
        expected: Box<DatasetIdentity>,
        dir: PathBuf,
        /// The directory the run's dataset name resolved to, and what it holds.
        found: Option<(PathBuf, Box<DatasetIdentity>)>,
    },
    #[error("download of {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("{path}: {reason}")]
    Image { path: PathBuf, reason: String },
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
