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

/// Number of examples whose arg-max logit is the label.
pub fn correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let hits = logits
        .argmax(D::Minus1)?
        .eq(labels)?
        .to_dtype(candle_core::DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()?;
    Ok(hits as usize)
}
