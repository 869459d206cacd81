//! Memory: an estimate of the peak a training step, training's per-epoch evaluation or an
//! analysis pass needs, checked against a budget before any work starts, and the GPU's
//! out-of-memory errors recognised, so that both end in an error naming the batch size to
//! lower. Also what an autograd graph keeps alive ([`graph_bytes`]), on any device.
//!
//! Budgets are process-wide, one for the GPU and one for the host: a limit of the machine a
//! process runs on, not of a run. Without one given, a GPU's budget is the card's total
//! memory and the host's the memory available at the process's start (a cgroup's limit
//! counted, as in a container; see [`set_budget`]). The host check matters most: where a
//! GPU's allocation fails with an error, the host's out-of-memory killer ends the process
//! without one.

use crate::{Dtypes, Error, Result};
use candle_core::{Device, Tensor};
use domain::service::WorkerCapacity;
use domain::ModelLayout;
use std::sync::atomic::{AtomicU64, Ordering};

pub use domain::Memory;

/// The memory `device` computes in.
pub fn memory_of(device: &Device) -> Memory {
    if device.is_cuda() {
        Memory::Gpu
    } else {
        Memory::Host
    }
}

fn budget_cell(memory: Memory) -> &'static AtomicU64 {
    static GPU: AtomicU64 = AtomicU64::new(0);
    static HOST: AtomicU64 = AtomicU64::new(0);
    match memory {
        Memory::Gpu => &GPU,
        Memory::Host => &HOST,
    }
}

/// What work in `dtypes` takes in `memory`: on the host, stepwise's kernels serve f32 only;
/// bf16 runs through candle's own operations, as everything does under
/// `STEPWISE_REFERENCE_OPS=1` (`reference_ops`), which take several times the memory.
fn footprint(memory: Memory, dtypes: Dtypes, reference_ops: bool) -> Footprint {
    match memory {
        Memory::Gpu => GPU_FOOTPRINT,
        Memory::Host if dtypes.compute == candle_core::DType::BF16 => HOST_BF16_FOOTPRINT,
        Memory::Host if reference_ops => HOST_REFERENCE_FOOTPRINT,
        Memory::Host => HOST_FOOTPRINT,
    }
}

/// What a device's work takes besides the tensors the model's shape gives, and per value of
/// those tensors.
#[derive(Clone, Copy, Debug)]
struct Footprint {
    /// Bytes that do not grow with the batch or the model.
    fixed: u64,
    /// Values kept per value of a block's output during a training step: the block input,
    /// the BatchNorm inputs, the convolution outputs, the gradients in flight, and any
    /// scratch the kernels take.
    training_values_per_output: u64,
    /// The same for an analysis pass (the probed forward keeps what a training step keeps,
    /// plus every block's residual and the gradient at every block input).
    analysis_values_per_output: u64,
    /// Inference keeps no graph: a few tensors of the size of the largest block output are
    /// alive at once (the input, a block's intermediate and output, the kernels' scratch).
    inference_copies_of_largest_output: u64,
}

/// On the GPU the fixed part is the CUDA context, the cuDNN and cuBLAS handles, stepwise's
/// kernels and cuDNN's workspace: 680–740 MiB on an H200 (driver peaks of ResNet-56 and
/// ResNet-110 at batch 128 and 512, extrapolated to batch 0), rounded up. Values per
/// output fitted to driver peaks on an H200 and rounded up: training 6.0 for ResNet-56,
/// 5.0 for ResNet-110 (the slope from batch 128 to 512); analysis 6.5 and 6.3 at batch 500
/// (over a fixed part of 700 MiB); inference 12.9 copies at batch 1,000 (ResNet-56's
/// evaluation, the one batch size measured). The measurements are in the tests below.
const GPU_FOOTPRINT: Footprint = Footprint {
    fixed: 1 << 30,
    training_values_per_output: 6,
    analysis_values_per_output: 7,
    inference_copies_of_largest_output: 14,
};

/// On the host the fixed part is the process and its thread pools (60–130 MiB for
/// ResNet-20 and -56 besides the parameters, extrapolated to batch 0), rounded up. The
/// kernels' scratch (the convolutions' unfolded columns, per thread) makes the values per
/// output larger than the GPU's: peak resident memory on two cores gave training 6.4
/// (ResNet-56) to 7.7 (wide), analysis 7.7 (single) to 9.9 (ResNet-20) and inference 3.3
/// (single) to 6.4 (ResNet-20, whose stem unfolds 27 planes per image) copies over a
/// smaller fixed part, rounded; the measurements are in the tests below.
const HOST_FOOTPRINT: Footprint = Footprint {
    fixed: 192 << 20,
    training_values_per_output: 8,
    analysis_values_per_output: 10,
    inference_copies_of_largest_output: 5,
};

