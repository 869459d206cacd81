//! One pre-activation residual block: `h_{i+1} = shortcut(h_i) + F_i(h_i)` with
//! `F(h) = conv2(relu(bn2(conv1(relu(bn1(h))))))` and no activation after the addition.

use crate::layers::{BatchNorm, BnMode, Conv2d};
use crate::ops::MemoryFormat;
use crate::Result;
use candle_core::Tensor;
use domain::BlockInfo;
use std::sync::Arc;

pub struct Block {
    pub info: BlockInfo,
    /// Shared between steps under naive sharing.
    pub(crate) bn1: Arc<BatchNorm>,
    /// Shared between steps under both kinds of sharing.
    pub(crate) conv1: Arc<Conv2d>,
    pub(crate) bn2: Arc<BatchNorm>,
    pub(crate) conv2: Arc<Conv2d>,
    /// The 1×1 projection of a projection block, applied to the raw input.
    pub(crate) projection: Option<Conv2d>,
}

/// The public methods take and return NCHW tensors; the model's own passes use the `_in`
/// ones, in its memory format.
impl Block {
    /// The residual branch F(h).
    pub fn residual(&self, h: &Tensor, mode: BnMode) -> Result<Tensor> {
        self.residual_adding(MemoryFormat::Nchw, h, mode, None)
    }

    /// F(h) [+ add], the addition inside the last convolution.
    fn residual_adding(
        &self,
        format: MemoryFormat,
        h: &Tensor,
        mode: BnMode,
        add: Option<&Tensor>,
    ) -> Result<Tensor> {
        let a = self.bn1.forward_relu_in(format, h, mode)?;
        let a = self.conv1.forward_in(format, &a, None)?;
        let a = self.bn2.forward_relu_in(format, &a, mode)?;
        self.conv2.forward_in(format, &a, add)
    }

    /// The shortcut: `h` itself, or its 1×1 projection for a projection block.
    pub fn shortcut(&self, h: &Tensor) -> Result<Tensor> {
        self.shortcut_in(MemoryFormat::Nchw, h)
    }

    fn shortcut_in(&self, format: MemoryFormat, h: &Tensor) -> Result<Tensor> {
        match &self.projection {
            Some(p) => p.forward_in(format, h, None),
            None => Ok(h.clone()),
        }
    }

    /// `shortcut(h) + residual(h, mode)`, the addition inside the last convolution: the graph
    /// keeps no tensor for F(h) itself, which no backward pass reads (see
    /// [`Conv2d::forward_in`]).
    pub fn forward(&self, h: &Tensor, mode: BnMode) -> Result<Tensor> {
        self.forward_in(MemoryFormat::Nchw, h, mode)
    }

    pub(crate) fn forward_in(
        &self,
        format: MemoryFormat,
        h: &Tensor,
        mode: BnMode,
    ) -> Result<Tensor> {
        let shortcut = self.shortcut_in(format, h)?;
        self.residual_adding(format, h, mode, Some(&shortcut))
    }

    /// Inference (BatchNorm in inference mode): `residual(h, Eval)`, bit for bit, with each
    /// BatchNorm + ReLU fused into the convolution after it (see
    /// [`Conv2d::infer_after_bn_relu`]); keeps no graph where the fused kernels serve `h`.
    pub fn infer_residual(&self, h: &Tensor) -> Result<Tensor> {
        self.infer_adding(MemoryFormat::Nchw, h, None)
    }

    /// Inference: `forward(h, Eval)`, bit for bit, the shortcut added inside the last
    /// convolution.
    pub fn infer(&self, h: &Tensor) -> Result<Tensor> {
        self.infer_in(MemoryFormat::Nchw, h)
    }

    pub(crate) fn infer_in(&self, format: MemoryFormat, h: &Tensor) -> Result<Tensor> {
        let shortcut = self.shortcut_in(format, h)?;
        self.infer_adding(format, h, Some(&shortcut))
    }

    fn infer_adding(
        &self,
        format: MemoryFormat,
        h: &Tensor,
        add: Option<&Tensor>,
    ) -> Result<Tensor> {
        let a = self.conv1.infer_after_bn_relu(format, &self.bn1, h, None)?;
        self.conv2.infer_after_bn_relu(format, &self.bn2, &a, add)
    }

    /// `shortcut(h) + α·F(h)`: re-applying a block with a step size (unrolling).
    pub fn forward_scaled(&self, h: &Tensor, alpha: f64, mode: BnMode) -> Result<Tensor> {
        Ok((self.shortcut(h)? + (self.residual(h, mode)? * alpha)?)?)
    }

    /// The block's output with its residual branch skipped (block dropping).
    pub fn forward_skipped(&self, h: &Tensor) -> Result<Tensor> {
        self.shortcut(h)
    }
}
