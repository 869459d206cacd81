use crate::args::AnalyzeArgs;
use analysis::Analysis;
use anyhow::{bail, Context, Result};
use domain::{AnalysisRecord, AnalysisSpec, MetricName, RunSpec, Split, SplitExamples, Stat};
use resnet::candle_device;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use train::META_SPEC;

pub fn run(args: AnalyzeArgs, data_dir: &Path) -> Result<ExitCode> {
    let spec = args.analysis.spec();
    spec.validate().context("invalid analysis")?;
    let device = candle_device(args.device)?;
    let (checkpoints, run_dir) = match (&args.checkpoint, &args.run) {
        (Some(c), _) => (vec![c.clone()], run_dir_of(c)),
        (None, Some(run)) => (epoch_checkpoints(run)?, run.clone()),
        (None, None) => bail!("give --checkpoint or --run"),
    };
    let out = args.out.clone().unwrap_or_else(|| run_dir.join("analysis"));
    let mut dataset = None;
    let mut analyses = vec![];
    for path in &checkpoints {
        let ck = resnet::checkpoint::read(path)?;
        let run: RunSpec = ck.meta_json(META_SPEC)?;
        // The checkpoints of one run share their data: open it once.
        if dataset.is_none() {
            dataset = Some(super::data_for(&run, args.data.as_deref(), data_dir)?.0);
        }
        let data = dataset.as_ref().expect("opened above");
        let result = analyzer::analyse_checkpoint(&ck, data, &spec, &device, None)?;
        let dir = out.join(format!("epoch-{:04}", result.epoch));
        write(&dir, &result)?;
        if !args.json {
            report(path, &dir, &result);
        }
        analyses.push(result);
    }
    if args.run.is_some() {
        let all: Vec<_> = analyses.iter().flat_map(|a| a.records.clone()).collect();
        let path = out.join("analysis.csv");
        resnet::checkpoint::write_atomic(&path, domain::csv::analysis_csv(&all).as_bytes())?;
        if !args.json {
            eprintln!("all epochs: {}", path.display());
        }
    }
    if args.json {
        super::print_json(&analyses)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The run directory a checkpoint belongs to (`RUN/checkpoints/x.safetensors` → `RUN`).
fn run_dir_of(checkpoint: &Path) -> PathBuf {
    let parent = checkpoint.parent().unwrap_or(Path::new("."));
    if parent.file_name().is_some_and(|n| n == "checkpoints") {
        parent.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        parent.to_path_buf()
    }
}

/// A run's epoch-boundary checkpoints, oldest first.
fn epoch_checkpoints(run: &Path) -> Result<Vec<PathBuf>> {
    let dir = run.join("checkpoints");
    let found: Vec<PathBuf> = train::list_checkpoints(&dir)?
        .into_iter()
        .filter(|(_, batch, _)| *batch == 0)
        .map(|(_, _, name)| dir.join(name))
        .collect();
    if found.is_empty() {
        bail!("{} holds no epoch checkpoints", dir.display());
    }
    Ok(found)
}

pub(crate) fn write(dir: &Path, result: &Analysis) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(result)?;
    resnet::checkpoint::write_atomic(&dir.join("analysis.json"), json.as_bytes())?;
    resnet::checkpoint::write_atomic(
        &dir.join("analysis.csv"),
        domain::csv::analysis_csv(&result.records).as_bytes(),
    )?;
    Ok(())
}

/// A per-block summary on stderr: mean cosine and ℓ2 ratio, accuracy with the block
/// dropped, on the test split when analysed (else the first split).
fn report(checkpoint: &Path, dir: &Path, a: &Analysis) {
    let split = if a.spec.splits.contains(&Split::Test) {
        Split::Test
    } else {
        a.spec.splits[0]
    };
    eprintln!(
        "{} (epoch {}): {} in {:.1} s → {}",
        checkpoint.display(),
        a.epoch,
        SplitExamples::describe(&a.examples),
        a.seconds,
        dir.display()
    );
    let settings = a.spec.changes_inline();
    if !settings.is_empty() {
        eprintln!("  settings: {settings}");
    }
    eprintln!("  {split} split:");
    for line in block_table(&a.records, split) {
        eprintln!("  {line}");
    }
    if let Some(alpha) = a.selected_alpha {
        eprintln!("  {}", unrolling_line(alpha, &a.spec, &a.records));
    }
    for note in &a.notes {
        eprintln!("  note: {note}");
    }
}

/// The unrolling's selected step size, the block's statistics where they are not the running
/// ones, and at that α the train loss before and after the steps beside its first order.
pub(crate) fn unrolling_line(
    alpha: f64,
    spec: &AnalysisSpec,
    records: &[AnalysisRecord],
) -> String {
    let statistics = spec
        .unroll_bn
        .note()
        .map_or(String::new(), |n| format!(" ({n})"));
    let train_loss = domain::unroll_train_loss(records, alpha).map_or(String::new(), |t| {
        format!(": {t} over {} steps", spec.unroll_steps)
    });
    format!("unrolling: selected α = {alpha}{statistics}{train_loss}")
}

/// Per block of `split`: its kind, mean cosine, mean ℓ2 ratio and the accuracy with the
/// block dropped ("-" where not analysed), under a header line.
pub(crate) fn block_table(records: &[AnalysisRecord], split: Split) -> Vec<String> {
    let value = |name: MetricName, index: u32| {
        records
            .iter()
            .find(|r| {
                r.name == name
                    && r.split == split
                    && r.block_index == Some(index)
                    && matches!(r.stat, None | Some(Stat::Mean))
            })
            .map_or("-".to_string(), |r| format!("{:.4}", r.value))
    };
    let mut blocks: Vec<_> = records
        .iter()
        .filter(|r| r.split == split)
        .filter_map(|r| Some((r.block_index?, r.block?, r.kind?)))
        .collect();
    blocks.sort();
    blocks.dedup();
    let row = |block: &str, kind: &str, cosine: &str, l2: &str, drop: &str| {
        format!("{block:<8} {kind:<10} {cosine:>9} {l2:>9} {drop:>9}")
    };
    let mut lines = vec![row("block", "kind", "cosine", "l2 ratio", "drop acc")];
    for (index, id, kind) in blocks {
        lines.push(row(
            &id.to_string(),
            kind.as_str(),
            &value(MetricName::Cosine, index),
            &value(MetricName::L2Ratio, index),
            &value(MetricName::DropAccuracy, index),
        ));
    }
    lines
}
