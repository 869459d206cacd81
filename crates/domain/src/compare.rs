//! Every block's metrics of several configurations side by side — the numbers behind the
//! block-wise figures: per configuration (runs sharing a label are its seeds), metric,
//! split and block, the mean over seeds of each run's per-example mean, with the sample
//! standard deviation.

use crate::stats::mean_std;
use crate::{AnalysisRecord, BlockId, BlockKind, Group, MetricName, Split, Stat};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One block's value of one metric and split in one configuration, over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlockSummary {
    /// The configuration, as its figures label it.
    pub configuration: String,
    /// `cosine`, `l2_ratio`, `drop_accuracy`, … (as in analysis records).
    #[schema(value_type = String)]
    pub name: MetricName,
    #[schema(value_type = String)]
    pub split: Split,
    /// `s{S}.b{B}`.
    #[schema(value_type = String)]
    pub block: BlockId,
    pub block_index: u32,
    /// `identity` or `projection` (measured against the shortcut output P(h)).
    #[schema(value_type = String)]
    pub kind: BlockKind,
    /// Seeds (runs) behind the values.
    pub runs: u32,
    /// Mean over the seeds; `null` where not finite.
    #[serde(with = "crate::metric::number_or_null")]
    pub mean: f64,
    /// Sample standard deviation over the seeds (0 for one); `null` where not finite.
    #[serde(with = "crate::metric::number_or_null")]
    pub sd: f64,
}

impl AnalysisRecord {
    /// Whether this is one block's value over all its examples: a mean (the cosine's median
    /// aside), of no group but all examples, not a position along a path (unrolling, the
    /// borderline window).
    pub fn is_block_mean(&self) -> bool {
        self.block.is_some()
            && self.block_index.is_some()
            && self.step.is_none()
            && self.alpha.is_none()
            && self.group.is_none_or(|g| g == Group::All)
            && self.stat.is_none_or(|s| s == Stat::Mean)
    }
}

/// The block summaries of runs, each given as its configuration's label and its analysis
/// records: configurations in order of first appearance, then by metric, split (test
/// first) and block index.
pub fn block_summaries<'a>(
    runs: impl IntoIterator<Item = (&'a str, &'a [AnalysisRecord])>,
) -> Vec<BlockSummary> {
    // (metric, test before train, block index) → the block and each seed's value
    type Blocks =
        BTreeMap<(MetricName, std::cmp::Reverse<Split>, u32), (BlockId, BlockKind, Vec<f64>)>;
    let mut configurations: Vec<(&str, Blocks)> = vec![];
    for (label, records) in runs {
        let at = match configurations.iter().position(|(l, _)| *l == label) {
            Some(at) => at,
            None => {
                configurations.push((label, BTreeMap::new()));
                configurations.len() - 1
            }
        };
        for r in records.iter().filter(|r| r.is_block_mean()) {
            let (Some(block), Some(index)) = (r.block, r.block_index) else {
                continue;
            };
            let entry = configurations[at]
                .1
                .entry((r.name, std::cmp::Reverse(r.split), index))
                .or_insert((block, r.kind.unwrap_or(BlockKind::Identity), vec![]));
            entry.2.push(r.value);
        }
    }
    configurations
        .into_iter()
        .flat_map(|(label, blocks)| {
            blocks
                .into_iter()
                .map(move |((name, split, block_index), (block, kind, values))| {
                    let std::cmp::Reverse(split) = split;
                    let (mean, sd) = mean_std(&values);
                    BlockSummary {
                        configuration: label.to_string(),
                        name,
                        split,
                        block,
                        block_index,
                        kind,
                        runs: values.len() as u32,
                        mean,
                        sd,
                    }
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(name: MetricName, split: Split, index: u32, value: f64) -> AnalysisRecord {
        let kind = if index == 1 {
            BlockKind::Projection
        } else {
            BlockKind::Identity
        };
        AnalysisRecord::new(name, split, 6, value, 100).at_block(
            BlockId::new(index, 0),
            index,
            kind,
        )
    }

    #[test]
    fn seeds_of_a_configuration_are_averaged_block_by_block() {
        let mut seed0 = vec![
            at(MetricName::Cosine, Split::Test, 0, -0.1),
            at(MetricName::Cosine, Split::Test, 1, 0.2),
            at(MetricName::Cosine, Split::Train, 0, -0.3),
        ];
        // Neither a median, nor a group's value, nor an unrolling step is a block's mean.
        let mut median = at(MetricName::Cosine, Split::Test, 0, 9.0);
        median.stat = Some(Stat::Median);
        let mut borderline = at(MetricName::Cosine, Split::Test, 0, 9.0);
        borderline.group = Some(Group::Borderline);
        let mut step = at(MetricName::Cosine, Split::Test, 0, 9.0);
        step.step = Some(3);
        let mut mean = at(MetricName::Cosine, Split::Test, 1, 0.0);
        mean.stat = Some(Stat::Mean);
        seed0.extend([
            median,
            borderline,
            step,
            AnalysisRecord::new(MetricName::Loss, Split::Test, 6, 9.0, 1),
        ]);
        let seed1 = [at(MetricName::Cosine, Split::Test, 0, -0.3), mean];
        let other = [at(MetricName::L2Ratio, Split::Test, 0, f64::NAN)];
        let rows = block_summaries([("b", &seed0[..]), ("a", &other[..]), ("b", &seed1[..])]);
        let brief: Vec<(&str, &str, &str, String, u32)> = rows
            .iter()
            .map(|r| {
                (
                    r.configuration.as_str(),
                    r.name.as_str(),
                    r.split.as_str(),
                    r.block.to_string(),
                    r.runs,
                )
            })
            .collect();
        assert_eq!(
            brief,
            [
                ("b", "cosine", "test", "s0.b0".into(), 2),
                ("b", "cosine", "test", "s1.b0".into(), 2),
                ("b", "cosine", "train", "s0.b0".into(), 1),
                ("a", "l2_ratio", "test", "s0.b0".into(), 1),
            ]
        );
        assert!((rows[0].mean + 0.2).abs() < 1e-12);
        assert!((rows[0].sd - 0.02f64.sqrt()).abs() < 1e-12);
        assert_eq!(rows[1].kind, BlockKind::Projection);
        assert!((rows[1].mean - 0.1).abs() < 1e-12);
        assert_eq!((rows[2].mean, rows[2].sd), (-0.3, 0.0));
        let json = serde_json::to_value(&rows[3]).unwrap();
        assert!(json["mean"].is_null(), "{json}");
        assert_eq!(json["block"], "s0.b0");
    }
}
