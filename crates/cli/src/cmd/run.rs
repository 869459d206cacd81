//! `stepwise run`: an experiment end to end. Every configuration × seed is trained into
//! `OUT/runs/<label>-seed<seed>` (a finished run is kept, an interrupted one resumed), its
//! final checkpoint (and those `analysis_checkpoints` selects) analysed, then
//! `OUT/figures/`, `OUT/summary.csv`, `OUT/blocks.csv` (every block's metrics, mean ± sd over
//! seeds) and `OUT/report.md` (our numbers beside the paper's, and claims C1–C7) are
//! written. Rerunning the command after a stop continues where it left off.

use super::figures::{blocks_of, pool_seeds, read_run, render, write_blocks_csv, RunData};
use super::open_dataset;
use crate::args::RunArgs;
use crate::progress::{AnalysisBar, RunSink};
use analyzer::AnalyzeError;
use anyhow::{bail, Context, Result};
use domain::{claims, paper};
use domain::{ExperimentRun, ExperimentSpec, MetricName, PassTime, Split};
use resnet::memory::Work;
use resnet::{candle_device, Dtypes};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use train::{checkpoint_name, ImportedWeights, Outcome, Trainer, META_TRAIN_STATE};

pub fn run(args: RunArgs, data_dir: &Path) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading {}", args.spec.display()))?;
    let spec = ExperimentSpec::from_toml(&text)
        .with_context(|| format!("experiment {}", args.spec.display()))?;
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let device = candle_device(args.device)?;
    let runs = spec.runs();
    check_memory(&spec, &runs, &device)?;
    let stop = Arc::new(AtomicBool::new(false));
    super::train::install_interrupt(
        stop.clone(),
        Some("stopping after this training step (with a checkpoint) or analysis batch"),
    )?;
    let started = std::time::Instant::now();
    let plan = spec.analysis_plan();
    let mut imported = vec![];
    for (k, run) in runs.iter().enumerate() {
        let dir = out.join("runs").join(run.dir_name());
        eprintln!("[{}/{}] {} seed {}", k + 1, runs.len(), run.label, run.seed);
        let analysed = plan.epochs(run.spec.epochs());
        match train_to_end(run, &analysed, &dir, data_dir, &device, &stop)? {
            Trained::Stopped => {
                eprintln!("{}", super::STOPPED);
                return Ok(ExitCode::from(130));
            }
            Trained::Finished { imported: Some(w) } => imported.push((run, w)),
            Trained::Finished { imported: None } => {}
        }
        for epoch in analysed {
            if !analyse(&spec, epoch, &dir, data_dir, &device, &stop)? {
                eprintln!("{}", super::STOPPED);
                return Ok(ExitCode::from(130));
            }
        }
    }
    // Written once every run matches it (a different experiment is refused above).
    resnet::checkpoint::write_atomic(&out.join("experiment.toml"), text.as_bytes())?;
    let mut data = vec![];
    let dirs: Vec<PathBuf> = runs
        .iter()
        .map(|r| out.join("runs").join(r.dir_name()))
        .collect();
    for (r, dir) in runs.iter().zip(&dirs) {
        let mut d = read_run(dir)?;
        d.label = r.label.clone();
        data.push(d);
    }
    pool_seeds(&mut data, &dirs);
    let written = Written {
        figures: render(&data, &out.join("figures"))?,
        blocks: write_blocks_csv(&blocks_of(&data), &out.join("blocks.csv"))?,
    };
    let summary = summary_csv(&runs, &data);
    resnet::checkpoint::write_atomic(&out.join("summary.csv"), summary.as_bytes())?;
    let report = report(
        &spec,
        &runs,
        &imported,
        &data,
        &written,
        out,
        started.elapsed().as_secs_f64(),
    );
    resnet::checkpoint::write_atomic(&out.join("report.md"), report.as_bytes())?;
    eprintln!(
        "{} runs; {} figure files in {}; report {}",
        runs.len(),
        written.figures.len(),
        out.join("figures").display(),
        out.join("report.md").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Checks every run's training, per-epoch evaluation and analysis against the memory budget
/// before the first starts, so that a configuration that cannot run is refused at once
/// rather than after the ones before it have trained.
fn check_memory(
    spec: &ExperimentSpec,
    runs: &[ExperimentRun],
    device: &candle_core::Device,
) -> Result<()> {
    let analysis_batch = spec.analysis.eval_batch as usize;
    for run in runs {
        let layout = run.spec.model.layout()?;
        let dtypes = Dtypes::for_precision_on(run.spec.model.dtype, device);
        train::check_memory(&run.spec, &layout, dtypes, device)
            .and_then(|()| {
                resnet::memory::check(Work::Analysis, &layout, dtypes, analysis_batch, device)
            })
            .with_context(|| format!("configuration {}", run.label))?;
    }
    Ok(())
}

/// How [`train_to_end`] left a run.
enum Trained {
    Stopped,
    /// At its last epoch; `imported` where its weights were trained elsewhere
    /// (`stepwise model import --experiment`).
    Finished {
        imported: Option<ImportedWeights>,
    },
}

/// Trains `run` into `dir` to its last epoch, keeping the checkpoints of the epochs
/// `analysed`: fresh, resumed from the newest checkpoint, or not at all when finished.
fn train_to_end(
    run: &ExperimentRun,
    analysed: &[u32],
    dir: &Path,
    data_dir: &Path,
    device: &candle_core::Device,
    stop: &AtomicBool,
) -> Result<Trained> {
    let epochs = run.spec.epochs();
    let ckpt_dir = dir.join("checkpoints");
    let resume = train::newest_intact(&train::resume_candidates(&ckpt_dir)?)?;
    for warning in resume.warnings() {
        eprintln!("  {warning}");
    }
    for aside in resume.set_aside_damaged()? {
        eprintln!("  set aside as {}", aside.display());
    }
    let dataset = open_dataset(&run.spec.data.dataset, data_dir, run.spec.data.labels)?;
    let mut trainer = match resume.checkpoint {
        Some(ck) => {
            let path = &ck.path;
            // A changed experiment must not silently continue runs of the old one. Its data
            // is compared by content: the stored spec names the dataset by its own name,
            // which need not be the directory the experiment names.
            let stored: domain::RunSpec = ck.meta_json(train::META_SPEC)?;
            if stored.model != run.spec.model
                || stored.train != run.spec.train
                || stored.data.identity.as_ref() != Some(&dataset.identity)
                || stored.data.labels != run.spec.data.labels
                || stored.data.augment != run.spec.data.augment
            {
                bail!(
                    "{} holds a run of a different spec than the experiment's {}: choose another --out",
                    dir.display(),
                    run.dir_name()
                );
            }
            let state: train::TrainState = ck.meta_json(META_TRAIN_STATE)?;
            if state.ends(epochs) {
                eprintln!("  finished earlier: {}", path.display());
                if let Some(w) = &state.imported {
                    eprintln!(
                        "  its weights imported from {} (sha256 {})",
                        w.file, w.sha256
                    );
                }
                return Ok(Trained::Finished {
                    imported: state.imported,
                });
            }
            Trainer::resume(&ck, None, dataset, device, ckpt_dir.clone())?
        }
        None => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Trainer::new(run.spec.clone(), dataset, device, ckpt_dir.clone())?
        }
    };
    trainer.keep_epochs(analysed);
    let mut sink = RunSink::open(dir, trainer.state().epoch, epochs, false)?;
    let spec_path = dir.join("spec.toml");
    resnet::checkpoint::write_atomic(&spec_path, trainer.spec().to_toml().as_bytes())?;
    let outcome = trainer.run(&mut sink, stop);
    sink.finish();
    Ok(match outcome? {
        Outcome::Finished => Trained::Finished {
            imported: trainer.state().imported.clone(),
        },
        Outcome::Stopped { .. } => Trained::Stopped,
    })
}

