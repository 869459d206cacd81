//! Run specs: what to train, on what, and how. Everything a run needs is here, defaults
//! follow paper.md, and [`RunSpec::validate`] names the field and the allowed range of
//! anything out of bounds.

use crate::layout::{ModelLayout, StageLayout, INPUT_SIZE};
use crate::{DatasetIdentity, Normalization};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Pre-activation ResNet of depth 6n+2: three stages at 16/32/64 channels.
    Resnet,
    /// One representation: 10 identity blocks at 100 channels and 32×32.
    Single,
    /// Three stages of 10 identity blocks at 150 channels, 2×2 average pools between them.
    Avgpool,
    /// Wide ResNet: stages at 160/320/640 channels, each opened by a projection block.
    Wide,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Resnet, Arch::Single, Arch::Avgpool, Arch::Wide];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resnet => "resnet",
            Self::Single => "single",
            Self::Avgpool => "avgpool",
            Self::Wide => "wide",
        }
    }

    /// Training length of paper.md for this architecture.
    pub fn paper_epochs(self) -> u32 {
        match self {
            Self::Resnet => 300,
            Self::Single => 200,
            Self::Avgpool | Self::Wide => 100,
        }
    }

    /// The learning-rate schedule of paper.md: `(boundaries, values)`.
    pub fn paper_schedule(self) -> (Vec<u32>, Vec<f64>) {
        match self {
            Self::Single | Self::Avgpool => (vec![40, 60, 80], vec![0.1, 0.02, 0.004, 0.0008]),
            Self::Resnet => (vec![80, 120, 200], vec![0.1, 0.01, 0.001, 1e-5]),
            Self::Wide => (vec![60], vec![0.1, 0.02]),
        }
    }

    fn default_width(self) -> u32 {
        match self {
            Self::Resnet => 16,
            Self::Single => 100,
            Self::Avgpool => 150,
            Self::Wide => 160,
        }
    }

    fn stage_count(self) -> usize {
        match self {
            Self::Single => 1,
            _ => 3,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::variant_named(s, &Self::ALL, Self::as_str)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    #[default]
    None,
    /// Shared blocks share convolutions and BatchNorm.
    Naive,
    /// Unshared BatchNorm: shared convolutions, every step its own BN statistics and γ, β
    /// (γ initialised to 0.1).
    Ubn,
}

impl Sharing {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Naive => "naive",
            Self::Ubn => "ubn",
        }
    }
}

/// Floating-point format of the computation. Parameters, BatchNorm and the loss stay f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    /// f32 tensors whose convolutions on CUDA may use TF32 tensor cores (10-bit mantissa
    /// products, f32 sums), as PyTorch's cuDNN does by default; exactly `f32` elsewhere.
    Tf32,
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Tf32 => "tf32",
            Self::Bf16 => "bf16",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub arch: Arch,
    /// Network depth 6n+2 (`resnet` only; default 110).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    #[serde(default = "default_classes")]
    pub classes: u32,
    /// Base width: channels of the first stage (later stages double it where the
    /// architecture does). Default: the paper's (16, 100, 150, 160).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Blocks per stage: one number for every stage, or one per stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<u32>>,
    #[serde(default)]
    pub sharing: Sharing,
    /// With sharing: the first blocks of every stage that keep their own weights.
    #[serde(default = "default_unshared")]
    pub unshared_blocks: u32,
    #[serde(default)]
    pub dtype: Precision,
}

fn default_classes() -> u32 {
    10
}
fn default_unshared() -> u32 {
    5
}

impl ModelSpec {
    /// A configuration's short name: the architecture, with the depth for `resnet`, and
    /// the sharing (`resnet-110`, `single`, `resnet-110-ubn`).
    pub fn label(&self) -> String {
        let mut out = self.arch.to_string();
        if self.arch == Arch::Resnet {
            if let Ok(layout) = self.layout() {
                out = format!("{out}-{}", Self::depth_of(&layout));
            }
        }
        match self.sharing {
            Sharing::None => out,
            Sharing::Naive => format!("{out}-naive"),
            Sharing::Ubn => format!("{out}-ubn"),
        }
    }

    pub fn new(arch: Arch) -> Self {
        Self {
            arch,
            depth: None,
            classes: default_classes(),
            width: None,
            blocks: None,
            sharing: Sharing::None,
            unshared_blocks: default_unshared(),
            dtype: Precision::F32,
        }
    }

    /// Validates the spec and resolves it into stages and blocks.
    pub fn layout(&self) -> Result<ModelLayout, SpecError> {
        let mut errors = Errors::default();
        self.check(&mut errors);
        errors.finish()?;
        Ok(self.resolve())
    }

