//! Per-kernel timers, off unless a benchmark turns them on: they show where a training step
//! or a pass goes (`stepwise bench train|eval|analyze --profile`). A CPU kernel runs to
//! completion inside its op call, so the wall-clock time of the call is the kernel's. CUDA
//! work runs asynchronously, so `timed_cuda` records an event on the stream before and
//! after the call and [`take`] adds up the GPU time between them: nothing is synchronised,
//! so a profiled step keeps its overlap of host and device. While the GPU waits for the host
//! (a launch-bound step), that wait falls between the events too and counts to the kernel.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The timed kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    ConvForward,
    ConvBackwardData,
    ConvBackwardFilter,
    BatchNormReluForward,
    BatchNormReluBackward,
    /// CUDA only: the batch statistics of a training-mode BatchNorm, a pass of their own
    /// there (on the CPU part of the forward kernel).
    BatchNormStats,
    SgdUpdate,
}

impl Kernel {
    const ALL: [Kernel; 7] = [
        Kernel::ConvForward,
        Kernel::ConvBackwardData,
        Kernel::ConvBackwardFilter,
        Kernel::BatchNormReluForward,
        Kernel::BatchNormReluBackward,
        Kernel::BatchNormStats,
        Kernel::SgdUpdate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::ConvForward => "conv_forward",
            Kernel::ConvBackwardData => "conv_backward_data",
            Kernel::ConvBackwardFilter => "conv_backward_filter",
            Kernel::BatchNormReluForward => "batch_norm_relu_forward",
            Kernel::BatchNormReluBackward => "batch_norm_relu_backward",
            Kernel::BatchNormStats => "batch_norm_stats",
            Kernel::SgdUpdate => "sgd_update",
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; Kernel::ALL.len()] = [const { AtomicU64::new(0) }; Kernel::ALL.len()];
static CALLS: [AtomicU64; Kernel::ALL.len()] = [const { AtomicU64::new(0) }; Kernel::ALL.len()];

/// Turns the timers on or off; either way they restart from zero.
pub fn enable(on: bool) {
    reset();
    ENABLED.store(on, Ordering::Relaxed);
}

fn reset() {
    for (n, c) in NANOS.iter().zip(&CALLS) {
        n.store(0, Ordering::Relaxed);
        c.store(0, Ordering::Relaxed);
    }
    #[cfg(feature = "cuda")]
    cuda_events::PENDING.with(|p| p.borrow_mut().clear());
}

fn add(kernel: Kernel, nanos: u64) {
    NANOS[kernel as usize].fetch_add(nanos, Ordering::Relaxed);
    CALLS[kernel as usize].fetch_add(1, Ordering::Relaxed);
}

/// Runs `f`, adding its wall-clock time to `kernel` when the timers are on.
pub(crate) fn timed<R>(kernel: Kernel, f: impl FnOnce() -> R) -> R {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let started = Instant::now();
    let r = f();
    add(kernel, started.elapsed().as_nanos() as u64);
    r
}

/// Runs `f`, which queues work on `device`'s stream, between two timing events when the
/// timers are on ([`take`] adds the GPU time between them to `kernel`). Never on while a
/// CUDA graph is captured.
#[cfg(feature = "cuda")]
pub(crate) fn timed_cuda<R>(
    kernel: Kernel,
    device: &candle_core::CudaDevice,
    f: impl FnOnce() -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
    use candle_core::cuda_backend::WrapErr;
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let stream = device.cuda_stream();
    let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let start = stream.record_event(timing).w()?;
    let r = f()?;
    let end = stream.record_event(timing).w()?;
    cuda_events::PENDING.with(|p| p.borrow_mut().push((kernel, start, end)));
    Ok(r)
}

/// The events of timed CUDA calls whose times [`take`] has not added yet (this thread's:
/// a device's work is queued from the thread that owns it).
#[cfg(feature = "cuda")]
mod cuda_events {
    use super::Kernel;
    use candle_core::cuda_backend::cudarc::driver::CudaEvent;
    use std::cell::RefCell;

    thread_local! {
        pub(super) static PENDING: RefCell<Vec<(Kernel, CudaEvent, CudaEvent)>> =
            const { RefCell::new(Vec::new()) };
    }

    /// Waits for the pending events and adds the time between each pair to its kernel.
    pub(super) fn resolve() -> candle_core::Result<()> {
        use candle_core::cuda_backend::WrapErr;
        PENDING.with(|p| {
            for (kernel, start, end) in p.borrow_mut().drain(..) {
                let ms = start.elapsed_ms(&end).w()?;
                super::add(kernel, (f64::from(ms) * 1e6) as u64);
            }
            Ok(())
        })
    }
}

/// Time and calls of one kernel since the timers were (re)started.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub calls: u64,
    pub ms: f64,
}

/// The kernels' totals since the last [`enable`] or [`take`] (waiting for the GPU's timed
/// work), then restarts them.
pub fn take() -> candle_core::Result<Vec<KernelTime>> {
    #[cfg(feature = "cuda")]
    cuda_events::resolve()?;
    let times = Kernel::ALL
        .iter()
        .map(|&k| KernelTime {
            kernel: k.name(),
            calls: CALLS[k as usize].load(Ordering::Relaxed),
            ms: NANOS[k as usize].load(Ordering::Relaxed) as f64 / 1e6,
        })
        .collect();
    reset();
    Ok(times)
}

/// Kernel totals over timed runs (training steps, evaluation or analysis passes) of
/// `run_ms` milliseconds each, as means per run, plus the rest of a run as `other`.
pub fn per_run(totals: Vec<KernelTime>, run_ms: &[f64]) -> Vec<KernelTime> {
    let runs = run_ms.len() as f64;
    let mut kernels: Vec<KernelTime> = totals
        .into_iter()
        .map(|k| KernelTime {
            calls: (k.calls as f64 / runs).round() as u64,
            ms: k.ms / runs,
            ..k
        })
        .collect();
    let in_kernels: f64 = kernels.iter().map(|k| k.ms).sum();
    kernels.push(KernelTime {
        kernel: "other",
        calls: 0,
        ms: run_ms.iter().sum::<f64>() / runs - in_kernels,
    });
    kernels
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn conv_once() {
        let x = Tensor::ones((1, 2, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::ones((3, 2, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        crate::ops::conv2d(&x, (&w, &b), None, 1, 1, Default::default()).unwrap();
    }

    fn forward(times: &[KernelTime]) -> &KernelTime {
        times.iter().find(|k| k.kernel == "conv_forward").unwrap()
    }

    #[test]
    fn counts_kernel_calls_only_while_enabled() {
        enable(true);
        conv_once();
        conv_once();
        let on = take().unwrap();
        enable(false);
        conv_once();
        let off = take().unwrap();
        // Other tests may run kernels at the same time, so at least our two calls.
        assert!(forward(&on).calls >= 2, "{on:?}");
        assert!(forward(&on).ms > 0.0);
        assert_eq!(forward(&off).calls, 0);
    }
}
