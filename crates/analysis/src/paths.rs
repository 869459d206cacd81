//! The head along a path of hidden states: through the last blocks (borderline examples)
//! and through repeated applications of the last block (unrolling). Examples are grouped
//! once, by the head's margin at the path's start.

use crate::blocks::head_gradients;
use crate::stats::{cosines, dots, head_stats, host, mean_median, norms, ratios, HeadStats};
use crate::{is_projection, Ctx, Result};
use domain::{BlockId, Group, MetricName as M, UnrollBn};
use resnet::{BnMode, ProbeOptions};
use std::collections::BTreeMap;

/// Which groups an example with head margin `m` at the path's start belongs to: all, and
/// the one of borderline, correct and misclassified its margin names (none if it is not
/// finite).
fn groups_of(m: f64, threshold: f64) -> impl Iterator<Item = Group> {
    let own = if m.abs() < threshold {
        Some(Group::Borderline)
    } else if m >= threshold {
        Some(Group::Correct)
    } else if m <= -threshold {
        Some(Group::Misclassified)
    } else {
        None
    };
    std::iter::once(Group::All).chain(own)
}

/// Loss, accuracy and entropy sums per (position, group).
#[derive(Default)]
struct GroupSums(BTreeMap<(u32, Group), [f64; 4]>);

impl GroupSums {
    fn add(&mut self, position: u32, stats: &HeadStats, margins: &[f64], threshold: f64) {
        for (k, &m) in margins.iter().enumerate() {
            for g in groups_of(m, threshold) {
                let s = self.0.entry((position, g)).or_default();
                s[0] += stats.loss[k];
                s[1] += stats.correct[k];
                s[2] += stats.entropy[k];
                s[3] += 1.0;
            }
        }
    }

    /// The groups no example fell in at the path's start: they have no records.
    fn empty_groups(&self) -> impl Iterator<Item = Group> + '_ {
        [Group::Borderline, Group::Correct, Group::Misclassified]
            .into_iter()
            .filter(|&g| !self.0.contains_key(&(0, g)))
    }

    /// (position, group, mean loss, mean accuracy, mean entropy, n).
    fn means(&self) -> impl Iterator<Item = (u32, Group, [f64; 3], usize)> + '_ {
        self.0
            .iter()
            .map(|(&(p, g), s)| (p, g, [s[0] / s[3], s[1] / s[3], s[2] / s[3]], s[3] as usize))
    }
}

/// Per-example values of one series by (step, group), the groups fixed at the path's start.
#[derive(Clone, Default)]
struct GroupValues(BTreeMap<(u32, Group), Vec<f64>>);

impl GroupValues {
    fn extend(&mut self, step: u32, values: Vec<f64>, margins: &[f64], threshold: f64) {
        for (v, &m) in values.into_iter().zip(margins) {
            for g in groups_of(m, threshold) {
                self.0.entry((step, g)).or_default().push(v);
            }
        }
    }
}

/// Says which of `sums`' groups are empty on this split, so that a figure without them is
/// explained (a briefly trained head is often confidently right or wrong on every example).
fn note_empty_groups(ctx: &mut Ctx, path: &str, start: &str, sums: &GroupSums) {
    let margin = ctx.spec.margin;
    for group in sums.empty_groups() {
        let which = match group {
            Group::Borderline => format!("borderline (|margin| < {margin})"),
            Group::Misclassified => format!("misclassified (margin ≤ −{margin})"),
            _ => format!("already correct (margin ≥ {margin})"),
        };
        ctx.notes.push(format!(
            "{path}: no {} example is {which} {start}, so that group has no records",
            ctx.split.as_str()
        ));
    }
}

/// Blocks of the borderline window: the last `window` blocks the head can follow.
fn window(ctx: &Ctx) -> Vec<usize> {
    let candidates = ctx.head_compatible();
    let take = (ctx.spec.window as usize).min(candidates.len());
    candidates[candidates.len() - take..].to_vec()
}

