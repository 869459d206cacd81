//! The custom ops on CUDA, for f32 and bf16 activations in NCHW or channels-last memory
//! ([`MemoryFormat`]): convolution through cuDNN ([`conv`]), and BatchNorm+ReLU (f32
//! parameters and statistics) and the SGD-momentum update (f32) as stepwise's own kernels
//! (`kernels.cu`, compiled to PTX by build.rs). Everything runs on the device's one stream,
//! without host synchronisation.
//!
//! Raw device pointers: kernels receive the addresses of candle storages. Kernels that
//! update state in place (running statistics, parameters, momentum) write through the
//! address of a storage held under its read guard; this is sound because candle issues all
//! work of a device on that one stream, so the write is ordered after every earlier read and
//! before every later one, and no host code reads device memory directly.
#![allow(unsafe_code)]

pub mod conv;
pub mod graph;

use super::launch::{self, Dims};
use super::profile::{timed_cuda, Kernel};
use super::{MemoryFormat, OnDevice, SgdUpdate};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    result, sys, sys::CUdeviceptr, CudaFunction, CudaSlice, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, DeviceId, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor,
};
use half::bf16;
use std::sync::Mutex;

use crate::layers::{BN_EPS, BN_MOMENTUM};
use std::cell::RefCell;
use std::collections::HashMap;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));

/// CUDA device `ordinal`, without cudarc's per-buffer event tracking: candle issues all of
/// a device's work on one stream, so stream order already synchronises every access, and the
/// events would cost a driver call per kernel argument. Its memory pool keeps freed memory
/// ([`keep_freed_memory`]).
pub fn new_device(ordinal: usize) -> Result<candle_core::Device> {
    let device = candle_core::Device::new_cuda(ordinal)?;
    if let candle_core::Device::Cuda(d) = &device {
        // Safety: one stream per device (above); tensors are created after this call.
        unsafe { d.disable_event_tracking() };
        if let Err(e) = keep_freed_memory(d) {
            // A speed setting: the device works without it.
            tracing::warn!("the CUDA memory pool keeps CUDA's default release threshold: {e}");
        }
    }
    Ok(device)
}

/// The device's current memory pool (its default one: nothing here sets another), which
/// cudarc's stream-ordered allocations take every tensor from; `None` where the device has
/// no pools (cudarc then allocates directly).
fn memory_pool(dev: &CudaDevice) -> Result<Option<sys::CUmemoryPool>> {
    let context = dev.cuda_stream().context().clone();
    if !context.has_async_alloc() {
        return Ok(None);
    }
    // Safety: the device of a live context.
    let pool = unsafe { result::device::get_mem_pool(context.cu_device()) }.w()?;
    Ok(Some(pool))
}

/// Sets the pool's release threshold from CUDA's default, 0, to the largest value: with 0,
/// every synchronisation — each loss, hit count or statistic read back — hands all memory
/// not in use back to the driver, and the next batch maps it in again. Kept, a pool holds
/// at most what was once in use at one time, so the peak is unchanged; PyTorch's caching
/// allocator keeps memory likewise, and NVIDIA's own pool wrappers (CCCL, RMM) raise this
/// threshold to the maximum too.
fn keep_freed_memory(dev: &CudaDevice) -> Result<()> {
    let Some(pool) = memory_pool(dev)? else {
        return Ok(());
    };
    let mut threshold = u64::MAX;
    // Safety: a valid pool; the attribute's value is a u64, read during the call.
    unsafe {
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&raw mut threshold).cast(),
        )
    }
    .w()
}

/// Hands the memory the pool keeps but nothing uses back to the driver: before a CUDA
/// graph's first launch maps the graph's own memory (a separate pool), so that what the
/// eager steps before its capture used serves the graph rather than being held twice.
/// Memory freed by work still queued is kept; callers run it after a synchronisation. A
/// failure leaves the memory held, which costs memory, not correctness: it is logged.
fn release_freed_memory(dev: &CudaDevice) {
    let trimmed = memory_pool(dev).and_then(|pool| match pool {
        // Safety: a valid pool.
        Some(pool) => unsafe { result::mem_pool::trim_to(pool, 0) }.w(),
        None => Ok(()),
    });
    if let Err(e) = trimmed {
        tracing::warn!("releasing the CUDA memory pool's unused memory: {e}");
    }
}

