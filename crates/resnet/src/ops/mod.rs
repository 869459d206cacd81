//! Custom candle operations with fast kernels: convolution (forward, input gradient,
//! weight and bias gradient) and BatchNorm fused with the ReLU that always follows it in
//! these networks. They serve f32 and f64 tensors on the CPU and, with the `cuda` feature,
//! f32 and bf16 on CUDA (`cuda`: cuDNN and stepwise's own kernels), there also in
//! channels-last memory ([`MemoryFormat`]); other dtypes use the reference compositions of
//! candle ops in `layers`, against which they are tested.

pub mod batchnorm;
pub mod conv;
#[cfg(feature = "cuda")]
pub mod cuda;
mod gemm;
pub mod launch;
mod outputs;
pub mod profile;
mod scratch;
mod sgd;

use batchnorm::{BnBackward, BnGeom};
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::CudaStorage;
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, CustomOp4, DType, Layout, Result, Shape, Tensor,
    WithDType,
};
use conv::ConvGeom;
use profile::{timed, Kernel};
pub use sgd::{sgd_serves, sgd_step, OnDevice, SgdStep, SgdUpdate};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// Element types of the CPU kernels.
pub trait Real: WithDType + Send + Sync + 'static + scratch::Pooled {}
impl Real for f32 {}
impl Real for f64 {}

/// Set from the start by `STEPWISE_REFERENCE_OPS=1` in the environment.
static REFERENCE_ONLY: LazyLock<AtomicBool> = LazyLock::new(|| {
    AtomicBool::new(std::env::var("STEPWISE_REFERENCE_OPS").is_ok_and(|v| v == "1"))
});

/// Process-wide: every layer runs candle's own operations (the reference the kernels are
/// tested against) instead of stepwise's kernels, e.g. to compare whole training runs.
pub fn use_reference_ops(on: bool) {
    REFERENCE_ONLY.store(on, Ordering::Relaxed);
}

/// Whether [`use_reference_ops`] is on.
pub fn reference_ops() -> bool {
    REFERENCE_ONLY.load(Ordering::Relaxed)
}

/// Whether stepwise's convolution serves tensors like `x`: the CPU kernels in f32 and f64,
/// cuDNN in f32 and bf16 (with the `cuda` feature).
pub fn has_kernels(x: &Tensor) -> bool {
    has_cpu_kernels(x) || has_cuda_kernels(x)
}

/// Whether the CPU kernels serve tensors like `x`.
pub fn has_cpu_kernels(x: &Tensor) -> bool {
    !reference_ops() && x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// Whether the CUDA kernels serve tensors like `x`.
pub fn has_cuda_kernels(x: &Tensor) -> bool {
    if reference_ops() {
        return false;
    }
    #[cfg(feature = "cuda")]
    return cuda::serves(x);
    #[cfg(not(feature = "cuda"))]
    return {
        let _ = x;
        false
    };
}

/// Runs `f` compiled for the best vector instruction set of this CPU (AVX-512, AVX2 + FMA,
/// or the x86-64 baseline), chosen at run time so one binary serves every machine: the
/// element loops of the kernels vectorise 4–16 lanes wide instead of SSE2's 4.
///
/// Only code inlined into `f` is compiled for that set: the closure must be marked
/// `#[inline(always)]`, so must the helpers it calls, and its loops are `for` loops, since
/// an iterator's `fold` or `sum` may stay a separate function built for the baseline (perf
/// showed exactly that: the BatchNorm loops ran as SSE code until both were done). Parallel
/// loops call it inside each task, since a worker thread runs its closures as plain code.
#[inline(always)]
fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// Partial sums kept side by side in the reductions below, so the loop vectorises (a single
/// running sum is a chain of dependent adds); the order is still fixed. (64 lanes measured
/// 3× slower: the lane loop then no longer becomes vector code.)
const LANES: usize = 16;

/// Σᵢ f(aᵢ, bᵢ, cᵢ) over three equally long rows: partial sums in `T` per lane, summed in
/// f64 (rows are summed in f64 by the callers, so precision holds over large batches).
#[inline(always)]
pub(crate) fn lane_sum3<T: Real>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) -> f64 {
    let mut acc = [T::zero(); LANES];
    let (ac, bc, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let mut tail = 0.0;
    for ((&x, &y), &z) in ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .zip(cc.remainder())
    {
        tail += f(x, y, z).to_f64();
    }
    for ((x, y), z) in ac.zip(bc).zip(cc) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l], z[l]);
        }
    }
    let mut total = 0.0;
    for v in acc {
        total += v.to_f64();
    }
    total + tail
}

