//! Metrics with one value per block: cosine and ℓ2 ratio, block dropping, intermediate
//! accuracy, and the sharing diagnostics.

use crate::stats::{cosines, host, norms, ratios, Series};
use crate::{is_projection, Ctx, Error, Result};
use candle_core::{Tensor, Var};
use cifar::rng::{rng, Stream};
use domain::{AnalysisKind, GradientKind, MetricName as M, RunSpec};
use resnet::eval::{evaluate, grad_norm_ratio, EvalSums};
use resnet::loss::cross_entropy_per_example;
use resnet::{BnMode, Dtypes, ProbeOptions, Probed, ResNet};

/// The summed cross-entropy, whose gradient holds every example's own gradient (BatchNorm
/// in inference mode keeps examples independent).
fn summed_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(cross_entropy_per_example(logits, labels)?.sum_all()?)
}

/// ∂L/∂b of the network with block `index` removed, b being what then leaves the block
/// (h_i, or P(h_i) for a projection block).
fn skip_gradient(model: &ResNet, index: usize, base: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let z = Var::from_tensor(base)?;
    let logits = model.forward_after(index, z.as_tensor(), BnMode::Eval)?;
    let grads = summed_loss(&logits, labels)?.backward()?;
    match grads.get(z.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => Ok(base.zeros_like()?),
    }
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
            let g = probed.backward(&summed_loss(&probed.logits, &y)?)?;
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
    let ratio = grad_norm_ratio(ctx.model, &ctx.inputs, batches, deep)?;
    ctx.records.push(ctx.record(M::GradNormRatio, ratio, n));

    let fresh = ResNet::new(
        ctx.model.layout(),
        &mut rng(run.train.seed, Stream::Init, 0, 0),
        ctx.model.device(),
        Dtypes::for_precision(run.model.dtype),
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

/// Per-example cross-entropy of the head at hidden state `h`, and its gradient there.
pub(crate) fn head_loss_and_gradient(
    model: &ResNet,
    h: &Tensor,
    labels: &Tensor,
) -> Result<(Vec<f64>, Tensor)> {
    let z = Var::from_tensor(&h.detach())?;
    let logits = model.head().forward(z.as_tensor(), BnMode::Eval)?;
    let per_example = cross_entropy_per_example(&logits, labels)?;
    let grads = per_example.sum_all()?.backward()?;
    let g = match grads.get(z.as_tensor()) {
        Some(g) => g.clone(),
        None => h.zeros_like()?,
    };
    Ok((host(&per_example)?, g))
}