/// Whether the CUDA kernels serve tensors like `x`.
pub fn serves(x: &Tensor) -> bool {
    x.device().is_cuda() && matches!(x.dtype(), DType::F32 | DType::BF16)
}

/// The suffix of a kernel's instantiation for activations of `dtype` (see kernels.cu).
fn suffix(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        d => bail!("stepwise CUDA kernels take f32 or bf16, not {d:?}"),
    }
}

fn function(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    Ok(dev
        .get_or_load_custom_func(name, "stepwise-kernels", PTX)?
        .into_cuda_function())
}

/// Kernel `name` instantiated for activations of `dtype` in memory `format`.
fn function_for(
    dev: &CudaDevice,
    name: &str,
    dtype: DType,
    format: MemoryFormat,
) -> Result<CudaFunction> {
    let layout = match format {
        MemoryFormat::Nchw => "",
        MemoryFormat::ChannelsLast => "_nhwc",
    };
    function(dev, &format!("{name}{layout}_{}", suffix(dtype)?))
}

/// The device address of a storage's contiguous f32 or bf16 contents under `layout`. The
/// event guard cudarc returns is dropped at once: all work is on one stream, whose order is
/// the only synchronisation needed (see [`new_device`], which turns event tracking off).
fn address(s: &CudaStorage, l: &Layout) -> Result<CUdeviceptr> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("stepwise CUDA kernels need contiguous tensors");
    };
    let stream = s.device.cuda_stream();
    let ptr = match s.dtype() {
        DType::F32 => {
            s.as_cuda_slice::<f32>()?
                .slice(start..end)
                .device_ptr(&stream)
                .0
        }
        DType::BF16 => {
            s.as_cuda_slice::<bf16>()?
                .slice(start..end)
                .device_ptr(&stream)
                .0
        }
        d => bail!("stepwise CUDA kernels take f32 or bf16, not {d:?}"),
    };
    Ok(ptr)
}

/// [`address`] of a tensor's storage.
fn tensor_address(t: &Tensor) -> Result<CUdeviceptr> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cuda(s) => address(s, layout),
        _ => bail!("expected a CUDA tensor"),
    }
}

/// A new storage of `len` values of `dtype` (f32 or bf16), and its address.
fn alloc(dev: &CudaDevice, dtype: DType, len: usize) -> Result<(CudaStorage, CUdeviceptr)> {
    // Safety: every element is written by the kernel that follows.
    let storage = match dtype {
        DType::F32 => CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<f32>(len)? }, dev.clone()),
        DType::BF16 => {
            CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<bf16>(len)? }, dev.clone())
        }
        d => bail!("stepwise CUDA kernels take f32 or bf16, not {d:?}"),
    };
    let ptr = address(&storage, &Layout::contiguous(len))?;
    Ok((storage, ptr))
}

/// A launch of (grid, block) dimensions from [`launch`](super::launch).
fn launch_config(([gx, gy, gz], [bx, by, bz]): Dims) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (gx, gy, gz),
        block_dim: (bx, by, bz),
        shared_mem_bytes: 0,
    }
}

/// Scratch memory of the per-channel reductions (see kernels.cu): partial sums, and per
/// channel a counter of finished blocks that the last block resets to zero. Reused by every
/// reduction of the device, which one stream runs one after another.
struct Scratch {
    partials: CudaSlice<f64>,
    counters: CudaSlice<u32>,
}

thread_local! {
    static SCRATCH: RefCell<HashMap<DeviceId, Scratch>> = RefCell::new(HashMap::new());
}