/// Analyses the checkpoint after `epoch` into `dir/analysis/epoch-EEEE/`, unless already
/// done (checked before the checkpoint is read: a rerun reads none). Returns false when
/// stopped, with nothing written.
fn analyse(
    spec: &ExperimentSpec,
    epoch: u32,
    dir: &Path,
    data_dir: &Path,
    device: &candle_core::Device,
    stop: &AtomicBool,
) -> Result<bool> {
    let out = dir.join("analysis").join(format!("epoch-{epoch:04}"));
    if out.join("analysis.json").exists() {
        return Ok(true);
    }
    let checkpoint = dir.join("checkpoints").join(checkpoint_name(epoch, 0));
    if !checkpoint.exists() {
        // Not written, or not kept, while an earlier version of the experiment did not
        // select it.
        eprintln!("  no checkpoint of epoch {epoch} to analyse (not kept when the run trained)");
        return Ok(true);
    }
    let ck = resnet::checkpoint::read(&checkpoint)?;
    let run: domain::RunSpec = ck.meta_json(train::META_SPEC)?;
    let (data, _) = super::data_for(&run, None, data_dir)?;
    let what = if epoch == 0 {
        "the initial weights".to_string()
    } else {
        format!("epoch {epoch}")
    };
    let bar = AnalysisBar::new(format!("  analysing {what}"), false);
    let show = |p: &domain::AnalysisProgress| bar.show(p);
    let analysed =
        analyzer::analyse_checkpoint(&ck, &data, &spec.analysis, device, Some(stop), Some(&show));
    drop(bar);
    let result = match analysed {
        Err(AnalyzeError::Analysis(analysis::Error::Stopped)) => return Ok(false),
        result => result?,
    };
    eprintln!(
        "  analysed {what} in {}",
        PassTime::took(result.seconds, &result.passes)
    );
    super::analyze::write(&out, &result)?;
    Ok(true)
}

