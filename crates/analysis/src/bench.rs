//! Inference throughput on random images through a freshly initialised model, as
//! `bench/reference.py` times the same passes in PyTorch: the analysis (by default the
//! per-block pass: cosine and ℓ2 ratio with the full gradient, then block dropping; or the
//! unrolling), and evaluation (loss and accuracy, as the trainer evaluates every epoch).

use crate::{analyze, Error, Input, Result};
use candle_core::Device;
use cifar::rng::{rng, Stream};
use cifar::{Images, IMAGE_BYTES};
use domain::{AnalysisKind, AnalysisSpec, DataSpec, ModelSpec, Normalization, RunSpec, Split};
use rand::Rng;
use resnet::eval::Inputs;
use resnet::layers::with_frozen_parameters;
use resnet::memory::{graph_bytes, memory_of, Work};
use resnet::ops::profile::{self, KernelTime};
use resnet::{synchronize, Dtypes, ProbeOptions, ResNet};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct PassBench {
    /// `analysis` or `eval`.
    pub pass: &'static str,
    pub arch: String,
    pub depth: u32,
    pub dtype: &'static str,
    pub device: String,
    pub examples: usize,
    pub batch: usize,
    /// The median of the timed repeats.
    pub seconds: f64,
    pub examples_per_second: f64,
    pub repeats: usize,
    /// The analysis' metrics (not for evaluation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<AnalysisKind>>,
    /// What the autograd graph of one batch's probed pass keeps alive for its backward pass
    /// ([`resnet::memory::graph_bytes`], counted the same on every device); evaluation keeps
    /// no graph.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_mib: Option<f64>,
    /// [`resnet::memory::estimate`] of the pass's peak use of the device's memory (evaluation
    /// as training's after every epoch), for comparison with the driver's figure (or the
    /// process's peak resident memory).
    pub estimated_peak_mib: u64,
    /// With profiling: each kernel's time and calls per pass (`seconds` is then the profiled
    /// pass's), and the rest as `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<KernelTime>>,
}

/// A pass benchmark: how many examples, in which batches, how often, and whether its
/// kernels are profiled.
#[derive(Clone, Copy, Debug)]
pub struct PassSettings {
    pub examples: usize,
    pub batch: usize,
    pub repeats: usize,
    pub profile: bool,
}

/// The images are normalised with these (uint8 pixels to about [-2, 2]).
const NORMALIZATION: Normalization = Normalization {
    mean: [127.5; 3],
    std: [64.0; 3],
};

/// Times `pass` over `examples` random images `repeats` times after one untimed warm-up,
/// the timed ones profiled if asked; `pass` returns the seconds it took. An analysis names
/// its `metrics`; with the cosine, it also counts what the graph of its probed pass keeps.
fn bench_pass(
    name: &'static str,
    model: &ModelSpec,
    settings: PassSettings,
    device: &Device,
    pass: impl Fn(&ResNet, &Images) -> Result<f64>,
    metrics: Option<&[AnalysisKind]>,
) -> Result<PassBench> {
    let probed_graph = metrics.is_some_and(|m| m.contains(&AnalysisKind::Cosine));
    let PassSettings {
        examples,
        batch,
        repeats,
        profile,
    } = settings;
    let layout = model.layout()?;
    let net = ResNet::new(
        &layout,
        &mut rng(0, Stream::Init, 0, 0),
        device,
        Dtypes::for_precision_on(model.dtype, device),
    )?;
    let mut r = rng(0, Stream::Augment, 0, 0);
    let images = Images {
        pixels: (0..examples * IMAGE_BYTES).map(|_| r.random()).collect(),
        labels: (0..examples)
            .map(|_| r.random_range(0..model.classes))
            .collect(),
    };
    let mut times = Vec::with_capacity(repeats);
    for i in 0..=repeats {
        if i == 1 {
            profile::enable(profile);
        }
        let seconds = pass(&net, &images)?;
        if i > 0 {
            times.push(seconds);
        }
    }
    let run_ms: Vec<f64> = times.iter().map(|s| s * 1e3).collect();
    let kernels = profile
        .then(|| profile::take().map(|totals| profile::per_run(totals, &run_ms)))
        .transpose()?;
    profile::enable(false);
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    Ok(PassBench {
        pass: name,
        arch: model.arch.to_string(),
        depth: ModelSpec::depth_of(&layout),
        dtype: model.dtype.as_str(),
        device: resnet::describe_device(device),
        examples,
        batch,
        seconds,
        examples_per_second: examples as f64 / seconds,
        repeats,
        metrics: metrics.map(<[AnalysisKind]>::to_vec),
        graph_mib: probed_graph
            .then(|| probed_graph_mib(&net, &images, batch))
            .transpose()?,
        estimated_peak_mib: {
            let work = if metrics.is_some() {
                Work::Analysis
            } else {
                Work::Evaluation
            };
            let memory = memory_of(device);
            resnet::memory::estimate(work, &layout, net.dtypes(), batch, memory) >> 20
        },
        kernels,
    })
}