/// Launch geometry ([`launch::reduction`]) and scratch addresses of a reduction over `c`
/// channels of `m` elements each.
fn reduction(
    dev: &CudaDevice,
    format: MemoryFormat,
    c: usize,
    m: usize,
) -> Result<(LaunchConfig, u64, u64)> {
    let dims = launch::reduction(format, c, m);
    let splits = dims.0[0] as usize;
    let (partials_len, counters_len) = (2 * c * splits, c);
    SCRATCH.with(|all| {
        let mut all = all.borrow_mut();
        let grow = all
            .get(&dev.id())
            .is_none_or(|s| s.partials.len() < partials_len || s.counters.len() < counters_len);
        if grow {
            let stream = dev.cuda_stream();
            all.insert(
                dev.id(),
                Scratch {
                    partials: stream.alloc_zeros::<f64>(partials_len.max(4096)).w()?,
                    counters: stream.alloc_zeros::<u32>(counters_len.max(1024)).w()?,
                },
            );
        }
        let s = &all[&dev.id()];
        let stream = dev.cuda_stream();
        let (partials, _) = s.partials.device_ptr(&stream);
        let (counters, _) = s.counters.device_ptr(&stream);
        Ok((launch_config(dims), partials, counters))
    })
}

/// Sizes as the kernels take them: 32-bit, below 2³¹ elements.
fn u32_size(n: usize) -> Result<u32> {
    match u32::try_from(n) {
        Ok(v) if v < 1 << 31 => Ok(v),
        _ => bail!("tensor of {n} elements: the CUDA kernels take fewer than 2^31"),
    }
}

/// `sums[ch]` = the sum of `dy` (N, C, HW in memory `format`) over images and positions, both
/// of `dtype`.
pub(super) fn channel_sum(
    dev: &CudaDevice,
    (dtype, format): (DType, MemoryFormat),
    dy: CUdeviceptr,
    (n, c, hw): (usize, usize, usize),
    sums: CUdeviceptr,
) -> Result<()> {
    let (config, partials, counters) = reduction(dev, format, c, n * hw)?;
    let f = function_for(dev, "channel_sum", dtype, format)?;
    let stream = dev.cuda_stream();
    let (n, c, hw) = (u32_size(n)?, u32_size(c)?, u32_size(hw)?);
    let mut b = stream.launch_builder(&f);
    b.arg(&dy)
        .arg(&n)
        .arg(&c)
        .arg(&hw)
        .arg(&sums)
        .arg(&partials)
        .arg(&counters);
    // Safety: `dy` holds N·C·HW and `sums` C f32 values; scratch as `reduction` sized it.
    unsafe { b.launch(config) }.w()?;
    Ok(())
}

/// `y` (N, C, HW in memory `format`) += `bias` per channel [+ `add`], in place, all of
/// `dtype`.
pub(super) fn add_channel_bias(
    dev: &CudaDevice,
    (dtype, format): (DType, MemoryFormat),
    y: CUdeviceptr,
    bias: CUdeviceptr,
    add: Option<CUdeviceptr>,
    (n, c, hw): (usize, usize, usize),
) -> Result<()> {
    u32_size(n * c * hw)?;
    let f = function_for(dev, "add_channel_bias", dtype, format)?;
    let stream = dev.cuda_stream();
    let (n32, c32, hw32) = (u32_size(n)?, u32_size(c)?, u32_size(hw)?);
    // The kernel reads no addend through a null pointer.
    let add = add.unwrap_or(0);
    let mut b = stream.launch_builder(&f);
    b.arg(&y)
        .arg(&bias)
        .arg(&add)
        .arg(&n32)
        .arg(&c32)
        .arg(&hw32);
    // Safety: `y` and `add` (unless null) hold N·C·HW and `bias` C values of `dtype`; `y`
    // is written in place (see the module comment).
    unsafe { b.launch(launch_config(launch::elementwise(format, (n, c, hw)))) }.w()?;
    Ok(())
}

/// (N, C, H·W) of an activation tensor in memory `format`.
fn dims4(l: &Layout, format: MemoryFormat) -> Result<(usize, usize, usize)> {
    let [n, c, h, w] = format.nchw(super::dims4(l)?);
    Ok((n, c, h * w))
}

fn no_cpu<T>(name: &str) -> Result<T> {
    bail!("{name} runs on CUDA only")
}

