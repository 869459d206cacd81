//! Cross-entropy and accuracy on logits.

use crate::Result;
use candle_core::{Tensor, D};

/// Per-example cross-entropy `-log softmax(logits)[y]`, shape (N,).
pub fn cross_entropy_per_example(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(log_p.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?)
}

/// Mean cross-entropy over the batch.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// Number of examples whose arg-max logit is the label, as a u32 scalar on the device.
pub fn hits(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(logits
        .argmax(D::Minus1)?
        .eq(labels)?
        .to_dtype(candle_core::DType::U32)?
        .sum_all()?)
}

/// [`hits`] read back.
pub fn correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    Ok(hits(logits, labels)?.to_scalar::<u32>()? as usize)
}
