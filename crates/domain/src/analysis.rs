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

/// The statistics the unrolling's re-applied block normalises with (paper.md is silent;
/// every other metric uses the running ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnrollBn {
    /// The running statistics training left (inference mode), as everywhere else.
    #[default]
    Running,
    /// Each batch's own statistics at the unrolled state (the running ones untouched): the
    /// block sees its input normalised as in training, however far the unrolling moved it.
    Batch,
}

impl UnrollBn {
    /// What results of this setting say of it: nothing for paper.md's inference mode.
    pub fn note(self) -> Option<&'static str> {
        match self {
            Self::Running => None,
            Self::Batch => Some("the block on batch statistics"),
        }
    }
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
    #[serde(default)]
    pub unroll_bn: UnrollBn,
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
            unroll_bn: UnrollBn::Running,
            margin: margin(),
            seed: 0,
        }
    }
}

impl AnalysisSpec {
    /// Whether analyses with these settings and `other`'s measure the same quantities, so
    /// that seeds analysed with them may be averaged: where both measure the cosine, with
    /// the same gradient; the borderline examples, with the same window and margin; the
    /// unrolling, with the same steps, step sizes, BatchNorm statistics and margin (and, on
    /// batch statistics, batches of the same size, whose statistics they are). Which
    /// metrics and splits, how many examples, which subset and otherwise how many per pass
    /// may differ: they choose what is measured and how precisely, not what a metric is.
    pub fn measures_like(&self, other: &Self) -> bool {
        let both = |kind| self.metrics.contains(&kind) && other.metrics.contains(&kind);
        let unrolling = |s: &Self| {
            let batch = (s.unroll_bn == UnrollBn::Batch).then_some(s.eval_batch);
            (
                s.unroll_steps,
                s.alphas.clone(),
                s.unroll_bn,
                batch,
                s.margin,
            )
        };
        (!both(AnalysisKind::Cosine) || self.gradient == other.gradient)
            && (!both(AnalysisKind::Borderline)
                || (self.window, self.margin) == (other.window, other.margin))
            && (!both(AnalysisKind::Unroll) || unrolling(self) == unrolling(other))
    }

    /// Parses the fields given in TOML, the others taking their defaults, and checks them;
    /// fields are named bare (a syntax error by no path), as in [`Self::validate`].
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: Self = crate::spec::parse_toml(text, "")?;
        spec.validate()?;
        Ok(spec)
    }

    /// The fields that differ from the defaults, as TOML that [`Self::from_toml`] reads back
    /// (empty when none do).
    pub fn changes_toml(&self) -> String {
        let table = |spec: &Self| match toml::Table::try_from(spec) {
            Ok(table) => table,
            Err(e) => unreachable!("an analysis spec serialises to TOML: {e}"),
        };
        let defaults = table(&Self::default());
        let changed: toml::Table = table(self)
            .into_iter()
            .filter(|(field, value)| defaults.get(field) != Some(value))
            .collect();
        toml::to_string(&changed).expect("a TOML table serialises")
    }

    /// [`Self::changes_toml`] on one line (`gradient = "skip"; max_examples = 20`), as
    /// listings show an analysis' settings; empty for the defaults.
    pub fn changes_inline(&self) -> String {
        self.changes_toml().lines().collect::<Vec<_>>().join("; ")
    }

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
    /// Margin at most minus the threshold: confidently wrong. Not one of the paper's
    /// groups; with borderline and correct it partitions all examples, so that the
    /// groups' shares of a mean add up to it.
    Misclassified,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Borderline => "borderline",
            Self::Correct => "correct",
            Self::Misclassified => "misclassified",
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

/// How long one pass of an analysis took over all its splits, and which metrics it computed
/// (cosine, ℓ2 and dropping share one pass): where an analysis spends its time, so that a
/// researcher can leave out what costs most.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassTime {
    pub metrics: Vec<AnalysisKind>,
    pub seconds: f64,
}