/// The host with candle's own operations in f32 (`STEPWISE_REFERENCE_OPS=1`): its
/// convolutions unfold whole batches, its BatchNorm is a chain of separate operations.
/// Measured as above: training 38.9 (ResNet-20) and 41.7 (ResNet-56) values per output,
/// analysis 34.0 and 36.0, inference 18.7 and 26.8 copies (25.2 in a repeat), rounded up.
const HOST_REFERENCE_FOOTPRINT: Footprint = Footprint {
    fixed: 192 << 20,
    training_values_per_output: 48,
    analysis_values_per_output: 40,
    inference_copies_of_largest_output: 30,
};

/// The host in bf16, always through candle's own operations (which keep f32 copies on the
/// way): training 40.9 (ResNet-20) to 43.8 (ResNet-56) values per output, analysis 70.9 and
/// 73.5, inference 51.1 and 56.2 copies, rounded up.
const HOST_BF16_FOOTPRINT: Footprint = Footprint {
    fixed: 192 << 20,
    training_values_per_output: 48,
    analysis_values_per_output: 80,
    inference_copies_of_largest_output: 60,
};

/// Parameter-sized tensors during training: the parameters, their gradients, the momentum
/// buffers and one temporary.
const TRAINING_COPIES_OF_PARAMETERS: u64 = 4;

/// Sets the process's budget of `memory` in bytes; `None`: the card's total memory for the
/// GPU, and for the host the memory available now — the binaries call this first thing, as
/// memory the process frees later stays with it for reuse ([`crate::allocator`]) and would
/// otherwise no longer count as available to its own next job. Without a call, the host's
/// budget is what is available at each check.
pub fn set_budget(memory: Memory, bytes: Option<u64>) {
    let bytes = bytes.or_else(|| (memory == Memory::Host).then(available_host_memory));
    budget_cell(memory).store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// A worker's start: sets the budgets (`None`: the default), opens `device` to fail early
/// if it cannot, and logs the budget that applies there; returns it, for the worker's
/// claims.
pub fn prepare_worker(
    device: domain::DeviceSpec,
    gpu: Option<u64>,
    host: Option<u64>,
) -> std::result::Result<WorkerCapacity, String> {
    set_budget(Memory::Gpu, gpu);
    set_budget(Memory::Host, host);
    let opened = crate::candle_device(device).map_err(|e| format!("STEPWISE_DEVICE: {e}"))?;
    let memory = memory_of(&opened);
    let bytes = budget(memory, &opened).map_err(|e| format!("{device}: {e}"))?;
    // Fixed for the process: the budget its claims carry is the one its errors report.
    set_budget(memory, Some(bytes));
    tracing::info!("{memory} budget on {device}: {} MiB", bytes >> 20);
    Ok(WorkerCapacity {
        memory,
        budget_mib: bytes >> 20,
    })
}

/// The work a memory estimate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Training,
    Analysis,
    /// Training's evaluation after every epoch: inference, and with `gradients` the
    /// gradient-norm ratio's backward passes too.
    EpochEvaluation {
        gradients: bool,
    },
    /// A checkpoint's evaluation (`stepwise eval`): inference.
    Evaluation,
}

impl Work {
    /// What the batch size is called in a run spec (and its flag on the command line).
    fn batch_field(self) -> &'static str {
        match self {
            Self::Training => "train.batch_size (--batch)",
            Self::Analysis => "analysis.eval_batch (--eval-batch)",
            Self::EpochEvaluation { .. } => "train.monitor.eval_batch_size",
            Self::Evaluation => "--batch",
        }
    }
}

impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Training => "training",
            Self::Analysis => "analysis",
            Self::EpochEvaluation { .. } => "the per-epoch evaluation",
            Self::Evaluation => "evaluation",
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