/// Σᵢ f(aᵢ, bᵢ) over two equally long rows, as [`lane_sum3`].
#[inline(always)]
pub(crate) fn lane_sum2<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> f64 {
    lane_sum3(a, b, b, |x, y, _| f(x, y))
}

/// Σᵢ f(xᵢ) over a row, as [`lane_sum3`].
#[inline(always)]
pub(crate) fn lane_sum<T: Real>(x: &[T], f: impl Fn(T) -> T) -> f64 {
    lane_sum3(x, x, x, |v, _, _| f(v))
}

fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<T>()?[start..end]),
        None => bail!("stepwise CPU kernels need contiguous tensors"),
    }
}

/// Runs `f` on the f32 or f64 contents of the storages.
macro_rules! by_dtype {
    ($name:expr, $first:expr, |$t:ident| $body:expr) => {
        match $first {
            CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            _ => bail!("{}: the CPU kernels take f32 or f64", $name),
        }
    };
}

fn dims4(l: &Layout) -> Result<[usize; 4]> {
    match l.dims() {
        &[a, b, c, d] => Ok([a, b, c, d]),
        dims => bail!("expected a 4-d tensor, got {dims:?}"),
    }
}

/// How convolutions may multiply f32 values on CUDA: exactly (FMA), or on TF32 tensor
/// cores (10-bit mantissa products, f32 sums; PyTorch's cuDNN default). The CPU kernels and
/// other dtypes always compute exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvMath {
    #[default]
    Exact,
    Tf32,
}

/// How a 4-d activation tensor lies in memory, and so how it is shaped: (N, C, H, W), or
/// channels-last (N, H, W, C), where a pixel's channels are adjacent — the layout of
/// tensor-core convolutions, which cuDNN otherwise transposes to and from around each call
/// (PyTorch's `channels_last` memory format, which keeps the logical NCHW shape; candle
/// tensors cannot, so such a tensor is shaped as it lies). A convolution's weight in
/// channels-last is (C_out, k, k, C_in). Only the CUDA kernels take channels-last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MemoryFormat {
    #[default]
    Nchw,
    ChannelsLast,
}

impl MemoryFormat {
    /// As the command line spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nchw => "nchw",
            Self::ChannelsLast => "channels-last",
        }
    }

    /// The shape of an (n, c, h, w) activation in this format.
    pub fn shape(self, (n, c, h, w): (usize, usize, usize, usize)) -> Shape {
        match self {
            Self::Nchw => Shape::from((n, c, h, w)),
            Self::ChannelsLast => Shape::from((n, h, w, c)),
        }
    }

    /// (n, c, h, w) of an activation of this format shaped `dims`.
    pub fn nchw(self, dims: [usize; 4]) -> [usize; 4] {
        match self {
            Self::Nchw => dims,
            Self::ChannelsLast => [dims[0], dims[3], dims[1], dims[2]],
        }
    }

    /// `x`, an NCHW tensor, in this format (a copy for channels-last).
    pub fn from_nchw(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Nchw => Ok(x.clone()),
            Self::ChannelsLast => x.permute((0, 2, 3, 1))?.contiguous(),
        }
    }

    /// `x`, a tensor in this format, as NCHW: a strided view for channels-last, which
    /// candle's operations read as any view.
    pub fn to_nchw(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Nchw => Ok(x.clone()),
            Self::ChannelsLast => x.permute((0, 3, 1, 2)),
        }
    }
}