    /// The network depth: `6n+2` for `resnet` (2 + 2 convolutions per block otherwise).
    pub fn depth_of(layout: &ModelLayout) -> u32 {
        2 + 2 * layout.block_count() as u32
    }

    fn check(&self, e: &mut Errors) {
        e.range("model.classes", self.classes, 2, 1000);
        if let Some(width) = self.width {
            e.range("model.width", width, 1, 1024);
        }
        if let Some(depth) = self.depth {
            if self.arch != Arch::Resnet {
                e.push(
                    "model.depth",
                    format!(
                        "applies to arch resnet only; use model.blocks for {}",
                        self.arch
                    ),
                );
            } else if !(8..=1202).contains(&depth) || (depth - 2) % 6 != 0 {
                e.push(
                    "model.depth",
                    format!(
                        "{depth} is not of the form 6n+2 between 8 and 1202 (8, 14, 20, …, 110, …)"
                    ),
                );
            }
            if self.blocks.is_some() {
                e.push("model.blocks", "give model.depth or model.blocks, not both");
            }
        }
        if let Some(blocks) = &self.blocks {
            let stages = self.arch.stage_count();
            if blocks.len() != 1 && blocks.len() != stages {
                let allowed = match stages {
                    1 => format!("give 1 ({} has one stage)", self.arch),
                    _ => format!(
                        "give 1 (for every stage) or {stages} (one per stage of {})",
                        self.arch
                    ),
                };
                e.push(
                    "model.blocks",
                    format!("has {} entries; {allowed}", blocks.len()),
                );
            }
            for &b in blocks {
                e.range("model.blocks", b, 1, 200);
            }
        }
        if self.sharing != Sharing::None {
            if self.arch != Arch::Resnet {
                e.push(
                    "model.sharing",
                    format!("{} applies to arch resnet only", self.sharing.as_str()),
                );
            }
            e.range("model.unshared_blocks", self.unshared_blocks, 1, 200);
            if e.is_empty() {
                let stages = self.resolve_stages();
                if !stages.iter().any(|s| s.blocks > self.unshared_blocks) {
                    e.push(
                        "model.unshared_blocks",
                        format!(
                            "{} leaves no block to share: stages have {:?} blocks",
                            self.unshared_blocks,
                            stages.iter().map(|s| s.blocks).collect::<Vec<_>>()
                        ),
                    );
                }
            }
        }
    }

    fn stage_blocks(&self) -> Vec<u32> {
        let stages = self.arch.stage_count();
        match (&self.blocks, self.arch) {
            (Some(b), _) if b.len() == 1 => vec![b[0]; stages],
            (Some(b), _) => b.clone(),
            (None, Arch::Resnet) => vec![(self.depth.unwrap_or(110) - 2) / 6; 3],
            (None, Arch::Single) => vec![10],
            (None, Arch::Avgpool) => vec![10; 3],
            // Stage 1 is a projection and 3 identity blocks, as the paper's count requires.
            (None, Arch::Wide) => vec![4, 5, 5],
        }
    }

    fn resolve_stages(&self) -> Vec<StageLayout> {
        let width = self.width.unwrap_or(self.arch.default_width());
        let blocks = self.stage_blocks();
        let mut resolution = INPUT_SIZE;
        blocks
            .iter()
            .enumerate()
            .map(|(s, &blocks)| {
                let (channels, stride, projection, pool_before) = match self.arch {
                    Arch::Resnet => (width << s, if s == 0 { 1 } else { 2 }, s > 0, false),
                    Arch::Wide => (width << s, if s == 0 { 1 } else { 2 }, true, false),
                    Arch::Single => (width, 1, false, false),
                    Arch::Avgpool => (width, 1, false, s > 0),
                };
                if pool_before {
                    resolution /= 2;
                }
                resolution /= stride;
                StageLayout {
                    channels,
                    blocks,
                    resolution,
                    stride,
                    projection,
                    pool_before,
                }
            })
            .collect()
    }

