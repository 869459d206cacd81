use crate::args::DataCommand;
use crate::progress;
use anyhow::{Context, Result};
use cifar::fetch::{fetch, Release};
use cifar::import::import;
use cifar::synth::{generate, SynthConfig};
use cifar::Dataset;
use domain::LabelKind;
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
