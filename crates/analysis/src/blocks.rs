//! Metrics with one value per block: cosine and ℓ2 ratio, block dropping, intermediate
//! accuracy, and the sharing diagnostics.

use crate::stats::{cosines, norms, ratios, Series};
use crate::{is_projection, Ctx, Error, Result};
use candle_core::{DType, Tensor, Var, D};
use cifar::rng::{rng, Stream};
use domain::{AnalysisKind, GradientKind, MetricName as M, RunSpec};
use resnet::eval::{evaluate, grad_norm_ratio, EvalSums};
use resnet::loss::cross_entropy_per_example;
use resnet::{BnMode, ProbeOptions, Probed, ResNet};

/// The loss whose gradients the cosines take: Σ_n ⟨z_n, u_n⟩ (z the logits) with u_n the unit
/// vector along ∂CE_n/∂z_n, held constant, so that its gradient at the logits is u. BatchNorm
/// in inference mode keeps examples independent, so example n's gradient anywhere is its own
/// cross-entropy's gradient scaled by 1/‖∂CE_n/∂z_n‖, which a cosine does not see.
/// Unscaled, a confidently classified example's gradient (~1e-25 at the logits) has squares
/// below f32's range, and through a softmax it is zero once the other classes' probabilities
/// underflow (a logit gap beyond ~104 in f32, ~745 in f64, as unrolled states reach).
fn direction_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (u, _) = logit_gradient(logits, labels)?;
    Ok((logits * u)?.sum_all()?)
}

/// ∂CE_n/∂z_n per example as its unit vector, (N, C) in the logits' dtype, exact at any logit
/// gap, and its norm, (N,) in f64. ∂CE/∂z = p − e_y has the label's entry −Σ_{c≠y} p_c, so
/// every entry is a multiple of the other classes' probabilities, p_c = exp(z_c − m)·
/// exp(m − lse) with m = max_{c≠y} z_c and lse = log Σ_c exp(z_c): the unit vector from the
/// first factors (in f64; the largest is 1, and nothing underflows to a zero vector where the
/// probabilities themselves would), the norm with the second (0 beyond a logit gap of ~745,
/// where f64 underflows). Only non-finite logits give a non-finite direction.
fn logit_gradient(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let z = logits.detach().to_dtype(DType::F64)?;
    let classes = Tensor::arange(0u32, z.dim(1)? as u32, z.device())?;
    let at_label = classes.broadcast_eq(&labels.unsqueeze(1)?)?;
    let excluded = Tensor::full(f64::NEG_INFINITY, z.shape(), z.device())?;
    let others = at_label.where_cond(&excluded, &z)?;
    let m = others.max_keepdim(D::Minus1)?;
    let scaled = others.broadcast_sub(&m)?.exp()?;
    let label_entry = scaled.sum_keepdim(D::Minus1)?.neg()?;
    let g = at_label.where_cond(&label_entry.broadcast_as(z.shape())?, &scaled)?;
    let norm = g.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    let top = z.max_keepdim(D::Minus1)?;
    let lse = (z
        .broadcast_sub(&top)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + top)?;
    let gradient_norm = ((m - lse)?.exp()? * &norm)?.squeeze(1)?;
    let unit = g.broadcast_div(&norm)?.to_dtype(logits.dtype())?;
    Ok((unit, gradient_norm))
}

/// The gradient of `loss` at `at` (zeros when `loss` does not depend on it).
fn gradient_at(loss: &Tensor, at: &Var) -> Result<Tensor> {
    match loss.backward()?.get(at.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => Ok(at.as_tensor().zeros_like()?),
    }
}

/// The gradient at b of the network with block `index` removed, b being what then leaves
/// the block (h_i, or P(h_i) for a projection block), of [`direction_loss`].
fn skip_gradient(model: &ResNet, index: usize, base: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let z = Var::from_tensor(base)?;
    let logits = model.forward_after(index, z.as_tensor(), BnMode::Eval)?;
    gradient_at(&direction_loss(&logits, labels)?, &z)
}

