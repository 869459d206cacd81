//! Inference-mode evaluation over batches of stored images (uint8 pixels, normalised on the
//! device): loss and accuracy of the network and of its head at chosen blocks, and the
//! gradient-norm ratio of paper.md.

use crate::layers::{per_example_norm, with_frozen_parameters};
use crate::loss::{cross_entropy_per_example, hits};
use crate::{BnMode, ProbeOptions, ResNet, Result};
use candle_core::{DType, Device, Tensor};
use domain::Normalization;

/// Images as the dataset stores them — uint8 pixels, N·3·32·32 bytes in NCHW order — and
/// their labels.
pub type HostBatch<'a> = (&'a [u8], &'a [u32]);

/// A training batch — normalised (and augmented) on the host, N·3·32·32 f32 values — and
/// its labels as tensors on `device`.
pub fn to_device(
    (images, labels): (Vec<f32>, Vec<u32>),
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let n = labels.len();
    let x = Tensor::from_vec(images, (n, 3, 32, 32), device)?;
    let y = Tensor::from_vec(labels, n, device)?;
    Ok((x, y))
}

/// Turns stored images into the model's input on its device: the bytes travel (a quarter of
/// the floats' size) and are looked up in [`Normalization::lookup_table`] there, so the
/// values are those the host's data pipeline computes, bit for bit, and the host does no
/// per-pixel work.
pub struct Inputs {
    /// The three channels' tables, one after the other (768 values).
    table: Tensor,
    /// Each channel's start in `table`, shaped (1, 3, 1, 1).
    offsets: Tensor,
}

impl Inputs {
    pub fn new(normalization: &Normalization, device: &Device) -> Result<Self> {
        let table: Vec<f32> = normalization.lookup_table().concat();
        Ok(Self {
            table: Tensor::from_vec(table, 768, device)?,
            offsets: Tensor::from_vec(vec![0u32, 256, 512], (1, 3, 1, 1), device)?,
        })
    }

    /// (images (N, 3, 32, 32) f32, labels (N,) u32) on the device.
    pub fn upload(&self, (pixels, labels): HostBatch) -> Result<(Tensor, Tensor)> {
        let (n, device) = (labels.len(), self.table.device());
        let bytes = Tensor::from_slice(pixels, (n, 3, 32, 32), device)?;
        let index = bytes.to_dtype(DType::U32)?.broadcast_add(&self.offsets)?;
        let x = self.table.index_select(&index.flatten_all()?, 0)?;
        Ok((
            x.reshape((n, 3, 32, 32))?,
            Tensor::from_slice(labels, n, device)?,
        ))
    }
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

/// Running sums of loss (f64) and hits over batches, kept on the device: nothing is read
/// back until [`Self::result`], so a GPU never waits for the host between batches.
#[derive(Clone, Debug, Default)]
pub struct EvalSums {
    loss: Option<Tensor>,
    correct: Option<Tensor>,
    n: usize,
}

/// `sum + t`, or `t` for the first term.
fn accumulate(sum: &mut Option<Tensor>, t: Tensor) -> Result<()> {
    *sum = Some(match sum.take() {
        Some(s) => (s + t)?,
        None => t,
    });
    Ok(())
}

impl EvalSums {
    pub fn add(&mut self, logits: &Tensor, labels: &Tensor) -> Result<()> {
        let loss = cross_entropy_per_example(logits, labels)?.sum_all()?;
        accumulate(&mut self.loss, loss.to_dtype(DType::F64)?)?;
        accumulate(&mut self.correct, hits(logits, labels)?)?;
        self.n += labels.elem_count();
        Ok(())
    }

    pub fn result(&self) -> Result<EvalResult> {
        let n = self.n.max(1) as f64;
        let loss = self.loss.as_ref().map(scalar).transpose()?.unwrap_or(0.0);
        let correct = match &self.correct {
            Some(c) => c.to_scalar::<u32>()?,
            None => 0,
        };
        Ok(EvalResult {
            loss: loss / n,
            accuracy: correct as f64 / n,
            n: self.n,
        })
    }
}

/// The network's loss and accuracy, plus the head's at the output of every block in
/// `taps` (global indices, ascending).
pub fn evaluate<'a>(
    model: &ResNet,
    inputs: &Inputs,
    batches: impl IntoIterator<Item = HostBatch<'a>>,
    taps: &[usize],
) -> Result<(EvalResult, Vec<EvalResult>)> {
    let mut total = EvalSums::default();
    let mut at_taps = vec![EvalSums::default(); taps.len()];
    for batch in batches {
        let (x, y) = inputs.upload(batch)?;
        let (logits, hidden) = model.infer_tapped(&x, taps)?;
        total.add(&logits, &y)?;
        for (h, sums) in hidden.iter().zip(&mut at_taps) {
            let logits = model.head().forward(h, BnMode::Eval)?.detach();
            sums.add(&logits, &y)?;
        }
    }
    Ok((
        total.result()?,
        at_taps
            .iter()
            .map(EvalSums::result)
            .collect::<Result<_>>()?,
    ))
}

/// Mean over examples of ‖∂L/∂h‖ at the first block divided by the same mean at block
/// `deep` (the first block of the last stage), with per-example gradients of the summed
/// loss and BatchNorm in inference mode. The parameters are frozen meanwhile: no weight
/// gradient is computed.
pub fn grad_norm_ratio<'a>(
    model: &ResNet,
    inputs: &Inputs,
    batches: impl IntoIterator<Item = HostBatch<'a>>,
    deep: usize,
) -> Result<f64> {
    with_frozen_parameters(|| {
        let (mut first, mut last) = (None, None);
        for batch in batches {
            let (x, y) = inputs.upload(batch)?;
            let probed = model.forward_probed(&x, &ProbeOptions::eval().with_gradients())?;
            let loss = cross_entropy_per_example(&probed.logits, &y)?.sum_all()?;
            let grads = probed.input_gradients(&probed.backward(&loss)?)?;
            let summed = |g: &Tensor| -> Result<Tensor> {
                Ok(per_example_norm(g)?.sum_all()?.to_dtype(DType::F64)?)
            };
            accumulate(&mut first, summed(&grads[0])?)?;
            accumulate(&mut last, summed(&grads[deep])?)?;
        }
        let read = |sum: Option<Tensor>| sum.as_ref().map(scalar).transpose();
        Ok(read(first)?.unwrap_or(0.0) / read(last)?.unwrap_or(0.0))
    })
}