    fn resolve(&self) -> ModelLayout {
        let stem_channels = match self.arch {
            Arch::Wide => 16,
            _ => self.width.unwrap_or(self.arch.default_width()),
        };
        ModelLayout {
            arch: self.arch,
            classes: self.classes,
            stem_channels,
            stages: self.resolve_stages(),
            sharing: self.sharing,
            unshared_blocks: self.unshared_blocks,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    /// CIFAR-100's 100 fine classes (and the only labels of CIFAR-10 and imports).
    #[default]
    Fine,
    /// CIFAR-100's 20 superclasses.
    Coarse,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Dataset name: `shapes10`, `cifar10`, `cifar100` or the name of an imported dataset.
    pub dataset: String,
    #[serde(default)]
    pub labels: LabelKind,
    /// Random crop from 4-pixel zero padding plus horizontal flip on training batches.
    #[serde(default = "yes")]
    pub augment: bool,
    /// Per-channel normalisation; computed from the training set when absent and then
    /// recorded here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<Normalization>,
    /// Filled in when the run starts; a given identity must match the data found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<DatasetIdentity>,
}

fn yes() -> bool {
    true
}

impl DataSpec {
    pub fn new(dataset: impl Into<String>) -> Self {
        Self {
            dataset: dataset.into(),
            labels: LabelKind::Fine,
            augment: true,
            normalization: None,
            identity: None,
        }
    }

    fn check(&self, e: &mut Errors) {
        if let Err(bad) = check_dataset_name(&self.dataset) {
            e.push("data.dataset", bad);
        }
        if let Some(n) = &self.normalization {
            if n.std.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
                e.push("data.normalization.std", "every std must be finite and > 0");
            }
            if n.mean.iter().any(|m| !m.is_finite()) {
                e.push("data.normalization.mean", "every mean must be finite");
            }
        }
    }
}

/// What a tag may be: 1-64 of A-Z, a-z, 0-9, '.', '_', '-', ':'.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
    if tag.is_empty() || tag.len() > 64 || !tag.chars().all(ok) {
        return Err(format!(
            "{tag:?}: 1-64 of A-Z, a-z, 0-9, '.', '_', '-', ':'"
        ));
    }
    Ok(())
}

/// What free text a user names things with (a run's name, an experiment's description) may
/// be: 1 to `max_chars` characters and no control characters — the database's text holds
/// no NUL, and a name is printed in terminals and pages — except line breaks and tabs
/// where `multiline`.
pub fn check_text(text: &str, max_chars: usize, multiline: bool) -> Result<(), String> {
    let count = text.chars().count();
    if count == 0 || count > max_chars {
        return Err(format!(
            "must have 1 to {max_chars} characters, not {count}"
        ));
    }
    let allowed = |c: char| multiline && matches!(c, '\n' | '\t');
    match text.chars().find(|&c| c.is_control() && !allowed(c)) {
        Some(c) => Err(format!("contains the control character {c:?}")),
        None => Ok(()),
    }
}