/// cos(F_i(h_i), ∂L/∂h_i) and ‖F_i(h_i)‖/‖h_i‖ per example and block. A projection block
/// is measured against its shortcut output P(h_i) and the gradient there. With `drops`, each
/// batch's probed forward also serves block dropping, which then needs no forward of its own.
pub(crate) fn cosine_and_l2(ctx: &mut Ctx, mut drops: Option<&mut Drops>) -> Result<()> {
    let want_cosine = ctx.spec.wants(AnalysisKind::Cosine);
    let want_l2 = ctx.spec.wants(AnalysisKind::L2);
    let full = want_cosine && ctx.spec.gradient == GradientKind::Full;
    let n = ctx.blocks.len();
    let (mut cos, mut l2) = (Series::new(n), Series::new(n));
    let options = if full {
        ProbeOptions::eval().with_gradients()
    } else {
        ProbeOptions::eval()
    };
    for batch in &ctx.batches {
        let (x, y) = ctx.to_device(batch)?;
        let probed = ctx.model.forward_probed(&x, &options)?;
        if let Some(drops) = drops.as_deref_mut() {
            drops.add(ctx.model, &probed, &y)?;
        }
        let grads = if full {
            let g = probed.backward(&direction_loss(&probed.logits, &y)?)?;
            Some((probed.input_gradients(&g)?, probed.output_gradient(&g)?))
        } else {
            None
        };
        for (i, info) in ctx.blocks.iter().enumerate() {
            let f = probed.residuals[i]
                .as_ref()
                .expect("no block is skipped")
                .detach();
            let h = probed.inputs[i].detach();
            let block = ctx.model.block(i).expect("the layout's block");
            let base = if is_projection(info) {
                block.shortcut(&h)?.detach()
            } else {
                h
            };
            if want_l2 {
                l2.push(i, ratios(&norms(&f)?, &norms(&base)?)?);
            }
            if !want_cosine {
                continue;
            }
            let g = match (&grads, is_projection(info)) {
                (Some((inputs, _)), false) => inputs[i].clone(),
                // The gradient at a projection block's output, which is also the gradient
                // at its shortcut output: the next block's input, or the head's.
                (Some((inputs, output)), true) => match ctx.blocks.get(i + 1) {
                    Some(next) if next.in_shape == info.out_shape => inputs[i + 1].clone(),
                    Some(_) => {
                        return Err(Error::Unsupported(format!(
                            "cosine: pooling after projection block {}",
                            info.id
                        )))
                    }
                    None => output.clone(),
                },
                (None, _) => skip_gradient(ctx.model, i, &base, &y)?,
            };
            cos.push(i, cosines(&f, &g)?);
        }
    }
    let (cos, l2) = (cos.read()?, l2.read()?);
    for i in 0..n {
        ctx.summarise(M::Cosine, i, &cos[i]);
        ctx.summarise(M::L2Ratio, i, &l2[i]);
    }
    Ok(())
}

/// Block dropping: accuracy and loss with each block's residual branch skipped in turn (a
/// projection block keeps its shortcut), nothing retrained; and the intact network's.
pub(crate) struct Drops {
    intact: EvalSums,
    dropped: Vec<EvalSums>,
}

impl Drops {
    pub fn new(blocks: usize) -> Self {
        Self {
            intact: EvalSums::default(),
            dropped: vec![EvalSums::default(); blocks],
        }
    }

    /// One batch, from its inference-mode probed forward (which yields every block's input:
    /// each drop then runs only what follows the block).
    fn add(&mut self, model: &ResNet, probed: &Probed, y: &Tensor) -> Result<()> {
        self.intact.add(&probed.logits.detach(), y)?;
        for (i, sums) in self.dropped.iter_mut().enumerate() {
            let block = model.block(i).expect("the layout's block");
            let out = block.forward_skipped(&probed.inputs[i].detach())?;
            sums.add(&model.infer_after(i, &out)?, y)?;
        }
        Ok(())
    }

    /// Runs the probed forward of every batch itself.
    pub fn measure(mut self, ctx: &mut Ctx) -> Result<()> {
        for batch in &ctx.batches {
            let (x, y) = ctx.to_device(batch)?;
            let probed = ctx.model.forward_probed(&x, &ProbeOptions::eval())?;
            self.add(ctx.model, &probed, &y)?;
        }
        self.record(ctx)
    }

    pub fn record(&self, ctx: &mut Ctx) -> Result<()> {
        let whole = self.intact.result()?;
        ctx.records
            .push(ctx.record(M::Accuracy, whole.accuracy, whole.n));
        ctx.records.push(ctx.record(M::Loss, whole.loss, whole.n));
        for (i, sums) in self.dropped.iter().enumerate() {
            let r = sums.result()?;
            let acc = ctx.at_block(ctx.record(M::DropAccuracy, r.accuracy, r.n), i);
            let loss = ctx.at_block(ctx.record(M::DropLoss, r.loss, r.n), i);
            ctx.records.extend([acc, loss]);
        }
        Ok(())
    }
}

