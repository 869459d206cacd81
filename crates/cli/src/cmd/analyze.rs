use crate::args::AnalyzeArgs;
use crate::progress::AnalysisBar;
use analysis::Analysis;
use analyzer::AnalyzeError;
use anyhow::{bail, Context, Result};
use domain::unrolling::unroll_means;
use domain::{
    AnalysisRecord, AnalysisSpec, Group, MetricName, PassTime, RunSpec, Split, SplitExamples, Stat,
};
use resnet::candle_device;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use train::META_SPEC;

pub fn run(args: AnalyzeArgs, data_dir: &Path) -> Result<ExitCode> {
    let spec = args.analysis.spec();
    spec.validate().context("invalid analysis")?;
    let device = candle_device(args.device)?;
    // A run's epochs are known from their file names; one checkpoint's only once read.
    let (checkpoints, run_dir) = match (&args.checkpoint, &args.run) {
        (Some(c), _) => (vec![(None, c.clone())], run_dir_of(c)),
        (None, Some(run)) => (epoch_checkpoints(run)?, run.clone()),
        (None, None) => bail!("give --checkpoint or --run"),
    };
    let out = args.out.clone().unwrap_or_else(|| run_dir.join("analysis"));
    let stop = Arc::new(AtomicBool::new(false));
    super::train::install_interrupt(
        stop.clone(),
        Some("stopping the analysis at its next batch, writing nothing of it"),
    )?;
    let mut dataset = None;
    let mut analyses = vec![];
    for (epoch, path) in &checkpoints {
        // A run's epoch analysed before with these settings is kept: a stopped `--run`
        // continues where it stopped.
        if let Some(done) = epoch
            .map(|e| analysed_earlier(&out, e, &spec))
            .transpose()?
            .flatten()
        {
            if !args.json {
                eprintln!(
                    "{}: analysed earlier with these settings, kept ({})",
                    path.display(),
                    out.join(format!("epoch-{:04}", done.epoch)).display()
                );
            }
            analyses.push(done);
            continue;
        }
        let ck = resnet::checkpoint::read(path)?;
        let run: RunSpec = ck.meta_json(META_SPEC)?;
        // The checkpoints of one run share their data: open it once.
        if dataset.is_none() {
            dataset = Some(super::data_for(&run, args.data.as_deref(), data_dir)?.0);
        }
        let data = dataset.as_ref().expect("opened above");
        let name = path.file_name().unwrap_or(path.as_os_str());
        let bar = AnalysisBar::new(name.to_string_lossy(), args.json);
        let show = |p: &domain::AnalysisProgress| bar.show(p);
        let analysed =
            analyzer::analyse_checkpoint(&ck, data, &spec, &device, Some(&stop), Some(&show));
        drop(bar);
        let result = match analysed {
            Err(AnalyzeError::Analysis(analysis::Error::Stopped)) => {
                eprintln!("{}", super::STOPPED);
                return Ok(ExitCode::from(130));
            }
            result => result?,
        };
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

/// The analysis of `epoch` written under `out` before, if it was made with `spec`.
fn analysed_earlier(out: &Path, epoch: u32, spec: &AnalysisSpec) -> Result<Option<Analysis>> {
    let path = out.join(format!("epoch-{epoch:04}")).join("analysis.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    // One written by another version, or damaged, is analysed again.
    let earlier: Option<Analysis> = serde_json::from_str(&text).ok();
    Ok(earlier.filter(|a| a.epoch == epoch && a.spec == *spec))
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

/// A run's epoch-boundary checkpoints with their epochs, oldest first.
fn epoch_checkpoints(run: &Path) -> Result<Vec<(Option<u32>, PathBuf)>> {
    let dir = run.join("checkpoints");
    let found: Vec<_> = train::list_checkpoints(&dir)?
        .into_iter()
        .filter(|(_, batch, _)| *batch == 0)
        .map(|(epoch, _, name)| (Some(epoch), dir.join(name)))
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

/// The split a summary shows: the test split when analysed, else the first.
fn shown_split(spec: &AnalysisSpec) -> Split {
    match spec.splits.contains(&Split::Test) {
        true => Split::Test,
        false => spec.splits[0],
    }
}

/// A summary on stderr ([`result_lines`]), its block table of the test split when analysed
/// (else the first split).
fn report(checkpoint: &Path, dir: &Path, a: &Analysis) {
    let split = shown_split(&a.spec);
    eprintln!(
        "{} (epoch {}): {} in {} → {}",
        checkpoint.display(),
        a.epoch,
        SplitExamples::describe(&a.examples),
        PassTime::took(a.seconds, &a.passes),
        dir.display()
    );
    let settings = a.spec.changes_inline();
    if !settings.is_empty() {
        eprintln!("  settings: {settings}");
    }
    let results = result_lines(&a.spec, &a.records, a.selected_alpha, &a.notes, &[split]);
    for line in results {
        eprintln!("  {line}");
    }
}

/// What `stepwise analyze` and `analysis show` print of an analysis' results: the block
/// table of each of `splits` that has block-wise records, then on the shown split the
/// borderline window and the unrolling (its selected α and the sweep), then the notes.
pub(crate) fn result_lines(
    spec: &AnalysisSpec,
    records: &[AnalysisRecord],
    selected_alpha: Option<f64>,
    notes: &[String],
    splits: &[Split],
) -> Vec<String> {
    let mut lines = vec![];
    for &split in splits {
        let table = block_table(records, split);
        // A header alone: no block-wise records of this split (none asked for, or not yet).
        if table.len() > 1 {
            lines.push(format!("{split} split:"));
            lines.extend(table);
        }
    }
    let shown = shown_split(spec);
    lines.extend(window_table(records, shown));
    if let Some(alpha) = selected_alpha {
        lines.push(unrolling_line(alpha, spec, records));
    }
    lines.extend(unrolling_table(records, shown));
    lines.extend(notes.iter().map(|note| format!("note: {note}")));
    lines
}

/// The unrolling's selected step size, the block's statistics where they are not the running
/// ones, and at that α the train loss before and after the steps beside its first order.
fn unrolling_line(alpha: f64, spec: &AnalysisSpec, records: &[AnalysisRecord]) -> String {
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
fn block_table(records: &[AnalysisRecord], split: Split) -> Vec<String> {
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
    let columns = [
        MetricName::Cosine,
        MetricName::L2Ratio,
        MetricName::DropAccuracy,
    ];
    // The blocks with a value in some column (the borderline window's records name blocks
    // too).
    let mut blocks: Vec<_> = records
        .iter()
        .filter(|r| r.split == split && columns.contains(&r.name))
        .filter_map(|r| Some((r.block_index?, r.block?, r.kind?)))
        .collect();
    blocks.sort();
    blocks.dedup();
    let row = |block: &str, kind: &str, cosine: &str, l2: &str, drop: &str| {
        format!("{block:<8} {kind:<10} {cosine:>9} {l2:>9} {drop:>9}")
    };
    let mut lines = vec![row("block", "kind", "cosine", "l2 ratio", "drop acc")];
    for (index, id, kind) in blocks {
        let [cosine, l2, drop] = columns.map(|name| value(name, index));
        lines.push(row(&id.to_string(), kind.as_str(), &cosine, &l2, &drop));
    }
    lines
}

/// The head's accuracy along the borderline window on `split`, per group of the margin at
/// its input (with the group's size): at the input, then after each of its blocks — Fig. 6
/// in numbers. Empty without window records.
fn window_table(records: &[AnalysisRecord], split: Split) -> Vec<String> {
    let accuracy: Vec<&AnalysisRecord> = records
        .iter()
        .filter(|r| r.name == MetricName::BorderlineAccuracy && r.split == split)
        .collect();
    // Each position's label: the window's input, then the block that led there.
    let mut positions: BTreeMap<u32, String> = BTreeMap::new();
    for r in &accuracy {
        if let Some(step) = r.step {
            let label = r.block.map_or("input".into(), |b| b.to_string());
            positions.entry(step).or_insert(label);
        }
    }
    if positions.is_empty() {
        return vec![];
    }
    let row = |group: &str, n: &str, values: Vec<String>| {
        let cells: String = values.iter().map(|v| format!(" {v:>8}")).collect();
        format!("{group:<14} {n:>5}{cells}")
    };
    let mut lines = vec![row(
        &format!("{split} accuracy"),
        "n",
        positions.values().cloned().collect(),
    )];
    for group in [
        Group::Borderline,
        Group::Correct,
        Group::Misclassified,
        Group::All,
    ] {
        let of_group: Vec<&&AnalysisRecord> =
            accuracy.iter().filter(|r| r.group == Some(group)).collect();
        let Some(start) = of_group.iter().find(|r| r.step == Some(0)) else {
            continue;
        };
        let values = positions
            .keys()
            .map(|&step| {
                of_group
                    .iter()
                    .find(|r| r.step == Some(step))
                    .map_or("-".into(), |r| format!("{:.3}", r.value))
            })
            .collect();
        lines.push(row(group.as_str(), &start.n.to_string(), values));
    }
    lines
}

/// Per α of the unrolling, largest first: the train loss before → after the steps and its
/// first order summed over them, and `split`'s mean cosine before → after with the steps it
/// stayed negative — Fig. 7 in numbers. Empty without unrolling records.
fn unrolling_table(records: &[AnalysisRecord], split: Split) -> Vec<String> {
    let mut alphas: Vec<f64> = records
        .iter()
        .filter(|r| r.name == MetricName::UnrollCosine)
        .filter_map(|r| r.alpha)
        .collect();
    alphas.sort_by(|a, b| b.total_cmp(a));
    alphas.dedup();
    // Diverging step sizes reach 1e11 and beyond.
    let number = |v: f64| match v.abs() {
        a if a != 0.0 && !(1e-3..1e4).contains(&a) => format!("{v:.3e}"),
        _ => format!("{v:.3}"),
    };
    let from_to = |series: &[f64], format: &dyn Fn(f64) -> String| match series {
        [first, .., last] => format!("{} → {}", format(*first), format(*last)),
        _ => "-".into(),
    };
    let row = |alpha: &str, loss: &str, first_order: &str, cosine: &str, negative: &str| {
        format!("{alpha:<6} {loss:>22} {first_order:>12} {cosine:>18} {negative:>15}")
    };
    let mut lines = vec![row(
        "α",
        "train loss",
        "first order",
        &format!("{split} cosine"),
        "negative for",
    )];
    for alpha in alphas {
        let series = |name, split| unroll_means(records, name, Group::All, split, alpha);
        let first_order = series(MetricName::UnrollFirstOrder, Split::Train);
        let cosine = series(MetricName::UnrollCosine, split);
        // Step 0 is before unrolling: the steps after it that kept the cosine negative.
        let steps = cosine.len().saturating_sub(1);
        let negative = cosine.iter().skip(1).take_while(|v| **v < 0.0).count();
        lines.push(row(
            &alpha.to_string(),
            &from_to(&series(MetricName::UnrollLoss, Split::Train), &number),
            &match first_order.iter().sum::<f64>() {
                _ if first_order.is_empty() => "-".into(),
                sum if sum >= 0.0 => format!("+{}", number(sum)),
                sum => number(sum),
            },
            &from_to(&cosine, &|v| format!("{v:+.3}")),
            &format!("{negative} of {steps} steps"),
        ));
    }
    match lines.len() {
        1 => vec![],
        _ => lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{BlockId, BlockKind};

    #[test]
    fn the_block_table_lists_the_blocks_with_a_value_in_a_column() {
        let block = |b| BlockId::new(2, b);
        let cosine = AnalysisRecord::new(MetricName::Cosine, Split::Test, 3, -0.25, 8)
            .at_block(block(0), 6, BlockKind::Identity)
            .with_stat(Stat::Mean);
        // The borderline window's records name their blocks too.
        let mut window =
            AnalysisRecord::new(MetricName::BorderlineAccuracy, Split::Test, 3, 0.5, 8)
                .with_group(Group::All);
        (window.block, window.block_index, window.kind) =
            (Some(block(1)), Some(7), Some(BlockKind::Identity));
        let cells = |line: &String| line.split_whitespace().collect::<Vec<_>>().join(" ");
        let rows: Vec<String> = block_table(&[cosine.clone(), window.clone()], Split::Test)
            .iter()
            .map(cells)
            .collect();
        assert_eq!(
            rows,
            [
                "block kind cosine l2 ratio drop acc",
                "s2.b0 identity -0.2500 - -"
            ]
        );
        assert_eq!(
            block_table(&[window], Split::Test).len(),
            1,
            "a header alone"
        );
    }

    #[test]
    fn the_window_table_gives_each_groups_accuracy_along_the_last_blocks() {
        let mut records = vec![];
        for (group, n, values) in [
            (Group::All, 10, [0.3, 0.4, 0.8]),
            (Group::Borderline, 2, [0.5, 0.5, 1.0]),
            (Group::Correct, 5, [1.0, 0.8, 0.8]),
        ] {
            for (step, value) in (0u32..).zip(values) {
                let mut r =
                    AnalysisRecord::new(MetricName::BorderlineAccuracy, Split::Test, 3, value, n)
                        .with_group(group);
                r.step = Some(step);
                if step > 0 {
                    r.block = Some(BlockId::new(2, step));
                }
                records.push(r);
            }
        }
        // Another split's and another metric's records are not the table's.
        let mut train =
            AnalysisRecord::new(MetricName::BorderlineAccuracy, Split::Train, 3, 0.9, 10)
                .with_group(Group::Misclassified);
        train.step = Some(0);
        records.push(train);
        let mut loss = AnalysisRecord::new(MetricName::BorderlineLoss, Split::Test, 3, 2.0, 10)
            .with_group(Group::Misclassified);
        loss.step = Some(0);
        records.push(loss);
        let cells = |line: &String| line.split_whitespace().collect::<Vec<_>>().join(" ");
        let rows: Vec<String> = window_table(&records, Split::Test)
            .iter()
            .map(cells)
            .collect();
        assert_eq!(
            rows,
            [
                "test accuracy n input s2.b1 s2.b2",
                "borderline 2 0.500 0.500 1.000",
                "correct 5 1.000 0.800 0.800",
                "all 10 0.300 0.400 0.800",
            ]
        );
        assert!(
            window_table(&records, Split::Train).len() == 2,
            "its one train row"
        );
        assert!(window_table(&records[..0], Split::Test).is_empty());
    }

    #[test]
    fn the_unrolling_table_gives_each_step_sizes_course() {
        let mut records = vec![];
        let mut add = |name, split, alpha, values: &[f64]| {
            for (step, &value) in (0..).zip(values) {
                let r = AnalysisRecord::new(name, split, 3, value, 10);
                records.push(r.with_group(Group::All).at_step(alpha, step));
            }
        };
        // α = 1 diverges; α = 0.1 lowers the loss, its cosine negative for both steps.
        add(MetricName::UnrollLoss, Split::Train, 1.0, &[0.5, 40.0, 2e5]);
        add(MetricName::UnrollFirstOrder, Split::Train, 1.0, &[1.0, 1e5]);
        add(
            MetricName::UnrollCosine,
            Split::Test,
            1.0,
            &[-0.1, 0.2, 0.3],
        );
        add(MetricName::UnrollLoss, Split::Train, 0.1, &[0.5, 0.45, 0.4]);
        add(
            MetricName::UnrollFirstOrder,
            Split::Train,
            0.1,
            &[-0.05, -0.04],
        );
        add(
            MetricName::UnrollCosine,
            Split::Test,
            0.1,
            &[-0.1, -0.05, -0.01],
        );
        // Another split's cosines are not the table's.
        add(
            MetricName::UnrollCosine,
            Split::Train,
            0.1,
            &[0.9, 0.9, 0.9],
        );
        let table = unrolling_table(&records, Split::Test);
        let cells = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
        let rows: Vec<String> = table.iter().map(|l| cells(l)).collect();
        assert_eq!(
            rows,
            [
                "α train loss first order test cosine negative for",
                "1 0.500 → 2.000e5 +1.000e5 -0.100 → +0.300 0 of 2 steps",
                "0.1 0.500 → 0.400 -0.090 -0.100 → -0.010 2 of 2 steps",
            ]
        );
        assert!(unrolling_table(&records[..0], Split::Test).is_empty());
    }
}