/// Loss, accuracy and entropy of the head at the window's input (position 0) and after
/// each window block (position s), for all, borderline, already-correct and misclassified
/// examples (grouped by the margin at position 0). Returns the window.
pub(crate) fn borderline(ctx: &mut Ctx) -> Result<Vec<BlockId>> {
    let blocks = window(ctx);
    if blocks.is_empty() {
        ctx.notes
            .push("borderline: no block of the last stage takes the head's input shape".into());
        return Ok(vec![]);
    }
    let mut sums = GroupSums::default();
    for batch in &ctx.batches {
        let (x, _) = ctx.to_device(batch)?;
        let probed = ctx.model.forward_probed(&x, &ProbeOptions::eval())?;
        let mut path = vec![&probed.inputs[blocks[0]]];
        path.extend(blocks.iter().map(|&i| &probed.outputs[i]));
        let mut margins = vec![];
        for (position, h) in path.into_iter().enumerate() {
            let logits = ctx.model.head().forward(h, BnMode::Eval)?;
            let stats = head_stats(&logits, batch.1)?;
            if position == 0 {
                margins = stats.margin.clone();
            }
            sums.add(position as u32, &stats, &margins, ctx.spec.margin);
        }
    }
    note_empty_groups(ctx, "borderline", "at the window's input", &sums);
    for (position, group, [loss, acc, entropy], n) in sums.means() {
        for (name, v) in [
            (M::BorderlineLoss, loss),
            (M::BorderlineAccuracy, acc),
            (M::BorderlineEntropy, entropy),
        ] {
            let mut r = ctx.record(name, v, n).with_group(group);
            r.step = Some(position);
            if position > 0 {
                r = ctx.at_block(r, blocks[position as usize - 1]);
            }
            ctx.records.push(r);
        }
    }
    Ok(blocks.iter().map(|&i| ctx.blocks[i].id).collect())
}

/// Per α: the mean loss after the last step, and whether every hidden state stayed finite.
pub(crate) type FinalLosses = Vec<(f64, f64, bool)>;

