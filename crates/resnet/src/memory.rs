//! GPU memory: an estimate of the peak a training step or an analysis pass needs, checked
//! against a budget before any work starts, and the device's out-of-memory errors
//! recognised, so that both end in an error naming the batch size to lower. Also what an
//! autograd graph keeps alive ([`graph_bytes`]), on any device.
//!
//! The budget is process-wide (`--gpu-memory` or `STEPWISE_GPU_MEMORY`): a limit of the
//! machine a process runs on, not of a run. Without one, the device's total memory is the
//! budget. CPU work is not checked.

use crate::{Dtypes, Error, Result};
use candle_core::{Device, Tensor};
use domain::ModelLayout;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the CUDA context, the cuDNN and cuBLAS handles, stepwise's kernels and cuDNN's
/// workspace take besides the tensors: 680–740 MiB on an H200 (driver peaks of ResNet-56
/// and ResNet-110 at batch 128 and 512, extrapolated to batch 0), rounded up.
const FIXED_BYTES: u64 = 1 << 30;

/// Values kept per value of a block's output during a training step: the block input,
/// the BatchNorm inputs, the convolution outputs, and the gradients in flight. Fitted to
/// driver peaks on an H200 (the slope from batch 128 to 512: 6.0 for ResNet-56, 5.0 for
/// ResNet-110) and rounded up; the measurements are in the test below.
const TRAINING_VALUES_PER_OUTPUT: u64 = 6;

/// The same for an analysis pass (the probed forward keeps what a training step keeps, plus
/// every block's residual and the gradient at every block input): 6.5 for ResNet-56, 6.3
/// for ResNet-110 at batch 500 (over a fixed part of 700 MiB), rounded up.
const ANALYSIS_VALUES_PER_OUTPUT: u64 = 7;

/// Parameter-sized tensors during training: the parameters, their gradients, the momentum
/// buffers and one temporary.
const TRAINING_COPIES_OF_PARAMETERS: u64 = 4;

/// Budget in bytes; 0: none set.
static BUDGET: AtomicU64 = AtomicU64::new(0);

/// Sets the process's GPU memory budget in bytes (`None`: the device's total memory).
pub fn set_budget(bytes: Option<u64>) {
    BUDGET.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// The work a memory estimate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Training,
    Analysis,
}

impl Work {
    /// What the batch size is called in a run spec.
    fn batch_field(self) -> &'static str {
        match self {
            Self::Training => "train.batch_size",
            Self::Analysis => "analysis.eval_batch",
        }
    }
}

impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Training => "training",
            Self::Analysis => "analysis",
        })
    }
}

/// Block-output values per example: the stem's output plus every block's.
fn activation_values(layout: &ModelLayout) -> u64 {
    let stem = u64::from(layout.stem_channels) * 32 * 32;
    let blocks: u64 = layout
        .blocks()
        .iter()
        .map(|b| b.out_shape.iter().map(|&d| u64::from(d)).product::<u64>())
        .sum();
    stem + blocks
}

/// An upper bound of the parameter count: every block with its own two 3×3 convolutions
/// and a projection, biases and BatchNorms (shared weights counted per block), plus the
/// stem and head.
fn parameter_values(layout: &ModelLayout) -> u64 {
    let blocks: u64 = layout
        .blocks()
        .iter()
        .map(|b| {
            let (c_in, c_out) = (u64::from(b.in_shape[0]), u64::from(b.out_shape[0]));
            9 * c_in * c_out + 9 * c_out * c_out + c_in * c_out + 4 * (c_in + c_out)
        })
        .sum();
    let stem = u64::from(layout.stem_channels) * (27 + 1);
    let last = layout
        .blocks()
        .last()
        .map_or(0, |b| u64::from(b.out_shape[0]));
    blocks + stem + (last + 1) * u64::from(layout.classes) + 2 * last
}

