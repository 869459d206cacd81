//! `stepwise figures`: the paper's figures from run directories — their training metrics
//! and the analysis of their latest analysed epoch (`stepwise analyze`), and where several
//! epochs were analysed, the blocks over training. Runs whose specs differ only in their
//! seed are seeds of one configuration (see [`domain::configuration_labels`]).

use analysis::Analysis;
use anyhow::{bail, Context, Result};
use domain::compare::{Analysed, SetAside};
use domain::{AnalysisRecord, BlockSummary, MetricRecord, RunSpec};
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
    /// Why its latest analysis is not pooled with its seeds' ([`pool_seeds`]), if it is not.
    pub left_out: Option<SetAside>,
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
    let training = read_metrics(&dir.join("metrics.jsonl"))?;
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
        left_out: None,
    })
}

/// The records of a `metrics.jsonl` (none if it is absent). A last line cut short — no
/// newline after it, as a crash or a full disk leaves an append — is left out with a
/// warning (resuming the run drops it too); any other bad line is an error naming it.
fn read_metrics(path: &Path) -> Result<Vec<MetricRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let torn = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(record) => records.push(record),
            Err(_) if torn && i + 1 == lines.len() => eprintln!(
                "warning: {} ends in a cut-short line {}, left out",
                path.display(),
                i + 1
            ),
            Err(e) => return Err(e).with_context(|| format!("{} line {}", path.display(), i + 1)),
        }
    }
    Ok(records)
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
        .map(|r| {
            let analysis = r.analysis.as_ref();
            let analysed = analysis.map(|a| (&a.records[..], a.selected_alpha, &a.spec));
            figures::Run::new(&r.label, &r.training, &r.history, analysed)
        })
        .collect();
    let mut written = vec![];
    for (name, figure) in figures::figures(&views) {
        written.extend(figures::write(&figure, out, &name)?);
    }
    Ok(written)
}

/// What decides whether a run's analysis is pooled with its seeds'.
fn analysed(analysis: &Analysis) -> Analysed<'_> {
    Analysed {
        epoch: analysis.epoch,
        spec: &analysis.spec,
    }
}

/// Seeds pooled at their configuration's latest analysed epoch, measured alike, for the
/// figures, the claims and `blocks.csv`; says on stderr which seed is left out and why.
pub fn pool_seeds(runs: &mut [RunData], dirs: &[PathBuf]) {
    domain::compare::pool_seeds(
        runs,
        |r| (&r.label, r.analysis.as_ref().map(analysed)),
        |r, why| why.apply(&mut r.analysis, &mut r.history, &mut r.left_out),
    );
    for (run, dir) in runs.iter().zip(dirs) {
        if let Some(why) = run.left_out {
            eprintln!(
                "{}: left out of {}'s block-wise figures, claims and blocks.csv: {why}",
                dir.display(),
                run.label
            );
        }
    }
}

/// The runs' blocks side by side: [`domain::block_summaries`] of each latest analysis,
/// seeds of a configuration as mean ± sd.
pub fn blocks_of(runs: &[RunData]) -> Vec<BlockSummary> {
    domain::block_summaries(runs.iter().filter_map(|r| {
        let analysis = r.analysis.as_ref()?;
        Some((r.label.as_str(), analysed(analysis), &analysis.records[..]))
    }))
}

/// Writes block summaries to `path` as CSV, as the API's `…/blocks` serves them; nothing
/// when there are none (no run analysed). Returns the path written, if any.
pub fn write_blocks_csv(summaries: &[BlockSummary], path: &Path) -> Result<Option<PathBuf>> {
    if summaries.is_empty() {
        return Ok(None);
    }
    resnet::checkpoint::write_atomic(path, domain::csv::to_csv(summaries).as_bytes())?;
    Ok(Some(path.to_path_buf()))
}

pub fn run(runs: &[PathBuf], out: &Path) -> Result<ExitCode> {
    if runs.is_empty() {
        bail!("give at least one --run");
    }
    let specs = runs
        .iter()
        .map(|dir| Ok((dir.clone(), read_run_spec(dir)?)))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = runs
        .iter()
        .map(|dir| {
            dir.file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned())
        })
        .collect();
    let labelled: Vec<(&str, &RunSpec)> = names
        .iter()
        .map(String::as_str)
        .zip(specs.iter().map(|(_, s)| s))
        .collect();
    let labels = domain::configuration_labels(&labelled);
    let mut data = vec![];
    for (dir, label) in runs.iter().zip(&labels) {
        let mut d = read_run(dir)?;
        d.label = label.clone();
        data.push(d);
    }
    pool_seeds(&mut data, runs);
    for label in labels.iter().collect::<std::collections::BTreeSet<_>>() {
        let seeds: Vec<String> = runs
            .iter()
            .zip(&labels)
            .filter(|(_, l)| *l == label)
            .map(|(dir, _)| dir.display().to_string())
            .collect();
        if seeds.len() > 1 {
            eprintln!(
                "{label}: {} runs drawn as seeds ({})",
                seeds.len(),
                seeds.join(", ")
            );
        }
    }
    let mut written = render(&data, out)?;
    if written.is_empty() {
        bail!("the runs hold no metrics to draw (train them, then run stepwise analyze)");
    }
    written.extend(write_blocks_csv(
        &blocks_of(&data),
        &out.join("blocks.csv"),
    )?);
    let listing: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    super::print_text(&listing.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// A link to `path` from a file in `dir` (`report.md`'s to its figures and `blocks.csv`).
pub(crate) fn link(path: &Path, dir: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

/// Links from a file in `dir` to the SVGs among `files`.
pub(crate) fn svg_links(files: &[PathBuf], dir: &Path) -> Vec<String> {
    files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "svg"))
        .map(|f| link(f, dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::read_metrics;

    #[test]
    fn a_cut_short_last_line_is_left_out_and_any_other_bad_line_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let good = r#"{"name":"loss","split":"test","epoch":1,"value":2.5}"#;
        std::fs::write(&path, format!("{good}\n{good}\n{{\"name\":\"lo")).unwrap();
        assert_eq!(read_metrics(&path).unwrap().len(), 2);
        // Ended by its newline, the same line is not cut short but wrong.
        std::fs::write(&path, format!("{good}\n{{\"name\":\"lo\n")).unwrap();
        let err = format!("{:#}", read_metrics(&path).unwrap_err());
        assert!(err.contains("metrics.jsonl line 2"), "{err}");
        std::fs::write(&path, format!("{{bad\n{good}")).unwrap();
        let err = format!("{:#}", read_metrics(&path).unwrap_err());
        assert!(err.contains("metrics.jsonl line 1"), "{err}");
        assert!(read_metrics(&dir.path().join("absent.jsonl"))
            .unwrap()
            .is_empty());
    }
}