/// The trained head at the output of every block of the last stage.
pub(crate) fn intermediate(ctx: &mut Ctx) -> Result<()> {
    let last = ctx.blocks.last().expect("a model has blocks").id.stage;
    let taps: Vec<usize> = ctx
        .blocks
        .iter()
        .filter(|b| b.id.stage == last)
        .map(|b| b.index as usize)
        .collect();
    ctx.unless_stopped()?;
    let (_, at) = evaluate(ctx.model, &ctx.inputs, ctx.batches.iter().copied(), &taps)?;
    for (&i, r) in taps.iter().zip(at) {
        let acc = ctx.at_block(ctx.record(M::IntermediateAccuracy, r.accuracy, r.n), i);
        let loss = ctx.at_block(ctx.record(M::IntermediateLoss, r.loss, r.n), i);
        ctx.records.extend([acc, loss]);
    }
    Ok(())
}

/// The gradient-norm ratio of paper.md, and ‖h_i‖ per block of a freshly initialised model
/// (the run's seed and spec; BatchNorm in inference mode with its initial statistics).
pub(crate) fn sharing(ctx: &mut Ctx, run: &RunSpec) -> Result<()> {
    let last = ctx.blocks.last().expect("a model has blocks").id.stage;
    let deep = ctx
        .blocks
        .iter()
        .position(|b| b.id.stage == last)
        .expect("the last stage has blocks");
    let n = ctx.batches.iter().map(|b| b.1.len()).sum();
    let batches = ctx.batches.iter().copied();
    ctx.unless_stopped()?;
    let ratio = grad_norm_ratio(ctx.model, &ctx.inputs, batches, deep)?;
    ctx.records.push(ctx.record(M::GradNormRatio, ratio, n));

    let fresh = ResNet::new(
        ctx.model.layout(),
        &mut rng(run.train.seed, Stream::Init, 0, 0),
        ctx.model.device(),
        ctx.model.dtypes(),
    )?;
    let mut norms_at = Series::new(ctx.blocks.len());
    for batch in &ctx.batches {
        let (x, _) = ctx.to_device(batch)?;
        let probed = fresh.forward_probed(&x, &ProbeOptions::eval())?;
        for (i, h) in probed.inputs.iter().enumerate() {
            norms_at.push(i, norms(h)?);
        }
    }
    for (i, values) in norms_at.read()?.iter().enumerate() {
        ctx.summarise(M::ActivationNorm, i, values);
    }
    Ok(())
}

/// The head plugged in at hidden state `h`: `h` as a leaf of a new graph, and the logits.
fn head_at(model: &ResNet, h: &Tensor) -> Result<(Var, Tensor)> {
    let z = Var::from_tensor(&h.detach())?;
    let logits = model.head().forward(z.as_tensor(), BnMode::Eval)?;
    Ok((z, logits))
}

/// Per-example cross-entropy of the head at hidden state `h` (N,), and its gradient there.
pub(crate) fn head_loss_and_gradient(
    model: &ResNet,
    h: &Tensor,
    labels: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (z, logits) = head_at(model, h)?;
    let per_example = cross_entropy_per_example(&logits, labels)?;
    let gradient = gradient_at(&per_example.sum_all()?, &z)?;
    Ok((per_example.detach(), gradient))
}

/// The head at a hidden state: its logits, and the gradient of each example's loss there
/// from one backward pass.
pub(crate) struct HeadAt {
    pub logits: Tensor,
    /// Of [`direction_loss`]: per example along ∇ℓ_n at any logit gap, for cosines.
    pub direction: Tensor,
    /// ‖∂CE_n/∂z_n‖ per example, (N,) in f64: ∇ℓ_n = this × `direction`_n, as the head in
    /// inference mode is linear in each example's logit gradient alone. So the inner
    /// product of a step with ∇ℓ_n, the first-order change of its loss, needs no second
    /// backward pass, and stays exact where ∇ℓ_n's entries underflow f32.
    pub gradient_norm: Tensor,
}

