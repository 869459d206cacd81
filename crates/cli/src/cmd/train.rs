use super::open_dataset;
use crate::args::{ModelArgs, TrainArgs};
use crate::progress::RunSink;
use anyhow::{bail, Context, Result};
use domain::{DataSpec, DeviceSpec, MetricName, RunSpec, Split};
use resnet::candle_device;
use resnet::Dtypes;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use train::{Outcome, Trainer, META_SPEC};

pub fn run(args: TrainArgs, data_dir: &Path) -> Result<ExitCode> {
    if args.print_spec {
        let mut spec = spec_from_args(&args)?;
        if let Some(data) = &args.data {
            // As training binds it: a directory is named by its own identity.
            spec.data.dataset = open_dataset(data, data_dir, spec.data.labels)?
                .identity
                .name;
        }
        print!("{}", resolved_spec(spec, args.device)?);
        return Ok(ExitCode::SUCCESS);
    }
    let device = candle_device(args.device)?;
    let (mut trainer, run_dir) = match &args.resume {
        Some(checkpoint) => resume(&args, checkpoint, data_dir, &device)?,
        None => fresh(&args, data_dir, &device)?,
    };
    let mut sink = RunSink::open(
        &run_dir,
        trainer.state().epoch,
        trainer.spec().epochs(),
        args.json,
    )?;
    let spec_path = run_dir.join("spec.toml");
    resnet::checkpoint::write_atomic(&spec_path, trainer.spec().to_toml().as_bytes())?;
    let stop = Arc::new(AtomicBool::new(false));
    install_interrupt(
        stop.clone(),
        (!args.json).then_some("writing a checkpoint after this step"),
    )?;
    if !args.json {
        let id = trainer
            .spec()
            .data
            .identity
            .as_ref()
            .expect("bound at start");
        eprintln!(
            "training {} on {} ({} train / {} test) into {}",
            describe(trainer.spec()),
            id.name,
            id.train_examples,
            id.test_examples,
            run_dir.display()
        );
    }
    let outcome = trainer.run(&mut sink, &stop);
    sink.finish();
    let outcome = outcome?;
    let checkpoint = sink
        .last_checkpoint
        .as_ref()
        .map(|name| run_dir.join("checkpoints").join(name));
    let value = |name, split| crate::progress::find(&sink.last_records, name, split);
    let summary = Summary {
        outcome: match outcome {
            Outcome::Finished => "finished",
            Outcome::Stopped { .. } => "stopped",
        },
        run_dir: run_dir.clone(),
        checkpoint: checkpoint.clone(),
        epochs_completed: trainer.state().epoch,
        steps: trainer.state().step,
        train_loss: value(MetricName::Loss, Some(Split::Train)),
        test_loss: value(MetricName::Loss, Some(Split::Test)),
        test_accuracy: value(MetricName::Accuracy, Some(Split::Test)),
        spec: trainer.spec(),
    };
    if args.json {
        super::print_json(&summary)?;
    } else if let Some(checkpoint) = &checkpoint {
        match outcome {
            Outcome::Finished => eprintln!(
                "finished {} epochs; final checkpoint {}",
                summary.epochs_completed,
                checkpoint.display()
            ),
            Outcome::Stopped { .. } => eprintln!(
                "stopped after step {}; resume with: stepwise train --resume {}",
                summary.steps,
                checkpoint.display()
            ),
        }
    }
    Ok(match outcome {
        Outcome::Finished => ExitCode::SUCCESS,
        Outcome::Stopped { .. } => ExitCode::from(130),
    })
}

#[derive(Serialize)]
struct Summary<'a> {
    outcome: &'static str,
    run_dir: PathBuf,
    checkpoint: Option<PathBuf>,
    epochs_completed: u32,
    steps: u64,
    train_loss: Option<f64>,
    test_loss: Option<f64>,
    test_accuracy: Option<f64>,
    spec: &'a RunSpec,
}

fn describe(spec: &RunSpec) -> String {
    let m = &spec.model;
    let depth = m
        .layout()
        .map(|l| domain::ModelSpec::depth_of(&l))
        .unwrap_or(0);
    format!(
        "{}-{depth} ({} epochs, batch {}, seed {})",
        m.arch,
        spec.epochs(),
        spec.train.batch_size,
        spec.train.seed
    )
}

