//! Convolutions through cuDNN: forward (+ bias), input gradient, weight gradient; the bias
//! gradient is stepwise's channel-sum kernel.
//! Per thread and device: one cuDNN handle on candle's stream, one persistent workspace that
//! only grows, and per convolution shape a plan — descriptors plus the algorithm of each
//! direction, found once by timing every candidate (as PyTorch's `cudnn.benchmark`). The
//! fastest deterministic algorithm is taken, so that two runs on one machine agree.
//! f32 tensors: [`ConvMath::Exact`] sets the FMA math type, which rules out TF32 tensor
//! cores; [`ConvMath::Tf32`] the default math type, which lets cuDNN time TF32 tensor-core
//! algorithms too (PyTorch's settings for `allow_tf32` off and on). bf16 tensors run
//! on tensor cores with f32 accumulation (cuDNN's pseudo-bf16 configuration) either way.
//! Activations and weights are NCHW or both channels-last ([`MemoryFormat`]; weights then
//! (C_out, k, k, C_in)), the layout of cuDNN's tensor-core kernels, which it otherwise
//! transposes to and from around each call.
//! The bias (and a residual block's shortcut) is added by stepwise's own kernel.

use super::super::conv::ConvGeom;
use super::super::{ConvMath, MemoryFormat};
use super::address;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::{result, sys, CudnnError};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, DeviceId, WrapErr};
use candle_core::{DType, Layout, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;

/// Algorithms needing more workspace than this are passed over.
const MAX_WORKSPACE: usize = 1 << 30;

thread_local! {
    static CONTEXTS: RefCell<HashMap<DeviceId, Rc<Context>>> = RefCell::new(HashMap::new());
}

fn wrap(e: CudnnError) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(e))
}

struct Context {
    handle: sys::cudnnHandle_t,
    device: CudaDevice,
    plans: RefCell<HashMap<(ConvGeom, Settings, DType), Rc<Plan>>>,
    workspace: RefCell<Option<CudaSlice<u8>>>,
}