/// The head plugged in at hidden state `h`, with the gradient there.
pub(crate) fn head_gradients(model: &ResNet, h: &Tensor, labels: &Tensor) -> Result<HeadAt> {
    let (z, logits) = head_at(model, h)?;
    let (_, gradient_norm) = logit_gradient(&logits, labels)?;
    let direction = gradient_at(&direction_loss(&logits, labels)?, &z)?;
    Ok(HeadAt {
        logits: logits.detach(),
        direction,
        gradient_norm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{cosines, host};
    use candle_core::Device;

    /// Logit gaps of 120 and 1,000: in f32 every other class's probability is 0 beyond a gap
    /// of ~104, in f64 beyond ~745, so a gradient through a softmax vanishes even scaled;
    /// the unit gradient keeps its direction at both. A wrongly classified example's too.
    #[test]
    fn a_gap_beyond_f32s_and_f64s_range_keeps_its_gradient_direction() {
        let dev = &Device::Cpu;
        for gap in [120.0f32, 1000.0] {
            let z = Var::from_tensor(&Tensor::new(&[[gap, 0.0, 0.0]], dev).unwrap()).unwrap();
            for (label, exact) in [(0u32, [-2.0f32, 1.0, 1.0]), (1, [1.0, -1.0, 0.0])] {
                let labels = Tensor::new(&[label], dev).unwrap();
                let exact = Tensor::new(&[exact], dev).unwrap();
                let g = gradient_at(&direction_loss(z.as_tensor(), &labels).unwrap(), &z).unwrap();
                let cosine = host(&cosines(&g, &exact).unwrap()).unwrap()[0];
                assert!(
                    (cosine - 1.0).abs() < 1e-6,
                    "gap {gap}, label {label}: {cosine}"
                );
            }
        }
    }

    /// Moderate logits, where the softmax is exact: the unit gradient is (p − e_y)/‖p − e_y‖,
    /// and the norm ‖p − e_y‖.
    #[test]
    fn the_unit_gradient_is_the_normalised_cross_entropy_gradient() {
        let dev = &Device::Cpu;
        let z = Tensor::new(&[[1.5f32, -0.5, 0.25, 2.0], [0.0, 3.0, -1.0, 0.5]], dev).unwrap();
        let labels = Tensor::new(&[2u32, 1], dev).unwrap();
        let (u, gradient_norm) = logit_gradient(&z, &labels).unwrap();
        let u = u.to_vec2::<f32>().unwrap();
        let gradient_norm = gradient_norm.to_vec1::<f64>().unwrap();
        let z = z.to_vec2::<f32>().unwrap();
        for (n, label) in [2usize, 1].into_iter().enumerate() {
            let e: Vec<f64> = z[n].iter().map(|&v| (v as f64).exp()).collect();
            let total: f64 = e.iter().sum();
            let g: Vec<f64> = (0..4)
                .map(|c| e[c] / total - if c == label { 1.0 } else { 0.0 })
                .collect();
            let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((gradient_norm[n] - norm).abs() < 1e-12, "{n}");
            for c in 0..4 {
                assert!((u[n][c] as f64 - g[c] / norm).abs() < 1e-6, "{n} {c}");
            }
        }
    }

    /// Logits with a gap of 60 (p_c = e^-60 ≈ 9e-27 for the others): the plain summed loss's
    /// gradient has squares below f32's range, so its cosine is not finite (summaries leave
    /// it out); the direction loss's gradient is the same direction with unit norm.
    #[test]
    fn a_confident_example_keeps_its_gradient_direction() {
        let dev = &Device::Cpu;
        let z = Var::from_tensor(&Tensor::new(&[[60.0f32, 0.0, 0.0]], dev).unwrap()).unwrap();
        let labels = Tensor::new(&[0u32], dev).unwrap();
        let exact = Tensor::new(&[[-2.0f32, 1.0, 1.0]], dev).unwrap();
        let cosine = |g: &Tensor| host(&cosines(g, &exact).unwrap()).unwrap()[0];

        let plain = cross_entropy_per_example(z.as_tensor(), &labels).unwrap();
        let plain = gradient_at(&plain.sum_all().unwrap(), &z).unwrap();
        assert!(!cosine(&plain).is_finite());

        let g = gradient_at(&direction_loss(z.as_tensor(), &labels).unwrap(), &z).unwrap();
        assert!((cosine(&g) - 1.0).abs() < 1e-6, "{}", cosine(&g));
        let norm = host(&norms(&g).unwrap()).unwrap()[0];
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }
}
