//! Layers with PyTorch semantics: every convolution has a bias, BatchNorm keeps running
//! statistics PyTorch-style, and the BatchNorm mode is always passed explicitly. Activations
//! are NCHW unless a method takes a [`MemoryFormat`]; parameters are always stored as
//! PyTorch stores them.

use crate::ops::MemoryFormat;
use crate::{ops, Init, Result};
use candle_core::{DType, Tensor, Var, D};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};

thread_local! {
    static FROZEN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every parameter entering the graphs it builds as a constant: backward
/// passes through them then compute input gradients only, which is all analysis needs, and
/// skip the weight gradients (the filter GEMMs, a third of a convolution's backward).
pub fn with_frozen_parameters<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the previous setting also when `f` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FROZEN.set(self.0);
        }
    }
    let _restore = Restore(FROZEN.replace(true));
    f()
}

/// A parameter as it enters a graph: detached inside [`with_frozen_parameters`].
fn parameter(v: &Var) -> Tensor {
    if FROZEN.get() {
        v.as_tensor().detach()
    } else {
        v.as_tensor().clone()
    }
}

/// A per-channel parameter's values on the host, in f64.
fn host(v: &Var) -> Result<Vec<f64>> {
    Ok(ops::host_f64(v.as_tensor())?)
}

/// Which statistics BatchNorm normalises with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// The batch's, updating the running ones (training).
    Train,
    /// The running ones (inference).
    Eval,
    /// The batch's, leaving the running ones as they are: an analysis asking how a block
    /// acts on inputs normalised as in training, wherever they lie.
    BatchStats,
}

/// `t` in `dtype`, without a copy when it already is (bf16 compute, f32 GEMMs on the CPU).
fn cast(t: &Tensor, dtype: DType) -> Result<Tensor> {
    if t.dtype() == dtype {
        Ok(t.clone())
    } else {
        Ok(t.to_dtype(dtype)?)
    }
}

/// Whether a layer must serve a channels-last `x` through its NCHW path ([`nchw_path`]): only
/// the CUDA kernels take channels-last.
fn needs_nchw_path(format: MemoryFormat, x: &Tensor) -> bool {
    format != MemoryFormat::Nchw && !ops::has_cuda_kernels(x)
}

/// `f`, computing on NCHW tensors, on NCHW views of `x` (and of `add`), its result back in
/// `format`.
fn nchw_path(
    format: MemoryFormat,
    x: &Tensor,
    add: Option<&Tensor>,
    f: impl FnOnce(&Tensor, Option<&Tensor>) -> Result<Tensor>,
) -> Result<Tensor> {
    let add = add.map(|a| format.to_nchw(a)).transpose()?;
    let y = f(&format.to_nchw(x)?, add.as_ref())?;
    Ok(format.from_nchw(&y)?)
}

/// The dtype convolutions and matrix products run in for activations `x`: their own, but
/// f32 for bf16 on the CPU, where candle has no bf16 GEMM (bf16 storage with f32
/// accumulation, as GPU tensor cores do it).
fn gemm_dtype(x: &Tensor) -> DType {
    if x.dtype() == DType::BF16 && x.device().is_cpu() {
        DType::F32
    } else {
        x.dtype()
    }
}

pub struct Conv2d {
    pub weight: Var,
    pub bias: Var,
    stride: usize,
    padding: usize,
    math: ops::ConvMath,
}

impl Conv2d {
    /// A `k×k` convolution with `k/2` zero padding, He-normal weights and zero bias.
    pub fn new(
        init: &mut Init,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: init.he_normal(&[c_out, c_in, k, k], c_in * k * k)?,
            bias: init.constant(&[c_out], 0.0)?,
            stride,
            padding: k / 2,
            math: init.conv_math(),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_in(MemoryFormat::Nchw, x, None)
    }

    /// `self(x) [+ add]`, `x`, `add` and the result in memory `format`; the addition part of
    /// the convolution's graph node where stepwise's kernels serve `x`: the graph then keeps
    /// no tensor for the convolution's own output (see [`ops::conv2d`]).
    pub fn forward_in(
        &self,
        format: MemoryFormat,
        x: &Tensor,
        add: Option<&Tensor>,
    ) -> Result<Tensor> {
        if needs_nchw_path(format, x) {
            let nchw =
                |x: &Tensor, add: Option<&Tensor>| self.forward_in(MemoryFormat::Nchw, x, add);
            return nchw_path(format, x, add, nchw);
        }
        let work = gemm_dtype(x);
        let b = cast(&parameter(&self.bias), work)?;
        let xw = cast(x, work)?;
        let add = add.map(|a| cast(a, work)).transpose()?;
        let y = if ops::has_kernels(&xw) {
            let w = self.weight_in(format, work)?;
            let geometry = (self.stride, self.padding);
            ops::conv2d_in(format, &xw, (&w, &b), add.as_ref(), geometry, self.math)?
        } else {
            let w = cast(&parameter(&self.weight), work)?;
            let y = conv2d_reference(&xw, &w, &b, self.stride, self.padding)?;
            match &add {
                Some(a) => (y + a)?,
                None => y,
            }
        };
        cast(&y, x.dtype())
    }