impl Drop for Context {
    fn drop(&mut self) {
        // Safety: the handle was created by this context and is destroyed once.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

fn context(dev: &CudaDevice) -> Result<Rc<Context>> {
    CONTEXTS.with(|contexts| {
        if let Some(c) = contexts.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let handle = result::create_handle().map_err(wrap)?;
        let stream = dev.cuda_stream();
        // Safety: a fresh handle, bound to candle's stream of this device.
        unsafe { result::set_stream(handle, stream.cu_stream() as sys::cudaStream_t) }
            .map_err(wrap)?;
        let c = Rc::new(Context {
            handle,
            device: dev.clone(),
            plans: RefCell::default(),
            workspace: RefCell::default(),
        });
        contexts.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// How a convolution multiplies, and the memory format of its tensors.
pub type Settings = (ConvMath, MemoryFormat);

impl Context {
    fn plan(&self, g: &ConvGeom, settings: Settings, dtype: DType) -> Result<Rc<Plan>> {
        let key = (*g, settings, dtype);
        if let Some(p) = self.plans.borrow().get(&key) {
            return Ok(p.clone());
        }
        let data_type = match dtype {
            DType::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            DType::BF16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
            d => candle_core::bail!("cuDNN convolutions: f32 or bf16, not {d:?}"),
        };
        let plan = Rc::new(Plan::new(self.handle, g, settings, data_type).map_err(wrap)?);
        self.plans.borrow_mut().insert(key, plan.clone());
        Ok(plan)
    }

    /// The workspace, at least `bytes` long, as (address, size).
    fn workspace(&self, bytes: usize) -> Result<(*mut c_void, usize)> {
        let mut ws = self.workspace.borrow_mut();
        if ws.as_ref().is_none_or(|w| w.len() < bytes) {
            *ws = None;
            *ws = Some(
                self.device
                    .cuda_stream()
                    .alloc_zeros::<u8>(bytes.max(1))
                    .w()?,
            );
        }
        let w = ws.as_mut().expect("allocated above");
        let len = w.len();
        let stream = self.device.cuda_stream();
        let (ptr, _record) = w.device_ptr_mut(&stream);
        Ok((ptr as *mut c_void, len))
    }
}

struct TensorDesc(sys::cudnnTensorDescriptor_t);
struct FilterDesc(sys::cudnnFilterDescriptor_t);
struct ConvDesc(sys::cudnnConvolutionDescriptor_t);

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // Safety: created in `tensor_desc`, destroyed once.
        let _ = unsafe { result::destroy_tensor_descriptor(self.0) };
    }
}
impl Drop for FilterDesc {
    fn drop(&mut self) {
        // Safety: created in `Plan::new`, destroyed once.
        let _ = unsafe { result::destroy_filter_descriptor(self.0) };
    }
}
impl Drop for ConvDesc {
    fn drop(&mut self) {
        // Safety: created in `Plan::new`, destroyed once.
        let _ = unsafe { result::destroy_convolution_descriptor(self.0) };
    }
}

/// The accumulation type of every convolution.
const F32: sys::cudnnDataType_t = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;

fn cudnn_format(format: MemoryFormat) -> sys::cudnnTensorFormat_t {
    match format {
        MemoryFormat::Nchw => sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
        MemoryFormat::ChannelsLast => sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
    }
}

/// A tensor of sizes (n, c, h, w) in memory `format`.
fn tensor_desc(
    dims: [usize; 4],
    data: sys::cudnnDataType_t,
    format: MemoryFormat,
) -> std::result::Result<TensorDesc, CudnnError> {
    let d = TensorDesc(result::create_tensor_descriptor()?);
    let dims = dims.map(|v| v as i32);
    // Safety: a fresh descriptor.
    unsafe { result::set_tensor4d_descriptor(d.0, cudnn_format(format), data, dims) }?;
    Ok(d)
}

/// A direction's algorithm: the algorithm, its workspace in bytes, and the math type it was
/// timed with (which must be set on the convolution descriptor before it runs).
type Chosen<A> = (A, usize, sys::cudnnMathType_t);

struct Plan {
    x: TensorDesc,
    y: TensorDesc,
    w: FilterDesc,
    conv: ConvDesc,
    forward: Chosen<sys::cudnnConvolutionFwdAlgo_t>,
    backward_data: Chosen<sys::cudnnConvolutionBwdDataAlgo_t>,
    backward_filter: Chosen<sys::cudnnConvolutionBwdFilterAlgo_t>,
}

/// Of cuDNN's timed candidates (fastest first), the first that succeeded, is deterministic
/// and fits the workspace limit; else the first that succeeded.
macro_rules! choose {
    ($perf:expr, $count:expr) => {{
        let ok = $perf[..$count as usize]
            .iter()
            .filter(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
            .filter(|p| p.memory <= MAX_WORKSPACE);
        let chosen = ok
            .clone()
            .find(|p| p.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC)
            .or_else(|| ok.clone().next());
        match chosen {
            Some(p) => (p.algo, p.memory, p.mathType),
            None => return Err(CudnnError(sys::cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED)),
        }
    }};
}

impl Plan {
    fn new(
        handle: sys::cudnnHandle_t,
        g: &ConvGeom,
        (math, format): Settings,
        data_type: sys::cudnnDataType_t,
    ) -> std::result::Result<Self, CudnnError> {
        let x = tensor_desc([g.n, g.c, g.h, g.w], data_type, format)?;
        let y = tensor_desc([g.n, g.co, g.ho(), g.wo()], data_type, format)?;
        let w = FilterDesc(result::create_filter_descriptor()?);
        let conv = ConvDesc(result::create_convolution_descriptor()?);
        let (pad, stride) = (g.pad as i32, g.stride as i32);
        let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
        const N: usize = 8;
        let (mut fwd, mut data, mut filter) = (0, 0, 0);
        // Safety: fresh descriptors; the perf arrays hold N entries and cuDNN writes at
        // most the requested N.
        unsafe {
            let k = g.k as i32;
            let dims = [g.co as i32, g.c as i32, k, k];
            result::set_filter4d_descriptor(w.0, data_type, cudnn_format(format), dims)?;
            result::set_convolution2d_descriptor(
                conv.0, pad, pad, stride, stride, 1, 1, mode, F32,
            )?;
            // As PyTorch: FMA rules TF32 out, the default math allows it for f32 data, and
            // bf16 data takes tensor cores.
            let math = match (math, data_type == F32) {
                (ConvMath::Exact, true) => sys::cudnnMathType_t::CUDNN_FMA_MATH,
                (ConvMath::Tf32, true) => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
                (_, false) => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            };
            result::set_convolution_math_type(conv.0, math)?;
            let mut fwd_perf = [std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>(); N];
            sys::cudnnFindConvolutionForwardAlgorithm(
                handle,
                x.0,
                w.0,
                conv.0,
                y.0,
                N as i32,
                &mut fwd,
                fwd_perf.as_mut_ptr(),
            )
            .result()?;
            let mut data_perf = [std::mem::zeroed::<sys::cudnnConvolutionBwdDataAlgoPerf_t>(); N];
            sys::cudnnFindConvolutionBackwardDataAlgorithm(
                handle,
                w.0,
                y.0,
                conv.0,
                x.0,
                N as i32,
                &mut data,
                data_perf.as_mut_ptr(),
            )
            .result()?;
            let mut filter_perf =
                [std::mem::zeroed::<sys::cudnnConvolutionBwdFilterAlgoPerf_t>(); N];
            sys::cudnnFindConvolutionBackwardFilterAlgorithm(
                handle,
                x.0,
                y.0,
                conv.0,
                w.0,
                N as i32,
                &mut filter,
                filter_perf.as_mut_ptr(),
            )
            .result()?;
            Ok(Self {
                forward: choose!(fwd_perf, fwd),
                backward_data: choose!(data_perf, data),
                backward_filter: choose!(filter_perf, filter),
                x,
                y,
                w,
                conv,
            })
        }
    }

    /// The convolution descriptor, set to the math type an algorithm was timed with.
    fn conv_with(&self, math: sys::cudnnMathType_t) -> Result<sys::cudnnConvolutionDescriptor_t> {
        // Safety: the descriptor is this plan's own; setting the math type is host-side.
        unsafe { result::set_convolution_math_type(self.conv.0, math) }.map_err(wrap)?;
        Ok(self.conv.0)
    }
}

fn device_of(s: &CudaStorage) -> &CudaDevice {
    &s.device
}

fn ptr(s: &CudaStorage, l: &Layout) -> Result<*mut c_void> {
    Ok(address(s, l)? as *mut c_void)
}

const ONE: f32 = 1.0;
const ZERO: f32 = 0.0;
fn scalar(v: &f32) -> *const c_void {
    v as *const f32 as *const c_void
}

/// y = conv(x, w) + b [+ add], into a new storage; `add` is shaped as y.
pub fn forward(
    g: &ConvGeom,
    settings: Settings,
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    (bs, bl): (&CudaStorage, &Layout),
    add: Option<(&CudaStorage, &Layout)>,
) -> Result<CudaStorage> {
    let dev = device_of(xs);
    let dtype = xs.dtype();
    if ws.dtype() != dtype || bs.dtype() != dtype || add.is_some_and(|a| a.0.dtype() != dtype) {
        candle_core::bail!("conv2d: input, weight, bias and addend dtypes differ");
    }
    let add = add.map(|(s, l)| super::address(s, l)).transpose()?;
    let ctx = context(dev)?;
    let plan = ctx.plan(g, settings, dtype)?;
    let len = g.n * g.co * g.p();
    let (ys, y) = super::alloc(dev, dtype, len)?;
    let bias = super::address(bs, bl)?;
    let (algo, bytes, algo_math) = plan.forward;
    let conv = plan.conv_with(algo_math)?;
    let (work, work_len) = ctx.workspace(bytes)?;
    // Safety: descriptors match the buffers' shapes (built from the same geometry).
    unsafe {
        sys::cudnnConvolutionForward(
            ctx.handle,
            scalar(&ONE),
            plan.x.0,
            ptr(xs, xl)?,
            plan.w.0,
            ptr(ws, wl)?,
            conv,
            algo,
            work,
            work_len,
            scalar(&ZERO),
            plan.y.0,
            y as *mut c_void,
        )
        .result()
        .map_err(wrap)?;
    }
    let shape = (g.n, g.co, g.p());
    super::add_channel_bias(dev, (dtype, settings.1), y, bias, add, shape)?;
    Ok(ys)
}

/// dx = convᵀ(dy, w), into a new storage.
pub fn backward_data(
    g: &ConvGeom,
    settings: Settings,
    (ds, dl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = device_of(ds);
    let dtype = ds.dtype();
    if ws.dtype() != dtype {
        candle_core::bail!("conv2d backward: gradient and weight dtypes differ");
    }
    let ctx = context(dev)?;
    let plan = ctx.plan(g, settings, dtype)?;
    let (dxs, dx) = super::alloc(dev, dtype, g.n * g.c * g.h * g.w)?;
    let (algo, bytes, algo_math) = plan.backward_data;
    let conv = plan.conv_with(algo_math)?;
    let (work, work_len) = ctx.workspace(bytes)?;
    // Safety: as in `forward`.
    unsafe {
        sys::cudnnConvolutionBackwardData(
            ctx.handle,
            scalar(&ONE),
            plan.w.0,
            ptr(ws, wl)?,
            plan.y.0,
            ptr(ds, dl)?,
            conv,
            algo,
            work,
            work_len,
            scalar(&ZERO),
            plan.x.0,
            dx as *mut c_void,
        )
        .result()
        .map_err(wrap)?;
    }
    Ok(dxs)
}

/// (dw, db) packed in one vector, as the CPU kernel returns them.
pub fn backward_filter(
    g: &ConvGeom,
    settings: Settings,
    (xs, xl): (&CudaStorage, &Layout),
    (ds, dl): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = device_of(xs);
    let dtype = xs.dtype();
    if ds.dtype() != dtype {
        candle_core::bail!("conv2d backward: input and gradient dtypes differ");
    }
    let ctx = context(dev)?;
    let plan = ctx.plan(g, settings, dtype)?;
    let weights = g.co * g.kk();
    let (packed, dw) = super::alloc(dev, dtype, weights + g.co)?;
    let db = dw + (dtype.size_in_bytes() * weights) as u64;
    let (algo, bytes, algo_math) = plan.backward_filter;
    let conv = plan.conv_with(algo_math)?;
    let (work, work_len) = ctx.workspace(bytes)?;
    let dy = ptr(ds, dl)?;
    // Safety: as in `forward`.
    unsafe {
        sys::cudnnConvolutionBackwardFilter(
            ctx.handle,
            scalar(&ONE),
            plan.x.0,
            ptr(xs, xl)?,
            plan.y.0,
            dy,
            conv,
            algo,
            work,
            work_len,
            scalar(&ZERO),
            plan.w.0,
            dw as *mut c_void,
        )
        .result()
        .map_err(wrap)?;
    }
    let shape = (g.n, g.co, g.p());
    super::channel_sum(dev, (dtype, settings.1), dy as u64, shape, db)?;
    Ok(packed)
}
