//! Convolutions through cuDNN: forward (+ bias), input gradient, weight gradient; the bias
//! gradient is stepwise's channel-sum kernel.
//! Per thread and device: one cuDNN handle on candle's stream, one persistent workspace that
//! only grows, and per convolution shape a plan — descriptors plus the algorithm of each
//! direction, found once by timing every candidate (as PyTorch's `cudnn.benchmark`). The
//! fastest deterministic algorithm is taken, so that two runs on one machine agree. Strict
//! fp32: the FMA math type rules out TF32 tensor cores.

use super::super::conv::ConvGeom;
use super::address;
use candle_core::cuda_backend::cudarc::cudnn::{result, sys, CudnnError};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, DeviceId, WrapErr};
use candle_core::{Layout, Result};
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
    plans: RefCell<HashMap<ConvGeom, Rc<Plan>>>,
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

impl Context {
    fn plan(&self, g: &ConvGeom) -> Result<Rc<Plan>> {
        if let Some(p) = self.plans.borrow().get(g) {
            return Ok(p.clone());
        }
        let plan = Rc::new(Plan::new(self.handle, g).map_err(wrap)?);
        self.plans.borrow_mut().insert(*g, plan.clone());
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

const F32: sys::cudnnDataType_t = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
const NCHW: sys::cudnnTensorFormat_t = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;

fn tensor_desc(dims: [usize; 4]) -> std::result::Result<TensorDesc, CudnnError> {
    let d = TensorDesc(result::create_tensor_descriptor()?);
    let dims = dims.map(|v| v as i32);
    // Safety: a fresh descriptor.
    unsafe { result::set_tensor4d_descriptor(d.0, NCHW, F32, dims) }?;
    Ok(d)
}

struct Plan {
    x: TensorDesc,
    y: TensorDesc,
    bias: TensorDesc,
    w: FilterDesc,
    conv: ConvDesc,
    forward: (sys::cudnnConvolutionFwdAlgo_t, usize),
    backward_data: (sys::cudnnConvolutionBwdDataAlgo_t, usize),
    backward_filter: (sys::cudnnConvolutionBwdFilterAlgo_t, usize),
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
            Some(p) => (p.algo, p.memory),
            None => return Err(CudnnError(sys::cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED)),
        }
    }};
}

impl Plan {
    fn new(handle: sys::cudnnHandle_t, g: &ConvGeom) -> std::result::Result<Self, CudnnError> {
        let x = tensor_desc([g.n, g.c, g.h, g.w])?;
        let y = tensor_desc([g.n, g.co, g.ho(), g.wo()])?;
        let bias = tensor_desc([1, g.co, 1, 1])?;
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
            result::set_filter4d_descriptor(w.0, F32, NCHW, [g.co as i32, g.c as i32, k, k])?;
            result::set_convolution2d_descriptor(
                conv.0, pad, pad, stride, stride, 1, 1, mode, F32,
            )?;
            result::set_convolution_math_type(conv.0, sys::cudnnMathType_t::CUDNN_FMA_MATH)?;
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
                bias,
                w,
                conv,
            })
        }
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

/// y = conv(x, w) + b, into a new storage.
pub fn forward(
    g: &ConvGeom,
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    (bs, bl): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = device_of(xs);
    let ctx = context(dev)?;
    let plan = ctx.plan(g)?;
    let len = g.n * g.co * g.p();
    let (ys, y) = super::alloc(dev, len)?;
    let (algo, bytes) = plan.forward;
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
            plan.conv.0,
            algo,
            work,
            work_len,
            scalar(&ZERO),
            plan.y.0,
            y as *mut c_void,
        )
        .result()
        .map_err(wrap)?;
        sys::cudnnAddTensor(
            ctx.handle,
            scalar(&ONE),
            plan.bias.0,
            ptr(bs, bl)?,
            scalar(&ONE),
            plan.y.0,
            y as *mut c_void,
        )
        .result()
        .map_err(wrap)?;
    }
    Ok(ys)
}

/// dx = convᵀ(dy, w), into a new storage.
pub fn backward_data(
    g: &ConvGeom,
    (ds, dl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = device_of(ds);
    let ctx = context(dev)?;
    let plan = ctx.plan(g)?;
    let (dxs, dx) = super::alloc(dev, g.n * g.c * g.h * g.w)?;
    let (algo, bytes) = plan.backward_data;
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
            plan.conv.0,
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
    (xs, xl): (&CudaStorage, &Layout),
    (ds, dl): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = device_of(xs);
    let ctx = context(dev)?;
    let plan = ctx.plan(g)?;
    let weights = g.co * g.kk();
    let (packed, dw) = super::alloc(dev, weights + g.co)?;
    let db = dw + 4 * weights as u64;
    let (algo, bytes) = plan.backward_filter;
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
            plan.conv.0,
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
    super::channel_sum(dev, dy as u64, (g.n, g.co, g.p()), db)?;
    Ok(packed)
}