/// Applies the last block again `unroll_steps` times, h ← h + α·F(h), for every α; per
/// step and group (by the margin before unrolling) the head's loss, accuracy and entropy,
/// the cosine between F(h) and the gradient of the head's loss at h, ‖F(h)‖/‖h‖, and (for
/// the steps taken) α·⟨F(h), ∇ℓ(h)⟩, the first-order change of each example's loss.
/// The block's BatchNorm takes the statistics `unroll_bn` names (each batch's, or the
/// running ones); the head's stays in inference mode, which keeps examples independent for
/// the per-example gradients. An α whose hidden states stop being finite is recorded up to
/// the last finite step.
pub(crate) fn unroll(ctx: &mut Ctx) -> Result<Option<FinalLosses>> {
    let last = ctx.blocks.len() - 1;
    if is_projection(&ctx.blocks[last]) {
        ctx.notes.push(format!(
            "unroll: the last block {} is a projection block and cannot be re-applied",
            ctx.blocks[last].id
        ));
        return Ok(None);
    }
    let block = ctx.model.block(last).expect("the layout's block");
    let bn = match ctx.spec.unroll_bn {
        UnrollBn::Running => BnMode::Eval,
        UnrollBn::Batch => BnMode::BatchStats,
    };
    let steps = ctx.spec.unroll_steps;
    let alphas = ctx.spec.alphas.clone();
    let mut sums: Vec<GroupSums> = alphas.iter().map(|_| GroupSums::default()).collect();
    let mut cos = vec![GroupValues::default(); alphas.len()];
    let mut l2 = vec![GroupValues::default(); alphas.len()];
    let mut first_order = vec![GroupValues::default(); alphas.len()];
    let threshold = ctx.spec.margin;
    let mut finite = vec![true; alphas.len()];
    for batch in &ctx.batches {
        let (x, y) = ctx.to_device(batch)?;
        let start = ctx.model.infer_tapped(&x, &[last])?.1.remove(0);
        let margins = head_stats(&ctx.model.head().forward(&start, BnMode::Eval)?, batch.1)?.margin;
        for (a, &alpha) in alphas.iter().enumerate() {
            let mut h = start.clone();
            for step in 0..=steps {
                if !host(&norms(&h)?)?.iter().all(|v| v.is_finite()) {
                    finite[a] = false;
                    break;
                }
                let head = head_gradients(ctx.model, &h, &y)?;
                let stats = head_stats(&head.logits, batch.1)?;
                sums[a].add(step, &stats, &margins, threshold);
                let f = block.residual(&h, bn)?.detach();
                let cosines = host(&cosines(&f, &head.direction)?)?;
                cos[a].extend(step, cosines, &margins, threshold);
                let l2_ratios = host(&ratios(&norms(&f)?, &norms(&h)?)?)?;
                l2[a].extend(step, l2_ratios, &margins, threshold);
                if step < steps {
                    let predicted = host(&(dots(&f, &head.loss_gradient)? * alpha)?)?;
                    first_order[a].extend(step, predicted, &margins, threshold);
                    h = (h + (f * alpha)?)?.detach();
                }
            }
        }
    }
    // The groups are fixed before unrolling, the same for every α.
    if let Some(first) = sums.first() {
        note_empty_groups(ctx, "unroll", "before unrolling", first);
    }
    let mut finals = vec![];
    for (a, &alpha) in alphas.iter().enumerate() {
        let mut final_loss = f64::NAN;
        for (step, group, [loss, acc, entropy], n) in sums[a].means() {
            for (name, v) in [
                (M::UnrollLoss, loss),
                (M::UnrollAccuracy, acc),
                (M::UnrollEntropy, entropy),
            ] {
                ctx.records.push(
                    ctx.record(name, v, n)
                        .with_group(group)
                        .at_step(alpha, step),
                );
            }
            if group == Group::All && step == steps {
                final_loss = loss;
            }
        }
        for (name, series) in [
            (M::UnrollCosine, &cos[a]),
            (M::UnrollL2Ratio, &l2[a]),
            (M::UnrollFirstOrder, &first_order[a]),
        ] {
            for (&(step, group), values) in &series.0 {
                if let Some((mean, _, n)) = mean_median(values) {
                    let r = ctx
                        .record(name, mean, n)
                        .with_group(group)
                        .at_step(alpha, step);
                    ctx.records.push(r.with_stat(domain::Stat::Mean));
                }
            }
        }
        if !finite[a] {
            ctx.notes.push(format!(
                "unroll: with α = {alpha} the hidden state stopped being finite"
            ));
        }
        finals.push((alpha, final_loss, finite[a] && final_loss.is_finite()));
    }
    Ok(Some(finals))
}

/// The α with the lowest final train loss among those that stayed finite.
pub(crate) fn select_alpha(finals: &FinalLosses) -> Option<f64> {
    finals
        .iter()
        .filter(|(_, _, finite)| *finite)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(alpha, _, _)| *alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_margin() {
        let g = |m| groups_of(m, 0.1).collect::<Vec<_>>();
        assert_eq!(g(0.05), [Group::All, Group::Borderline]);
        assert_eq!(g(-0.05), [Group::All, Group::Borderline]);
        assert_eq!(g(0.1), [Group::All, Group::Correct]);
        assert_eq!(g(-0.1), [Group::All, Group::Misclassified]);
        assert_eq!(g(-0.5), [Group::All, Group::Misclassified]);
        assert_eq!(g(f64::NAN), [Group::All]);
    }

    #[test]
    fn selection_skips_exploding_step_sizes() {
        let finals = vec![(1.0, 0.01, false), (0.5, 0.3, true), (0.1, 0.2, true)];
        assert_eq!(select_alpha(&finals), Some(0.1));
        assert_eq!(select_alpha(&vec![(1.0, 0.1, false)]), None);
    }
}
