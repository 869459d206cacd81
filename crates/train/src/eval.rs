//! Inference-mode evaluation: loss and accuracy of the network, of its head at chosen
//! blocks, and the gradient-norm ratio of paper.md.

use crate::Result;
use candle_core::{DType, Device, Tensor};
use cifar::batch::in_order;
use cifar::{Batch, Images};
use domain::Normalization;
use resnet::layers::per_example_norm;
use resnet::loss::{correct, cross_entropy_per_example};
use resnet::{BnMode, ProbeOptions, ResNet};

/// Mean loss and accuracy over `n` examples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    pub loss: f64,
    pub accuracy: f64,
    pub n: usize,
}

#[derive(Default)]
struct Sums {
    loss: f64,
    correct: usize,
    n: usize,
}

impl Sums {
    fn add(&mut self, logits: &Tensor, labels: &Tensor) -> Result<()> {
        self.loss += scalar(&cross_entropy_per_example(logits, labels)?.sum_all()?)?;
        self.correct += correct(logits, labels)?;
        self.n += labels.elem_count();
        Ok(())
    }

    fn result(&self) -> EvalResult {
        let n = self.n.max(1) as f64;
        EvalResult {
            loss: self.loss / n,
            accuracy: self.correct as f64 / n,
            n: self.n,
        }
    }
}

/// A scalar tensor of any float dtype as f64.
pub fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// A host batch as (images, labels) tensors on `device`.
pub fn batch_tensors(batch: Batch, device: &Device) -> Result<(Tensor, Tensor)> {
    let n = batch.len();
    let x = Tensor::from_vec(batch.images, (n, 3, cifar::SIDE, cifar::SIDE), device)?;
    let y = Tensor::from_vec(batch.labels, n, device)?;
    Ok((x, y))
}

/// The network's loss and accuracy on `images`, plus the head's at the output of every
/// block in `taps` (global indices, ascending).
pub fn evaluate(
    model: &ResNet,
    images: &Images,
    normalization: &Normalization,
    batch_size: usize,
    taps: &[usize],
) -> Result<(EvalResult, Vec<EvalResult>)> {
    let mut total = Sums::default();
    let mut at_taps: Vec<Sums> = taps.iter().map(|_| Sums::default()).collect();
    for batch in in_order(images, normalization, batch_size) {
        let (x, y) = batch_tensors(batch, model.device())?;
        let (logits, hidden) = model.infer_tapped(&x, taps)?;
        total.add(&logits, &y)?;
        for (h, sums) in hidden.iter().zip(&mut at_taps) {
            let logits = model.head().forward(h, BnMode::Eval)?.detach();
            sums.add(&logits, &y)?;
        }
    }
    Ok((total.result(), at_taps.iter().map(Sums::result).collect()))
}

/// Mean over examples of ‖∂L/∂h‖ at the first block divided by the same mean at block
/// `deep` (the first block of the last stage), with per-example gradients of the summed
/// loss and BatchNorm in inference mode.
pub fn grad_norm_ratio(
    model: &ResNet,
    images: &Images,
    normalization: &Normalization,
    batch_size: usize,
    deep: usize,
) -> Result<f64> {
    let (mut first, mut last) = (0.0, 0.0);
    for batch in in_order(images, normalization, batch_size) {
        let (x, y) = batch_tensors(batch, model.device())?;
        let probed = model.forward_probed(&x, &ProbeOptions::eval().with_gradients())?;
        let loss = cross_entropy_per_example(&probed.logits, &y)?.sum_all()?;
        let grads = probed.input_gradients(&loss.backward()?)?;
        first += scalar(&per_example_norm(&grads[0])?.sum_all()?)?;
        last += scalar(&per_example_norm(&grads[deep])?.sum_all()?)?;
    }
    Ok(first / last)
}
