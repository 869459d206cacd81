//! Training throughput: the loop's own step on random data already on the device.

use crate::trainer::train_step;
use crate::{Result, Sgd, SgdConfig};
use candle_core::{Device, Tensor};
use cifar::rng::{rng, Stream};
use domain::{ModelSpec, TrainSpec};
use rand::Rng;
use rand_distr::StandardNormal;
use resnet::loss::cross_entropy;
use resnet::memory::{memory_of, Work};
use resnet::ops::profile::{self, KernelTime};
use resnet::ops::MemoryFormat;
use resnet::{synchronize, BnMode, Dtypes, ResNet};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub arch: String,
    pub depth: u32,
    pub dtype: String,
    /// The activations' memory format, `Nchw` or `ChannelsLast`.
    pub memory_format: String,
    pub device: String,
    pub batch: usize,
    pub warmup_steps: usize,
    pub steps: usize,
    /// Median over the timed steps.
    pub ms_per_step: f64,
    pub images_per_second: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub trainable_params: usize,
    /// Whether the timed steps were replays of a CUDA graph.
    pub cuda_graph: bool,
    /// [`resnet::memory::estimate`] of the step's peak use of the device's memory, for
    /// comparison with the driver's figure (or the process's peak resident memory).
    pub estimated_peak_mib: u64,
    /// What a step's autograd graph keeps alive for its backward pass
    /// ([`resnet::memory::graph_bytes`]): the activations, counted the same on every device.
    pub graph_mib: f64,
    /// With profiling: each kernel's mean time and calls per timed step; the rest of the
    /// step (candle's own ops, autograd, an update off the SGD kernel) is `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<KernelTime>>,
}

/// How a timed step runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepMode {
    /// The training loop's own step (which reads the loss and the hits back).
    #[default]
    Loop,
    /// Each kernel timed as well (on CUDA by events on the stream around each).
    Profiled,
    /// The trainer's step on CUDA: captured once as a CUDA graph and replayed.
    CudaGraph,
}

/// Times `steps` training steps (forward, backward, SGD update) after `warmup` untimed ones,
/// the activations in `memory_format` (else the device's choice, as in training:
/// [`Dtypes::for_precision_on`]).
pub fn bench_train(
    spec: &ModelSpec,
    (batch, warmup, steps): (usize, usize, usize),
    mode: StepMode,
    memory_format: Option<MemoryFormat>,
    device: &Device,
) -> Result<BenchResult> {
    let layout = spec.layout()?;
    let mut dtypes = Dtypes::for_precision_on(spec.dtype, device);
    if let Some(format) = memory_format {
        dtypes.memory_format = format;
    }
    let model = ResNet::new(&layout, &mut rng(0, Stream::Init, 0, 0), device, dtypes)?;
    resnet::memory::check(Work::Training, &layout, model.dtypes(), batch, device)?;
    let mut optimizer = Sgd::new(
        model.parameters(),
        SgdConfig::from_spec(&TrainSpec::default()),
    )?;
    let mut r = rng(0, Stream::Augment, 0, 0);
    let pixels: Vec<f32> = (0..batch * 3 * 32 * 32)
        .map(|_| r.sample::<f32, _>(StandardNormal))
        .collect();
    let labels: Vec<u32> = (0..batch)
        .map(|_| r.random_range(0..spec.classes))
        .collect();
    let x = Tensor::from_vec(pixels, (batch, 3, 32, 32), device)?;
    let y = Tensor::from_vec(labels, batch, device)?;
    let sizes = (warmup, steps);
    // Counted before the timed steps, whose memory a device's driver figure then reflects
    // alone.
    let graph_bytes = (|| -> Result<usize> {
        let loss = cross_entropy(&model.forward(&x, BnMode::Train)?, &y)?;
        Ok(resnet::memory::graph_bytes(&loss))
    })()
    .map_err(|e| e.name_batch_if_out_of_memory(Work::Training, batch))?;
    let mut times = match mode {
        // The trainer's graph steps: the second full batch is captured, so at least two run
        // untimed.
        #[cfg(feature = "cuda")]
        StepMode::CudaGraph => {
            let mut graph_steps = crate::graph_step::GraphSteps::new();
            let step = || graph_steps.step(&model, &mut optimizer, (&x, &y), 0.01);
            timed_steps(step, device, (warmup.max(2), steps), mode)
        }
        #[cfg(not(feature = "cuda"))]
        StepMode::CudaGraph => Err(candle_core::Error::Msg(
            "CUDA graphs need a build with the cuda feature".into(),
        )
        .into()),
        _ => {
            let step = || train_step(&model, &mut optimizer, &x, &y, 0.01);
            timed_steps(step, device, sizes, mode)
        }
    }
    .map_err(|e| e.name_batch_if_out_of_memory(Work::Training, batch))?;
    let kernels = (mode == StepMode::Profiled)
        .then(|| profile::take().map(|totals| profile::per_run(totals, &times)))
        .transpose()?;
    profile::enable(false);
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(BenchResult {
        arch: spec.arch.to_string(),
        depth: domain::ModelSpec::depth_of(&layout),
        dtype: spec.dtype.as_str().to_string(),
        memory_format: dtypes.memory_format.as_str().into(),
        device: resnet::describe_device(device),
        batch,
        warmup_steps: warmup,
        steps,
        ms_per_step: median,
        images_per_second: batch as f64 / (median / 1e3),
        min_ms: times[0],
        max_ms: times[times.len() - 1],
        trainable_params: model.trainable_count(),
        cuda_graph: mode == StepMode::CudaGraph,
        estimated_peak_mib: resnet::memory::estimate(
            Work::Training,
            &layout,
            model.dtypes(),
            batch,
            memory_of(device),
        ) >> 20,
        graph_mib: graph_bytes as f64 / (1 << 20) as f64,
        kernels,
    })
}

/// Milliseconds of each of `steps` calls of `step` after `warmup` untimed ones, the device
/// synchronised after each; the timed ones profiled in [`StepMode::Profiled`].
fn timed_steps(
    mut step: impl FnMut() -> Result<(f64, usize)>,
    device: &Device,
    (warmup, steps): (usize, usize),
    mode: StepMode,
) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        if i == warmup {
            profile::enable(mode == StepMode::Profiled);
        }
        let started = Instant::now();
        step()?;
        synchronize(device)?;
        if i >= warmup {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times)
}