/// Estimated peak GPU memory in bytes of `work` on `layout` at batch size `batch`.
pub fn estimate(work: Work, layout: &ModelLayout, dtypes: Dtypes, batch: usize) -> u64 {
    let (per_output, parameter_copies) = match work {
        Work::Training => (TRAINING_VALUES_PER_OUTPUT, TRAINING_COPIES_OF_PARAMETERS),
        Work::Analysis => (ANALYSIS_VALUES_PER_OUTPUT, 1),
    };
    let value = dtypes.compute.size_in_bytes() as u64;
    let param = dtypes.params.size_in_bytes() as u64;
    FIXED_BYTES
        + parameter_copies * param * parameter_values(layout)
        + batch as u64 * per_output * value * activation_values(layout)
}

/// The largest batch size whose estimate fits `budget` bytes (0 if none does).
fn largest_batch(work: Work, layout: &ModelLayout, dtypes: Dtypes, budget: u64) -> usize {
    let base = estimate(work, layout, dtypes, 0);
    let per_example = estimate(work, layout, dtypes, 1) - base;
    (budget.saturating_sub(base) / per_example) as usize
}

/// The budget that applies on `device`: the one set, else the device's total memory; `None`
/// on the CPU.
fn budget_for(device: &Device) -> Result<Option<u64>> {
    if !device.is_cuda() {
        return Ok(None);
    }
    match BUDGET.load(Ordering::Relaxed) {
        0 => total_memory(device).map(Some),
        set => Ok(Some(set)),
    }
}

#[cfg(feature = "cuda")]
fn total_memory(device: &Device) -> Result<u64> {
    match device {
        Device::Cuda(d) => {
            let total = d.cuda_stream().context().total_mem();
            Ok(total.map_err(|e| candle_core::Error::Cuda(Box::new(e)))? as u64)
        }
        _ => Ok(u64::MAX),
    }
}

#[cfg(not(feature = "cuda"))]
fn total_memory(_: &Device) -> Result<u64> {
    Ok(u64::MAX)
}

/// Fails with [`Error::MemoryBudget`] when `work` at `batch` is estimated to need more GPU
/// memory than the budget on `device` (nothing is checked on the CPU).
pub fn check(
    work: Work,
    layout: &ModelLayout,
    dtypes: Dtypes,
    batch: usize,
    device: &Device,
) -> Result<()> {
    let Some(budget) = budget_for(device)? else {
        return Ok(());
    };
    check_against(work, layout, dtypes, batch, budget)
}

fn check_against(
    work: Work,
    layout: &ModelLayout,
    dtypes: Dtypes,
    batch: usize,
    budget: u64,
) -> Result<()> {
    let need = estimate(work, layout, dtypes, batch);
    if need <= budget {
        return Ok(());
    }
    Err(Error::MemoryBudget {
        work,
        batch,
        field: work.batch_field(),
        need_mib: need >> 20,
        budget_mib: budget >> 20,
        largest: largest_batch(work, layout, dtypes, budget),
    })
}

/// Whether `e` is a device allocation failing: the driver's out-of-memory, or cuDNN's or
/// cuBLAS's allocation failure.
pub fn is_out_of_memory(e: &candle_core::Error) -> bool {
    let text = e.to_string();
    text.contains("OUT_OF_MEMORY") || text.contains("ALLOC_FAILED")
}

/// `e`, as [`Error::OutOfMemory`] if it is the device running out of memory during `work`
/// at `batch`.
pub fn name_batch_if_out_of_memory(e: Error, work: Work, batch: usize) -> Error {
    match e {
        Error::Candle(c) if is_out_of_memory(&c) => Error::OutOfMemory {
            work,
            batch,
            field: work.batch_field(),
            lower: (batch / 2).max(1),
            detail: without_backtrace(&c),
        },
        e => e,
    }
}

/// `e`'s message without the backtrace candle attaches where `RUST_BACKTRACE` is set.
fn without_backtrace(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(inner),
        e => e.to_string(),
    }
}