/// What a dataset may be named (a directory under the data directory, a spec's
/// `data.dataset`, the name an imported dataset records with every run): 1-64 of a-z, 0-9,
/// '.', '_', '-', starting with a letter or digit.
pub fn check_dataset_name(name: &str) -> Result<(), String> {
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = !name.is_empty()
        && name.len() <= 64
        && ok(name.as_bytes()[0])
        && name
            .bytes()
            .all(|c| ok(c) || matches!(c, b'.' | b'_' | b'-'));
    match valid {
        true => Ok(()),
        false => Err(format!(
            "{name:?} is not a dataset name (1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit)"
        )),
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayScope {
    /// Convolution and linear weights (PyTorch-style decay added to their gradient).
    #[default]
    Weights,
    /// Every parameter, biases and BatchNorm γ, β included.
    All,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulePreset {
    /// paper.md's piecewise schedule for the architecture, at its epoch boundaries.
    #[default]
    Paper,
    /// The paper's schedule with its boundaries scaled to `train.epochs`.
    Scaled,
    /// One learning rate throughout.
    Constant,
    /// `boundaries` and `values` as given.
    Custom,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    #[serde(default)]
    pub preset: SchedulePreset,
    /// Initial learning rate; presets scale all their values by `lr / 0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// `custom` only: epochs at which the next value starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boundaries: Vec<u32>,
    /// `custom` only: one more value than boundaries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<f64>,
    /// Linear warm-up from 0 over this many epochs (per step).
    #[serde(default)]
    pub warmup_epochs: u32,
}

/// A resolved piecewise-constant schedule with optional linear warm-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub boundaries: Vec<u32>,
    pub values: Vec<f64>,
    pub warmup_epochs: u32,
}

impl Schedule {
    /// "learning rate 0.1 for epochs 1–80, 0.01 for epochs 81–120, …" over a run of `epochs`,
    /// in 1-based epochs as checkpoints count them; values whose epochs lie past the end are
    /// left out.
    pub fn describe(&self, epochs: u32) -> String {
        let starts = std::iter::once(0).chain(self.boundaries.iter().copied());
        let ends = self
            .boundaries
            .iter()
            .copied()
            .chain(std::iter::once(epochs));
        let pieces: Vec<String> = starts
            .zip(ends)
            .zip(&self.values)
            .filter(|((start, _), _)| *start < epochs)
            .map(|((start, end), lr)| {
                let end = end.min(epochs);
                if end == start + 1 {
                    format!("{lr} for epoch {end}")
                } else {
                    format!("{lr} for epochs {}–{end}", start + 1)
                }
            })
            .collect();
        let mut line = format!("learning rate {}", pieces.join(", "));
        if self.warmup_epochs > 0 {
            line.push_str(&format!(
                ", rising linearly from 0 over the first {} epochs",
                self.warmup_epochs
            ));
        }
        line
    }

    /// Learning rate for step `step` (0-based) of epoch `epoch` (0-based).
    pub fn lr(&self, epoch: u32, step: usize, steps_per_epoch: usize) -> f64 {
        let piece = self.boundaries.iter().filter(|&&b| b <= epoch).count();
        let value = self.values[piece];
        if epoch < self.warmup_epochs {
            let done = epoch as f64 * steps_per_epoch as f64 + step as f64 + 1.0;
            value * done / (self.warmup_epochs as f64 * steps_per_epoch as f64)
        } else {
            value
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPolicy {
    /// Write a checkpoint every this many epochs (the last epoch always gets one).
    #[serde(default = "one")]
    pub every_epochs: u32,
    /// Keep only the newest N periodic checkpoints (0 keeps all).
    #[serde(default = "three")]
    pub keep_last: u32,
    /// Also keep, forever, those whose epoch is a multiple of K (0: none).
    #[serde(default)]
    pub keep_every: u32,
    /// Also write and keep, forever, the checkpoints after these epochs, whatever the
    /// interval; 0 is the initial weights, written before the first step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_epochs: Vec<u32>,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_epochs: 1,
            keep_last: 3,
            keep_every: 0,
            keep_epochs: vec![],
        }
    }
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// Test accuracy and loss of the head at every block of the last stage, per epoch.
    #[serde(default = "yes")]
    pub intermediate_accuracy: bool,
    /// Gradient-norm ratio per epoch; default: on for sharing runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm_ratio: Option<bool>,
    /// Size of the fixed train and test subsets of the gradient-norm ratio.
    #[serde(default = "grad_norm_examples")]
    pub grad_norm_examples: u32,
    /// Batch size of evaluation passes.
    #[serde(default = "eval_batch_size")]
    pub eval_batch_size: u32,
}

fn grad_norm_examples() -> u32 {
    500
}
fn eval_batch_size() -> u32 {
    250
}

impl Default for MonitorSpec {
    fn default() -> Self {
        Self {
            intermediate_accuracy: true,
            grad_norm_ratio: None,
            grad_norm_examples: grad_norm_examples(),
            eval_batch_size: eval_batch_size(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Default: the paper's length for the architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u32>,
    #[serde(default = "batch_size")]
    pub batch_size: u32,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "momentum")]
    pub momentum: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default = "weight_decay")]
    pub weight_decay: f64,
    #[serde(default)]
    pub decay_on: DecayScope,
    #[serde(default)]
    pub schedule: ScheduleSpec,
    #[serde(default)]
    pub checkpoint: CheckpointPolicy,
    #[serde(default)]
    pub monitor: MonitorSpec,
}

fn batch_size() -> u32 {
    128
}
fn momentum() -> f64 {
    0.9
}
fn weight_decay() -> f64 {
    1e-4
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            epochs: None,
            batch_size: batch_size(),
            seed: 0,
            momentum: momentum(),
            nesterov: false,
            weight_decay: weight_decay(),
            decay_on: DecayScope::Weights,
            schedule: ScheduleSpec::default(),
            checkpoint: CheckpointPolicy::default(),
            monitor: MonitorSpec::default(),
        }
    }
}

impl TrainSpec {
    pub fn epochs_for(&self, arch: Arch) -> u32 {
        self.epochs.unwrap_or(arch.paper_epochs())
    }

    pub fn grad_norm_ratio_for(&self, sharing: Sharing) -> bool {
        self.monitor
            .grad_norm_ratio
            .unwrap_or(sharing != Sharing::None)
    }

    /// The resolved learning-rate schedule for an architecture.
    pub fn schedule(&self, arch: Arch) -> Schedule {
        let s = &self.schedule;
        let scale = s.lr.map_or(1.0, |lr| lr / 0.1);
        let (boundaries, values) = match s.preset {
            SchedulePreset::Paper => arch.paper_schedule(),
            SchedulePreset::Scaled => {
                let (b, v) = arch.paper_schedule();
                let epochs = self.epochs_for(arch) as f64;
                let ratio = epochs / arch.paper_epochs() as f64;
                let b = b
                    .iter()
                    .map(|&b| ((b as f64 * ratio).round() as u32).max(1))
                    .collect();
                (b, v)
            }
            SchedulePreset::Constant => (vec![], vec![0.1]),
            SchedulePreset::Custom => (s.boundaries.clone(), s.values.clone()),
        };
        let values = if s.preset == SchedulePreset::Custom {
            values
        } else {
            values.iter().map(|v| v * scale).collect()
        };
        Schedule {
            boundaries,
            values,
            warmup_epochs: s.warmup_epochs,
        }
    }

