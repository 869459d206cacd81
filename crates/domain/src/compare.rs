//! Every block's metrics of several configurations side by side — the numbers behind the
//! block-wise figures: per configuration (runs sharing a label are its seeds), metric,
//! split and block, the mean over seeds of each run's per-example mean, with the sample
//! standard deviation; and which seeds' analyses are pooled at all ([`pool_seeds`]).

use crate::stats::mean_std;
use crate::{AnalysisRecord, AnalysisSpec, BlockId, BlockKind, Group, MetricName, Split, Stat};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One block's value of one metric and split in one configuration, over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlockSummary {
    /// The configuration, as its figures label it.
    pub configuration: String,
    /// The checkpoint epoch its seeds were analysed at: the latest of any of them
    /// ([`pool_seeds`]).
    pub epoch: u32,
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

/// What decides whether two seeds' analyses may be averaged: the checkpoint epoch they are
/// of and the settings that define the quantities measured
/// ([`AnalysisSpec::measures_like`]).
#[derive(Clone, Copy, Debug)]
pub struct Analysed<'a> {
    pub epoch: u32,
    pub spec: &'a AnalysisSpec,
}

/// Why a seed's analysis is left out of its configuration's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetAside {
    /// Analysed at `epoch`, before the configuration's latest analysed epoch `latest`, as
    /// most seeds there were: a seed still training is left out until it catches up.
    Behind { epoch: u32, latest: u32 },
    /// Analysed with settings that measure something else (say the `skip` gradient) than
    /// most seeds at the configuration's latest analysed epoch.
    OtherSettings,
}

impl SetAside {
    /// Whether the seed's analyses over training (of its latest analysis' gradient) may
    /// still be drawn with its configuration's: they measure the same where it is only
    /// behind.
    pub fn keeps_history(self) -> bool {
        matches!(self, Self::Behind { .. })
    }

    /// Leaves a seed's results out, as the API and the CLI hold them: its latest analysis
    /// dropped and this reason recorded, and its analyses over training dropped too unless
    /// [`Self::keeps_history`].
    pub fn apply<A>(
        self,
        analysis: &mut Option<A>,
        history: &mut Vec<AnalysisRecord>,
        left_out: &mut Option<SetAside>,
    ) {
        (*analysis, *left_out) = (None, Some(self));
        if !self.keeps_history() {
            history.clear();
        }
    }
}

/// Which of several runs' analyses to pool, given each run's configuration label and its
/// analysis (None: not analysed): per configuration those of its latest analysed epoch,
/// measured as most of them there were (ties: as the first listed). Seeds are so compared
/// at one point of training and on one definition of every metric.
fn pooled(runs: &[(&str, Option<Analysed>)]) -> Vec<Result<(), SetAside>> {
    runs.iter()
        .map(|&(label, analysed)| {
            let Some(analysed) = analysed else {
                return Ok(());
            };
            let seeds: Vec<Analysed> = runs
                .iter()
                .filter(|(l, _)| *l == label)
                .filter_map(|(_, a)| *a)
                .collect();
            let latest = seeds
                .iter()
                .map(|s| s.epoch)
                .max()
                .unwrap_or(analysed.epoch);
            let at_latest: Vec<&AnalysisSpec> = seeds
                .iter()
                .filter(|s| s.epoch == latest)
                .map(|s| s.spec)
                .collect();
            let alike =
                |spec: &AnalysisSpec| at_latest.iter().filter(|s| s.measures_like(spec)).count();
            let most = at_latest
                .iter()
                .enumerate()
                .max_by_key(|&(at, spec)| (alike(spec), std::cmp::Reverse(at)))
                .map(|(_, spec)| *spec);
            if most.is_some_and(|most| !analysed.spec.measures_like(most)) {
                return Err(SetAside::OtherSettings);
            }
            if analysed.epoch < latest {
                return Err(SetAside::Behind {
                    epoch: analysed.epoch,
                    latest,
                });
            }
            Ok(())
        })
        .collect()
}

impl std::fmt::Display for SetAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Behind { epoch, latest } => write!(
                f,
                "analysed only up to epoch {epoch}, behind another seed's epoch {latest}"
            ),
            Self::OtherSettings => f.write_str(
                "analysed with other settings (gradient, window, margin or unrolling) than \
                 most seeds at the latest analysed epoch",
            ),
        }
    }
}

