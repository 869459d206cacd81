use super::open_dataset;
use super::train::{refuse_existing_run, spec_with_model};
use crate::args::{ImportArgs, ModelCommand, WeightsReading};
use crate::progress::{find, RunSink};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use cifar::rng::{rng, Stream};
use domain::{BlockInfo, ExperimentRun, ExperimentSpec, MetricName, ModelSpec, Split};
use resnet::{candle_device, Dtypes, ResNet};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use train::ImportedWeights;

#[derive(Serialize)]
struct Summary {
    model: ModelSpec,
    depth: u32,
    trainable_params: usize,
    keras_params: usize,
    head_features: u32,
    blocks: Vec<BlockRow>,
    /// The state dict: what a checkpoint holds and `model import` expects.
    tensors: Vec<TensorRow>,
}

#[derive(Serialize)]
struct TensorRow {
    name: String,
    shape: Vec<usize>,
}

/// A block with its stage spelled out, for readers of the JSON.
#[derive(Serialize)]
struct BlockRow {
    #[serde(flatten)]
    info: BlockInfo,
    stage: u32,
}

/// The model of a spec on the CPU: parameters are counted on the built model itself, so
/// the numbers are those of what trains.
pub fn build(spec: &ModelSpec) -> Result<ResNet> {
    Ok(ResNet::new(
        &spec.layout()?,
        &mut rng(0, Stream::Init, 0, 0),
        &Device::Cpu,
        Dtypes::for_precision(spec.dtype),
    )?)
}

pub fn run(cmd: ModelCommand, data_dir: &Path) -> Result<ExitCode> {
    match cmd {
        ModelCommand::Summary {
            model,
            tensors,
            json,
        } => summary(model.to_spec()?, tensors, json),
        ModelCommand::Import(args) => import(*args, data_dir),
    }
}