    fn check(&self, arch: Arch, e: &mut Errors) {
        let epochs = self.epochs_for(arch);
        e.range("train.epochs", epochs, 1, 10_000);
        e.range("train.batch_size", self.batch_size, 1, 4096);
        e.real("train.momentum", self.momentum, 0.0, 0.999);
        e.real("train.weight_decay", self.weight_decay, 0.0, 0.1);
        if self.nesterov && self.momentum == 0.0 {
            e.push("train.nesterov", "needs train.momentum > 0");
        }
        let s = &self.schedule;
        if let Some(lr) = s.lr {
            e.real("train.schedule.lr", lr, 1e-8, 10.0);
        }
        if s.preset == SchedulePreset::Custom {
            if s.lr.is_some() {
                e.push(
                    "train.schedule.lr",
                    "not used by preset custom: give values",
                );
            }
            if s.values.len() != s.boundaries.len() + 1 {
                e.push(
                    "train.schedule.values",
                    format!(
                        "needs one more entry than boundaries ({} boundaries, {} values)",
                        s.boundaries.len(),
                        s.values.len()
                    ),
                );
            }
            if s.boundaries.windows(2).any(|w| w[0] >= w[1]) || s.boundaries.first() == Some(&0) {
                e.push(
                    "train.schedule.boundaries",
                    "must be strictly increasing epochs ≥ 1",
                );
            }
            for &v in &s.values {
                e.real("train.schedule.values", v, 1e-8, 10.0);
            }
        } else if !s.boundaries.is_empty() || !s.values.is_empty() {
            e.push(
                "train.schedule.boundaries",
                "boundaries and values are for preset custom only",
            );
        }
        // With no epochs at all, the epochs' own error says it.
        if epochs > 0 && s.warmup_epochs >= epochs {
            e.push(
                "train.schedule.warmup_epochs",
                format!(
                    "{} must be less than train.epochs ({epochs})",
                    s.warmup_epochs
                ),
            );
        }
        e.range(
            "train.checkpoint.every_epochs",
            self.checkpoint.every_epochs,
            1,
            10_000,
        );
        e.epoch_list(
            "train.checkpoint.keep_epochs",
            &self.checkpoint.keep_epochs,
            0,
            epochs,
        );
        e.range(
            "train.monitor.grad_norm_examples",
            self.monitor.grad_norm_examples,
            1,
            10_000,
        );
        e.range(
            "train.monitor.eval_batch_size",
            self.monitor.eval_batch_size,
            1,
            4096,
        );
    }
}

/// Everything one training run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub model: ModelSpec,
    pub data: DataSpec,
    #[serde(default)]
    pub train: TrainSpec,
}

impl RunSpec {
    pub fn new(model: ModelSpec, data: DataSpec) -> Self {
        Self {
            name: None,
            tags: vec![],
            model,
            data,
            train: TrainSpec::default(),
        }
    }

    /// Parses a TOML spec, naming the field of any error (`model.depth: …`).
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: Self = parse_toml(text, "spec")?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses a JSON spec, naming the field of any error.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let spec: Self = serde_path_to_error::deserialize(de)
            .map_err(|e| SpecError::one(e.path().to_string(), e.inner().to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a run spec serialises to TOML")
    }

    /// Checks every field, reporting all problems at once.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut e = Errors::default();
        if let Some(Err(bad)) = self.name.as_deref().map(|n| check_text(n, 200, false)) {
            e.push("name", bad);
        }
        if self.tags.len() > 32 {
            e.push("tags", "at most 32 tags");
        }
        for bad in self.tags.iter().filter_map(|t| check_tag(t).err()) {
            e.push("tags", bad);
        }
        self.model.check(&mut e);
        self.data.check(&mut e);
        self.train.check(self.model.arch, &mut e);
        e.finish()
    }

    pub fn epochs(&self) -> u32 {
        self.train.epochs_for(self.model.arch)
    }
}

/// Deserialises TOML, naming the field of any error by its path (`root` for syntax errors)
/// and, where the parser knows it, its line and column in `text`.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    root: &str,
) -> Result<T, SpecError> {
    let de =
        toml::Deserializer::parse(text).map_err(|e| SpecError::one(root, located(text, &e)))?;
    serde_path_to_error::deserialize(de)
        .map_err(|e| SpecError::one(e.path().to_string(), located(text, e.inner())))
}

/// A TOML error's message, after the 1-based line and column where it starts.
fn located(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let Some(start) = e.span().map(|s| s.start.min(text.len())) else {
        return message.to_string();
    };
    let before = text.get(..start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}: {message}")
}

