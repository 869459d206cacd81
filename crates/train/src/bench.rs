//! Training throughput: the loop's own step on random data already on the device.

use crate::trainer::train_step;
use crate::{Result, Sgd, SgdConfig};
use candle_core::{Device, Tensor};
use cifar::rng::{rng, Stream};
use domain::{ModelSpec, TrainSpec};
use rand::Rng;
use rand_distr::StandardNormal;
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
}

/// Times `steps` training steps (forward, backward, SGD update) after `warmup` untimed ones.
pub fn bench_train(
    spec: &ModelSpec,
    batch: usize,
    warmup: usize,
    steps: usize,
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
        let started = Instant::now();
        train_step(&model, &mut optimizer, &x, &y, 0.01)?;
        synchronize(device)?;
        if i >= warmup {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
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
    })
}