/// [`PassBench::graph_mib`] of the first batch.
fn probed_graph_mib(net: &ResNet, images: &Images, batch: usize) -> Result<f64> {
    let inputs = Inputs::new(&NORMALIZATION, net.device())?;
    let first = images.batches(batch).next().expect("at least one example");
    let (x, _) = inputs.upload(first)?;
    let options = ProbeOptions::eval().with_gradients();
    let probed = with_frozen_parameters(|| net.forward_probed(&x, &options))?;
    Ok(graph_bytes(&probed.logits) as f64 / (1 << 20) as f64)
}

/// The analysis `stepwise bench analyze` times unless told otherwise: the per-block pass.
pub const BLOCK_PASS: [AnalysisKind; 3] =
    [AnalysisKind::Cosine, AnalysisKind::L2, AnalysisKind::Drop];

/// Times the analysis of random images computing `metrics` (the spec's defaults otherwise:
/// the unrolling's 20 steps of 5 step sizes on running statistics), on the test split only.
pub fn bench_analysis(
    model: &ModelSpec,
    metrics: &[AnalysisKind],
    settings: PassSettings,
    device: &Device,
) -> Result<PassBench> {
    let PassSettings {
        examples, batch, ..
    } = settings;
    let mut run = RunSpec::new(model.clone(), DataSpec::new("random"));
    run.data.normalization = Some(NORMALIZATION);
    let spec = AnalysisSpec {
        metrics: metrics.to_vec(),
        splits: vec![Split::Test],
        max_examples: examples as u32,
        eval_batch: batch as u32,
        ..AnalysisSpec::default()
    };
    bench_pass(
        "analysis",
        model,
        settings,
        device,
        |net, images| {
            let input = Input {
                model: net,
                run: &run,
                epoch: 0,
                train: images,
                test: images,
                stop: None,
                progress: None,
            };
            let analysis = analyze(&input, &spec).map_err(|e| match e {
                Error::Model(e) => Error::Model(e.naming_batch("--batch")),
                e => e,
            })?;
            Ok(analysis.seconds)
        },
        Some(metrics),
    )
}

/// Times the evaluation (loss and accuracy, BatchNorm in inference mode; each batch's bytes
/// are copied to the device and normalised there, the sums read back at the end) of random
/// images.
pub fn bench_eval(model: &ModelSpec, settings: PassSettings, device: &Device) -> Result<PassBench> {
    let batch = settings.batch;
    bench_pass(
        "eval",
        model,
        settings,
        device,
        |net, images| {
            let started = Instant::now();
            let inputs = Inputs::new(&NORMALIZATION, device)?;
            resnet::eval::evaluate(net, &inputs, images.batches(batch), &[])?;
            synchronize(device)?;
            Ok(started.elapsed().as_secs_f64())
        },
        None,
    )
}