/// `conv(x, w) + b [+ add]` with a square kernel, zero padding `pad` and stride `stride`;
/// its gradients use the same `math`. With `add` (shaped as the output) the addition is
/// part of the one graph node, so the convolution's own output is never a tensor that the
/// graph keeps: a residual block's last convolution adds its shortcut this way.
pub fn conv2d(
    x: &Tensor,
    (w, b): (&Tensor, &Tensor),
    add: Option<&Tensor>,
    stride: usize,
    pad: usize,
    math: ConvMath,
) -> Result<Tensor> {
    conv2d_in(MemoryFormat::Nchw, x, (w, b), add, (stride, pad), math)
}

/// [`conv2d`] with `x`, `w`, `add` and the output in memory `format`.
pub fn conv2d_in(
    format: MemoryFormat,
    x: &Tensor,
    (w, b): (&Tensor, &Tensor),
    add: Option<&Tensor>,
    (stride, pad): (usize, usize),
    math: ConvMath,
) -> Result<Tensor> {
    let op = Conv2d {
        stride,
        pad,
        math,
        format,
    };
    let (x, w, b) = (x.contiguous()?, w.contiguous()?, b.contiguous()?);
    match add {
        None => x.apply_op3(&w, &b, op),
        Some(add) => {
            let out = op.output_shape(&op.geom(x.dims4()?.into(), w.dims4()?.into())?);
            if add.shape() != &out || add.dtype() != x.dtype() {
                bail!(
                    "conv2d: cannot add a {:?} {:?} tensor to a {:?} {out:?} output",
                    add.dtype(),
                    add.shape(),
                    x.dtype()
                );
            }
            x.apply_op4(&w, &b, &add.contiguous()?, ConvAdd(op))
        }
    }
}

/// Inference on the CPU: `conv(relu(x·scale + shift), w) + b [+ add]`, the map `pre` being
/// an inference-mode BatchNorm (see [`conv::forward_fused`]), in one pass over `x`. The
/// result keeps no graph: nothing here has a backward pass.
pub fn conv2d_inference(
    x: &Tensor,
    pre: &batchnorm::Affine,
    (w, b): (&Tensor, &Tensor),
    add: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    let (x, w, b) = (x.contiguous()?, w.contiguous()?, b.contiguous()?);
    let add = add.map(Tensor::contiguous).transpose()?;
    let op = Conv2d {
        stride,
        pad,
        math: ConvMath::Exact,
        format: MemoryFormat::Nchw,
    };
    let g = op.geom(x.dims4()?.into(), w.dims4()?.into())?;
    let out = op.output_shape(&g);
    if pre.scale.len() != g.c {
        bail!(
            "conv2d-inference: the input map does not have {} channels",
            g.c
        );
    }
    if add.as_ref().is_some_and(|a| a.shape() != &out) {
        bail!("conv2d-inference: cannot add a tensor shaped other than {out:?}");
    }
    let tensors: Vec<&Tensor> = [&x, &w, &b].into_iter().chain(&add).collect();
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut storages = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        match &**storage {
            candle_core::Storage::Cpu(s) => storages.push((s, *layout)),
            _ => bail!("conv2d-inference: CPU tensors only"),
        }
    }
    by_dtype!("conv2d-inference", storages[0].0, |T| {
        let views = storages
            .iter()
            .map(|(s, l)| slice::<T>(s, l))
            .collect::<Result<Vec<_>>>()?;
        let y = timed(Kernel::ConvForward, || {
            conv::forward_fused(
                &g,
                views[0],
                Some(pre),
                views[1],
                views[2],
                views.get(3).copied(),
            )
        });
        Tensor::from_vec(y, out, x.device())
    })
}