/// `relu(bn(x))` on CUDA, with PyTorch's ε and momentum ([`BN_EPS`], [`BN_MOMENTUM`]), `x`
/// in memory `format`. In training mode with the batch's statistics, updating `running_mean`
/// and `running_var` in place; otherwise with them.
pub fn batch_norm_relu(
    x: &Tensor,
    (gamma, beta): (&Tensor, &Tensor),
    (running_mean, running_var): (&Tensor, &Tensor),
    train: bool,
    format: MemoryFormat,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    // The kernels read the mean and the variance through one pointer each: the two halves
    // of the batch statistics, or the running statistics themselves (no copy).
    let (mean, var) = if train {
        let stats = x.apply_op1_no_bwd(&BatchStats {
            running_mean: running_mean.clone(),
            running_var: running_var.clone(),
            momentum: BN_MOMENTUM,
            format,
        })?;
        (stats.get(0)?, stats.get(1)?)
    } else {
        (running_mean.clone(), running_var.clone())
    };
    x.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        BatchNormRelu {
            mean,
            var,
            eps: BN_EPS,
            batch_stats: train,
            format,
        },
    )
}

/// (2, C): the batch mean and biased variance per channel; updates the running averages.
struct BatchStats {
    running_mean: Tensor,
    running_var: Tensor,
    momentum: f64,
    format: MemoryFormat,
}

impl CustomOp1 for BatchStats {
    fn name(&self) -> &'static str {
        "stepwise-batch-stats"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        no_cpu(self.name())
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        timed_cuda(Kernel::BatchNormStats, &xs.device, || {
            let (n, c, hw) = dims4(xl, self.format)?;
            let dev = &xs.device;
            let x = address(xs, xl)?;
            let (stats, out) = alloc(dev, DType::F32, 2 * c)?;
            let (rm, rv) = (
                tensor_address(&self.running_mean)?,
                tensor_address(&self.running_var)?,
            );
            let (config, partials, counters) = reduction(dev, self.format, c, n * hw)?;
            let f = function_for(dev, "bn_stats", xs.dtype(), self.format)?;
            let stream = dev.cuda_stream();
            let (n, c32, hw) = (u32_size(n)?, u32_size(c)?, u32_size(hw)?);
            let m = self.momentum as f32;
            let mut b = stream.launch_builder(&f);
            b.arg(&x)
                .arg(&n)
                .arg(&c32)
                .arg(&hw)
                .arg(&out)
                .arg(&rm)
                .arg(&rv);
            b.arg(&m).arg(&partials).arg(&counters);
            // Safety: the arguments match the kernel's signature; sizes come from the layout.
            unsafe { b.launch(config) }.w()?;
            Ok((stats, Shape::from((2, c))))
        })
    }
}

struct BatchNormRelu {
    /// (C,) mean and biased variance.
    mean: Tensor,
    var: Tensor,
    eps: f64,
    /// Whether the statistics are the batch's own (their gradient terms are then included).
    batch_stats: bool,
    format: MemoryFormat,
}