/// Bytes of the intermediate tensors that `t`'s autograd graph keeps alive — what a backward
/// pass from `t` may read, variables (the parameters) not counted — each storage once however
/// many views share it. Device-independent: it counts what the graph holds, not what an
/// allocator reserved.
pub fn graph_bytes(t: &Tensor) -> usize {
    let mut seen = std::collections::HashSet::new();
    t.sorted_nodes()
        .into_iter()
        .filter(|node| !node.is_variable())
        .filter(|node| {
            // A storage's address identifies it while the graph holds it.
            let (storage, _) = node.storage_and_layout();
            seen.insert(&*storage as *const candle_core::Storage as usize)
        })
        .map(|node| node.elem_count() * node.dtype().size_in_bytes())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Arch, ModelSpec};

    fn resnet(depth: u32) -> ModelLayout {
        let mut spec = ModelSpec::new(Arch::Resnet);
        spec.depth = Some(depth);
        spec.layout().unwrap()
    }

    const F32: Dtypes = Dtypes {
        params: candle_core::DType::F32,
        compute: candle_core::DType::F32,
        conv_math: crate::ops::ConvMath::Exact,
        memory_format: crate::ops::MemoryFormat::Nchw,
    };

    #[test]
    fn estimates_lie_above_the_measured_h200_peaks_and_not_far() {
        // The largest driver peak of stepwise on an H200 over the loop and graph steps and
        // f32/TF32 (bench/results/h200-2026-11-28-*.json).
        let wide = || ModelSpec::new(Arch::Wide).layout().unwrap();
        let bf16 = Dtypes::for_precision(domain::Precision::Bf16);
        for (name, work, layout, dtypes, batch, measured_mib) in [
            ("resnet-56", Work::Training, resnet(56), F32, 128, 1520),
            ("resnet-56", Work::Training, resnet(56), F32, 512, 3920),
            ("resnet-110", Work::Training, resnet(110), F32, 128, 2064),
            ("resnet-110", Work::Training, resnet(110), F32, 512, 5936),
            ("wide", Work::Training, wide(), F32, 128, 4792),
            ("wide bf16", Work::Training, wide(), bf16, 128, 3124),
            ("resnet-56", Work::Analysis, resnet(56), F32, 500, 4082),
            ("resnet-110", Work::Analysis, resnet(110), F32, 500, 7090),
        ] {
            let mib = estimate(work, &layout, dtypes, batch) >> 20;
            assert!(
                mib >= measured_mib && mib <= measured_mib * 3 / 2,
                "{name} {work} batch {batch}: estimated {mib} MiB, measured {measured_mib}"
            );
        }
    }

    #[test]
    fn over_budget_names_the_largest_batch_that_fits() {
        let layout = resnet(110);
        let budget = 4 << 30;
        let err = check_against(Work::Training, &layout, F32, 4096, budget).unwrap_err();
        let Error::MemoryBudget { largest, .. } = &err else {
            panic!("{err}");
        };
        assert!(*largest > 0);
        assert!(estimate(Work::Training, &layout, F32, *largest) <= budget);
        assert!(estimate(Work::Training, &layout, F32, largest + 1) > budget);
        check_against(Work::Training, &layout, F32, *largest, budget).unwrap();
        let text = err.to_string();
        assert!(
            text.contains("train.batch_size") && text.contains(&largest.to_string()),
            "{text}"
        );
    }

    #[test]
    fn the_cpu_is_not_checked() {
        set_budget(Some(1));
        let result = check(Work::Training, &resnet(110), F32, 1 << 20, &Device::Cpu);
        set_budget(None);
        result.unwrap();
    }

    #[test]
    fn a_device_allocation_failure_names_the_batch_size_to_lower() {
        let oom = candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        );
        let e = name_batch_if_out_of_memory(Error::Candle(oom), Work::Analysis, 1000);
        let text = e.to_string();
        assert!(matches!(e, Error::OutOfMemory { lower: 500, .. }), "{text}");
        assert!(
            text.contains("eval_batch") && text.contains("1000"),
            "{text}"
        );
        let traced = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("CUDA_ERROR_OUT_OF_MEMORY".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        let e = name_batch_if_out_of_memory(Error::Candle(traced), Work::Training, 64);
        assert!(
            e.to_string()
                .ends_with("device error: CUDA_ERROR_OUT_OF_MEMORY"),
            "{e}"
        );
        let other = candle_core::Error::Msg("shape mismatch".into());
        let e = name_batch_if_out_of_memory(Error::Candle(other), Work::Training, 128);
        assert!(matches!(e, Error::Candle(_)));
    }
}
