use crate::args::DataCommand;
use crate::progress;
use anyhow::{bail, Context, Result};
use cifar::batch::BatchPlan;
use cifar::fetch::{fetch, Release};
use cifar::import::import;
use cifar::synth::{generate, SynthConfig};
use cifar::Dataset;
use domain::{LabelKind, RunSpec};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub fn run(cmd: DataCommand, data_dir: &Path) -> Result<ExitCode> {
    match cmd {
        DataCommand::Synth {
            out,
            train,
            test,
            seed,
            json,
        } => {
            generate(&out, &SynthConfig { train, test, seed })?;
            report(&out, json)
        }
        DataCommand::Fetch { dataset, out, url } => {
            let mut release = Release::by_name(dataset.as_str()).expect("a known release");
            if let Some(url) = url {
                release.url = url;
            }
            let out = out.unwrap_or_else(|| data_dir.join(dataset.as_str()));
            let bar = progress::bytes(release.size, &release.url);
            let folder = fetch(&release, &out, &mut |done, _| bar.set_position(done))?;
            bar.finish_and_clear();
            report(&folder, false)
        }
        DataCommand::Batches {
            run,
            checkpoint,
            epochs,
        } => {
            let (spec, source) = match (run, checkpoint) {
                (Some(run), _) => (super::figures::read_run_spec(&run)?, run),
                (None, Some(checkpoint)) => (
                    resnet::checkpoint::read(&checkpoint)?.meta_json(train::META_SPEC)?,
                    checkpoint,
                ),
                (None, None) => bail!("give --run or --checkpoint"),
            };
            batches(&spec, &source, &epochs)
        }
        DataCommand::Import {
            from,
            out,
            name,
            json,
        } => {
            let name = match name {
                Some(n) => n,
                None => out
                    .file_name()
                    .context("--out has no folder name; give --name")?
                    .to_string_lossy()
                    .into_owned(),
            };
            let summary = import(&from, &out, &name)?;
            eprintln!(
                "imported {} training and {} test images of {} classes",
                summary.train,
                summary.test,
                summary.classes.len()
            );
            report(&out, json)
        }
    }
}

/// One batch of [`DataCommand::Batches`].
#[derive(Serialize)]
struct BatchLine {
    epoch: u32,
    batch: usize,
    learning_rate: f64,
    examples: Vec<u32>,
    crop_y: Vec<usize>,
    crop_x: Vec<usize>,
    flip: Vec<bool>,
}

/// Prints the batches of `epochs` of the run of `spec` (read from `source`).
fn batches(spec: &RunSpec, source: &Path, epochs: &[u32]) -> Result<ExitCode> {
    let (Some(plan), Some(identity)) = (BatchPlan::of_run(spec), spec.data.identity.as_ref())
    else {
        bail!(
            "{}: the spec is not yet bound to its dataset (training had not started)",
            source.display()
        );
    };
    let all: Vec<u32> = (1..=spec.epochs()).collect();
    let epochs = if epochs.is_empty() { &all } else { epochs };
    if let Some(e) = epochs.iter().find(|&&e| e == 0 || e > spec.epochs()) {
        bail!("epoch {e}: the run has epochs 1 to {}", spec.epochs());
    }
    let examples = identity.train_examples as usize;
    let per_epoch = plan.batches_per_epoch(examples);
    let schedule = spec.train.schedule(spec.model.arch);
    let mut out = std::io::stdout().lock();
    for &epoch in epochs {
        // The trainer numbers epochs from 0.
        let order = plan.permutation(examples, epoch - 1);
        for batch in 0..per_epoch {
            let members = plan.members(&order, epoch - 1, batch);
            let line = BatchLine {
                epoch,
                batch,
                learning_rate: schedule.lr(epoch - 1, batch, per_epoch),
                examples: members.iter().map(|m| m.0).collect(),
                crop_y: members.iter().map(|m| m.1.dy).collect(),
                crop_x: members.iter().map(|m| m.1.dx).collect(),
                flip: members.iter().map(|m| m.1.flip).collect(),
            };
            serde_json::to_writer(&mut out, &line)?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the dataset just written and prints its identity.
fn report(dir: &Path, json: bool) -> Result<ExitCode> {
    let ds = Dataset::open(dir, LabelKind::Fine)?;
    if json {
        super::print_json(&ds.identity)?;
    } else {
        let id = &ds.identity;
        println!(
            "{}: {} classes, {} train / {} test images, {} in {}",
            id.name,
            id.classes,
            id.train_examples,
            id.test_examples,
            id.fingerprint,
            ds.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
