//! `stepwise analysis`: a run's block-wise analyses on the API — list them, read one, ask
//! for another.

use super::checkpoint::epoch_ends_on_disk;
use super::{id, json, run_id, Api};
use crate::args::AnalysisRequestArgs;
use crate::cmd::analyze::result_lines;
use crate::cmd::print_text;
use crate::progress::AnalysisBar;
use anyhow::Result;
use domain::service::{AnalysisRequest, AnalysisView, JobState};
use domain::{PassTime, RecordFilter, SplitExamples};
use std::process::ExitCode;
use std::time::Duration;

pub fn list(api: &Api, run: &str, as_json: bool) -> Result<ExitCode> {
    let client = api.client()?;
    let analyses = client.analyses(run_id(&client, run)?)?;
    if as_json {
        return json(&analyses);
    }
    let row =
        |id: &str, epoch: &str, status: &str, seconds: &str, examples: &str, settings: &str| {
            format!("{id:<36}  {epoch:>5} {status:<10} {seconds:>8}  {examples:<22} {settings}")
        };
    let mut lines = vec![row(
        "id", "epoch", "status", "seconds", "examples", "settings",
    )];
    for a in &analyses {
        let settings = a.spec.changes_inline();
        lines.push(row(
            &a.id.to_string(),
            &a.epoch.to_string(),
            a.status.as_str(),
            &a.seconds.map_or("-".into(), |s| format!("{s:.1}")),
            &SplitExamples::describe(&a.examples),
            if settings.is_empty() {
                "default"
            } else {
                &settings
            },
        ));
    }
    print_text(&lines.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// An analysis as text, or its records `filter` keeps as CSV or JSON; a filter without
/// --json gives CSV, as the text's tables do not show every record.
pub fn show(
    api: &Api,
    analysis: &str,
    csv: bool,
    as_json: bool,
    filter: &RecordFilter,
) -> Result<ExitCode> {
    let client = api.client()?;
    let analysis = id(analysis)?;
    let filtered = *filter != RecordFilter::default();
    if csv || (filtered && !as_json) {
        print_text(client.analysis_csv(analysis, filter)?.trim_end())?;
        return Ok(ExitCode::SUCCESS);
    }
    let view = client.analysis(analysis, filter)?;
    if as_json {
        return json(&view);
    }
    print_text(&describe(&view))?;
    Ok(ExitCode::SUCCESS)
}

/// Queues an analysis per asked checkpoint; with `--wait`, polls until they end and shows
/// them, failing unless all succeeded.
pub fn request(api: &Api, args: AnalysisRequestArgs) -> Result<ExitCode> {
    let client = api.client()?;
    let run = run_id(&client, &args.run)?;
    let spec = args.analysis.spec();
    let epochs: Vec<Option<u32>> = if args.all_epochs {
        let checkpoints = client.checkpoints(run)?;
        let mut epochs: Vec<u32> = epoch_ends_on_disk(&checkpoints).map(|c| c.epoch).collect();
        epochs.sort_unstable();
        epochs.dedup();
        anyhow::ensure!(
            !epochs.is_empty(),
            "run {run} has no epoch checkpoint on disk yet"
        );
        epochs.into_iter().map(Some).collect()
    } else if args.epoch.is_empty() {
        vec![None]
    } else {
        args.epoch.iter().copied().map(Some).collect()
    };
    let mut views = vec![];
    for epoch in epochs {
        let request = AnalysisRequest {
            epoch,
            spec: spec.clone(),
        };
        views.push(client.request_analysis(run, &request)?);
    }
    if args.wait {
        let every = Duration::from_secs_f64(args.every.clamp(0.1, 60.0));
        for view in &mut views {
            let bar = AnalysisBar::new(format!("analysis of epoch {}", view.epoch), args.json);
            while !view.status.is_final() {
                std::thread::sleep(every);
                *view = client.analysis(view.id, &RecordFilter::default())?;
                if let Some(progress) = &view.progress {
                    bar.show(progress);
                }
            }
        }
    }
    if args.json {
        json(&views)?;
    } else if args.wait {
        let shown: Vec<String> = views.iter().map(describe).collect();
        print_text(&shown.join("\n\n"))?;
    } else {
        for view in &views {
            print_text(&format!(
                "analysis {} of epoch {} is {}",
                view.id, view.epoch, view.status
            ))?;
        }
    }
    let succeeded = views.iter().all(|v| v.status == JobState::Succeeded);
    Ok(if !args.wait || succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The analysis's state, then what `stepwise analyze` prints of its results, with a block
/// table per analysed split.
fn describe(a: &AnalysisView) -> String {
    let mut lines = vec![format!(
        "analysis {} of run {}, checkpoint after epoch {}: {}",
        a.id, a.run_id, a.epoch, a.status
    )];
    if let Some(progress) = &a.progress {
        lines.push(format!("  at {}", progress.describe()));
    }
    if let Some(seconds) = a.seconds {
        lines.push(format!(
            "  {} examples in {}",
            SplitExamples::describe(&a.examples),
            PassTime::took(seconds, &a.passes)
        ));
    }
    let settings = a.spec.changes_inline();
    if !settings.is_empty() {
        lines.push(format!("  settings: {settings}"));
    }
    if let (Some(kind), Some(error)) = (a.failure_kind, &a.last_error) {
        lines.push(format!("  last failure ({kind}): {error}"));
    }
    let results = result_lines(
        &a.spec,
        &a.records,
        a.selected_alpha,
        &a.notes,
        &a.spec.splits,
    );
    lines.extend(results.iter().map(|line| format!("  {line}")));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{AnalysisKind, AnalysisProgress, Stat, UnrollBn};
    use domain::{AnalysisRecord, AnalysisSpec, BlockId, BlockKind, Group, MetricName, Split};

    /// What `analysis show` prints of a finished analysis: its blocks, the unrolling's
    /// selected α with the groups' shares of its first order, the sweep, the notes.
    #[test]
    fn an_analysis_is_described_block_by_block_then_its_unrolling() {
        let mut records = vec![
            AnalysisRecord::new(MetricName::Cosine, Split::Test, 3, -0.25, 8)
                .at_block(BlockId::new(0, 0), 0, BlockKind::Identity)
                .with_stat(Stat::Mean),
        ];
        let mut add = |name, split, group, n, values: &[f64]| {
            for (step, &value) in (0..).zip(values) {
                let r = AnalysisRecord::new(name, split, 3, value, n);
                records.push(r.with_group(group).at_step(0.1, step));
            }
        };
        add(
            MetricName::UnrollLoss,
            Split::Train,
            Group::All,
            10,
            &[0.5, 0.45, 0.4],
        );
        add(
            MetricName::UnrollFirstOrder,
            Split::Train,
            Group::All,
            10,
            &[-0.05, -0.04],
        );
        add(
            MetricName::UnrollFirstOrder,
            Split::Train,
            Group::Misclassified,
            2,
            &[0.05, 0.0],
        );
        add(
            MetricName::UnrollFirstOrder,
            Split::Train,
            Group::Correct,
            8,
            &[-0.075, -0.05],
        );
        add(
            MetricName::UnrollCosine,
            Split::Test,
            Group::All,
            10,
            &[-0.1, -0.05, 0.01],
        );
        let id = uuid::Uuid::nil();
        let view = AnalysisView {
            id,
            run_id: id,
            checkpoint_id: id,
            epoch: 3,
            status: JobState::Succeeded,
            spec: AnalysisSpec {
                unroll_steps: 2,
                unroll_bn: UnrollBn::Batch,
                ..AnalysisSpec::default()
            },
            failure_kind: None,
            last_error: None,
            selected_alpha: Some(0.1),
            notes: vec!["unroll: no test example is borderline".into()],
            examples: vec![SplitExamples {
                split: Split::Test,
                examples: 10,
            }],
            seconds: Some(4.25),
            passes: vec![
                PassTime {
                    metrics: vec![AnalysisKind::Cosine, AnalysisKind::Drop],
                    seconds: 1.0,
                },
                PassTime {
                    metrics: vec![AnalysisKind::Unroll],
                    seconds: 3.0,
                },
            ],
            progress: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            finished_at: None,
            records,
        };
        let running = AnalysisView {
            status: JobState::Running,
            seconds: None,
            passes: vec![],
            records: vec![],
            progress: Some(AnalysisProgress {
                split: Split::Train,
                pass: vec![AnalysisKind::Unroll],
                batch: 3,
                batches: 8,
            }),
            ..view.clone()
        };
        assert_eq!(
            describe(&running).lines().take(2).collect::<Vec<_>>(),
            [
                format!("analysis {id} of run {id}, checkpoint after epoch 3: running").as_str(),
                "  at train split · unroll · batch 3 of 8",
            ]
        );
        let text = describe(&view);
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                format!("analysis {id} of run {id}, checkpoint after epoch 3: succeeded"),
                "10 test examples in 4.2 s (cosine+drop 1.0 s, unroll 3.0 s)".into(),
                "settings: unroll_bn = \"batch\"; unroll_steps = 2".into(),
                "test split:".into(),
                "block kind cosine l2 ratio drop acc".into(),
                "s0.b0 identity -0.2500 - -".into(),
                "unrolling: selected α = 0.1 (the block on batch statistics): train loss 0.500 → \
                 0.400 (first order -0.090: misclassified +0.010, correct -0.100) over 2 steps"
                    .into(),
                "α train loss first order test cosine negative for".into(),
                "0.1 0.500 → 0.400 -0.090 -0.100 → +0.010 1 of 2 steps".into(),
                "note: unroll: no test example is borderline".into(),
            ]
        );
    }
}