#[derive(Clone)]
struct Conv2d {
    stride: usize,
    pad: usize,
    /// For CUDA; the CPU kernels compute exactly.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    math: ConvMath,
    format: MemoryFormat,
}

impl Conv2d {
    /// The geometry of input dims `x` and weight dims `w`, both in `self.format`.
    fn geom(&self, x: [usize; 4], w: [usize; 4]) -> Result<ConvGeom> {
        let [n, c, h, wd] = self.format.nchw(x);
        let [co, ci, kh, kw] = self.format.nchw(w);
        if ci != c || kh != kw || h + 2 * self.pad < kh || wd + 2 * self.pad < kw {
            bail!("conv2d: input {x:?} does not fit weight {w:?}");
        }
        Ok(ConvGeom {
            n,
            c,
            h,
            w: wd,
            co,
            k: kh,
            stride: self.stride,
            pad: self.pad,
        })
    }

    fn output_shape(&self, g: &ConvGeom) -> Shape {
        self.format.shape((g.n, g.co, g.ho(), g.wo()))
    }

    fn input_shape(&self, g: &ConvGeom) -> Shape {
        self.format.shape((g.n, g.c, g.h, g.w))
    }

    /// The CPU kernels are NCHW only.
    fn check_cpu_format(&self) -> Result<()> {
        if self.format != MemoryFormat::Nchw {
            bail!("stepwise's CPU convolution takes NCHW tensors, not channels-last");
        }
        Ok(())
    }

    /// `conv(x, w) + b [+ add]` on the CPU, `add` added to each image's output while it is
    /// in cache.
    fn cpu_forward(
        &self,
        name: &str,
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
        (bs, bl): (&CpuStorage, &Layout),
        add: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        self.check_cpu_format()?;
        let g = self.geom(dims4(xl)?, dims4(wl)?)?;
        by_dtype!(name, xs, |T| {
            let (x, w, b) = (slice(xs, xl)?, slice(ws, wl)?, slice(bs, bl)?);
            let add = add.map(|(s, l)| slice::<T>(s, l)).transpose()?;
            let y = timed(Kernel::ConvForward, || {
                conv::forward_fused::<T>(&g, x, None, w, b, add)
            });
            Ok((T::to_cpu_storage_owned(y), g.output_shape()))
        })
    }

    /// `conv(x, w) + b [+ add]` on CUDA.
    #[cfg(feature = "cuda")]
    fn cuda_forward(
        &self,
        x: (&CudaStorage, &Layout),
        w: (&CudaStorage, &Layout),
        b: (&CudaStorage, &Layout),
        add: Option<(&CudaStorage, &Layout)>,
    ) -> Result<(CudaStorage, Shape)> {
        let g = self.geom(dims4(x.1)?, dims4(w.1)?)?;
        let y = profile::timed_cuda(Kernel::ConvForward, &x.0.device, || {
            cuda::conv::forward(&g, (self.math, self.format), x, w, b, add)
        })?;
        Ok((y, self.output_shape(&g)))
    }

    /// The gradients of x, w and b: none for x when it needs none (the images), none for
    /// w and b when they are constants (frozen parameters).
    fn gradients(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom(x.dims4()?.into(), w.dims4()?.into())?;
        let dy = dy.contiguous()?;
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(w, &ConvBackwardData(g, self.clone()))?)
        } else {
            None
        };
        if !w.track_op() && !b.track_op() {
            return Ok((dx, None, None));
        }
        let packed = x.apply_op2_no_bwd(&dy, &ConvBackwardFilter(g, self.clone()))?;
        let dw = packed.narrow(0, 0, g.co * g.kk())?.reshape(w.shape())?;
        let db = packed.narrow(0, g.co * g.kk(), g.co)?.reshape(b.shape())?;
        Ok((dx, Some(dw), Some(db)))
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "stepwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu_forward(self.name(), (xs, xl), (ws, wl), (bs, bl), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.cuda_forward((xs, xl), (ws, wl), (bs, bl), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.gradients(x, w, b, dy)
    }
}