/// Sets aside the analyses of `runs` that are not pooled — per configuration only those of
/// its latest analysed epoch, measured alike, are (`pooled`) — for the figures, claims and
/// block summaries drawn from them: `of` gives a run's configuration label and analysis,
/// `set_aside` drops its analysis, told why (its training metrics still count).
pub fn pool_seeds<T>(
    runs: &mut [T],
    of: fn(&T) -> (&str, Option<Analysed<'_>>),
    set_aside: fn(&mut T, SetAside),
) {
    let pooled = pooled(&runs.iter().map(of).collect::<Vec<_>>());
    for (run, pooled) in runs.iter_mut().zip(pooled) {
        if let Err(reason) = pooled {
            set_aside(run, reason);
        }
    }
}

/// The block summaries of runs, each given as its configuration's label and one analysis:
/// its epoch and settings, and its records; pooled as [`pool_seeds`] does. Configurations
/// in order of first appearance, then by metric, split (test first) and block index.
pub fn block_summaries<'a>(
    runs: impl IntoIterator<Item = (&'a str, Analysed<'a>, &'a [AnalysisRecord])>,
) -> Vec<BlockSummary> {
    let mut runs: Vec<(&str, Analysed, &[AnalysisRecord])> = runs.into_iter().collect();
    pool_seeds(
        &mut runs,
        |&(label, analysed, _)| (label, Some(analysed)),
        |r, _| r.2 = &[],
    );
    // (metric, test before train, block index) → the block and each seed's value
    type Blocks =
        BTreeMap<(MetricName, std::cmp::Reverse<Split>, u32), (BlockId, BlockKind, Vec<f64>)>;
    let mut configurations: Vec<(&str, u32, Blocks)> = vec![];
    for (label, analysed, records) in runs.into_iter().filter(|r| !r.2.is_empty()) {
        let at = match configurations.iter().position(|(l, _, _)| *l == label) {
            Some(at) => at,
            None => {
                configurations.push((label, analysed.epoch, BTreeMap::new()));
                configurations.len() - 1
            }
        };
        for r in records.iter().filter(|r| r.is_block_mean()) {
            let (Some(block), Some(index)) = (r.block, r.block_index) else {
                continue;
            };
            let entry = configurations[at]
                .2
                .entry((r.name, std::cmp::Reverse(r.split), index))
                .or_insert((block, r.kind.unwrap_or(BlockKind::Identity), vec![]));
            entry.2.push(r.value);
        }
    }
    configurations
        .into_iter()
        .flat_map(|(label, epoch, blocks)| {
            blocks.into_iter().map(
                move |((name, std::cmp::Reverse(split), block_index), (block, kind, values))| {
                    let (mean, sd) = mean_std(&values);
                    BlockSummary {
                        configuration: label.to_string(),
                        epoch,
                        name,
                        split,
                        block,
                        block_index,
                        kind,
                        runs: values.len() as u32,
                        mean,
                        sd,
                    }
                },
            )
        })
        .collect()
}

/// One metric's block summaries laid out as a table: a column per configuration, a row per
/// block — as the dashboard and `stepwise experiment show --blocks` show them.
pub struct MetricTable<'a> {
    pub name: MetricName,
    pub split: Split,
    pub columns: Vec<Column<'a>>,
    /// By block id.
    pub rows: Vec<MetricRow<'a>>,
}

/// A configuration's column of a [`MetricTable`].
pub struct Column<'a> {
    pub configuration: &'a str,
    /// The epoch its seeds were analysed at.
    pub epoch: u32,
    /// The most seeds behind one of its values.
    pub seeds: u32,
}

impl Column<'_> {
    /// `resnet-20 (2 seeds, epoch 6)`, or `resnet-20 (epoch 6)` for one seed.
    pub fn title(&self) -> String {
        match self.seeds {
            1 => format!("{} (epoch {})", self.configuration, self.epoch),
            n => format!("{} ({n} seeds, epoch {})", self.configuration, self.epoch),
        }
    }
}

/// A block's row of a [`MetricTable`]: a value per column, where that configuration has it.
pub struct MetricRow<'a> {
    pub block: BlockId,
    /// Whether a configuration's block of this id is a projection block.
    pub projection: bool,
    pub cells: Vec<Option<&'a BlockSummary>>,
}