fn summary(spec: ModelSpec, list_tensors: bool, json: bool) -> Result<ExitCode> {
    let layout = spec.layout()?;
    let net = build(&spec)?;
    let summary = Summary {
        depth: ModelSpec::depth_of(&layout),
        trainable_params: net.trainable_count(),
        keras_params: net.keras_count(),
        head_features: layout.head_features(),
        blocks: layout
            .blocks()
            .into_iter()
            .map(|info| BlockRow {
                stage: info.id.stage,
                info,
            })
            .collect(),
        tensors: net
            .state_dict()?
            .into_iter()
            .map(|(name, t)| TensorRow {
                name,
                shape: t.dims().to_vec(),
            })
            .collect(),
        model: spec,
    };
    if json {
        super::print_json(&summary)?;
        return Ok(ExitCode::SUCCESS);
    }
    let m = &summary.model;
    println!(
        "{} depth {} · {} classes · sharing {} · {}",
        m.arch,
        summary.depth,
        m.classes,
        m.sharing.as_str(),
        m.dtype.as_str()
    );
    println!("trainable parameters   {:>12}", summary.trainable_params);
    println!("keras-style total      {:>12}", summary.keras_params);
    println!("head features          {:>12}", summary.head_features);
    println!();
    println!(
        "{:>5}  {:<8} {:<10} {:<6} {:>14}  {:>14}",
        "index", "block", "kind", "shared", "input", "output"
    );
    for BlockRow { info: b, .. } in &summary.blocks {
        let shape = |s: [u32; 3]| format!("{}×{}×{}", s[0], s[1], s[2]);
        println!(
            "{:>5}  {:<8} {:<10} {:<6} {:>14}  {:>14}",
            b.index,
            b.id.to_string(),
            b.kind.as_str(),
            if b.shared { "yes" } else { "" },
            shape(b.in_shape),
            shape(b.out_shape)
        );
    }
    if list_tensors {
        println!();
        println!("{:<44} shape", "tensor");
        for t in &summary.tensors {
            println!("{:<44} {:?}", t.name, t.shape);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates the run directory `out` whole or not at all: `fill` writes into a hidden
/// directory beside it, renamed into place once complete (over an empty directory too) and
/// removed on failure. (`cifar`'s datasets are written the same way, with its own errors.)
fn create_whole<T>(out: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a directory name", out.display()))?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let staging = parent.unwrap_or(Path::new(".")).join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::create_dir_all(&staging)
        .with_context(|| format!("creating {}", staging.display()))
        .and_then(|()| fill(&staging))
        .and_then(|value| {
            std::fs::rename(&staging, out)
                .with_context(|| format!("renaming {} to {}", staging.display(), out.display()))?;
            Ok(value)
        });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// What `model import` prints with `--json`.
#[derive(Serialize)]
struct ImportSummary<'a> {
    run_dir: &'a Path,
    checkpoint: PathBuf,
    imported: &'a ImportedWeights,
    test_loss: Option<f64>,
    test_accuracy: Option<f64>,
    spec: &'a domain::RunSpec,
}

/// The run of an experiment that `--config` and `--seed` pick.
fn experiment_run(args: &ImportArgs, path: &Path) -> Result<ExperimentRun> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let experiment = ExperimentSpec::from_toml(&text)
        .with_context(|| format!("experiment {}", path.display()))?;
    let labels = experiment.labels();
    let label = match (&args.config, labels.as_slice()) {
        (Some(label), _) => label.clone(),
        (None, [only]) => only.clone(),
        (None, _) => bail!(
            "{} has {} configurations: name one with --config ({})",
            path.display(),
            labels.len(),
            labels.join(", ")
        ),
    };
    let seed = args.seed.unwrap_or(experiment.seeds[0]);
    experiment
        .runs()
        .into_iter()
        .find(|r| r.label == label && r.seed == seed)
        .with_context(|| {
            format!(
                "{} has no run of configuration {label:?} with seed {seed} (configurations: {}; \
                 seeds: {:?})",
                path.display(),
                labels.join(", "),
                experiment.seeds
            )
        })
}

/// The tensors of a weights file, read as `reading` says.
pub(crate) fn read_weights(
    path: &Path,
    reading: &WeightsReading,
) -> resnet::Result<HashMap<String, Tensor>> {
    resnet::checkpoint::read_weights(
        path,
        reading.key.as_deref(),
        reading.strip_prefix.as_deref(),
    )
}

fn import(args: ImportArgs, data_dir: &Path) -> Result<ExitCode> {
    let (spec, out) = match &args.experiment {
        Some(path) => {
            if args.model.any() {
                bail!("with --experiment the model is the configuration's: drop the model flags");
            }
            let run = experiment_run(&args, path)?;
            (run.spec.clone(), args.out.join("runs").join(run.dir_name()))
        }
        None => {
            let mut spec = spec_with_model(args.spec.as_deref(), &args.model)?;
            if args.epochs.is_some() {
                spec.train.epochs = args.epochs;
            }
            (spec, args.out.clone())
        }
    };
    spec.validate().context("invalid spec")?;
    let weights = read_weights(&args.weights, &args.reading)?;
    let source = ImportedWeights {
        file: args.weights.display().to_string(),
        sha256: resnet::checkpoint::sha256_file(&args.weights)?,
    };
    let data = args.data.as_deref().unwrap_or(&spec.data.dataset);
    let dataset = open_dataset(data, data_dir, spec.data.labels)?;
    let device = candle_device(args.device)?;
    let out = &out;
    refuse_existing_run(out)?;
    let empty = |dir: &Path| std::fs::read_dir(dir).map(|mut d| d.next().is_none());
    if out.exists() && !empty(out).with_context(|| format!("reading {}", out.display()))? {
        bail!(
            "{} is not empty: name a new directory with --out",
            out.display()
        );
    }
    let imported = create_whole(out, |staging| {
        let mut sink = RunSink::open(staging, 0, spec.epochs(), true)?;
        let checkpoints = staging.join("checkpoints");
        let imported = train::import(
            spec,
            dataset,
            &weights,
            source.clone(),
            &device,
            checkpoints,
            &mut sink,
        )?;
        let spec_path = staging.join("spec.toml");
        resnet::checkpoint::write_atomic(&spec_path, imported.spec.to_toml().as_bytes())?;
        Ok(imported)
    })?;
    let test = |name| find(&imported.records, name, Some(Split::Test));
    let summary = ImportSummary {
        run_dir: out,
        checkpoint: out.join("checkpoints").join(&imported.file_name),
        imported: &source,
        test_loss: test(MetricName::Loss),
        test_accuracy: test(MetricName::Accuracy),
        spec: &imported.spec,
    };
    if args.json {
        super::print_json(&summary)?;
    } else {
        let id = imported
            .spec
            .data
            .identity
            .as_ref()
            .expect("bound by the import");
        eprintln!(
            "imported {} as {} after {} epochs: test accuracy {:.2}%, loss {:.4} on {} ({} images)",
            source.file,
            imported.spec.model.label(),
            imported.spec.epochs(),
            100.0 * summary.test_accuracy.unwrap_or(f64::NAN),
            summary.test_loss.unwrap_or(f64::NAN),
            id.name,
            id.test_examples,
        );
        eprintln!("checkpoint {}", summary.checkpoint.display());
        match &args.experiment {
            Some(experiment) => eprintln!(
                "analysed and reported with the experiment's other runs: stepwise run {} --out {}",
                experiment.display(),
                args.out.display()
            ),
            None => eprintln!(
                "block-wise metrics: stepwise analyze --run {}",
                out.display()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