/// [`Conv2d`] plus a tensor added to its output: (x, w, b, add).
struct ConvAdd(Conv2d);

impl CustomOp4 for ConvAdd {
    fn name(&self) -> &'static str {
        "stepwise-conv2d-add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
        adds: &CpuStorage,
        addl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let add = Some((adds, addl));
        self.0
            .cpu_forward(self.name(), (xs, xl), (ws, wl), (bs, bl), add)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
        adds: &CudaStorage,
        addl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.0
            .cuda_forward((xs, xl), (ws, wl), (bs, bl), Some((adds, addl)))
    }

    /// The added tensor's gradient is the output's own.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _add: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(
        Option<Tensor>,
        Option<Tensor>,
        Option<Tensor>,
        Option<Tensor>,
    )> {
        let (dx, dw, db) = self.0.gradients(x, w, b, dy)?;
        Ok((dx, dw, db, Some(dy.clone())))
    }
}

/// The convolution's geometry and settings.
struct ConvBackwardData(ConvGeom, Conv2d);

impl CustomOp2 for ConvBackwardData {
    fn name(&self) -> &'static str {
        "stepwise-conv2d-backward-data"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        self.1.check_cpu_format()?;
        let shape = self.1.input_shape(g);
        by_dtype!(self.name(), ds, |T| {
            let (dy, w) = (slice(ds, dl)?, slice(ws, wl)?);
            let dx = timed(Kernel::ConvBackwardData, || {
                conv::backward_data::<T>(g, dy, w)
            });
            Ok((T::to_cpu_storage_owned(dx), shape))
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ds: &CudaStorage,
        dl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (g, op) = (&self.0, &self.1);
        let dx = profile::timed_cuda(Kernel::ConvBackwardData, &ds.device, || {
            cuda::conv::backward_data(g, (op.math, op.format), (ds, dl), (ws, wl))
        })?;
        Ok((dx, op.input_shape(g)))
    }
}

/// As [`ConvBackwardData`].
struct ConvBackwardFilter(ConvGeom, Conv2d);

impl CustomOp2 for ConvBackwardFilter {
    fn name(&self) -> &'static str {
        "stepwise-conv2d-backward-filter"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        self.1.check_cpu_format()?;
        let shape = Shape::from(g.co * g.kk() + g.co);
        by_dtype!(self.name(), xs, |T| {
            let (x, dy) = (slice(xs, xl)?, slice(ds, dl)?);
            let packed = timed(Kernel::ConvBackwardFilter, || {
                conv::backward_filter::<T>(g, x, dy)
            });
            Ok((T::to_cpu_storage_owned(packed), shape))
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ds: &CudaStorage,
        dl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (g, op) = (&self.0, &self.1);
        let packed = profile::timed_cuda(Kernel::ConvBackwardFilter, &xs.device, || {
            cuda::conv::backward_filter(g, (op.math, op.format), (xs, xl), (ds, dl))
        })?;
        Ok((packed, Shape::from(g.co * g.kk() + g.co)))
    }
}

/// Batch statistics of a training-mode BatchNorm call, for its running averages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchStats {
    pub mean: Vec<f64>,
    /// Biased variance.
    pub var: Vec<f64>,
}

/// `relu(γ·(x − μ)/√(σ² + ε) + β)` with the batch's statistics; also returns them.
pub fn batch_norm_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    let op = BatchNormRelu {
        eps,
        running: None,
        saved: Arc::new(Mutex::new(BatchStats::default())),
    };
    let saved = op.saved.clone();
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let stats = saved
        .lock()
        .expect("the forward pass does not panic")
        .clone();
    Ok((y, stats))
}

