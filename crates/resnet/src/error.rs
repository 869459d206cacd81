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
    #[error("{path}: {reason}")]
    BadWeights { path: PathBuf, reason: String },
    #[error("state dict: {0}")]
    StateDict(String),
    #[error("device {0}: this binary was built without CUDA (rebuild with --features cuda)")]
    NoCuda(domain::DeviceSpec),
    #[error(
        "{work} at batch size {batch} needs an estimated {need_mib} MiB of {memory}, more than \
         the budget of {budget_mib} MiB: {lower}, or raise the budget ({setting})",
        lower = lower_batch(field, *largest),
        setting = memory.budget_setting()
    )]
    MemoryBudget {
        work: crate::memory::Work,
        batch: usize,
        memory: crate::memory::Memory,
        field: &'static str,
        need_mib: u64,
        budget_mib: u64,
        largest: usize,
    },
    #[error(
        "the GPU ran out of memory in {work} at batch size {batch}: lower {field}, e.g. to \
         {lower}, or free the GPU; device error: {detail}"
    )]
    OutOfMemory {
        work: crate::memory::Work,
        batch: usize,
        field: &'static str,
        lower: usize,
        detail: String,
        /// The process's GPU budget, where a worker fixed it at start.
        budget_mib: Option<u64>,
    },
}

/// How to lower a batch size `field` to `largest`: unless even one example is too many.
fn lower_batch(field: &str, largest: usize) -> String {
    match largest {
        0 => "even a batch of one example does not fit".into(),
        n => format!("lower {field} to {n} or less"),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the work does not fit the device's memory (or the budget) at its batch size.
    pub fn is_memory(&self) -> bool {
        matches!(self, Self::MemoryBudget { .. } | Self::OutOfMemory { .. })
    }

    /// Whether a file could not be read or written (a checkpoint store full, unmounted or
    /// failing): the machine's fault, not the work's.
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io { .. })
    }

    /// Whether a file to read — a checkpoint, or weights trained elsewhere — itself cannot
    /// serve (damaged, not what the spec describes, or not there), as opposed to the store
    /// failing as a whole (unreadable, unmounted), where no other file would fare better.
    pub fn is_unusable_checkpoint(&self) -> bool {
        match self {
            Self::BadCheckpoint { .. } | Self::BadWeights { .. } => true,
            Self::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }

    /// The memory and MiB the work needs, where that is more than the budget, so that a
    /// worker with more could take the job: the estimate refused before the work started,
    /// or one MiB over the budget of a GPU that ran out while it ran.
    pub fn memory_need(&self) -> Option<(crate::memory::Memory, u64)> {
        match self {
            Self::MemoryBudget {
                memory, need_mib, ..
            } => Some((*memory, *need_mib)),
            Self::OutOfMemory {
                budget_mib: Some(budget),
                ..
            } => Some((crate::memory::Memory::Gpu, budget + 1)),
            _ => None,
        }
    }

    /// This error with the batch size named `name`, for a caller whose flag for it is not
    /// the one the work's own spec field goes by (`bench analyze --batch`).
    pub fn naming_batch(mut self, name: &'static str) -> Self {
        if let Self::MemoryBudget { field, .. } | Self::OutOfMemory { field, .. } = &mut self {
            *field = name;
        }
        self
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