/// The spec as TOML with its defaults made explicit where they depend on the architecture
/// (epochs, depth, width), headed by comments on what it trains: the model's parameter count,
/// the learning rate of every epoch and the peak memory estimated on `device`. Saved to a
/// file, it trains or submits the same run.
fn resolved_spec(mut spec: RunSpec, device: DeviceSpec) -> Result<String> {
    let arch = spec.model.arch;
    let epochs = spec.epochs();
    spec.train.epochs = Some(epochs);
    let layout = spec.model.layout()?;
    spec.model.width.get_or_insert(layout.stages[0].channels);
    if arch == domain::Arch::Resnet && spec.model.blocks.is_none() {
        spec.model.depth = Some(domain::ModelSpec::depth_of(&layout));
    }
    let params = super::model::build(&spec.model)?.trainable_count();
    let schedule = spec.train.schedule(arch);
    let memory = device.memory();
    let dtypes = Dtypes::for_precision(spec.model.dtype);
    let needs: Vec<String> = train::memory_work(&spec)
        .into_iter()
        .map(|(work, batch)| {
            let mib = resnet::memory::estimate(work, &layout, dtypes, batch, memory) >> 20;
            format!("{work} {mib} MiB at batch {batch}")
        })
        .collect();
    let mut out = format!(
        "# {}: {params} trainable parameters, {} blocks\n# {}\n# peak {memory} on {device}, \
         estimated: {}\n",
        spec.model.label(),
        layout.blocks().len(),
        schedule.describe(epochs),
        needs.join(", ")
    );
    out.push_str(&spec.to_toml());
    Ok(out)
}

/// Ctrl-C — or SIGTERM or SIGHUP: a batch system's time limit, `kill`, a closed terminal —
/// sets `stop` (and prints `notice`, what the work does then); a second one exits at once.
pub(crate) fn install_interrupt(stop: Arc<AtomicBool>, notice: Option<&'static str>) -> Result<()> {
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        if let Some(notice) = notice {
            eprintln!("\ninterrupted: {notice} (Ctrl-C again to quit now)");
        }
    })
    .context("installing the Ctrl-C and SIGTERM handler")
}

fn fresh(
    args: &TrainArgs,
    data_dir: &Path,
    device: &candle_core::Device,
) -> Result<(Trainer, PathBuf)> {
    let spec = spec_from_args(args)?;
    let run_dir = args.out.clone().unwrap_or_else(|| {
        let depth = spec
            .model
            .layout()
            .map(|l| domain::ModelSpec::depth_of(&l))
            .unwrap_or(0);
        PathBuf::from("runs").join(format!(
            "{}{depth}-seed{}",
            spec.model.arch, spec.train.seed
        ))
    });
    refuse_existing_run(&run_dir)?;
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    // The spec names the dataset; --data may instead give a directory, whose own identity
    // then names it in the spec.
    let data = args.data.as_deref().unwrap_or(&spec.data.dataset);
    let dataset = open_dataset(data, data_dir, spec.data.labels)?;
    let trainer = Trainer::new(spec, dataset, device, run_dir.join("checkpoints"))?;
    Ok((trainer, run_dir))
}

/// Refuses a directory that already holds a run, saying how to go on with it.
pub(crate) fn refuse_existing_run(run_dir: &Path) -> Result<()> {
    if run_dir.join("metrics.jsonl").exists() || run_dir.join("checkpoints").exists() {
        let newest = train::resume_candidates(&run_dir.join("checkpoints"))?;
        match newest.first() {
            Some(c) => bail!(
                "{} already holds a run: resume it with `stepwise train --resume {}`, or choose another --out",
                run_dir.display(),
                c.path.display()
            ),
            None => bail!(
                "{} already holds a run that wrote no checkpoint (it stopped before its first \
                 epoch ended): delete the directory or choose another --out",
                run_dir.display()
            ),
        }
    }
    Ok(())
}

