//! The Taylor check (ours): for each last-stage block the head can follow, the actual change
//! of the head's loss ℓ(h) = CE(head(h), y) across the block against its first-order
//! prediction ⟨F_i(h_i), ∇ℓ(h_i)⟩, per example.

use crate::blocks::head_loss_and_gradient;
use crate::stats::{dots, head_stats, pearson, Series};
use crate::{Ctx, Result};
use domain::MetricName as M;
use resnet::{BnMode, ProbeOptions};

pub(crate) fn taylor(ctx: &mut Ctx) -> Result<()> {
    let blocks = ctx.head_compatible();
    if blocks.is_empty() {
        ctx.notes
            .push("taylor: no block of the last stage takes the head's input shape".into());
        return Ok(());
    }
    // Per block k: the loss before it (series k), the logits after it (n + k) and the
    // prediction (2n + k), read back at once.
    let n = blocks.len();
    let mut kept = Series::new(3 * n);
    for batch in &ctx.batches {
        let (x, y) = ctx.to_device(batch)?;
        let probed = ctx.model.forward_probed(&x, &ProbeOptions::eval())?;
        for (k, &i) in blocks.iter().enumerate() {
            let f = probed.residuals[i].as_ref().expect("no block is skipped");
            let (loss, grad) = head_loss_and_gradient(ctx.model, &probed.inputs[i], &y)?;
            kept.push(k, loss);
            let after = ctx.model.head().forward(&probed.outputs[i], BnMode::Eval)?;
            kept.push(n + k, after);
            kept.push(2 * n + k, dots(f, &grad)?);
        }
    }
    let (labels, classes) = (ctx.labels(), ctx.model.layout().classes as usize);
    let mut before = kept.read()?;
    let predicted = before.split_off(2 * n);
    let after = before.split_off(n);
    let actual: Vec<Vec<f64>> = before
        .iter()
        .zip(after)
        .map(|(before, after)| {
            let after = head_stats(&after, classes, &labels).loss;
            after.iter().zip(before).map(|(a, b)| a - b).collect()
        })
        .collect();
    for (k, &i) in blocks.iter().enumerate() {
        ctx.summarise(M::TaylorActual, i, &actual[k]);
        ctx.summarise(M::TaylorPredicted, i, &predicted[k]);
        let pairs: Vec<(f64, f64)> = actual[k]
            .iter()
            .zip(&predicted[k])
            .filter(|(a, p)| a.is_finite() && p.is_finite())
            .map(|(a, p)| (*a, *p))
            .collect();
        let agree = pairs
            .iter()
            .filter(|(a, p)| a.signum() == p.signum())
            .count();
        if !pairs.is_empty() {
            let share = agree as f64 / pairs.len() as f64;
            let r = ctx.at_block(ctx.record(M::TaylorSignAgreement, share, pairs.len()), i);
            ctx.records.push(r);
        }
        let correlation = pearson(&actual[k], &predicted[k]);
        if correlation.is_finite() {
            let r = ctx.at_block(
                ctx.record(M::TaylorCorrelation, correlation, pairs.len()),
                i,
            );
            ctx.records.push(r);
        }
    }
    Ok(())
}