impl CustomOp3 for BatchNormRelu {
    fn name(&self) -> &'static str {
        "stepwise-batch-norm-relu-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        no_cpu(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        timed_cuda(Kernel::BatchNormReluForward, &xs.device, || {
            let (n, c, hw) = dims4(xl, self.format)?;
            if gl.shape().elem_count() != c || bl.shape().elem_count() != c {
                bail!("batch-norm: {c} channels but {:?} parameters", gl.dims());
            }
            if gs.dtype() != DType::F32 || bs.dtype() != DType::F32 {
                bail!("batch-norm: the CUDA kernels take f32 parameters");
            }
            let dev = &xs.device;
            let total = xl.shape().elem_count();
            let (x, gamma, beta) = (address(xs, xl)?, address(gs, gl)?, address(bs, bl)?);
            let (mean, var) = (tensor_address(&self.mean)?, tensor_address(&self.var)?);
            let (y, out) = alloc(dev, xs.dtype(), total)?;
            let f = function_for(dev, "bn_relu_fwd", xs.dtype(), self.format)?;
            let stream = dev.cuda_stream();
            u32_size(total)?;
            let (eps, n32, c32, hw32) =
                (self.eps as f32, u32_size(n)?, u32_size(c)?, u32_size(hw)?);
            let mut b = stream.launch_builder(&f);
            b.arg(&x).arg(&mean).arg(&var).arg(&gamma).arg(&beta);
            b.arg(&eps).arg(&n32).arg(&c32).arg(&hw32).arg(&out);
            // Safety: as in `BatchStats`.
            unsafe { b.launch(launch_config(launch::elementwise(self.format, (n, c, hw)))) }.w()?;
            Ok((y, xl.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = gamma.elem_count();
        let op = BatchNormReluBackward {
            mean: self.mean.clone(),
            var: self.var.clone(),
            gamma: gamma.clone(),
            eps: self.eps,
            batch_stats: self.batch_stats,
            format: self.format,
            params: Mutex::new(None),
        };
        let dx = x.apply_op3_no_bwd(y, &dy.contiguous()?, &op)?;
        let params = op
            .params
            .lock()
            .expect("not poisoned")
            .take()
            .expect("written by the op");
        let params = Tensor::from_storage(Storage::Cuda(params), 2 * c, BackpropOp::none(), false);
        let dgamma = params.narrow(0, 0, c)?;
        let dbeta = params.narrow(0, c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// dx; dγ and dβ go to a storage of their own, so that holding the small parameter
/// gradients until the optimizer step does not keep the activation-sized dx alive.
struct BatchNormReluBackward {
    mean: Tensor,
    var: Tensor,
    gamma: Tensor,
    eps: f64,
    batch_stats: bool,
    format: MemoryFormat,
    /// (dγ, dβ), written by the forward pass.
    params: Mutex<Option<CudaStorage>>,
}

impl CustomOp3 for BatchNormReluBackward {
    fn name(&self) -> &'static str {
        "stepwise-batch-norm-relu-backward-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        no_cpu(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ys: &CudaStorage,
        yl: &Layout,
        ds: &CudaStorage,
        dl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        timed_cuda(Kernel::BatchNormReluBackward, &xs.device, || {
            let (n, c, hw) = dims4(xl, self.format)?;
            if ys.dtype() != xs.dtype() || ds.dtype() != xs.dtype() {
                bail!("batch-norm backward: input, output and gradient dtypes differ");
            }
            let dev = &xs.device;
            let total = xl.shape().elem_count();
            let (x, y, dy) = (address(xs, xl)?, address(ys, yl)?, address(ds, dl)?);
            let (mean, var) = (tensor_address(&self.mean)?, tensor_address(&self.var)?);
            let gamma = tensor_address(&self.gamma)?;
            let (dx_storage, dx) = alloc(dev, xs.dtype(), total)?;
            let (params, dgamma) = alloc(dev, DType::F32, 2 * c)?;
            let dbeta = dgamma + 4 * c as u64;
            let (config, partials, counters) = reduction(dev, self.format, c, n * hw)?;
            let stream = dev.cuda_stream();
            let (eps, n32, c32, hw32) =
                (self.eps as f32, u32_size(n)?, u32_size(c)?, u32_size(hw)?);
            let reduce = function_for(dev, "bn_relu_bwd_reduce", xs.dtype(), self.format)?;
            let mut b = stream.launch_builder(&reduce);
            b.arg(&x).arg(&y).arg(&dy).arg(&mean).arg(&var).arg(&eps);
            b.arg(&n32).arg(&c32).arg(&hw32).arg(&dgamma).arg(&dbeta);
            b.arg(&partials).arg(&counters);
            // Safety: as in `BatchStats`; dβ follows dγ in `params`.
            unsafe { b.launch(config) }.w()?;
            let apply = function_for(dev, "bn_relu_bwd_dx", xs.dtype(), self.format)?;
            u32_size(total)?;
            let batch_stats = i32::from(self.batch_stats);
            let mut b = stream.launch_builder(&apply);
            b.arg(&x).arg(&y).arg(&dy).arg(&mean).arg(&var).arg(&gamma);
            b.arg(&dgamma)
                .arg(&dbeta)
                .arg(&eps)
                .arg(&n32)
                .arg(&c32)
                .arg(&hw32);
            b.arg(&batch_stats).arg(&dx);
            // Safety: as above.
            unsafe { b.launch(launch_config(launch::elementwise(self.format, (n, c, hw)))) }.w()?;
            *self.params.lock().expect("not poisoned") = Some(params);
            Ok((dx_storage, xl.shape().clone()))
        })
    }
}

/// Tensors per SGD launch; `SGD_MAX_TENSORS` in kernels.cu.
const SGD_MAX_TENSORS: usize = 32;

/// The kernel parameter of `sgd_momentum_f32`, laid out as `struct SgdTensors` there.
#[repr(C)]
#[derive(Clone, Copy)]
struct SgdTensors {
    p: [CUdeviceptr; SGD_MAX_TENSORS],
    g: [CUdeviceptr; SGD_MAX_TENSORS],
    buf: [CUdeviceptr; SGD_MAX_TENSORS],
    n: [u32; SGD_MAX_TENSORS],
    lr: [f32; SGD_MAX_TENSORS],
    momentum: [f32; SGD_MAX_TENSORS],
    wd: [f32; SGD_MAX_TENSORS],
    nesterov: [i32; SGD_MAX_TENSORS],
}

// Safety: plain old data in the C layout the kernel reads.
unsafe impl DeviceRepr for SgdTensors {}

/// PyTorch's SGD-momentum step on every parameter and momentum buffer in place, one kernel
/// launch per [`SGD_MAX_TENSORS`] tensors; with `on_device`, the learning rate and the
/// finiteness check read from device memory.
pub fn sgd_step(updates: &[SgdUpdate], on_device: Option<OnDevice>) -> Result<()> {
    let (lr_on_device, loss): (CUdeviceptr, CUdeviceptr) = match on_device {
        Some(d) => {
            for t in [d.lr, d.loss] {
                if t.dtype() != DType::F32 || t.elem_count() != 1 {
                    bail!("sgd_step: the on-device learning rate and loss are f32 scalars");
                }
            }
            (tensor_address(d.lr)?, tensor_address(d.loss)?)
        }
        None => (0, 0),
    };
    for chunk in updates.chunks(SGD_MAX_TENSORS) {
        let Some(dev) = cuda_device(chunk[0].param) else {
            bail!("sgd_step: expected CUDA tensors");
        };
        let mut t = SgdTensors {
            p: [0; SGD_MAX_TENSORS],
            g: [0; SGD_MAX_TENSORS],
            buf: [0; SGD_MAX_TENSORS],
            n: [0; SGD_MAX_TENSORS],
            lr: [0.0; SGD_MAX_TENSORS],
            momentum: [0.0; SGD_MAX_TENSORS],
            wd: [0.0; SGD_MAX_TENSORS],
            nesterov: [0; SGD_MAX_TENSORS],
        };
        // Contiguous gradients, held until the launch is queued.
        let mut grads = Vec::with_capacity(chunk.len());
        let mut largest = 0;
        for (k, u) in chunk.iter().enumerate() {
            let n = u.param.elem_count();
            if u.grad.elem_count() != n || u.momentum_buffer.elem_count() != n {
                bail!("sgd_step: parameter, gradient and buffer sizes differ");
            }
            if [u.param, u.grad, u.momentum_buffer]
                .iter()
                .any(|t| t.dtype() != DType::F32)
            {
                bail!("sgd_step: the CUDA kernel takes f32 tensors");
            }
            if cuda_device(u.param).is_none_or(|d| d.id() != dev.id()) {
                bail!("sgd_step: the parameters are not all on one CUDA device");
            }
            let grad = u.grad.contiguous()?;
            t.p[k] = tensor_address(u.param)?;
            t.g[k] = tensor_address(&grad)?;
            t.buf[k] = tensor_address(u.momentum_buffer)?;
            t.n[k] = u32_size(n)?;
            t.lr[k] = u.step.lr as f32;
            t.momentum[k] = u.step.momentum as f32;
            t.wd[k] = u.step.weight_decay as f32;
            t.nesterov[k] = i32::from(u.step.nesterov);
            grads.push(grad);
            largest = largest.max(n);
        }
        let config = launch_config(launch::sgd(largest, chunk.len()));
        let f = function(&dev, "sgd_momentum_f32")?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&t).arg(&lr_on_device).arg(&loss);
        // Safety: per tensor k < chunk.len(), three f32 buffers of n[k] elements; the two
        // scalars null or f32; see the module comment on in-place writes.
        unsafe { b.launch(config) }.w()?;
    }
    Ok(())
}

fn cuda_device(t: &Tensor) -> Option<CudaDevice> {
    match t.device() {
        candle_core::Device::Cuda(d) => Some(d.clone()),
        _ => None,
    }
}