impl PassTime {
    /// "18 s (cosine+l2+drop 3.5 s, unroll 11 s)": an analysis' time and its passes', as
    /// the CLI and the dashboard say it.
    pub fn took(seconds: f64, passes: &[PassTime]) -> String {
        let total = crate::service::duration(seconds);
        if passes.is_empty() {
            return total;
        }
        let passes: Vec<String> = passes
            .iter()
            .map(|p| {
                let metrics: Vec<&str> = p.metrics.iter().map(|m| m.as_str()).collect();
                format!(
                    "{} {}",
                    metrics.join("+"),
                    crate::service::duration(p.seconds)
                )
            })
            .collect();
        format!("{total} ({})", passes.join(", "))
    }
}

/// Where a running analysis is: the split, the pass (the metrics it computes), and the
/// batches the pass has uploaded of the split's (0 at its start; passes that run the network
/// through their own loop report only their start).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisProgress {
    pub split: Split,
    pub pass: Vec<AnalysisKind>,
    pub batch: u32,
    pub batches: u32,
}

impl AnalysisProgress {
    /// "test split · cosine+l2+drop · batch 3 of 20" (no batch at a pass's start).
    pub fn describe(&self) -> String {
        let pass: Vec<&str> = self.pass.iter().map(|m| m.as_str()).collect();
        let at = format!("{} split · {}", self.split, pass.join("+"));
        match self.batch {
            0 => at,
            batch => format!("{at} · batch {batch} of {}", self.batches),
        }
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

/// Which of an analysis' records to keep: every field given must match (the query of
/// `GET /v1/analyses/{id}`, the filter flags of `stepwise analysis show`). A query string
/// leaves out the fields not given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordFilter {
    /// cosine, l2_ratio, drop_accuracy, unroll_first_order, …
    #[param(value_type = Option<String>)]
    pub name: Option<MetricName>,
    /// train or test
    #[param(value_type = Option<String>)]
    pub split: Option<Split>,
    /// A block, s2.b1
    #[param(value_type = Option<String>)]
    pub block: Option<BlockId>,
    /// all, borderline, correct or misclassified
    #[param(value_type = Option<String>)]
    pub group: Option<Group>,
    /// An unrolling step size, as the analysis' alphas give it
    pub alpha: Option<f64>,
    /// A position along a path (0 = its start)
    pub step: Option<u32>,
    /// mean or median
    #[param(value_type = Option<String>)]
    pub stat: Option<Stat>,
}

impl RecordFilter {
    pub fn keeps(&self, r: &AnalysisRecord) -> bool {
        fn given<T: PartialEq>(wanted: Option<T>, has: Option<T>) -> bool {
            wanted.is_none() || wanted == has
        }
        given(self.name, Some(r.name))
            && given(self.split, Some(r.split))
            && given(self.block, r.block)
            && given(self.group, r.group)
            && given(self.alpha, r.alpha)
            && given(self.step, r.step)
            && given(self.stat, r.stat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_analysis_says_its_split_pass_and_batch() {
        let mut p = AnalysisProgress {
            split: Split::Test,
            pass: vec![AnalysisKind::Cosine, AnalysisKind::Drop],
            batch: 0,
            batches: 20,
        };
        assert_eq!(p.describe(), "test split · cosine+drop");
        p.batch = 3;
        assert_eq!(p.describe(), "test split · cosine+drop · batch 3 of 20");
    }

    #[test]
    fn settings_measure_alike_where_both_measure_what_they_define() {
        let all = AnalysisSpec::default();
        let short = AnalysisSpec {
            unroll_steps: 2,
            ..all.clone()
        };
        let cosine = AnalysisSpec {
            metrics: vec![AnalysisKind::Cosine],
            max_examples: 12,
            ..all.clone()
        };
        let skip = AnalysisSpec {
            gradient: GradientKind::Skip,
            ..cosine.clone()
        };
        let narrow = AnalysisSpec {
            window: 3,
            ..all.clone()
        };
        assert!(!all.measures_like(&short), "both unroll, for other steps");
        assert!(short.measures_like(&cosine) && cosine.measures_like(&short));
        assert!(!cosine.measures_like(&skip) && !all.measures_like(&skip));
        assert!(
            !all.measures_like(&narrow),
            "both follow borderline examples"
        );
        let without_borderline = AnalysisSpec {
            metrics: vec![AnalysisKind::Cosine, AnalysisKind::Unroll],
            ..narrow.clone()
        };
        assert!(all.measures_like(&without_borderline));
        let batch_statistics = AnalysisSpec {
            unroll_bn: UnrollBn::Batch,
            ..all.clone()
        };
        assert!(!all.measures_like(&batch_statistics), "both unroll");
        assert!(cosine.measures_like(&batch_statistics));
        // Batches of another size: other statistics on batch statistics only.
        let other_batches = |spec: &AnalysisSpec| AnalysisSpec {
            eval_batch: 50,
            ..spec.clone()
        };
        assert!(!batch_statistics.measures_like(&other_batches(&batch_statistics)));
        assert!(all.measures_like(&other_batches(&all)));
    }

    #[test]
    fn settings_are_written_as_their_changes_and_read_back() {
        assert_eq!(AnalysisSpec::default().changes_toml(), "");
        assert_eq!(
            AnalysisSpec::from_toml("").unwrap(),
            AnalysisSpec::default()
        );
        let changed = AnalysisSpec {
            max_examples: 64,
            splits: vec![Split::Test],
            gradient: GradientKind::Skip,
            alphas: vec![0.5],
            unroll_bn: UnrollBn::Batch,
            ..AnalysisSpec::default()
        };
        let text = changed.changes_toml();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert_eq!(
            changed.changes_inline(),
            "alphas = [0.5]; gradient = \"skip\"; max_examples = 64; splits = [\"test\"]; \
             unroll_bn = \"batch\""
        );
        assert_eq!(AnalysisSpec::default().changes_inline(), "");
        assert!(text.contains("unroll_bn = \"batch\""), "{text}");
        assert_eq!(AnalysisSpec::from_toml(&text).unwrap(), changed);
        let bad = AnalysisSpec::from_toml("max_examples = 0\nsplits = []").unwrap_err();
        let fields: Vec<&str> = bad.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["splits", "max_examples"]);
        let syntax = AnalysisSpec::from_toml("max_examples =").unwrap_err();
        assert_eq!(syntax.0[0].field, "");
        let within = syntax.within("analysis.spec.").to_string();
        assert!(
            within.starts_with("analysis.spec: line 1, column"),
            "{within}"
        );
    }

    #[test]
    fn a_filter_keeps_the_records_every_given_field_matches() {
        let cosine = AnalysisRecord::new(MetricName::Cosine, Split::Test, 1, -0.1, 10)
            .at_block(BlockId::new(2, 1), 7, BlockKind::Identity)
            .with_stat(Stat::Mean);
        let unrolled = AnalysisRecord::new(MetricName::UnrollFirstOrder, Split::Train, 1, 0.2, 3)
            .with_group(Group::Misclassified)
            .at_step(0.05, 4);
        let keeps = |filter: &RecordFilter| [filter.keeps(&cosine), filter.keeps(&unrolled)];
        assert_eq!(keeps(&RecordFilter::default()), [true, true]);
        let misclassified = RecordFilter {
            name: Some(MetricName::UnrollFirstOrder),
            group: Some(Group::Misclassified),
            alpha: Some(0.05),
            ..RecordFilter::default()
        };
        assert_eq!(keeps(&misclassified), [false, true]);
        let other_step = RecordFilter {
            step: Some(5),
            ..misclassified
        };
        assert_eq!(keeps(&other_step), [false, false]);
        let block = RecordFilter {
            block: Some(BlockId::new(2, 1)),
            split: Some(Split::Test),
            stat: Some(Stat::Mean),
            ..RecordFilter::default()
        };
        assert_eq!(keeps(&block), [true, false]);
    }

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