/// `relu(γ·(x − μ)/√(σ² + ε) + β)` with given (running) statistics.
pub fn batch_norm_relu_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running: BatchStats,
    eps: f64,
) -> Result<Tensor> {
    let op = BatchNormRelu {
        eps,
        running: Some(running),
        saved: Arc::new(Mutex::new(BatchStats::default())),
    };
    x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}

struct BatchNormRelu {
    eps: f64,
    /// Inference mode: normalise with these.
    running: Option<BatchStats>,
    /// Training mode: the batch statistics, written by the forward pass.
    saved: Arc<Mutex<BatchStats>>,
}

fn bn_geom(l: &Layout) -> Result<BnGeom> {
    let [n, c, h, w] = dims4(l)?;
    Ok(BnGeom { n, c, hw: h * w })
}

/// A tensor's values on the host, flattened, in f64.
pub(crate) fn host_f64(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

impl BatchNormRelu {
    fn stats(&self) -> BatchStats {
        match &self.running {
            Some(r) => r.clone(),
            None => self
                .saved
                .lock()
                .expect("the forward pass does not panic")
                .clone(),
        }
    }
}

impl CustomOp3 for BatchNormRelu {
    fn name(&self) -> &'static str {
        "stepwise-batch-norm-relu"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = bn_geom(xl)?;
        timed(Kernel::BatchNormReluForward, || {
            by_dtype!(self.name(), xs, |T| {
                let x = slice::<T>(xs, xl)?;
                let stats = match &self.running {
                    Some(r) => r.clone(),
                    None => {
                        let (mean, var) = batchnorm::channel_stats(&g, x);
                        let stats = BatchStats { mean, var };
                        *self.saved.lock().expect("not poisoned") = stats.clone();
                        stats
                    }
                };
                let gamma = slice::<T>(gs, gl)?;
                let beta = slice::<T>(bs, bl)?;
                if stats.mean.len() != g.c || gamma.len() != g.c || beta.len() != g.c {
                    bail!(
                        "batch-norm: {} channels but {} parameters",
                        g.c,
                        gamma.len()
                    );
                }
                let to_f64 = |v: &[T]| v.iter().map(|e| e.to_f64()).collect::<Vec<_>>();
                let affine = batchnorm::Affine::new(
                    &to_f64(gamma),
                    &to_f64(beta),
                    &stats.mean,
                    &batchnorm::invstd(&stats.var, self.eps),
                );
                let y = batchnorm::scale_shift_relu(&g, x, &affine);
                Ok((T::to_cpu_storage_owned(y), xl.shape().clone()))
            })
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = self.stats();
        let (gamma, invstd) = (host_f64(gamma)?, batchnorm::invstd(&stats.var, self.eps));
        let saved = BnBackward {
            affine: batchnorm::Affine::new(&gamma, &host_f64(beta)?, &stats.mean, &invstd),
            gamma,
            invstd,
            mean: stats.mean,
            batch_stats: self.running.is_none(),
        };
        let c = saved.gamma.len();
        let packed = x.apply_op2_no_bwd(&dy.contiguous()?, &BatchNormReluBackward(saved))?;
        let n = x.elem_count();
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, c)?;
        let dbeta = packed.narrow(0, n + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

struct BatchNormReluBackward(BnBackward);

impl CustomOp2 for BatchNormReluBackward {
    fn name(&self) -> &'static str {
        "stepwise-batch-norm-relu-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = bn_geom(xl)?;
        let shape = Shape::from(xl.shape().elem_count() + 2 * g.c);
        by_dtype!(self.name(), xs, |T| {
            let (x, dy) = (slice(xs, xl)?, slice(ds, dl)?);
            let packed = timed(Kernel::BatchNormReluBackward, || {
                batchnorm::backward::<T>(&g, &self.0, x, dy)
            });
            Ok((T::to_cpu_storage_owned(packed), shape))
        })
    }
}
