//! Training throughput: the loop's own step on random data already on the device.

use crate::trainer::train_step;
use crate::{Result, Sgd, SgdConfig};
use candle_core::{Device, Tensor};
use cifar::rng::{rng, Stream};
use domain::{ModelSpec, TrainSpec};
use rand::Rng;
use rand_distr::StandardNormal;
use resnet::ops::profile::{self, KernelTime};
use resnet::{synchronize, Dtypes, ResNet};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub arch: String,
    pub depth: u32,
    pub dtype: String,
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
    /// With profiling: each CPU kernel's mean time and calls per timed step; the rest of
    /// the step (candle's own ops, autograd, the optimizer) is `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<KernelTime>>,
}

/// Times `steps` training steps (forward, backward, SGD update) after `warmup` untimed ones;
/// with `profile`, also the CPU kernels within them.
pub fn bench_train(
    spec: &ModelSpec,
    batch: usize,
    warmup: usize,
    steps: usize,
    profile: bool,
    device: &Device,
) -> Result<BenchResult> {
    let layout = spec.layout()?;
    let model = ResNet::new(
        &layout,
        &mut rng(0, Stream::Init, 0, 0),
        device,
        Dtypes::for_precision(spec.dtype),
    )?;
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
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        if i == warmup {
            profile::enable(profile);
        }
        let started = Instant::now();
        train_step(&model, &mut optimizer, &x, &y, 0.01)?;
        synchronize(device)?;
        if i >= warmup {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let kernels = profile.then(|| per_step(profile::take(), &times));
    profile::enable(false);
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(BenchResult {
        arch: spec.arch.to_string(),
        depth: domain::ModelSpec::depth_of(&layout),
        dtype: spec.dtype.as_str().to_string(),
        device: format!("{device:?}"),
        batch,
        warmup_steps: warmup,
        steps,
        ms_per_step: median,
        images_per_second: batch as f64 / (median / 1e3),
        min_ms: times[0],
        max_ms: times[times.len() - 1],
        trainable_params: model.trainable_count(),
        kernels,
    })
}

/// Kernel totals over the timed steps as means per step, plus the rest of the step.
fn per_step(totals: Vec<KernelTime>, step_ms: &[f64]) -> Vec<KernelTime> {
    let steps = step_ms.len() as f64;
    let mut kernels: Vec<KernelTime> = totals
        .into_iter()
        .map(|k| KernelTime {
            calls: (k.calls as f64 / steps).round() as u64,
            ms: k.ms / steps,
            ..k
        })
        .collect();
    let in_kernels: f64 = kernels.iter().map(|k| k.ms).sum();
    kernels.push(KernelTime {
        kernel: "other",
        calls: 0,
        ms: step_ms.iter().sum::<f64>() / steps - in_kernels,
    });
    kernels
}