/// Values per example of the largest block output (or the stem's).
fn largest_output_values(layout: &ModelLayout) -> u64 {
    let stem = u64::from(layout.stem_channels) * 32 * 32;
    layout
        .blocks()
        .iter()
        .map(|b| b.out_shape.iter().map(|&d| u64::from(d)).product::<u64>())
        .fold(stem, u64::max)
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

/// Estimated peak use of `memory` in bytes by `work` on `layout` at batch size `batch`.
pub fn estimate(
    work: Work,
    layout: &ModelLayout,
    dtypes: Dtypes,
    batch: usize,
    memory: Memory,
) -> u64 {
    let footprint = footprint(memory, dtypes, crate::ops::reference_ops());
    estimate_with(footprint, work, layout, dtypes, batch)
}

/// [`estimate`] with `footprint`'s figures.
fn estimate_with(
    footprint: Footprint,
    work: Work,
    layout: &ModelLayout,
    dtypes: Dtypes,
    batch: usize,
) -> u64 {
    let (values_per_example, parameter_copies) = match work {
        Work::Training => (
            footprint.training_values_per_output * activation_values(layout),
            TRAINING_COPIES_OF_PARAMETERS,
        ),
        Work::Analysis | Work::EpochEvaluation { gradients: true } => (
            footprint.analysis_values_per_output * activation_values(layout),
            1,
        ),
        Work::EpochEvaluation { gradients: false } | Work::Evaluation => (
            footprint.inference_copies_of_largest_output * largest_output_values(layout),
            1,
        ),
    };
    let value = dtypes.compute.size_in_bytes() as u64;
    let param = dtypes.params.size_in_bytes() as u64;
    footprint.fixed
        + parameter_copies * param * parameter_values(layout)
        + batch as u64 * value * values_per_example
}

/// The largest batch size whose estimate fits `budget` bytes (0 if none does).
fn largest_batch(
    work: Work,
    layout: &ModelLayout,
    dtypes: Dtypes,
    budget: u64,
    memory: Memory,
) -> usize {
    let base = estimate(work, layout, dtypes, 0, memory);
    let per_example = estimate(work, layout, dtypes, 1, memory) - base;
    (budget.saturating_sub(base) / per_example) as usize
}

/// The budget of `memory`: the one set, else its default (see [`set_budget`]).
fn budget(memory: Memory, device: &Device) -> Result<u64> {
    match (budget_cell(memory).load(Ordering::Relaxed), memory) {
        (0, Memory::Gpu) => total_memory(device),
        (0, Memory::Host) => Ok(available_host_memory()),
        (set, _) => Ok(set),
    }
}

/// The host memory this process can still take: what the kernel counts as available, or
/// less where the process's cgroup (a container's limit) leaves less.
fn available_host_memory() -> u64 {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    let available = system.available_memory();
    match system.cgroup_limits() {
        // A cgroup without a limit reports the machine's total; its usage counts page
        // cache the kernel would reclaim, so it decides only where it is the limit.
        Some(cgroup) if cgroup.total_memory < system.total_memory() => {
            available.min(cgroup.free_memory)
        }
        _ => available,
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

/// Fails with [`Error::MemoryBudget`] when `work` at `batch` is estimated to need more of
/// `device`'s memory than its budget.
pub fn check(
    work: Work,
    layout: &ModelLayout,
    dtypes: Dtypes,
    batch: usize,
    device: &Device,
) -> Result<()> {
    let memory = memory_of(device);
    check_against(work, layout, dtypes, batch, memory, budget(memory, device)?)
}

fn check_against(
    work: Work,
    layout: &ModelLayout,
    dtypes: Dtypes,
    batch: usize,
    memory: Memory,
    budget: u64,
) -> Result<()> {
    let need = estimate(work, layout, dtypes, batch, memory);
    if need <= budget {
        return Ok(());
    }
    Err(Error::MemoryBudget {
        work,
        batch,
        memory,
        field: work.batch_field(),
        // Rounded up, the budget down: the need stays above the budget in whole MiB, as
        // the queue compares them.
        need_mib: need.div_ceil(1 << 20),
        budget_mib: budget >> 20,
        largest: largest_batch(work, layout, dtypes, budget, memory),
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
            budget_mib: match budget_cell(Memory::Gpu).load(Ordering::Relaxed) {
                0 => None,
                set => Some(set >> 20),
            },
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

    const TRAINING: Work = Work::Training;
    const ANALYSIS: Work = Work::Analysis;
    const EVALUATION: Work = Work::EpochEvaluation { gradients: false };

    fn layout(arch: Arch) -> ModelLayout {
        ModelSpec::new(arch).layout().unwrap()
    }

    /// Asserts that every estimate (with candle's own operations if `reference_ops`) lies at
    /// or above its measured peak and not far: at most 1.5 times it plus the fixed part
    /// (which dwarfs small inference passes).
    fn assert_estimates_bound(
        (memory, reference_ops): (Memory, bool),
        measured: impl IntoIterator<Item = (&'static str, Work, ModelLayout, Dtypes, usize, u64)>,
    ) {
        for (name, work, layout, dtypes, batch, measured_mib) in measured {
            let footprint = footprint(memory, dtypes, reference_ops);
            let fixed_mib = footprint.fixed >> 20;
            let mib = estimate_with(footprint, work, &layout, dtypes, batch) >> 20;
            assert!(
                mib >= measured_mib && mib <= measured_mib * 3 / 2 + fixed_mib,
                "{memory}, {name} {work} batch {batch}: \
                 estimated {mib} MiB, measured {measured_mib}"
            );
        }
    }

    #[test]
    fn gpu_estimates_lie_above_the_measured_h200_peaks_and_not_far() {
        // The largest driver peak of stepwise on an H200 over f32 and TF32 (and for training
        // over the loop and graph steps; bench/results/h200-2026-11-28-*.json).
        let bf16 = Dtypes::for_precision(domain::Precision::Bf16);
        let wide = || layout(Arch::Wide);
        assert_estimates_bound(
            (Memory::Gpu, false),
            [
                ("resnet-56", TRAINING, resnet(56), F32, 128, 1520),
                ("resnet-56", TRAINING, resnet(56), F32, 512, 3920),
                ("resnet-110", TRAINING, resnet(110), F32, 128, 2064),
                ("resnet-110", TRAINING, resnet(110), F32, 512, 5936),
                ("wide", TRAINING, wide(), F32, 128, 4792),
                ("wide bf16", TRAINING, wide(), bf16, 128, 3124),
                ("resnet-56", ANALYSIS, resnet(56), F32, 500, 4082),
                ("resnet-110", ANALYSIS, resnet(110), F32, 500, 7090),
                ("resnet-56", EVALUATION, resnet(56), F32, 1000, 1832),
                ("resnet-110", EVALUATION, resnet(110), F32, 1000, 1800),
            ],
        );
    }

    #[test]
    fn host_estimates_lie_above_the_measured_peaks_and_not_far() {
        // Peak resident memory (the kernel's ru_maxrss) of `stepwise bench train --steps 1`,
        // `bench analyze` and `bench eval` on a 2-core AMD EPYC, 2026-12-06
        // (`bench/cpu-memory.py`; bench/results/cpu-memory-2026-12-06.txt).
        let (wide, single, avgpool) = (
            || layout(Arch::Wide),
            || layout(Arch::Single),
            || layout(Arch::Avgpool),
        );
        assert_estimates_bound(
            (Memory::Host, false),
            [
                ("resnet-20", TRAINING, resnet(20), F32, 128, 405),
                ("resnet-20", TRAINING, resnet(20), F32, 512, 1450),
                ("resnet-56", TRAINING, resnet(56), F32, 128, 992),
                ("resnet-56", TRAINING, resnet(56), F32, 512, 3570),
                ("resnet-110", TRAINING, resnet(110), F32, 128, 1850),
                ("wide", TRAINING, wide(), F32, 16, 1268),
                ("wide", TRAINING, wide(), F32, 64, 3082),
                ("single", TRAINING, single(), F32, 64, 1814),
                ("avgpool", TRAINING, avgpool(), F32, 32, 1900),
                ("resnet-20", ANALYSIS, resnet(20), F32, 250, 868),
                ("resnet-20", ANALYSIS, resnet(20), F32, 1000, 3765),
                ("resnet-56", ANALYSIS, resnet(56), F32, 500, 4345),
                ("wide", ANALYSIS, wide(), F32, 32, 1706),
                ("wide", ANALYSIS, wide(), F32, 128, 5730),
                ("single", ANALYSIS, single(), F32, 100, 3430),
                // `stepwise analyze` of a ResNet-20 checkpoint, every metric, 1,000
                // examples of each split, the dataset (shapes10) counted too.
                ("resnet-20 all", ANALYSIS, resnet(20), F32, 500, 1829),
                ("resnet-20", EVALUATION, resnet(20), F32, 250, 125),
                ("resnet-20", EVALUATION, resnet(20), F32, 1000, 439),
                ("resnet-56", EVALUATION, resnet(56), F32, 1000, 440),
                ("wide", EVALUATION, wide(), F32, 256, 776),
                ("single", EVALUATION, single(), F32, 256, 381),
            ],
        );
    }

    #[test]
    fn host_estimates_with_candles_own_operations_lie_above_the_measured_peaks() {
        // As above, in bf16 and with STEPWISE_REFERENCE_OPS=1.
        let bf16 = Dtypes::for_precision(domain::Precision::Bf16);
        assert_estimates_bound(
            (Memory::Host, false),
            [
                ("resnet-20", TRAINING, resnet(20), bf16, 128, 1214),
                ("resnet-56", TRAINING, resnet(56), bf16, 128, 3126),
                ("wide", TRAINING, layout(Arch::Wide), bf16, 16, 2562),
                ("resnet-20", ANALYSIS, resnet(20), bf16, 250, 3647),
                ("resnet-56", ANALYSIS, resnet(56), bf16, 100, 4043),
                ("resnet-20", EVALUATION, resnet(20), bf16, 1000, 1790),
                ("resnet-56", EVALUATION, resnet(56), bf16, 500, 1070),
            ],
        );
        assert_estimates_bound(
            (Memory::Host, true),
            [
                ("resnet-20", TRAINING, resnet(20), F32, 128, 2130),
                ("resnet-56", TRAINING, resnet(56), F32, 128, 5778),
                ("resnet-20", ANALYSIS, resnet(20), F32, 250, 3523),
                ("resnet-56", ANALYSIS, resnet(56), F32, 100, 3965),
                ("resnet-20", EVALUATION, resnet(20), F32, 1000, 1366),
                ("resnet-56", EVALUATION, resnet(56), F32, 500, 978),
            ],
        );
    }

    #[test]
    fn over_budget_names_the_largest_batch_that_fits() {
        let layout = resnet(110);
        let budget = 4 << 30;
        for memory in [Memory::Gpu, Memory::Host] {
            let over = check_against(Work::Training, &layout, F32, 4096, memory, budget);
            let err = over.unwrap_err();
            let Error::MemoryBudget { largest, .. } = &err else {
                panic!("{err}");
            };
            assert!(*largest > 0);
            assert!(estimate(Work::Training, &layout, F32, *largest, memory) <= budget);
            assert!(estimate(Work::Training, &layout, F32, largest + 1, memory) > budget);
            check_against(Work::Training, &layout, F32, *largest, memory, budget).unwrap();
            let text = err.to_string();
            assert!(
                text.contains("train.batch_size")
                    && text.contains(&format!("to {largest} or less"))
                    && text.contains(memory.budget_setting()),
                "{text}"
            );
        }
        // A byte over the budget is a MiB over it, as the queue compares them.
        let need = estimate(Work::Training, &layout, F32, 128, Memory::Gpu);
        let just_over = check_against(Work::Training, &layout, F32, 128, Memory::Gpu, need - 1);
        let Err(Error::MemoryBudget {
            need_mib,
            budget_mib,
            ..
        }) = just_over
        else {
            panic!("{just_over:?}");
        };
        assert!(need_mib > budget_mib, "{need_mib} MiB, budget {budget_mib}");
        let err = check_against(Work::Analysis, &layout, F32, 1, Memory::Host, 1 << 20);
        let text = err.unwrap_err().to_string();
        assert!(
            text.contains("even a batch of one example does not fit") && text.contains("of memory"),
            "{text}"
        );
    }

    #[test]
    fn the_host_budget_is_what_is_available_unless_set() {
        let mut system = sysinfo::System::new();
        system.refresh_memory();
        let plausible = |bytes: u64| bytes > 0 && bytes <= system.total_memory();
        // Budgets are process-wide: nothing else in this test binary checks against one.
        let unset = budget(Memory::Host, &Device::Cpu).unwrap();
        assert!(plausible(unset), "{unset}");
        set_budget(Memory::Host, Some(1));
        assert_eq!(budget(Memory::Host, &Device::Cpu).unwrap(), 1);
        set_budget(Memory::Host, None);
        let default = budget(Memory::Host, &Device::Cpu).unwrap();
        assert!(plausible(default), "{default}");
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
        assert_eq!(e.memory_need(), None);
        // Under a worker's fixed budget the error says the job needs more than it, so that
        // a worker with a larger card may take it.
        set_budget(Memory::Gpu, Some(16_000 << 20));
        let oom = candle_core::Error::Msg("CUDA_ERROR_OUT_OF_MEMORY".into());
        let e = name_batch_if_out_of_memory(Error::Candle(oom), Work::Training, 64);
        assert_eq!(e.memory_need(), Some((Memory::Gpu, 16_001)));
        set_budget(Memory::Gpu, None);
    }
}