/// The run spec of a spec file with the model flags applied on top, or of the model flags
/// alone (on shapes10).
pub(crate) fn spec_with_model(spec: Option<&Path>, model: &ModelArgs) -> Result<RunSpec> {
    Ok(match spec {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut spec =
                RunSpec::from_toml(&text).with_context(|| format!("spec {}", path.display()))?;
            model.apply(&mut spec.model);
            spec
        }
        None => RunSpec::new(model.to_spec()?, DataSpec::new(cifar::synth::NAME)),
    })
}

/// A run spec from `--spec` (if any) with every given flag applied on top.
fn spec_from_args(args: &TrainArgs) -> Result<RunSpec> {
    let mut spec = spec_with_model(args.spec.as_deref(), &args.model)?;
    let t = &mut spec.train;
    if args.epochs.is_some() {
        t.epochs = args.epochs;
    }
    if let Some(seed) = args.seed {
        t.seed = seed;
    }
    if let Some(batch) = args.batch {
        t.batch_size = batch;
    }
    if args.lr.is_some() {
        t.schedule.lr = args.lr;
    }
    if let Some(preset) = args.schedule {
        // The flag replaces the spec's schedule, a custom one's boundaries and values too.
        t.schedule.preset = preset.into();
        t.schedule.boundaries.clear();
        t.schedule.values.clear();
    }
    if let Some(w) = args.warmup_epochs {
        t.schedule.warmup_epochs = w;
    }
    if let Some(m) = args.momentum {
        t.momentum = m;
    }
    if args.nesterov {
        t.nesterov = true;
    }
    if let Some(wd) = args.weight_decay {
        t.weight_decay = wd;
    }
    if args.no_augment {
        spec.data.augment = false;
    }
    if args.name.is_some() {
        spec.name = args.name.clone();
    }
    spec.tags.extend(args.tags.iter().cloned());
    spec.validate().context("invalid spec")?;
    Ok(spec)
}

/// The newest checkpoint beside `checkpoint` that is older than it and reads intact: where
/// to resume when `checkpoint` itself is damaged or gone.
fn intact_before(checkpoint: &Path) -> Option<PathBuf> {
    let dir = checkpoint.parent()?;
    let name = checkpoint.file_name()?.to_str()?;
    let older: Vec<_> = train::resume_candidates(dir)
        .ok()?
        .into_iter()
        .filter(|c| c.path.file_name().and_then(|n| n.to_str()) < Some(name))
        .collect();
    Some(train::newest_intact(&older).ok()?.checkpoint?.path)
}

fn resume(
    args: &TrainArgs,
    checkpoint: &Path,
    data_dir: &Path,
    device: &candle_core::Device,
) -> Result<(Trainer, PathBuf)> {
    let changes_spec = args.spec.is_some()
        || args.model.any()
        || args.seed.is_some()
        || args.batch.is_some()
        || args.lr.is_some()
        || args.schedule.is_some()
        || args.warmup_epochs.is_some()
        || args.momentum.is_some()
        || args.nesterov
        || args.weight_decay.is_some()
        || args.no_augment;
    if changes_spec {
        bail!("a resumed run keeps the spec in its checkpoint: only --epochs, --data, --out, --device and --json go with --resume");
    }
    let ck = match resnet::checkpoint::read(checkpoint) {
        Ok(ck) => ck,
        Err(e) if e.is_unusable_checkpoint() => match intact_before(checkpoint) {
            Some(earlier) => bail!(
                "{e}\nthe newest intact checkpoint before it: resume with \
                 stepwise train --resume {}",
                earlier.display()
            ),
            None => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    let spec: RunSpec = ck.meta_json(META_SPEC)?;
    let (dataset, _) = super::data_for(&spec, args.data.as_deref(), data_dir)?;
    let run_dir = match &args.out {
        Some(out) => out.clone(),
        None => {
            let parent = checkpoint.parent().unwrap_or(Path::new("."));
            if parent.file_name().is_some_and(|n| n == "checkpoints") {
                parent.parent().unwrap_or(Path::new(".")).to_path_buf()
            } else {
                parent.to_path_buf()
            }
        }
    };
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let trainer = Trainer::resume(
        &ck,
        args.epochs,
        dataset,
        device,
        run_dir.join("checkpoints"),
    )?;
    Ok((trainer, run_dir))
}