    /// The weight in `dtype` laid out for activations in `format`: for channels-last
    /// (C_out, k, k, C_in), cast and transposed by one candle op (a cast of a strided view
    /// writes it contiguously), whose backward pass turns the gradient back.
    fn weight_in(&self, format: MemoryFormat, dtype: DType) -> Result<Tensor> {
        let w = parameter(&self.weight);
        match format {
            MemoryFormat::Nchw => cast(&w, dtype),
            MemoryFormat::ChannelsLast => Ok(cast(&w.permute((0, 2, 3, 1))?, dtype)?.contiguous()?),
        }
    }

    /// Inference: `self(relu(bn(x))) [+ add]` in memory `format`, BatchNorm in inference
    /// mode, the same values as the separate layers bit for bit. Where stepwise's CPU kernels
    /// serve `x`, one fused kernel (BatchNorm + ReLU applied as the convolution reads `x`,
    /// `add` while the output is in cache) that keeps no graph; elsewhere BatchNorm + ReLU,
    /// then the convolution with `add` added in its bias pass.
    pub fn infer_after_bn_relu(
        &self,
        format: MemoryFormat,
        bn: &BatchNorm,
        x: &Tensor,
        add: Option<&Tensor>,
    ) -> Result<Tensor> {
        let weights = (self.weight.as_tensor(), self.bias.as_tensor());
        let dtype = x.dtype();
        if format == MemoryFormat::Nchw
            && ops::has_cpu_kernels(x)
            && weights.0.dtype() == dtype
            && bn.weight.dtype() == dtype
        {
            let pre = bn.inference_affine()?;
            let (stride, pad) = (self.stride, self.padding);
            return Ok(ops::conv2d_inference(x, &pre, weights, add, stride, pad)?);
        }
        let a = bn.forward_relu_in(format, x, BnMode::Eval)?;
        self.forward_in(format, &a, add)
    }
}

/// candle's own convolution plus a broadcast bias: the path for devices and dtypes without
/// stepwise kernels, and the reference the kernels are tested against.
pub fn conv2d_reference(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    let y = x.conv2d(w, pad, stride, 1, 1)?;
    Ok(y.broadcast_add(&b.reshape((1, (), 1, 1))?)?)
}

pub struct Linear {
    pub weight: Var,
    pub bias: Var,
}

