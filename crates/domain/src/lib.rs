//! Serde types shared by every stepwise crate: run specs and their validation, the resolved
//! model layout, block ids, dataset identity and metric records. No tensors live here.

pub mod analysis;
pub mod block;
pub mod claims;
pub mod compare;
pub mod csv;
pub mod dataset;
pub mod device;
pub mod experiment;
pub mod layout;
pub mod metric;
pub mod paper;
pub mod report;
pub mod service;
pub mod spec;
pub mod stats;
pub mod unrolling;

pub use analysis::{
    AnalysisKind, AnalysisProgress, AnalysisRecord, AnalysisSpec, GradientKind, Group, PassTime,
    RecordFilter, SplitExamples, Stat, UnrollBn,
};
pub use block::BlockId;
pub use compare::{block_summaries, BlockSummary};
pub use dataset::{DatasetIdentity, Normalization};
pub use device::{DeviceSpec, Memory};
pub use experiment::{configuration_labels, ConfigSpec, ExperimentRun, ExperimentSpec, SpecFile};
pub use layout::{BlockInfo, BlockKind, ModelLayout, StageLayout};
pub use metric::{MetricName, MetricRecord, Split};
pub use spec::{
    Arch, CheckpointPolicy, DataSpec, DecayScope, FieldError, LabelKind, ModelSpec, MonitorSpec,
    Precision, RunSpec, Schedule, SchedulePreset, ScheduleSpec, Sharing, SpecError, TrainSpec,
};
pub use unrolling::{unroll_train_loss, SeedsAlpha};

/// The variant of `all` that `name` calls `s`, or an error listing the names there are: the
/// `FromStr` of the enums that query strings and flags name.
pub(crate) fn variant_named<T: Copy>(
    s: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, String> {
    all.iter().copied().find(|&v| name(v) == s).ok_or_else(|| {
        let names: Vec<_> = all.iter().map(|&v| name(v)).collect();
        format!("{s:?} is not one of {}", names.join(", "))
    })
}

/// Identifies the code that wrote a checkpoint or a report.
pub const CODE_VERSION: &str = concat!("stepwise ", env!("CARGO_PKG_VERSION"));