/// The summaries as one table per metric (in [`MetricName`] order), each on the test split
/// where the metric has one, else on the train split.
pub fn metric_tables(summaries: &[BlockSummary]) -> Vec<MetricTable<'_>> {
    let mut metrics: Vec<MetricName> = summaries.iter().map(|s| s.name).collect();
    metrics.sort();
    metrics.dedup();
    metrics
        .into_iter()
        .map(|name| {
            let of_metric = summaries.iter().filter(|s| s.name == name);
            let split = if of_metric.clone().any(|s| s.split == Split::Test) {
                Split::Test
            } else {
                Split::Train
            };
            let chosen: Vec<&BlockSummary> = of_metric.filter(|s| s.split == split).collect();
            let mut columns: Vec<Column> = vec![];
            for s in &chosen {
                match columns
                    .iter_mut()
                    .find(|c| c.configuration == s.configuration)
                {
                    Some(column) => column.seeds = column.seeds.max(s.runs),
                    None => columns.push(Column {
                        configuration: &s.configuration,
                        epoch: s.epoch,
                        seeds: s.runs,
                    }),
                }
            }
            let mut rows: BTreeMap<BlockId, MetricRow> = BTreeMap::new();
            for s in chosen {
                let row = rows.entry(s.block).or_insert_with(|| MetricRow {
                    block: s.block,
                    projection: false,
                    cells: vec![None; columns.len()],
                });
                row.projection |= s.kind == BlockKind::Projection;
                let at = columns
                    .iter()
                    .position(|c| c.configuration == s.configuration)
                    .expect("every configuration has a column");
                row.cells[at] = Some(s);
            }
            MetricTable {
                name,
                split,
                columns,
                rows: rows.into_values().collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GradientKind;

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
        // A third seed still training, analysed at an earlier epoch: not pooled.
        let behind = [at(MetricName::Cosine, Split::Test, 0, 5.0)];
        let spec = AnalysisSpec::default();
        let at = |epoch| Analysed { epoch, spec: &spec };
        let rows = block_summaries([
            ("b", at(6), &seed0[..]),
            ("a", at(6), &other[..]),
            ("b", at(4), &behind[..]),
            ("b", at(6), &seed1[..]),
            ("c", at(6), &[][..]),
        ]);
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
        assert!(rows.iter().all(|r| r.epoch == 6));
        assert!((rows[0].mean + 0.2).abs() < 1e-12);
        assert!((rows[0].sd - 0.02f64.sqrt()).abs() < 1e-12);
        assert_eq!(rows[1].kind, BlockKind::Projection);
        assert!((rows[1].mean - 0.1).abs() < 1e-12);
        assert_eq!((rows[2].mean, rows[2].sd), (-0.3, 0.0));
        let json = serde_json::to_value(&rows[3]).unwrap();
        assert!(json["mean"].is_null(), "{json}");
        assert_eq!(json["block"], "s0.b0");
    }

    #[test]
    fn seeds_are_pooled_at_their_configuration_s_latest_epoch_measured_alike() {
        let full = AnalysisSpec::default();
        let skip = AnalysisSpec {
            gradient: GradientKind::Skip,
            ..full.clone()
        };
        // Fewer examples, another subset: the same quantities, less precisely.
        let fewer = AnalysisSpec {
            max_examples: 10,
            seed: 3,
            ..full.clone()
        };
        let at = |epoch, spec| Some(Analysed { epoch, spec });
        let mut runs = [
            ("a", at(4, &full), None),
            ("a", at(6, &skip), None),
            ("b", at(2, &skip), None),
            ("a", None, None),
            ("a", at(6, &full), None),
            ("a", at(6, &fewer), None),
            // One seed each way: the first listed decides.
            ("c", at(1, &skip), None),
            ("c", at(1, &full), None),
            // Behind, and measured otherwise: the settings say more.
            ("a", at(5, &skip), None),
        ];
        pool_seeds(
            &mut runs,
            |&(l, a, _)| (l, a),
            |r, reason| (r.0, r.2) = ("set aside", Some(reason)),
        );
        let pooled: Vec<(&str, Option<SetAside>)> = runs.iter().map(|r| (r.0, r.2)).collect();
        let behind = SetAside::Behind {
            epoch: 4,
            latest: 6,
        };
        let other = SetAside::OtherSettings;
        assert_eq!(
            pooled,
            [
                ("set aside", Some(behind)),
                ("set aside", Some(other)),
                ("b", None),
                ("a", None),
                ("a", None),
                ("a", None),
                ("c", None),
                ("set aside", Some(other)),
                ("set aside", Some(other)),
            ]
        );
        assert!(behind.keeps_history() && !other.keeps_history());
        for (why, history_left) in [(behind, 1), (other, 0)] {
            let (mut analysis, mut left_out) = (Some(()), None);
            let mut history = vec![self::at(MetricName::Cosine, Split::Test, 0, -0.1)];
            why.apply(&mut analysis, &mut history, &mut left_out);
            assert_eq!((analysis, left_out), (None, Some(why)));
            assert_eq!(history.len(), history_left, "{why:?}");
        }
        assert_eq!(
            behind.to_string(),
            "analysed only up to epoch 4, behind another seed's epoch 6"
        );
    }

    #[test]
    fn tables_have_a_column_per_configuration_and_a_row_per_block() {
        let summary = |configuration: &str, split, index: u32, runs| BlockSummary {
            configuration: configuration.into(),
            epoch: 6,
            name: MetricName::Cosine,
            split,
            block: BlockId::new(index, 0),
            block_index: index,
            kind: if index == 1 {
                BlockKind::Projection
            } else {
                BlockKind::Identity
            },
            runs,
            mean: -0.1,
            sd: 0.0,
        };
        let summaries = [
            summary("a", Split::Test, 1, 2),
            summary("a", Split::Test, 0, 3),
            summary("a", Split::Train, 2, 3),
            summary("b", Split::Test, 0, 1),
        ];
        let tables = metric_tables(&summaries);
        assert_eq!(tables.len(), 1);
        let t = &tables[0];
        assert_eq!((t.name, t.split), (MetricName::Cosine, Split::Test));
        let titles: Vec<String> = t.columns.iter().map(Column::title).collect();
        assert_eq!(titles, ["a (3 seeds, epoch 6)", "b (epoch 6)"]);
        let rows: Vec<(String, bool, Vec<bool>)> = t
            .rows
            .iter()
            .map(|r| {
                let present = r.cells.iter().map(Option::is_some).collect();
                (r.block.to_string(), r.projection, present)
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("s0.b0".to_string(), false, vec![true, true]),
                ("s1.b0".to_string(), true, vec![true, false]),
            ]
        );
    }
}