impl Linear {
    pub fn new(init: &mut Init, inputs: usize, outputs: usize) -> Result<Self> {
        Ok(Self {
            weight: init.he_normal(&[outputs, inputs], inputs)?,
            bias: init.constant(&[outputs], 0.0)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let work = gemm_dtype(x);
        let w = cast(&parameter(&self.weight), work)?;
        let b = cast(&parameter(&self.bias), work)?;
        let y = cast(x, work)?.matmul(&w.t()?)?.broadcast_add(&b)?;
        cast(&y, x.dtype())
    }
}

pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

/// BatchNorm over (N, H, W) per channel, computed in the parameter dtype.
pub struct BatchNorm {
    pub weight: Var,
    pub bias: Var,
    pub running_mean: Var,
    pub running_var: Var,
    num_batches_tracked: AtomicI64,
}

impl BatchNorm {
    pub fn new(init: &mut Init, channels: usize, gamma: f64) -> Result<Self> {
        Ok(Self {
            weight: init.constant(&[channels], gamma)?,
            bias: init.constant(&[channels], 0.0)?,
            running_mean: init.constant(&[channels], 0.0)?,
            running_var: init.constant(&[channels], 1.0)?,
            num_batches_tracked: AtomicI64::new(0),
        })
    }

    pub fn channels(&self) -> usize {
        self.weight.as_tensor().elem_count()
    }

    pub fn num_batches_tracked(&self) -> i64 {
        self.num_batches_tracked.load(Ordering::Relaxed)
    }

    pub fn set_num_batches_tracked(&self, n: i64) {
        self.num_batches_tracked.store(n, Ordering::Relaxed);
    }

    /// `relu(bn(x))`: in these networks every BatchNorm is followed by a ReLU, so the
    /// kernels fuse the two. On CUDA they take f32 or bf16 activations with f32 parameters.
    pub fn forward_relu(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        self.forward_relu_in(MemoryFormat::Nchw, x, mode)
    }

    /// [`Self::forward_relu`] of `x` in memory `format`.
    pub fn forward_relu_in(
        &self,
        format: MemoryFormat,
        x: &Tensor,
        mode: BnMode,
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if ops::has_cuda_kernels(x) && self.weight.dtype() == DType::F32 {
            return self.fused_relu_cuda(format, x, mode);
        }
        if needs_nchw_path(format, x) {
            let nchw =
                |x: &Tensor, _: Option<&Tensor>| self.forward_relu_in(MemoryFormat::Nchw, x, mode);
            return nchw_path(format, x, None, nchw);
        }
        if ops::has_kernels(x) && x.dtype() == self.weight.dtype() {
            self.fused_relu(x, mode)
        } else {
            Ok(self.forward_reference(x, mode)?.relu()?)
        }
    }

    fn fused_relu(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let (w, b) = (&parameter(&self.weight), &parameter(&self.bias));
        match mode {
            BnMode::Train | BnMode::BatchStats => {
                let (y, stats) = ops::batch_norm_relu_train(x, w, b, BN_EPS)?;
                if mode == BnMode::Train {
                    let (n, _, h, wd) = x.dims4()?;
                    let per_channel = |v: Vec<f64>| -> Result<Tensor> {
                        Ok(Tensor::from_vec(v, self.channels(), x.device())?
                            .to_dtype(self.weight.dtype())?)
                    };
                    self.update_running(
                        &per_channel(stats.mean)?,
                        &per_channel(stats.var)?,
                        (n * h * wd) as f64,
                    )?;
                }
                Ok(y)
            }
            BnMode::Eval => {
                let running = ops::BatchStats {
                    mean: host(&self.running_mean)?,
                    var: host(&self.running_var)?,
                };
                Ok(ops::batch_norm_relu_eval(x, w, b, running, BN_EPS)?)
            }
        }
    }

    /// Inference mode as the per-channel map before the ReLU, x ↦ x·scale + shift, with the
    /// values the fused kernel computes.
    fn inference_affine(&self) -> Result<ops::batchnorm::Affine> {
        Ok(ops::batchnorm::Affine::inference(
            &host(&self.weight)?,
            &host(&self.bias)?,
            &host(&self.running_mean)?,
            &host(&self.running_var)?,
            BN_EPS,
        ))
    }

    /// The CUDA kernels: statistics (and the running update) in one kernel, the
    /// normalisation with ReLU in another, all on the device.
    #[cfg(feature = "cuda")]
    fn fused_relu_cuda(&self, format: MemoryFormat, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let running = (self.running_mean.as_tensor(), self.running_var.as_tensor());
        // The statistics kernel updates the running averages it is given: copies of them
        // take the update where it is not to be kept.
        let copies = match mode {
            BnMode::BatchStats => Some((running.0.copy()?, running.1.copy()?)),
            _ => None,
        };
        let y = ops::cuda::batch_norm_relu(
            x,
            (&parameter(&self.weight), &parameter(&self.bias)),
            copies.as_ref().map_or(running, |(m, v)| (m, v)),
            mode != BnMode::Eval,
            format,
        )?;
        if mode == BnMode::Train {
            self.num_batches_tracked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(y)
    }

    /// BatchNorm alone from candle ops, computed in the parameter dtype: the path for
    /// devices and dtypes without stepwise kernels, and the kernels' reference.
    pub fn forward_reference(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let input_dtype = x.dtype();
        let x = cast(x, self.weight.dtype())?;
        let per_channel = |t: &Tensor| t.reshape((1, (), 1, 1));
        let normalised = match mode {
            BnMode::Train | BnMode::BatchStats => {
                let (n, _, h, w) = x.dims4()?;
                let count = (n * h * w) as f64;
                let mean = x.mean_keepdim((0, 2, 3))?;
                let centred = x.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
                if mode == BnMode::Train {
                    self.update_running(&mean, &var, count)?;
                }
                centred.broadcast_div(&(var + BN_EPS)?.sqrt()?)?
            }
            BnMode::Eval => {
                let mean = per_channel(self.running_mean.as_tensor())?.detach();
                let std = (per_channel(self.running_var.as_tensor())? + BN_EPS)?
                    .sqrt()?
                    .detach();
                x.broadcast_sub(&mean)?.broadcast_div(&std)?
            }
        };
        let y = normalised
            .broadcast_mul(&per_channel(&parameter(&self.weight))?)?
            .broadcast_add(&per_channel(&parameter(&self.bias))?)?;
        cast(&y, input_dtype)
    }

    /// running ← (1 − m)·running + m·batch, with the unbiased batch variance (`var` is the
    /// biased one, per channel in any shape).
    fn update_running(&self, mean: &Tensor, var: &Tensor, count: f64) -> Result<()> {
        let unbias = if count > 1.0 {
            count / (count - 1.0)
        } else {
            1.0
        };
        let mean = mean.detach().flatten_all()?;
        let var = (var.detach().flatten_all()? * unbias)?;
        let m = BN_MOMENTUM;
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (var * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        self.num_batches_tracked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A batch as (N, D) rows, one per example, in the dtype sums over an example are taken in:
/// its own, f32 for bf16.
pub fn per_example_rows(x: &Tensor) -> Result<Tensor> {
    let dtype = match x.dtype() {
        DType::BF16 => DType::F32,
        dtype => dtype,
    };
    Ok(cast(x, dtype)?.flatten_from(1)?)
}

/// Per-example ℓ2 norms of a batch: `‖x_n‖` over all but the batch dimension.
pub fn per_example_norm(x: &Tensor) -> Result<Tensor> {
    Ok(per_example_rows(x)?.sqr()?.sum(D::Minus1)?.sqrt()?)
}
