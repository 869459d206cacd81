//! The paper's figures (2–8) and the Taylor check, built from runs' metric records. Runs with
//! the same label (architecture) are seeds of one configuration: their values are drawn as
//! mean ± standard deviation.

use crate::chart::{blue_to_red, palette, Figure, Panel, Point, Series};
use domain::unrolling::{unroll_means, unroll_shares};
use domain::{
    AnalysisRecord, AnalysisSpec, BlockKind, Group, MetricName, MetricRecord, SeedsAlpha, Split,
    Stat, UnrollBn,
};
use plotters::style::RGBColor;
use std::collections::BTreeMap;

/// One trained run: its label (runs sharing a label are seeds), the analysis of its final
/// checkpoint and its training metrics.
pub struct Run<'a> {
    pub label: &'a str,
    pub analysis: &'a [AnalysisRecord],
    pub training: &'a [MetricRecord],
    /// The unrolling step size selected by paper.md's rule, if unrolling was analysed.
    pub selected_alpha: Option<f64>,
    /// The statistics the unrolling's re-applied block normalised with.
    pub unroll_bn: UnrollBn,
    /// Records of [`OVER_TRAINING`] from one analysis per analysed epoch, all with the
    /// gradient of `analysis` (a `skip` cosine is another quantity), for the figure over
    /// training; empty, or of one epoch, where there is nothing to follow.
    pub history: &'a [AnalysisRecord],
}

/// What the figures take of one analysis: its records, the unrolling's selected step size and
/// the analysis' settings.
pub type Analysed<'a> = (&'a [AnalysisRecord], Option<f64>, &'a AnalysisSpec);

impl<'a> Run<'a> {
    /// A run with its training records, its figure-over-training `history` and the analysis
    /// drawn (none: its training alone).
    pub fn new(
        label: &'a str,
        training: &'a [MetricRecord],
        history: &'a [AnalysisRecord],
        analysis: Option<Analysed<'a>>,
    ) -> Self {
        let (records, selected_alpha, unroll_bn) = match analysis {
            Some((records, alpha, spec)) => (records, alpha, spec.unroll_bn),
            None => (&[][..], None, UnrollBn::default()),
        };
        Self {
            label,
            analysis: records,
            training,
            selected_alpha,
            unroll_bn,
            history,
        }
    }
}

/// The block metrics drawn over training, where a run was analysed at several epochs.
pub const OVER_TRAINING: [MetricName; 2] = [MetricName::Cosine, MetricName::L2Ratio];

/// Labels in order of first appearance, each with its runs.
fn by_label<'r, 'a>(runs: &'r [Run<'a>]) -> Vec<(&'a str, Vec<&'r Run<'a>>)> {
    let mut out: Vec<(&str, Vec<&Run>)> = vec![];
    for run in runs {
        match out.iter_mut().find(|(l, _)| *l == run.label) {
            Some((_, group)) => group.push(run),
            None => out.push((run.label, vec![run])),
        }
    }
    out
}

/// (x, value, of a projection block) as points, one per x in order with every seed's value
/// there, hollow where it is a projection block's.
fn points(values: impl IntoIterator<Item = (u32, f64, bool)>) -> Vec<Point> {
    let mut by_x: BTreeMap<u32, Point> = BTreeMap::new();
    for (x, value, projection) in values {
        let point = by_x.entry(x).or_insert_with(|| Point {
            x: f64::from(x),
            values: vec![],
            hollow: false,
        });
        point.values.push(value);
        point.hollow |= projection;
    }
    by_x.into_values().collect()
}

/// The analysis records of `seeds` matching `keep`.
fn matching<'r>(
    seeds: &'r [&Run],
    keep: impl Fn(&AnalysisRecord) -> bool + 'r,
) -> impl Iterator<Item = &'r AnalysisRecord> + 'r {
    seeds
        .iter()
        .flat_map(|run| run.analysis.iter())
        .filter(move |r| keep(r))
}

/// Values of analysis records matching `keep`, per block index.
fn per_block(seeds: &[&Run], keep: impl Fn(&AnalysisRecord) -> bool) -> Vec<Point> {
    points(matching(seeds, keep).filter_map(|r| {
        Some((
            r.block_index?,
            r.value,
            r.kind == Some(BlockKind::Projection),
        ))
    }))
}

/// Values of analysis records matching `keep`, per path step.
fn per_step(seeds: &[&Run], keep: impl Fn(&AnalysisRecord) -> bool) -> Vec<Point> {
    points(matching(seeds, keep).filter_map(|r| Some((r.step?, r.value, false))))
}