/// The last value of a training metric over the whole split.
fn final_metric(data: &RunData, name: MetricName, split: Split) -> Option<f64> {
    data.training
        .iter()
        .rfind(|r| r.name == name && r.split == Some(split) && r.block.is_none())
        .map(|r| r.value)
}

/// Accuracy of the analysed subset of a split (inference-mode BatchNorm).
fn analysed_accuracy(data: &RunData, split: Split) -> Option<(f64, u32)> {
    data.analysis.as_ref().and_then(|a| {
        a.records
            .iter()
            .find(|r| r.name == MetricName::Accuracy && r.split == split && r.block.is_none())
            .map(|r| (r.value, r.n))
    })
}

fn summary_csv(runs: &[ExperimentRun], data: &[RunData]) -> String {
    let mut out =
        String::from("label,seed,epochs,test_accuracy,test_loss,train_accuracy_analysed\n");
    for (run, d) in runs.iter().zip(data) {
        let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            run.label,
            run.seed,
            run.spec.epochs(),
            cell(final_metric(d, MetricName::Accuracy, Split::Test)),
            cell(final_metric(d, MetricName::Loss, Split::Test)),
            cell(analysed_accuracy(d, Split::Train).map(|a| a.0)),
        );
    }
    out
}

/// The files of the results that the report links to.
struct Written {
    figures: Vec<PathBuf>,
    /// `blocks.csv`, where some run was analysed.
    blocks: Option<PathBuf>,
}

/// `report.md` of the runs in `data`.
fn report(
    spec: &ExperimentSpec,
    runs: &[ExperimentRun],
    imported: &[(&ExperimentRun, ImportedWeights)],
    data: &[RunData],
    written: &Written,
    out: &Path,
    seconds: f64,
) -> String {
    let labels = spec.labels();
    let mut configs = vec![];
    for label in &labels {
        let members: Vec<(&ExperimentRun, &RunData)> = runs
            .iter()
            .zip(data)
            .filter(|(r, _)| r.label == *label)
            .collect();
        configs.push(claims::Config {
            seeds: members
                .iter()
                .filter_map(|(_, d)| d.analysis.as_ref())
                .map(|a| (&a.records[..], a.selected_alpha))
                .collect(),
            unroll_bn: members
                .iter()
                .find_map(|(_, d)| d.analysis.as_ref())
                .map_or_else(Default::default, |a| a.spec.unroll_bn),
            test_errors: members
                .iter()
                .filter_map(|(_, d)| {
                    final_metric(d, MetricName::Accuracy, Split::Test).map(|a| 1.0 - a)
                })
                .collect(),
            ..claims::Config::new(label, &members[0].0.spec.model)
        });
    }
    domain::report::Report {
        spec,
        provenance: format!(
            "Written by {} in {seconds:.0} s (this invocation; runs finished earlier are not \
             retrained).",
            domain::CODE_VERSION
        ),
        imported: imported
            .iter()
            .map(|(run, w)| {
                format!(
                    "{} seed {} from `{}` (sha256 `{}`)",
                    run.label, run.seed, w.file, w.sha256
                )
            })
            .collect(),
        imported_by: "`stepwise model import`",
        note: claims::short_schedule_note(runs),
        left_out: runs
            .iter()
            .zip(data)
            .filter_map(|(r, d)| Some(format!("{} seed {}, {}", r.label, r.seed, d.left_out?)))
            .collect(),
        table: paper::table(&configs),
        claims: claims::evaluate(&configs),
        figures: super::figures::svg_links(&written.figures, out),
        blocks: written
            .blocks
            .as_deref()
            .map(|b| super::figures::link(b, out)),
    }
    .markdown()
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::compare::SetAside;

    #[test]
    fn the_report_names_the_seeds_left_out_and_why() {
        let spec = ExperimentSpec::from_toml(
            "name = \"e\"\nseeds = [0, 1]\n[data]\ndataset = \"shapes10\"\n\
             [[configs]]\nmodel = { arch = \"resnet\", depth = 8, width = 4 }\n",
        )
        .unwrap();
        let runs = spec.runs();
        let data: Vec<RunData> = [
            None,
            Some(SetAside::Behind {
                epoch: 1,
                latest: 2,
            }),
        ]
        .into_iter()
        .map(|left_out| RunData {
            label: "resnet-8".into(),
            training: vec![],
            analysis: None,
            history: vec![],
            left_out,
        })
        .collect();
        let written = Written {
            figures: vec![],
            blocks: None,
        };
        let md = report(&spec, &runs, &[], &data, &written, Path::new("out"), 1.0);
        assert!(
            md.contains(
                "Left out of the analysed train errors, the claims and the block-wise figures: \
                 resnet-8 seed 1, analysed only up to epoch 1, behind another seed's epoch 2.\n"
            ),
            "{md}"
        );
        assert_eq!(md.matches("Left out").count(), 1, "{md}");
    }
}
