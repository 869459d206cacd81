//! What a block-wise analysis of a checkpoint computes, and the records it produces.

use crate::spec::{Errors, SpecError};
use crate::{BlockId, BlockKind, MetricName, Split};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One family of paper.md's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisKind {
    /// Cosine between each block's residual and the loss gradient at its input.
    Cosine,
    /// ℓ2 ratio ‖F_i(h_i)‖ / ‖h_i‖.
    L2,
    /// Accuracy and loss with each block dropped in turn.
    Drop,
    /// The head at every block of the last stage.
    Intermediate,
    /// Borderline and already-correct examples over the last blocks.
    Borderline,
    /// Re-applying the last block k times with a step size α.
    Unroll,
    /// Gradient-norm ratio and activation norms at initialisation.
    Sharing,
    /// First-order Taylor prediction of each last-stage block's change in loss.
    Taylor,
}

impl AnalysisKind {
    pub const ALL: [AnalysisKind; 8] = [
        Self::Cosine,
        Self::L2,
        Self::Drop,
        Self::Intermediate,
        Self::Borderline,
        Self::Unroll,
        Self::Sharing,
        Self::Taylor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cosine => "cosine",
            Self::L2 => "l2",
            Self::Drop => "drop",
            Self::Intermediate => "intermediate",
            Self::Borderline => "borderline",
            Self::Unroll => "unroll",
            Self::Sharing => "sharing",
            Self::Taylor => "taylor",
        }
    }
}

impl fmt::Display for AnalysisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AnalysisKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::variant_named(s, &Self::ALL, Self::as_str)
    }
}

/// Which gradient the cosine uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientKind {
    /// ∂L/∂h_i of the full network (it flows through block i and everything after).
    #[default]
    Full,
    /// ∂L/∂h_i of the network with block i removed: the literal Taylor reading.
    Skip,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSpec {
    #[serde(default = "all_kinds")]
    pub metrics: Vec<AnalysisKind>,
    #[serde(default = "both_splits")]
    pub splits: Vec<Split>,
    /// Examples per split: a fixed seeded subset when the split is larger.
    #[serde(default = "max_examples")]
    pub max_examples: u32,
    /// Examples per forward pass; bounds memory.
    #[serde(default = "eval_batch")]
    pub eval_batch: u32,
    #[serde(default)]
    pub gradient: GradientKind,
    /// Blocks at the end of the network that the borderline analysis follows.
    #[serde(default = "window")]
    pub window: u32,
    #[serde(default = "unroll_steps")]
    pub unroll_steps: u32,
    #[serde(default = "alphas")]
    pub alphas: Vec<f64>,
    /// |margin| below this is borderline; at least this is already correct.
    #[serde(default = "margin")]
    pub margin: f64,
    /// Seed of the example subsets.
    #[serde(default)]
    pub seed: u64,
}

fn all_kinds() -> Vec<AnalysisKind> {
    AnalysisKind::ALL.to_vec()
}
fn both_splits() -> Vec<Split> {
    vec![Split::Train, Split::Test]
}
fn max_examples() -> u32 {
    2000
}
fn eval_batch() -> u32 {
    100
}
fn window() -> u32 {
    5
}
fn unroll_steps() -> u32 {
    20
}
fn alphas() -> Vec<f64> {
    vec![1.0, 0.5, 0.25, 0.1, 0.05]
}
fn margin() -> f64 {
    0.1
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            metrics: all_kinds(),
            splits: both_splits(),
            max_examples: max_examples(),
            eval_batch: eval_batch(),
            gradient: GradientKind::Full,
            window: window(),
            unroll_steps: unroll_steps(),
            alphas: alphas(),
            margin: margin(),
            seed: 0,
        }
    }
}

