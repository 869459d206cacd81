use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Spec(#[from] domain::SpecError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid checkpoint: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
    #[error("state dict: {0}")]
    StateDict(String),
    #[error("device {0}: this binary was built without CUDA (rebuild with --features cuda)")]
    NoCuda(domain::DeviceSpec),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