/// Values of training records matching `keep`, per epoch.
fn per_epoch(seeds: &[&Run], keep: impl Fn(&MetricRecord) -> bool) -> Vec<Point> {
    let values = seeds
        .iter()
        .flat_map(|run| run.training.iter().filter(|r| keep(r)))
        .map(|r| (r.epoch, r.value, false));
    points(values)
}

/// One curve per block of `blocks` (global index → id), coloured from blue (the first) to
/// red (the last). Up to six blocks each get a label; of more, the first, middle and last
/// do, and the colour tells the rest.
fn block_curves(blocks: &BTreeMap<u32, String>, points: impl Fn(u32) -> Vec<Point>) -> Vec<Series> {
    let last = blocks.len().saturating_sub(1).max(1) as f64;
    blocks
        .iter()
        .enumerate()
        .map(|(k, (&index, id))| {
            let labelled =
                blocks.len() <= 6 || k == 0 || k == blocks.len() - 1 || k == blocks.len() / 2;
            Series {
                label: if labelled { id.clone() } else { String::new() },
                color: blue_to_red(k as f64 / last),
                dashed: false,
                points: points(index),
            }
        })
        .collect()
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

fn group_name(group: Group) -> &'static str {
    match group {
        Group::All => "all",
        Group::Borderline => "borderline",
        Group::Correct => "already correct",
        Group::Misclassified => "misclassified",
    }
}

/// One colour per group, the same in every figure.
fn group_color(group: Group) -> RGBColor {
    palette(match group {
        Group::Borderline => 0,
        Group::Correct => 1,
        Group::All => 2,
        Group::Misclassified => 3,
    })
}

const PROJECTION_NOTE: &str = "hollow: projection blocks, against the shortcut P(h)";

/// A block-wise panel: one curve per label and split (test solid, train dashed).
fn blockwise(
    groups: &[(&str, Vec<&Run>)],
    name: MetricName,
    stat: Option<Stat>,
    splits: &[Split],
    panel: Panel,
) -> Option<Figure> {
    let mut series = vec![];
    for (i, (label, seeds)) in groups.iter().enumerate() {
        for &split in splits {
            let pts = per_block(seeds, |r| {
                r.name == name && r.split == split && r.stat == stat
            });
            if pts.is_empty() {
                continue;
            }
            series.push(Series {
                label: format!("{label} ({})", split_name(split)),
                color: palette(i),
                dashed: split == Split::Train,
                points: pts,
            });
        }
    }
    (!series.is_empty()).then(|| Figure {
        panels: vec![Panel { series, ..panel }],
    })
}

/// Every figure the records support, as (file stem, figure).
pub fn figures(runs: &[Run]) -> Vec<(String, Figure)> {
    let groups = by_label(runs);
    let both = [Split::Test, Split::Train];
    let mut out = vec![];
    let mut add = |name: String, figure: Option<Figure>| {
        if let Some(f) = figure {
            out.push((name, f));
        }
    };
    add("curves".into(), curves(&groups));
    add(
        "fig2_cosine".into(),
        blockwise(
            &groups,
            MetricName::Cosine,
            Some(Stat::Mean),
            &both,
            Panel {
                title: "Cosine loss per block (Fig. 2)".into(),
                x_label: "block".into(),
                y_label: "mean cos(F_i(h_i), ∂L/∂h_i)".into(),
                reference_y: Some(0.0),
                note: Some(PROJECTION_NOTE.into()),
                ..Panel::default()
            },
        ),
    );
    add(
        "fig3_l2_ratio".into(),
        blockwise(
            &groups,
            MetricName::L2Ratio,
            Some(Stat::Mean),
            &both,
            Panel {
                title: "Relative change per block (Fig. 3)".into(),
                x_label: "block".into(),
                y_label: "mean ‖F_i(h_i)‖ / ‖h_i‖".into(),
                note: Some(PROJECTION_NOTE.into()),
                ..Panel::default()
            },
        ),
    );
    add(
        "fig4_drop".into(),
        blockwise(
            &groups,
            MetricName::DropAccuracy,
            None,
            &[Split::Test],
            Panel {
                title: "Test accuracy with one block dropped (Fig. 4)".into(),
                x_label: "dropped block".into(),
                y_label: "test accuracy".into(),
                note: Some("hollow: projection blocks, shortcut kept".into()),
                ..Panel::default()
            },
        ),
    );
    for (label, seeds) in &groups {
        add(
            format!("fig5_intermediate_{label}"),
            intermediate(label, seeds),
        );
        add(format!("fig6_borderline_{label}"), borderline(label, seeds));
        add(format!("fig7_unrolling_{label}"), unrolling(label, seeds));
        add(
            format!("blocks_over_training_{label}"),
            over_training(label, seeds),
        );
    }
    add("fig8_sharing".into(), sharing(&groups));
    add("taylor".into(), taylor(&groups));
    out
}