impl AnalysisSpec {
    /// Checks every field, naming each bare (`max_examples`): where the spec sits (an
    /// experiment's `analysis`, a plan's `spec`) is the caller's prefix.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut e = Errors::default();
        if self.metrics.is_empty() {
            e.push("metrics", "name at least one analysis");
        }
        if self.splits.is_empty() {
            e.push("splits", "name at least one split");
        }
        e.range("max_examples", self.max_examples, 1, 1_000_000);
        e.range("eval_batch", self.eval_batch, 1, 4096);
        e.range("window", self.window, 1, 1000);
        e.range("unroll_steps", self.unroll_steps, 1, 1000);
        if self.alphas.is_empty() || self.alphas.len() > 32 {
            e.push("alphas", "give 1 to 32 step sizes");
        }
        for &a in &self.alphas {
            e.real("alphas", a, 0.0, 10.0);
        }
        e.real("margin", self.margin, 0.0, 1.0);
        e.finish()
    }

    pub fn wants(&self, kind: AnalysisKind) -> bool {
        self.metrics.contains(&kind)
    }
}

/// The examples a borderline or unrolling value is taken over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    All,
    /// |margin| below the threshold.
    Borderline,
    /// Margin at least the threshold.
    Correct,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Borderline => "borderline",
            Self::Correct => "correct",
        }
    }
}

/// Which summary of the per-example values a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    Mean,
    Median,
}

impl Stat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Median => "median",
        }
    }
}

/// The examples analysed on one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitExamples {
    pub split: Split,
    pub examples: u32,
}

impl SplitExamples {
    /// "2000 train, 2000 test".
    pub fn describe(examples: &[SplitExamples]) -> String {
        examples
            .iter()
            .map(|e| format!("{} {}", e.examples, e.split))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One value of a block-wise analysis of the checkpoint after `epoch` epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRecord {
    pub name: MetricName,
    pub split: Split,
    pub epoch: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_index: Option<u32>,
    /// Projection blocks are measured against their shortcut output P(h_i).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<BlockKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Position along a path: the unrolling step (0 = before unrolling), or the borderline
    /// window position (0 = the window's input, s = after its s-th block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<Stat>,
    /// `null` on the wire where not finite (as a metric's value).
    #[serde(with = "crate::metric::number_or_null")]
    pub value: f64,
    /// Examples behind the value.
    pub n: u32,
}

impl AnalysisRecord {
    pub fn new(name: MetricName, split: Split, epoch: u32, value: f64, n: usize) -> Self {
        Self {
            name,
            split,
            epoch,
            block: None,
            block_index: None,
            kind: None,
            group: None,
            alpha: None,
            step: None,
            stat: None,
            value,
            n: n as u32,
        }
    }

    pub fn at_block(mut self, block: BlockId, index: u32, kind: BlockKind) -> Self {
        self.block = Some(block);
        self.block_index = Some(index);
        self.kind = Some(kind);
        self
    }

    pub fn with_group(mut self, group: Group) -> Self {
        self.group = Some(group);
        self
    }

    pub fn with_stat(mut self, stat: Stat) -> Self {
        self.stat = Some(stat);
        self
    }

    pub fn at_step(mut self, alpha: f64, step: u32) -> Self {
        self.alpha = Some(alpha);
        self.step = Some(step);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_paper_and_validate() {
        let spec = AnalysisSpec::default();
        assert_eq!(spec.alphas, [1.0, 0.5, 0.25, 0.1, 0.05]);
        assert_eq!((spec.window, spec.unroll_steps, spec.margin), (5, 20, 0.1));
        spec.validate().unwrap();
        let parsed: AnalysisSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, spec);
        let bad = AnalysisSpec {
            alphas: vec![],
            eval_batch: 0,
            ..spec
        };
        let fields: Vec<_> = bad
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["eval_batch", "alphas"]);
    }

    #[test]
    fn kinds_parse_from_their_names() {
        assert_eq!("unroll".parse::<AnalysisKind>(), Ok(AnalysisKind::Unroll));
        let err = "cosin".parse::<AnalysisKind>().unwrap_err();
        assert!(err.contains("cosine, l2, drop"), "{err}");
    }

    #[test]
    fn records_serialise_compactly() {
        let r = AnalysisRecord::new(MetricName::Cosine, Split::Test, 7, -0.1, 500)
            .at_block(BlockId::new(2, 3), 21, BlockKind::Identity)
            .with_stat(Stat::Median);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"name":"cosine","split":"test","epoch":7,"block":"s2.b3","block_index":21,"kind":"identity","stat":"median","value":-0.1,"n":500}"#
        );
    }
}
