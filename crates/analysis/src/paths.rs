//! The head along a path of hidden states: through the last blocks (borderline examples)
//! and through repeated applications of the last block (unrolling). Examples are grouped
//! once, by the head's margin at the path's start.

use crate::blocks::head_gradients;
use crate::stats::{dots, head_stats, host, mean_median, norms, ratios, HeadStats, Series};
use crate::{is_projection, Ctx, Result};
use candle_core::Tensor;
use domain::{BlockId, Group, MetricName as M, UnrollBn};
use resnet::{Block, BnMode, ProbeOptions, ResNet};
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
    fn extend(&mut self, step: u32, values: &[f64], margins: &[f64], threshold: f64) {
        for (&v, &m) in values.iter().zip(margins) {
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
    // The head's logits at each position, of every batch, read back at once.
    let mut logits = Series::new(blocks.len() + 1);
    for batch in &ctx.batches {
        let (x, _) = ctx.to_device(batch)?;
        let probed = ctx.model.forward_probed(&x, &ProbeOptions::eval())?;
        let mut path = vec![&probed.inputs[blocks[0]]];
        path.extend(blocks.iter().map(|&i| &probed.outputs[i]));
        for (position, h) in path.into_iter().enumerate() {
            logits.push(position, ctx.model.head().forward(h, BnMode::Eval)?);
        }
    }
    let (labels, classes) = (ctx.labels(), ctx.model.layout().classes as usize);
    let stats: Vec<HeadStats> = logits
        .read()?
        .iter()
        .map(|values| head_stats(values, classes, &labels))
        .collect();
    let mut sums = GroupSums::default();
    for (position, at) in stats.iter().enumerate() {
        sums.add(position as u32, at, &stats[0].margin, ctx.spec.margin);
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
    let classes = ctx.model.layout().classes as usize;
    let mut finite = vec![true; alphas.len()];
    for batch in &ctx.batches {
        let (x, y) = ctx.to_device(batch)?;
        let start = ctx.model.infer_tapped(&x, &[last])?.1.remove(0);
        let paths = alphas
            .iter()
            .map(|&alpha| Unrolled::compute(ctx.model, block, bn, &start, &y, alpha, steps))
            .collect::<Result<Vec<_>>>()?;
        // The head at the start, which every α's path begins with.
        let margins = head_stats(&paths[0].logits[0], classes, batch.1).margin;
        for (a, path) in paths.iter().enumerate() {
            let kept = path.finite_states();
            finite[a] &= kept > steps as usize;
            for k in 0..kept {
                let step = k as u32;
                let stats = head_stats(&path.logits[k], classes, batch.1);
                sums[a].add(step, &stats, &margins, threshold);
                cos[a].extend(step, &path.cosines[k], &margins, threshold);
                l2[a].extend(step, &path.ratios[k], &margins, threshold);
                if let Some(change) = path.first_order.get(k) {
                    first_order[a].extend(step, change, &margins, threshold);
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

/// Steps between the unrolling's checks that its hidden state is still finite.
const FINITE_CHECK_EVERY: u32 = 5;

/// One α's unrolling of one batch, h_{k+1} = h_k + α·F(h_k) for k < steps, computed on the
/// device and read back at once: on a GPU every read waits for the work before it, and the
/// unrolling has five series per step. Each field holds its values per state (per example
/// within), up to a few states past the first that overflowed (whose values are not
/// finite: the reader stops there).
struct Unrolled {
    /// The head's logits, (N, C) row by row.
    logits: Vec<Vec<f64>>,
    /// ‖h‖.
    norms: Vec<Vec<f64>>,
    /// cos(F(h), ∇ℓ(h)).
    cosines: Vec<Vec<f64>>,
    /// ‖F(h)‖/‖h‖.
    ratios: Vec<Vec<f64>>,
    /// α·⟨F(h), ∇ℓ(h)⟩, the first-order change of the loss over the step from h: one state
    /// fewer.
    first_order: Vec<Vec<f64>>,
}

impl Unrolled {
    fn compute(
        model: &ResNet,
        block: &Block,
        bn: BnMode,
        start: &Tensor,
        labels: &Tensor,
        alpha: f64,
        steps: u32,
    ) -> Result<Self> {
        let mut series = Series::new(5);
        let mut h = start.clone();
        for step in 0..=steps {
            let h_norms = norms(&h)?;
            // Past an overflow every step is wasted work, but each read waits for the device:
            // whether h is still finite is read only every few steps.
            if step % FINITE_CHECK_EVERY == 0
                && step > 0
                && !host(&h_norms)?.iter().all(|v| v.is_finite())
            {
                break;
            }
            let head = head_gradients(model, &h, labels)?;
            series.push(0, head.logits);
            let f = block.residual(&h, bn)?.detach();
            let (along, f_norms) = (dots(&f, &head.direction)?, norms(&f)?);
            series.push(1, h_norms.clone());
            series.push(2, ratios(&along, &(&f_norms * norms(&head.direction)?)?)?);
            series.push(3, ratios(&f_norms, &h_norms)?);
            if step < steps {
                series.push(4, ((along * head.gradient_norm)? * alpha)?);
                h = (h + (f * alpha)?)?.detach();
            }
        }
        let n = start.dim(0)?;
        let classes = model.layout().classes as usize;
        let per_state = |values: Vec<f64>, size: usize| -> Vec<Vec<f64>> {
            values.chunks(size).map(<[f64]>::to_vec).collect()
        };
        let [logits, norms, cosines, ratios, first_order]: [Vec<f64>; 5] =
            series.read()?.try_into().expect("five series");
        Ok(Self {
            logits: per_state(logits, n * classes),
            norms: per_state(norms, n),
            cosines: per_state(cosines, n),
            ratios: per_state(ratios, n),
            first_order: per_state(first_order, n),
        })
    }

    /// How many states, from the start, have finite norms: those the unrolling records.
    fn finite_states(&self) -> usize {
        self.norms
            .iter()
            .take_while(|norms| norms.iter().all(|v| v.is_finite()))
            .count()
    }
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