/// Intermediate test accuracy of every last-stage block across epochs, blue → red by depth.
fn intermediate(label: &str, seeds: &[&Run]) -> Option<Figure> {
    let mut blocks: BTreeMap<u32, String> = BTreeMap::new();
    for run in seeds {
        for r in run.training {
            if r.name == MetricName::IntermediateAccuracy {
                if let (Some(i), Some(b)) = (r.block_index, &r.block) {
                    blocks.insert(i, b.to_string());
                }
            }
        }
    }
    if blocks.is_empty() {
        return None;
    }
    let series = block_curves(&blocks, |index| {
        per_epoch(seeds, |r| {
            r.name == MetricName::IntermediateAccuracy
                && r.split == Some(Split::Test)
                && r.block_index == Some(index)
        })
    });
    Some(Figure {
        panels: vec![Panel {
            title: format!("{label}: head on each last-stage block (Fig. 5)"),
            x_label: "epoch".into(),
            y_label: "test accuracy".into(),
            series,
            note: Some("blue: first block of the stage … red: last".into()),
            ..Panel::default()
        }],
    })
}

/// The mean cosine and ℓ2 ratio of every block (test split) at each analysed epoch, where
/// the runs were analysed at two epochs or more: how the blocks' refinement forms.
fn over_training(label: &str, seeds: &[&Run]) -> Option<Figure> {
    let test_means = |r: &&AnalysisRecord| r.split == Split::Test && r.stat == Some(Stat::Mean);
    let mut blocks: BTreeMap<u32, String> = BTreeMap::new();
    let mut epochs = std::collections::BTreeSet::new();
    for r in seeds.iter().flat_map(|run| run.history).filter(test_means) {
        if let (Some(i), Some(b)) = (r.block_index, &r.block) {
            blocks.insert(i, b.to_string());
            epochs.insert(r.epoch);
        }
    }
    if epochs.len() < 2 {
        return None;
    }
    let note = if epochs.contains(&0) {
        // Inference-mode BatchNorm with the initial running statistics normalises nothing.
        // Short enough to stay under its own panel.
        "0: initial weights, BN stats unset; blue: first block … red: last; hollow: projection"
    } else {
        "blue: first block … red: last; hollow: projection blocks"
    };
    let panel = |name: MetricName, title: &str, y_label: &str| {
        let series = block_curves(&blocks, |index| {
            let values = seeds
                .iter()
                .flat_map(|run| run.history)
                .filter(test_means)
                .filter(|r| r.name == name && r.block_index == Some(index))
                .map(|r| (r.epoch, r.value, r.kind == Some(BlockKind::Projection)));
            points(values)
        });
        Panel {
            title: format!("{label}: {title}"),
            x_label: "epoch".into(),
            y_label: y_label.into(),
            series,
            reference_y: (name == MetricName::Cosine).then_some(0.0),
            note: Some(note.into()),
            ..Panel::default()
        }
    };
    Some(Figure {
        panels: vec![
            panel(
                MetricName::Cosine,
                "cosine loss per block over training",
                "mean cos(F_i(h_i), ∂L/∂h_i), test",
            ),
            panel(
                MetricName::L2Ratio,
                "relative change per block over training",
                "mean ‖F_i(h_i)‖ / ‖h_i‖, test",
            ),
        ],
    })
}

/// Loss, accuracy and entropy along the last blocks for borderline / correct / all examples
/// and, ours, the misclassified ones (drawn where recorded: analyses made before the group
/// have none, so its absence is not noted).
fn borderline(label: &str, seeds: &[&Run]) -> Option<Figure> {
    let metrics = [
        (MetricName::BorderlineLoss, "loss"),
        (MetricName::BorderlineAccuracy, "accuracy"),
        (MetricName::BorderlineEntropy, "entropy"),
    ];
    let mut panels = vec![];
    for (name, what) in metrics {
        let mut series = vec![];
        // Groups no example fell in (the analysis notes them), said under the axis.
        let mut empty = vec![];
        for group in [
            Group::Borderline,
            Group::Correct,
            Group::Misclassified,
            Group::All,
        ] {
            let before = series.len();
            for split in [Split::Test, Split::Train] {
                let pts = per_step(seeds, |r| {
                    r.name == name && r.group == Some(group) && r.split == split
                });
                if pts.is_empty() {
                    continue;
                }
                series.push(Series {
                    label: format!("{} ({})", group_name(group), split_name(split)),
                    color: group_color(group),
                    dashed: split == Split::Train,
                    points: pts,
                });
            }
            if series.len() == before && group != Group::Misclassified {
                empty.push(group_name(group));
            }
        }
        if !series.is_empty() {
            panels.push(Panel {
                title: format!("{label}: {what} (Fig. 6)"),
                x_label: "position in the last blocks (0 = window input)".into(),
                y_label: what.into(),
                series,
                note: (!empty.is_empty()).then(|| format!("no {} examples", empty.join(", "))),
                ..Panel::default()
            });
        }
    }
    (!panels.is_empty()).then_some(Figure { panels })
}

