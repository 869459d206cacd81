//! Inference-mode evaluation over host batches (normalised images and labels, as the data
//! pipeline produces them): loss and accuracy of the network and of its head at chosen
//! blocks, and the gradient-norm ratio of paper.md.

use crate::layers::per_example_norm;
use crate::loss::{correct, cross_entropy_per_example};
use crate::{BnMode, ProbeOptions, ResNet, Result};
use candle_core::{DType, Device, Tensor};

/// Normalised images (N·3·32·32 values, NCHW) and their labels.
pub type HostBatch = (Vec<f32>, Vec<u32>);

/// A host batch as (images, labels) tensors on `device`.
pub fn to_device((images, labels): HostBatch, device: &Device) -> Result<(Tensor, Tensor)> {
    let n = labels.len();
    let x = Tensor::from_vec(images, (n, 3, 32, 32), device)?;
    let y = Tensor::from_vec(labels, n, device)?;
    Ok((x, y))
}

/// A scalar tensor of any float dtype as f64.
pub fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Mean loss and accuracy over `n` examples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    pub loss: f64,
    pub accuracy: f64,
    pub n: usize,
}

/// Running sums of loss and hits over batches.
#[derive(Clone, Debug, Default)]
pub struct EvalSums {
    loss: f64,
    correct: usize,
    n: usize,
}

impl EvalSums {
    pub fn add(&mut self, logits: &Tensor, labels: &Tensor) -> Result<()> {
        self.loss += scalar(&cross_entropy_per_example(logits, labels)?.sum_all()?)?;
        self.correct += correct(logits, labels)?;
        self.n += labels.elem_count();
        Ok(())
    }

    pub fn result(&self) -> EvalResult {
        let n = self.n.max(1) as f64;
        EvalResult {
            loss: self.loss / n,
            accuracy: self.correct as f64 / n,
            n: self.n,
        }
    }
}

/// The network's loss and accuracy, plus the head's at the output of every block in
/// `taps` (global indices, ascending).
pub fn evaluate(
    model: &ResNet,
    batches: impl IntoIterator<Item = HostBatch>,
    taps: &[usize],
) -> Result<(EvalResult, Vec<EvalResult>)> {
    let mut total = EvalSums::default();
    let mut at_taps = vec![EvalSums::default(); taps.len()];
    for batch in batches {
        let (x, y) = to_device(batch, model.device())?;
        let (logits, hidden) = model.infer_tapped(&x, taps)?;
        total.add(&logits, &y)?;
        for (h, sums) in hidden.iter().zip(&mut at_taps) {
            let logits = model.head().forward(h, BnMode::Eval)?.detach();
            sums.add(&logits, &y)?;
        }
    }
    Ok((
        total.result(),
        at_taps.iter().map(EvalSums::result).collect(),
    ))
}

/// Mean over examples of ‖∂L/∂h‖ at the first block divided by the same mean at block
/// `deep` (the first block of the last stage), with per-example gradients of the summed
/// loss and BatchNorm in inference mode.
pub fn grad_norm_ratio(
    model: &ResNet,
    batches: impl IntoIterator<Item = HostBatch>,
    deep: usize,
) -> Result<f64> {
    let (mut first, mut last) = (0.0, 0.0);
    for batch in batches {
        let (x, y) = to_device(batch, model.device())?;
        let probed = model.forward_probed(&x, &ProbeOptions::eval().with_gradients())?;
        let loss = cross_entropy_per_example(&probed.logits, &y)?.sum_all()?;
        let grads = probed.input_gradients(&loss.backward()?)?;
        first += scalar(&per_example_norm(&grads[0])?.sum_all()?)?;
        last += scalar(&per_example_norm(&grads[deep])?.sum_all()?)?;
    }
    Ok(first / last)
}
