//! Analysis throughput: the per-block pass (cosine and ℓ2 ratio with the full gradient, then
//! block dropping) on random images through a freshly initialised model, as
//! `bench/reference.py bench-analysis` times the same pass in PyTorch.

use crate::{analyze, Input, Result};
use candle_core::Device;
use cifar::rng::{rng, Stream};
use cifar::{Images, IMAGE_BYTES};
use domain::{AnalysisKind, AnalysisSpec, DataSpec, ModelSpec, Normalization, RunSpec, Split};
use rand::Rng;
use resnet::{Dtypes, ResNet};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct AnalysisBench {
    pub arch: String,
    pub depth: u32,
    pub device: String,
    pub examples: usize,
    pub batch: usize,
    /// The median of the timed repeats.
    pub seconds: f64,
    pub examples_per_second: f64,
    pub repeats: usize,
}

/// Times the cosine/ℓ2/drop analysis of `examples` random images, `repeats` times after one
/// untimed warm-up.
pub fn bench_analysis(
    model: &ModelSpec,
    examples: usize,
    batch: usize,
    repeats: usize,
    device: &Device,
) -> Result<AnalysisBench> {
    let layout = model.layout()?;
    let net = ResNet::new(
        &layout,
        &mut rng(0, Stream::Init, 0, 0),
        device,
        Dtypes::for_precision(model.dtype),
    )?;
    let mut r = rng(0, Stream::Augment, 0, 0);
    let images = Images {
        pixels: (0..examples * IMAGE_BYTES).map(|_| r.random()).collect(),
        labels: (0..examples)
            .map(|_| r.random_range(0..model.classes))
            .collect(),
    };
    let mut run = RunSpec::new(model.clone(), DataSpec::new("random"));
    run.data.normalization = Some(Normalization {
        mean: [127.5; 3],
        std: [64.0; 3],
    });
    let input = Input {
        model: &net,
        run: &run,
        epoch: 0,
        train: &images,
        test: &images,
    };
    let spec = AnalysisSpec {
        metrics: vec![AnalysisKind::Cosine, AnalysisKind::L2, AnalysisKind::Drop],
        splits: vec![Split::Test],
        max_examples: examples as u32,
        eval_batch: batch as u32,
        ..AnalysisSpec::default()
    };
    let mut times = Vec::with_capacity(repeats);
    for i in 0..=repeats {
        let analysis = analyze(&input, &spec)?;
        if i > 0 {
            times.push(analysis.seconds);
        }
    }
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    Ok(AnalysisBench {
        arch: model.arch.to_string(),
        depth: ModelSpec::depth_of(&layout),
        device: format!("{device:?}"),
        examples,
        batch,
        seconds,
        examples_per_second: examples as f64 / seconds,
        repeats,
    })
}