/// Unrolling the last block: loss, borderline accuracy and cosine per step, per α.
fn unrolling(label: &str, seeds: &[&Run]) -> Option<Figure> {
    let mut alphas: Vec<f64> = matching(seeds, |r| r.name == MetricName::UnrollLoss)
        .filter_map(|r| r.alpha)
        .collect();
    if alphas.is_empty() {
        return None;
    }
    alphas.sort_by(|a, b| b.total_cmp(a));
    alphas.dedup();
    let selected = SeedsAlpha::of(seeds.iter().map(|r| (r.analysis, r.selected_alpha)));
    // Pooled seeds measured alike: the first one's statistics are all of theirs.
    let statistics = seeds[0]
        .unroll_bn
        .note()
        .map_or(String::new(), |n| format!("; {n}"));
    // Losses of diverging step sizes run off the top, above 5× the (train) loss before
    // unrolling.
    let start_loss = matching(seeds, |r| {
        r.name == MetricName::UnrollLoss
            && r.step == Some(0)
            && r.group == Some(Group::All)
            && r.split == Split::Train
    })
    .map(|r| r.value)
    .fold(f64::NEG_INFINITY, f64::max);
    let panel = |name: MetricName, group: Group, split: Split, title: &str, y: &str| {
        let series: Vec<Series> = alphas
            .iter()
            .enumerate()
            .map(|(i, &a)| Series {
                label: match selected {
                    Some(s) if s.alpha == a => s.describe(),
                    _ => format!("α = {a}"),
                },
                color: palette(i),
                dashed: false,
                points: per_step(seeds, |r| {
                    r.name == name
                        && r.alpha == Some(a)
                        && r.group == Some(group)
                        && r.split == split
                }),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        Panel {
            title: format!("{label}: {title} (Fig. 7{statistics})"),
            x_label: "unrolling step k".into(),
            y_label: y.into(),
            reference_y: (name == MetricName::UnrollCosine).then_some(0.0),
            y_max: (name == MetricName::UnrollLoss && start_loss.is_finite())
                .then_some(5.0 * start_loss),
            // A group no example fell in before unrolling (the analysis notes it).
            note: (series.is_empty() && group != Group::All)
                .then(|| format!("no {} examples", group_name(group))),
            series,
        }
    };
    let mut panels = vec![
        panel(
            MetricName::UnrollLoss,
            Group::All,
            Split::Train,
            "train loss",
            "loss",
        ),
        panel(
            MetricName::UnrollAccuracy,
            Group::Borderline,
            Split::Test,
            "borderline test accuracy",
            "accuracy",
        ),
        panel(
            MetricName::UnrollCosine,
            Group::All,
            Split::Test,
            "cosine",
            "mean cosine",
        ),
    ];
    if let Some(s) = selected {
        panels.extend(loss_steps(label, seeds, s.alpha, &statistics));
        panels.extend(first_order_shares(label, seeds, s.alpha, &statistics));
    }
    Some(Figure { panels })
}

/// Ours, beside Fig. 7: at step size `alpha`, the mean train loss's change over each step
/// against its first-order prediction α·⟨F(h), ∇ℓ(h)⟩ — where they part, the step is too
/// long for the first order; where the prediction rises while the mean cosine is negative,
/// examples with large gradients point uphill. None without first-order records (analyses
/// made before they were recorded).
fn loss_steps(label: &str, seeds: &[&Run], alpha: f64, statistics: &str) -> Option<Panel> {
    let predicted = per_step(seeds, |r| {
        r.name == MetricName::UnrollFirstOrder
            && r.alpha == Some(alpha)
            && r.group == Some(Group::All)
            && r.split == Split::Train
    });
    if predicted.is_empty() {
        return None;
    }
    // Each seed's change from step k to k + 1, at k (its losses are recorded from step 0 to
    // the last finite one).
    let mut actual = vec![];
    for run in seeds {
        let losses = unroll_means(
            run.analysis,
            MetricName::UnrollLoss,
            Group::All,
            Split::Train,
            alpha,
        );
        actual.extend(
            (0..)
                .zip(losses.windows(2))
                .map(|(k, pair)| (k, pair[1] - pair[0], false)),
        );
    }
    let series = [
        ("actual", false, points(actual)),
        ("first-order α⟨F(h), ∇ℓ(h)⟩", true, predicted),
    ];
    Some(Panel {
        title: format!("{label}: train-loss change per step at α = {alpha} (ours{statistics})"),
        x_label: "unrolling step k".into(),
        y_label: "mean ℓ(k + 1) − ℓ(k)".into(),
        reference_y: Some(0.0),
        series: series
            .into_iter()
            .enumerate()
            .map(|(i, (what, dashed, points))| Series {
                label: what.into(),
                color: palette(i),
                dashed,
                points,
            })
            .collect(),
        ..Panel::default()
    })
}

/// Ours, beside Fig. 7: who carries the first-order change of the train loss at step size
/// `alpha` — per step, the share of misclassified, borderline and already-correct examples
/// (grouped before unrolling) in the mean over all of them, which they add up to. None
/// without per-group first-order records (analyses made before they were recorded).
fn first_order_shares(label: &str, seeds: &[&Run], alpha: f64, statistics: &str) -> Option<Panel> {
    let mut by_group: BTreeMap<Group, Vec<(u32, f64, bool)>> = BTreeMap::new();
    for run in seeds {
        let shares = unroll_shares(
            run.analysis,
            MetricName::UnrollFirstOrder,
            Split::Train,
            alpha,
        );
        for (group, per_step) in shares {
            let values = by_group.entry(group).or_default();
            values.extend(
                per_step
                    .into_iter()
                    .map(|(step, share)| (step, share, false)),
            );
        }
    }
    if by_group.is_empty() {
        return None;
    }
    Some(Panel {
        title: format!(
            "{label}: first-order change per step by group at α = {alpha} (ours{statistics})"
        ),
        x_label: "unrolling step k".into(),
        y_label: "share of mean α⟨F(h), ∇ℓ(h)⟩".into(),
        reference_y: Some(0.0),
        series: by_group
            .into_iter()
            .map(|(group, values)| Series {
                label: format!("{} (train)", group_name(group)),
                color: group_color(group),
                dashed: false,
                points: points(values),
            })
            .collect(),
        ..Panel::default()
    })
}

/// Loss and accuracy per epoch, one curve per label and split (test solid, train dashed).
fn curves(groups: &[(&str, Vec<&Run>)]) -> Option<Figure> {
    let panel = |name: MetricName, title: &str, y_label: &str| {
        let mut series = vec![];
        for (i, (label, seeds)) in groups.iter().enumerate() {
            for split in [Split::Test, Split::Train] {
                let pts = per_epoch(seeds, |r| {
                    r.name == name && r.split == Some(split) && r.block.is_none()
                });
                if !pts.is_empty() {
                    series.push(Series {
                        label: format!("{label} ({})", split_name(split)),
                        color: palette(i),
                        dashed: split == Split::Train,
                        points: pts,
                    });
                }
            }
        }
        (!series.is_empty()).then(|| Panel {
            title: title.into(),
            x_label: "epoch".into(),
            y_label: y_label.into(),
            series,
            ..Panel::default()
        })
    };
    let panels: Vec<Panel> = [
        panel(MetricName::Loss, "Loss per epoch", "cross-entropy"),
        panel(MetricName::Accuracy, "Accuracy per epoch", "accuracy"),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!panels.is_empty()).then_some(Figure { panels })
}

/// Activation norms of freshly initialised models per block, and the gradient-norm ratio
/// across training (Fig. 8).
fn sharing(groups: &[(&str, Vec<&Run>)]) -> Option<Figure> {
    let mut norms = vec![];
    let mut ratios = vec![];
    for (i, (label, seeds)) in groups.iter().enumerate() {
        let mut pts = per_block(seeds, |r| {
            r.name == MetricName::ActivationNorm
                && r.stat == Some(Stat::Mean)
                && r.split == Split::Test
        });
        for p in &mut pts {
            p.values.iter_mut().for_each(|v| *v = v.log10());
        }
        if !pts.is_empty() {
            norms.push(Series {
                label: label.to_string(),
                color: palette(i),
                dashed: false,
                points: pts,
            });
        }
        let pts = per_epoch(seeds, |r| {
            r.name == MetricName::GradNormRatio && r.split == Some(Split::Test)
        });
        if !pts.is_empty() {
            ratios.push(Series {
                label: label.to_string(),
                color: palette(i),
                dashed: false,
                points: pts,
            });
        }
    }
    let mut panels = vec![];
    if !norms.is_empty() {
        panels.push(Panel {
            title: "Activation norms at initialisation (Fig. 8)".into(),
            x_label: "block".into(),
            y_label: "log10 mean ‖h_i‖".into(),
            series: norms,
            ..Panel::default()
        });
    }
    if !ratios.is_empty() {
        panels.push(Panel {
            title: "Gradient-norm ratio during training (Fig. 8)".into(),
            x_label: "epoch".into(),
            y_label: "‖∂L/∂h_1‖ / ‖∂L/∂h_last stage‖".into(),
            series: ratios,
            ..Panel::default()
        });
    }
    (!panels.is_empty()).then_some(Figure { panels })
}

/// Our Taylor check: actual change of the head's loss across each last-stage block against
/// its first-order prediction.
fn taylor(groups: &[(&str, Vec<&Run>)]) -> Option<Figure> {
    let mut series = vec![];
    for (i, (label, seeds)) in groups.iter().enumerate() {
        for (name, what, dashed) in [
            (MetricName::TaylorActual, "actual", false),
            (MetricName::TaylorPredicted, "first-order", true),
        ] {
            let pts = per_block(seeds, |r| {
                r.name == name && r.stat == Some(Stat::Mean) && r.split == Split::Test
            });
            if !pts.is_empty() {
                series.push(Series {
                    label: format!("{label} {what}"),
                    color: palette(i),
                    dashed,
                    points: pts,
                });
            }
        }
    }
    (!series.is_empty()).then(|| Figure {
        panels: vec![Panel {
            title: "Taylor check: change of the head's loss per block".into(),
            x_label: "block (last stage)".into(),
            y_label: "mean ℓ(h_{i+1}) − ℓ(h_i)".into(),
            reference_y: Some(0.0),
            series,
            ..Panel::default()
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::BlockId;

    /// Fig. 5's labels of a last stage of `blocks` blocks (intermediate accuracy at 2 epochs).
    fn intermediate_labels(blocks: u32) -> Vec<String> {
        let training: Vec<MetricRecord> = (0..blocks)
            .flat_map(|b| {
                (1..=2).map(move |epoch| {
                    MetricRecord::new(
                        MetricName::IntermediateAccuracy,
                        Some(Split::Test),
                        epoch,
                        0.5,
                    )
                    .at_block(BlockId::new(2, b), 10 + b)
                })
            })
            .collect();
        let run = Run {
            label: "r",
            analysis: &[],
            training: &training,
            selected_alpha: None,
            unroll_bn: UnrollBn::Running,
            history: &[],
        };
        let figure = intermediate("r", &[&run]).expect("a figure");
        figure.panels[0]
            .series
            .iter()
            .map(|s| s.label.clone())
            .collect()
    }

    /// The notes under each panel of `figure`.
    fn notes(figure: &Figure) -> Vec<Option<&str>> {
        figure.panels.iter().map(|p| p.note.as_deref()).collect()
    }

    #[test]
    fn figs_6_and_7_say_when_no_example_is_borderline() {
        // Everything at steps 0-2 on both splits, but only the all and correct groups.
        let mut analysis = vec![];
        for split in [Split::Train, Split::Test] {
            for group in [Group::All, Group::Correct] {
                for step in 0..3 {
                    for name in [
                        MetricName::BorderlineLoss,
                        MetricName::BorderlineAccuracy,
                        MetricName::BorderlineEntropy,
                    ] {
                        let mut r = AnalysisRecord::new(name, split, 6, 0.5, 10).with_group(group);
                        r.step = Some(step);
                        analysis.push(r);
                    }
                    for name in [
                        MetricName::UnrollLoss,
                        MetricName::UnrollAccuracy,
                        MetricName::UnrollCosine,
                    ] {
                        analysis.push(
                            AnalysisRecord::new(name, split, 6, 0.5, 10)
                                .with_group(group)
                                .at_step(0.1, step),
                        );
                    }
                }
            }
        }
        let run = Run {
            label: "r",
            analysis: &analysis,
            training: &[],
            selected_alpha: Some(0.1),
            unroll_bn: UnrollBn::Running,
            history: &[],
        };
        let fig6 = borderline("r", &[&run]).expect("Fig. 6");
        assert_eq!(notes(&fig6), [Some("no borderline examples"); 3]);
        // The misclassified group (ours) is drawn where recorded, and its absence (analyses
        // made before it) is not noted.
        let mut with_misclassified = analysis.clone();
        for step in 0..3 {
            let mut r = AnalysisRecord::new(MetricName::BorderlineLoss, Split::Test, 6, 2.0, 3)
                .with_group(Group::Misclassified);
            r.step = Some(step);
            with_misclassified.push(r);
        }
        let run_misclassified = Run {
            analysis: &with_misclassified,
            ..Run::new("r", &[], &[], None)
        };
        let loss = &borderline("r", &[&run_misclassified]).unwrap().panels[0];
        let labels: Vec<&str> = loss.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "already correct (test)",
                "already correct (train)",
                "misclassified (test)",
                "all (test)",
                "all (train)"
            ]
        );
        assert_eq!(loss.note.as_deref(), Some("no borderline examples"));
        let fig7 = unrolling("r", &[&run]).expect("Fig. 7");
        assert_eq!(notes(&fig7), [None, Some("no borderline examples"), None]);
        assert!(fig7.panels[1].series.is_empty());
        assert_eq!(fig7.panels[2].title, "r: cosine (Fig. 7)");
        let batch = Run {
            unroll_bn: UnrollBn::Batch,
            ..run
        };
        let fig7 = unrolling("r", &[&batch]).expect("Fig. 7");
        assert_eq!(
            fig7.panels[2].title,
            "r: cosine (Fig. 7; the block on batch statistics)"
        );
    }

    #[test]
    fn fig_7_sets_each_steps_train_loss_change_beside_its_first_order_prediction() {
        // Two seeds at α = 0.1 (selected) and α = 1: seed s's train loss at step k is
        // 1 + s + k²/10, its first-order prediction at k is s - 0.1 (steps 0 and 1 of 2), of
        // which its 2 misclassified examples (of 10) carry the share 0.1 + s/2 and its 8
        // correct ones s/2 − 0.2.
        let seed = |s: f64| {
            let mut records = vec![];
            for alpha in [0.1, 1.0] {
                for step in 0..3u32 {
                    let train = |name, value| {
                        AnalysisRecord::new(name, Split::Train, 6, value, 10)
                            .with_group(Group::All)
                            .at_step(alpha, step)
                    };
                    let k = f64::from(step);
                    records.push(train(MetricName::UnrollLoss, 1.0 + s + k * k / 10.0));
                    if step < 2 {
                        records.push(train(MetricName::UnrollFirstOrder, s - 0.1));
                        for (group, n, value) in [
                            (Group::Misclassified, 2, (0.1 + s / 2.0) * 10.0 / 2.0),
                            (Group::Correct, 8, (s / 2.0 - 0.2) * 10.0 / 8.0),
                        ] {
                            let r = AnalysisRecord::new(
                                MetricName::UnrollFirstOrder,
                                Split::Train,
                                6,
                                value,
                                n,
                            );
                            records.push(r.with_group(group).at_step(alpha, step));
                        }
                    }
                }
            }
            records
        };
        let (first, second) = (seed(0.0), seed(1.0));
        let run = |analysis| Run {
            label: "r",
            analysis,
            training: &[],
            selected_alpha: Some(0.1),
            unroll_bn: UnrollBn::Running,
            history: &[],
        };
        let (a, b) = (run(&first), run(&second));
        let fig7 = unrolling("r", &[&a, &b]).expect("Fig. 7");
        let panel = &fig7.panels[3];
        assert_eq!(
            panel.title,
            "r: train-loss change per step at α = 0.1 (ours)"
        );
        let values = |panel: &Panel, i: usize| -> Vec<(f64, Vec<f64>)> {
            let points = &panel.series[i].points;
            points.iter().map(|p| (p.x, p.values.clone())).collect()
        };
        let close = |got: Vec<(f64, Vec<f64>)>, want: [(f64, [f64; 2]); 2]| {
            assert_eq!(got.len(), 2, "{got:?}");
            for ((x, v), (wx, wv)) in got.iter().zip(want) {
                assert_eq!(*x, wx);
                assert!(
                    v.iter().zip(wv).all(|(a, b)| (a - b).abs() < 1e-12),
                    "{got:?}"
                );
            }
        };
        // Actual: (k + 1)²/10 − k²/10 per seed.
        close(values(panel, 0), [(0.0, [0.1, 0.1]), (1.0, [0.3, 0.3])]);
        close(values(panel, 1), [(0.0, [-0.1, 0.9]), (1.0, [-0.1, 0.9])]);
        assert!(panel.series[1].dashed && !panel.series[0].dashed);
        // The fifth: each group's share of the first order, per seed.
        let panel = &fig7.panels[4];
        assert_eq!(
            panel.title,
            "r: first-order change per step by group at α = 0.1 (ours)"
        );
        let labels: Vec<&str> = panel.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["already correct (train)", "misclassified (train)"]);
        close(values(panel, 0), [(0.0, [-0.2, 0.3]), (1.0, [-0.2, 0.3])]);
        close(values(panel, 1), [(0.0, [0.1, 0.6]), (1.0, [0.1, 0.6])]);
        // Without group records, the fourth panel; without first-order records (older
        // analyses), the three panels of the paper only.
        let without = |keep: fn(&AnalysisRecord) -> bool| -> Vec<AnalysisRecord> {
            first.iter().filter(|r| keep(r)).cloned().collect()
        };
        let all_examples = without(|r| r.group == Some(Group::All));
        assert_eq!(
            unrolling("r", &[&run(&all_examples)]).unwrap().panels.len(),
            4
        );
        let losses = without(|r| r.name != MetricName::UnrollFirstOrder);
        assert_eq!(unrolling("r", &[&run(&losses)]).unwrap().panels.len(), 3);
    }

    #[test]
    fn blocks_are_followed_over_training_where_two_epochs_or_more_were_analysed() {
        // Three blocks (the last a projection block) analysed at epochs 2, 4 and 6 (cosine
        // and ℓ2 ratio, mean and median, both splits); the cosine of block b at epoch e is
        // -(b + 1) * e / 100.
        let mut history = vec![];
        for epoch in [2, 4, 6] {
            for b in 0..3u32 {
                for split in [Split::Train, Split::Test] {
                    for stat in [Stat::Mean, Stat::Median] {
                        let id = BlockId::new(0, b);
                        let cosine = -f64::from((b + 1) * epoch) / 100.0;
                        for (name, value) in
                            [(MetricName::Cosine, cosine), (MetricName::L2Ratio, 0.5)]
                        {
                            let kind = if b == 2 {
                                BlockKind::Projection
                            } else {
                                BlockKind::Identity
                            };
                            let r = AnalysisRecord::new(name, split, epoch, value, 10)
                                .at_block(id, b, kind)
                                .with_stat(stat);
                            history.push(r);
                        }
                    }
                }
            }
        }
        let run = |history| Run {
            label: "r",
            analysis: &[],
            training: &[],
            selected_alpha: None,
            unroll_bn: UnrollBn::Running,
            history,
        };
        let all = run(&history);
        let figure = over_training("r", &[&all]).expect("a figure");
        let cosine = &figure.panels[0];
        assert_eq!(cosine.reference_y, Some(0.0));
        let labels: Vec<&str> = cosine.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["s0.b0", "s0.b1", "s0.b2"]);
        // The test split's means only, one point per epoch.
        let last = &cosine.series[2].points;
        let drawn: Vec<(f64, Vec<f64>)> = last.iter().map(|p| (p.x, p.values.clone())).collect();
        assert_eq!(
            drawn,
            [(2.0, vec![-0.06]), (4.0, vec![-0.12]), (6.0, vec![-0.18])]
        );
        assert_eq!(figure.panels[1].series[0].points[0].values, [0.5]);
        // Block 2 is a projection block: hollow markers, as in Fig. 2.
        assert!(last.iter().all(|p| p.hollow));
        assert!(cosine.series[0].points.iter().all(|p| !p.hollow));
        // One analysed epoch has nothing to follow.
        let first_epoch: Vec<AnalysisRecord> =
            history.iter().filter(|r| r.epoch == 2).cloned().collect();
        assert!(over_training("r", &[&run(&first_epoch)]).is_none());
        // Where the initial weights were analysed, the panels say what epoch 0 is.
        assert!(!cosine.note.as_ref().unwrap().contains("initial weights"));
        let mut from_initial = first_epoch.clone();
        from_initial.extend(first_epoch.iter().map(|r| AnalysisRecord {
            epoch: 0,
            ..r.clone()
        }));
        let initial = over_training("r", &[&run(&from_initial)]).expect("a figure");
        let note = initial.panels[0].note.as_ref().unwrap();
        assert!(note.starts_with("0: initial weights"), "{note}");
        let names: Vec<String> = figures(&[all]).into_iter().map(|(n, _)| n).collect();
        assert!(
            names.contains(&"blocks_over_training_r".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn fig5_labels_every_block_of_a_short_stage_and_three_of_a_long_one() {
        assert_eq!(intermediate_labels(4), ["s2.b0", "s2.b1", "s2.b2", "s2.b3"]);
        let long = intermediate_labels(9);
        let labelled: Vec<&str> = long
            .iter()
            .map(String::as_str)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(labelled, ["s2.b0", "s2.b4", "s2.b8"]);
    }
}