/// One invalid field and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every invalid field of a spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SpecError(pub Vec<FieldError>);

impl SpecError {
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// Both values, or every error of either (a form checked in parts reports all at once).
    pub fn both<A, B>(a: Result<A, Self>, b: Result<B, Self>) -> Result<(A, B), Self> {
        match (a, b) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            (a, b) => Err(Self(
                [a.err(), b.err()]
                    .into_iter()
                    .flatten()
                    .flat_map(|e| e.0)
                    .collect(),
            )),
        }
    }

    /// The same errors with `prefix` before each field path (`spec.` for a spec inside a
    /// request body); an error of the whole value (no path) is named by the prefix itself.
    pub fn within(mut self, prefix: &str) -> Self {
        for err in &mut self.0 {
            err.field = match err.field.as_str() {
                "" => prefix.trim_end_matches('.').to_string(),
                field => format!("{prefix}{field}"),
            };
        }
        self
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// A list of `min_len` to 1000 epochs of a run of `epochs` (0: the initial weights).
    pub(crate) fn epoch_list(&mut self, field: &str, list: &[u32], min_len: usize, epochs: u32) {
        if !(min_len..=1000).contains(&list.len()) {
            let message = match min_len {
                0 => "give at most 1000 epochs".to_string(),
                _ => format!("give {min_len} to 1000 epochs"),
            };
            self.push(field, message);
        }
        for &epoch in list {
            self.range(field, epoch, 0, epochs);
        }
    }

    pub(crate) fn range(&mut self, field: &str, value: u32, min: u32, max: u32) {
        if !(min..=max).contains(&value) {
            self.push(field, format!("{value} is out of range {min}..={max}"));
        }
    }

    pub(crate) fn real(&mut self, field: &str, value: f64, min: f64, max: f64) {
        if !(value.is_finite() && min <= value && value <= max) {
            self.push(field, format!("{value} is out of range [{min}, {max}]"));
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `errors` of a nested spec with `prefix` before their field paths.
    pub(crate) fn extend_prefixed(&mut self, prefix: &str, errors: SpecError) {
        self.0.extend(errors.within(prefix).0);
    }

    pub(crate) fn finish(self) -> Result<(), SpecError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(SpecError(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BlockKind;

    fn resnet(depth: u32) -> ModelSpec {
        ModelSpec {
            depth: Some(depth),
            ..ModelSpec::new(Arch::Resnet)
        }
    }

    #[test]
    fn resnet_110_has_three_stages_of_18_with_two_projections() {
        let layout = resnet(110).layout().unwrap();
        let blocks = layout.blocks();
        assert_eq!(blocks.len(), 54);
        assert_eq!(ModelSpec::depth_of(&layout), 110);
        let projections: Vec<_> = blocks
            .iter()
            .filter(|b| b.kind == BlockKind::Projection)
            .map(|b| b.id.to_string())
            .collect();
        assert_eq!(projections, ["s1.b0", "s2.b0"]);
        assert_eq!(blocks[18].in_shape, [16, 32, 32]);
        assert_eq!(blocks[18].out_shape, [32, 16, 16]);
        assert_eq!(blocks[53].out_shape, [64, 8, 8]);
        assert_eq!(blocks[53].index, 53);
        assert_eq!(layout.head_features(), 64);
    }

    #[test]
    fn single_avgpool_and_wide_follow_the_paper() {
        let single = ModelSpec::new(Arch::Single).layout().unwrap();
        assert_eq!(single.blocks().len(), 10);
        assert_eq!(single.head_features(), 1600);
        let avgpool = ModelSpec::new(Arch::Avgpool).layout().unwrap();
        let blocks = avgpool.blocks();
        assert_eq!(blocks.len(), 30);
        assert!(blocks.iter().all(|b| b.kind == BlockKind::Identity));
        assert_eq!(blocks[10].in_shape, [150, 16, 16]);
        assert_eq!(blocks[20].in_shape, [150, 8, 8]);
        let wide = ModelSpec::new(Arch::Wide).layout().unwrap();
        let blocks = wide.blocks();
        assert_eq!(blocks.len(), 14);
        assert_eq!(blocks[0].kind, BlockKind::Projection);
        assert_eq!(blocks[0].in_shape, [16, 32, 32]);
        assert_eq!(blocks[0].out_shape, [160, 32, 32]);
        assert_eq!(blocks[4].id.to_string(), "s1.b0");
        assert_eq!(blocks[13].out_shape, [640, 8, 8]);
    }

    #[test]
    fn sharing_marks_blocks_past_the_unshared_prefix() {
        let spec = ModelSpec {
            sharing: Sharing::Ubn,
            ..resnet(110)
        };
        let blocks = spec.layout().unwrap().blocks();
        assert!(!blocks[4].shared && blocks[5].shared && blocks[17].shared);
        assert!(!blocks[18].shared && blocks[23].shared);
    }

    #[test]
    fn invalid_models_name_the_field_and_range() {
        let err = resnet(111).layout().unwrap_err();
        assert_eq!(err.0[0].field, "model.depth");
        assert!(err.0[0].message.contains("6n+2"), "{err}");
        let err = ModelSpec {
            depth: Some(20),
            ..ModelSpec::new(Arch::Single)
        }
        .layout()
        .unwrap_err();
        assert_eq!(err.0[0].field, "model.depth");
        let err = ModelSpec {
            blocks: Some(vec![1, 2]),
            width: Some(0),
            ..ModelSpec::new(Arch::Avgpool)
        }
        .layout()
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["model.width", "model.blocks"]);
        assert!(
            err.0[1]
                .message
                .ends_with("give 1 (for every stage) or 3 (one per stage of avgpool)"),
            "{err}"
        );
        let err = ModelSpec {
            blocks: Some(vec![3, 3]),
            ..ModelSpec::new(Arch::Single)
        }
        .layout()
        .unwrap_err();
        assert_eq!(
            err.0[0].message,
            "has 2 entries; give 1 (single has one stage)"
        );
        let err = ModelSpec {
            sharing: Sharing::Naive,
            unshared_blocks: 5,
            ..resnet(32)
        }
        .layout()
        .unwrap_err();
        assert_eq!(err.0[0].field, "model.unshared_blocks");
        let err = ModelSpec {
            sharing: Sharing::Naive,
            ..ModelSpec::new(Arch::Wide)
        }
        .layout()
        .unwrap_err();
        assert_eq!(err.0[0].field, "model.sharing");
    }

    #[test]
    fn toml_specs_parse_with_defaults_and_field_named_errors() {
        let spec = RunSpec::from_toml(
            r#"
            name = "quick"
            [model]
            arch = "resnet"
            depth = 20
            [data]
            dataset = "shapes10"
            [train]
            epochs = 3
            "#,
        )
        .unwrap();
        assert_eq!(spec.train.batch_size, 128);
        assert_eq!(spec.train.momentum, 0.9);
        assert!(spec.data.augment);
        assert_eq!(RunSpec::from_toml(&spec.to_toml()).unwrap(), spec);

        let err =
            RunSpec::from_toml("[model]\narch = \"resnet\"\ndepht = 20\n[data]\ndataset = \"x\"\n")
                .unwrap_err();
        assert_eq!(err.0[0].field, "model.depht");
        assert!(err.0[0].message.contains("depht"), "{err}");

        let err = RunSpec::from_toml(
            "[model]\narch = \"resnet\"\n[data]\ndataset = \"x\"\n[train]\nbatch_size = 0\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "train.batch_size: 0 is out of range 1..=4096"
        );

        let err =
            RunSpec::from_toml("[model]\narch = \"vgg\"\n[data]\ndataset = \"x\"\n").unwrap_err();
        assert_eq!(err.0[0].field, "model.arch");

        let err =
            RunSpec::from_json(r#"{"model":{"arch":"resnet"},"data":{"dataset":"Bad Name"}}"#)
                .unwrap_err();
        assert_eq!(err.0[0].field, "data.dataset");
    }

    #[test]
    fn kept_checkpoint_epochs_lie_within_the_run() {
        let spec = |keep: &str| {
            RunSpec::from_toml(&format!(
                "[model]\narch = \"resnet\"\n[data]\ndataset = \"x\"\n\
                 [train]\nepochs = 10\n[train.checkpoint]\nkeep_epochs = {keep}\n"
            ))
        };
        let kept = spec("[0, 5, 10]").unwrap();
        assert_eq!(kept.train.checkpoint.keep_epochs, [0, 5, 10]);
        assert_eq!(RunSpec::from_toml(&kept.to_toml()).unwrap(), kept);
        assert_eq!(
            spec("[3, 11]").unwrap_err().to_string(),
            "train.checkpoint.keep_epochs: 11 is out of range 0..=10"
        );
        // An empty list is the default, and not written out.
        assert!(!spec("[]").unwrap().to_toml().contains("keep_epochs"));
    }

    #[test]
    fn errors_of_parts_are_reported_together_and_prefixed() {
        let bad = |field: &str| Err::<(), _>(SpecError::one(field, "bad"));
        assert_eq!(
            SpecError::both(Ok::<_, SpecError>(1), Ok::<_, SpecError>(2)),
            Ok((1, 2))
        );
        let both = SpecError::both(bad("a"), bad("b"))
            .unwrap_err()
            .within("x.");
        assert_eq!(both.to_string(), "x.a: bad; x.b: bad");
        let whole = SpecError::both(bad(""), Ok::<_, SpecError>(())).unwrap_err();
        assert_eq!(whole.within("x.").to_string(), "x: bad");
    }

    #[test]
    fn names_and_descriptions_are_printable_text() {
        assert_eq!(
            check_text("ResNet-110, lr 0.1 · seed 3", 200, false),
            Ok(())
        );
        assert_eq!(
            check_text("a\0b", 200, false),
            Err("contains the control character '\\0'".into())
        );
        assert!(check_text("two\nlines", 200, false).is_err());
        assert_eq!(check_text("two\nlines\tand a tab", 200, true), Ok(()));
        assert!(check_text("\u{1b}[2J", 200, true).is_err());
        assert!(check_text("", 200, false).is_err());
        assert!(check_text(&"é".repeat(200), 200, false).is_ok());
        assert!(check_text(&"é".repeat(201), 200, false).is_err());

        let mut spec = RunSpec::new(ModelSpec::new(Arch::Resnet), DataSpec::new("shapes10"));
        spec.name = Some("run\0".into());
        spec.tags = vec!["ok".into(), "not ok".into()];
        let err = spec.validate().unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "tags"]);
        assert!(err.0[1].message.starts_with("\"not ok\""), "{err}");
        assert_eq!("wide".parse(), Ok(Arch::Wide));
        assert_eq!(
            "vgg".parse::<Arch>(),
            Err("\"vgg\" is not one of resnet, single, avgpool, wide".into())
        );
    }

    #[test]
    fn schedules_resolve_presets_scaling_and_warmup() {
        let mut train = TrainSpec::default();
        let s = train.schedule(Arch::Resnet);
        assert_eq!(s.boundaries, [80, 120, 200]);
        assert_eq!(s.lr(0, 0, 10), 0.1);
        assert_eq!(s.lr(79, 9, 10), 0.1);
        assert_eq!(s.lr(80, 0, 10), 0.01);
        assert_eq!(s.lr(250, 0, 10), 1e-5);

        train.epochs = Some(30);
        train.schedule.preset = SchedulePreset::Scaled;
        train.schedule.lr = Some(0.05);
        let s = train.schedule(Arch::Resnet);
        assert_eq!(s.boundaries, [8, 12, 20]);
        assert!((s.values[0] - 0.05).abs() < 1e-12 && (s.values[1] - 0.005).abs() < 1e-12);

        train.schedule = ScheduleSpec {
            preset: SchedulePreset::Custom,
            boundaries: vec![2],
            values: vec![0.2, 0.02],
            warmup_epochs: 1,
            lr: None,
        };
        let s = train.schedule(Arch::Single);
        assert!((s.lr(0, 0, 4) - 0.05).abs() < 1e-12);
        assert!((s.lr(0, 3, 4) - 0.2).abs() < 1e-12);
        assert_eq!(s.lr(2, 0, 4), 0.02);
    }

    #[test]
    fn schedules_describe_their_epochs_one_based_and_stop_at_the_end() {
        let mut train = TrainSpec {
            epochs: Some(30),
            ..TrainSpec::default()
        };
        train.schedule.preset = SchedulePreset::Scaled;
        assert_eq!(
            train.schedule(Arch::Resnet).describe(30),
            "learning rate 0.1 for epochs 1–8, 0.01 for epochs 9–12, 0.001 for epochs 13–20, \
             0.00001 for epochs 21–30"
        );
        // The paper's boundaries past a short run's end are left out.
        train.schedule.preset = SchedulePreset::Paper;
        train.schedule.warmup_epochs = 2;
        assert_eq!(
            train.schedule(Arch::Resnet).describe(81),
            "learning rate 0.1 for epochs 1–80, 0.01 for epoch 81, rising linearly from 0 over \
             the first 2 epochs"
        );
    }

    #[test]
    fn invalid_schedules_are_rejected() {
        let mut spec = RunSpec::new(ModelSpec::new(Arch::Single), DataSpec::new("shapes10"));
        spec.train.schedule = ScheduleSpec {
            preset: SchedulePreset::Custom,
            boundaries: vec![5, 5],
            values: vec![0.1],
            ..ScheduleSpec::default()
        };
        let err = spec.validate().unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["train.schedule.values", "train.schedule.boundaries"]
        );

        // Zero epochs is one error, not also a warm-up longer than the run.
        let mut spec = RunSpec::new(ModelSpec::new(Arch::Single), DataSpec::new("shapes10"));
        spec.train.epochs = Some(0);
        let err = spec.validate().unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["train.epochs"]);
        spec.train.epochs = Some(2);
        spec.train.schedule.warmup_epochs = 2;
        let err = spec.validate().unwrap_err();
        assert_eq!(err.0[0].field, "train.schedule.warmup_epochs");
    }
}
