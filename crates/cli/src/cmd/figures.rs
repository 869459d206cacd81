//! `stepwise figures`: the paper's figures from run directories — their training metrics
//! and the analysis of their latest analysed epoch (`stepwise analyze`), and where several
//! epochs were analysed, the blocks over training. Runs with the same label are seeds of one
//! configuration.

use analysis::Analysis;
use anyhow::{bail, Context, Result};
use domain::{AnalysisRecord, MetricRecord, RunSpec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What `stepwise figures` reads of one run directory.
pub struct RunData {
    /// The model's label (`resnet-110`); experiments use their configurations' labels.
    pub label: String,
    pub training: Vec<MetricRecord>,
    pub analysis: Option<Analysis>,
    /// [`figures::Run::history`]: the analysed epochs' block records.
    pub history: Vec<AnalysisRecord>,
}

/// The resolved spec of a run directory (`spec.toml`, written when training starts).
pub fn read_run_spec(dir: &Path) -> Result<RunSpec> {
    let spec_path = dir.join("spec.toml");
    let text = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))?;
    RunSpec::from_toml(&text).with_context(|| format!("{}", spec_path.display()))
}

/// The spec, training metrics and analyses of a run directory.
pub fn read_run(dir: &Path) -> Result<RunData> {
    let spec = read_run_spec(dir)?;
    let metrics = dir.join("metrics.jsonl");
    let training = match std::fs::read_to_string(&metrics) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {}", metrics.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(e).with_context(|| format!("reading {}", metrics.display())),
    };
    let mut analyses = analysis_files(dir)?
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<Analysis>(&text)
                .with_context(|| format!("parsing {}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let analysis = analyses.pop();
    let mut history = vec![];
    if let Some(latest) = &analysis {
        for a in analyses.iter().chain([latest]) {
            if a.spec.gradient == latest.spec.gradient {
                let kept = a
                    .records
                    .iter()
                    .filter(|r| figures::OVER_TRAINING.contains(&r.name));
                history.extend(kept.cloned());
            }
        }
    }
    Ok(RunData {
        label: spec.model.label(),
        training,
        analysis,
        history,
    })
}

/// Every `RUN/analysis/epoch-EEEE/analysis.json`, by epoch.
fn analysis_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let root = dir.join("analysis");
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("listing {}", root.display())),
    };
    let mut files = vec![];
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path().join("analysis.json");
        if name.starts_with("epoch-") && path.exists() {
            files.push(path);
        }
    }
    // Zero-padded epochs: the names sort as the epochs do.
    files.sort();
    Ok(files)
}

/// Renders every figure the runs support into `out`; returns the files written.
pub fn render(runs: &[RunData], out: &Path) -> Result<Vec<PathBuf>> {
    let views: Vec<figures::Run> = runs
        .iter()
        .map(|r| figures::Run {
            label: &r.label,
            analysis: r.analysis.as_ref().map_or(&[][..], |a| &a.records[..]),
            training: &r.training,
            selected_alpha: r.analysis.as_ref().and_then(|a| a.selected_alpha),
            history: &r.history,
        })
        .collect();
    let mut written = vec![];
    for (name, figure) in figures::figures(&views) {
        written.extend(figures::write(&figure, out, &name)?);
    }
    Ok(written)
}

pub fn run(runs: &[PathBuf], out: &Path) -> Result<ExitCode> {
    if runs.is_empty() {
        bail!("give at least one --run");
    }
    let data = runs
        .iter()
        .map(|r| read_run(r))
        .collect::<Result<Vec<_>>>()?;
    let written = render(&data, out)?;
    if written.is_empty() {
        bail!("the runs hold no metrics to draw (train them, then run stepwise analyze)");
    }
    let listing: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    super::print_text(&listing.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}
