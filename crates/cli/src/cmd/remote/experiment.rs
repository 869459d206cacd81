//! `stepwise experiment`: experiments on the API — list them, show one's configurations
//! over seeds, paper.md's Table 1 and its claims.

use super::{await_analyses, experiment_id, json, run_bar, show_progress, succeeded, Api};
use crate::cmd::print_text;
use anyhow::Result;
use client::Client;
use client::FiguresOf;
use domain::service::{ClaimsView, ExperimentView};
use domain::{BlockSummary, MetricName};
use indicatif::MultiProgress;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

pub fn list(api: &Api, limit: u32, as_json: bool) -> Result<ExitCode> {
    let page = api.client()?.experiments(limit, None)?;
    if as_json {
        return json(&page);
    }
    let row = |id: &str, name: &str, runs: &str, succeeded: &str, failed: &str, active: &str| {
        format!("{id:<36}  {name:<24} {runs:>5} {succeeded:>9} {failed:>6} {active:>6}")
    };
    let mut lines = vec![row("id", "name", "runs", "succeeded", "failed", "active")];
    for e in &page.items {
        lines.push(row(
            &e.id.to_string(),
            &e.name,
            &e.runs.to_string(),
            &e.succeeded.to_string(),
            &e.failed.to_string(),
            &e.active.to_string(),
        ));
    }
    if page.next_cursor.is_some() {
        lines.push(format!("(more: raise --limit above {limit})"));
    }
    print_text(&lines.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct Shown {
    experiment: ExperimentView,
    claims: ClaimsView,
    #[serde(skip_serializing_if = "Option::is_none")]
    blocks: Option<Vec<BlockSummary>>,
}

pub fn show(api: &Api, experiment: &str, blocks: bool, as_json: bool) -> Result<ExitCode> {
    let client = api.client()?;
    let experiment = experiment_id(&client, experiment)?;
    let shown = Shown {
        claims: client.experiment_claims(experiment)?,
        experiment: client.experiment(experiment)?,
        blocks: blocks
            .then(|| client.block_summaries(&FiguresOf::Experiment(experiment)))
            .transpose()?,
    };
    if as_json {
        return json(&shown);
    }
    let mut text = describe(&shown);
    if let Some(summaries) = &shown.blocks {
        text.push('\n');
        text.push_str(&side_by_side(summaries));
    }
    print_text(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The blocks of Figs. 2–4 side by side, as the experiment's page shows them: per metric a
/// table of every block, a column per configuration (mean ± sd over its seeds).
fn side_by_side(summaries: &[BlockSummary]) -> String {
    let drawn = [
        MetricName::Cosine,
        MetricName::L2Ratio,
        MetricName::DropAccuracy,
    ];
    let mut lines = vec![];
    for table in domain::compare::metric_tables(summaries) {
        if !drawn.contains(&table.name) {
            continue;
        }
        let cell = |s: &BlockSummary| match s.runs {
            1 => format!("{:.4}", s.mean),
            _ => format!("{:.4} ± {:.4}", s.mean, s.sd),
        };
        let mut rows = vec![std::iter::once("block".to_string())
            .chain(table.columns.iter().map(|c| c.title()))
            .collect::<Vec<_>>()];
        for row in &table.rows {
            let block = format!("{}{}", row.block, if row.projection { " (P)" } else { "" });
            let cells = row.cells.iter().map(|c| c.map_or("-".into(), cell));
            rows.push(std::iter::once(block).chain(cells).collect());
        }
        lines.push(String::new());
        lines.push(format!("{} per block, {} split:", table.name, table.split));
        lines.extend(aligned(&rows));
    }
    if !lines.is_empty() {
        lines.push(String::new());
        lines.push("(P): a projection block, measured against its shortcut's output".into());
    }
    lines.join("\n")
}

/// `stepwise watch` of an experiment: a bar per run until every run's training has ended,
/// then its analyses, then what `show` prints.
pub fn watch(client: &Client, experiment: Uuid, every: Duration) -> Result<ExitCode> {
    let multi = MultiProgress::new();
    let mut view = client.experiment(experiment)?;
    // The experiment's runs are fixed at submission: one bar each, in its order.
    let bars: Vec<_> = view.runs.iter().map(|_| multi.add(run_bar())).collect();
    loop {
        for (run, bar) in view.runs.iter().zip(&bars) {
            show_progress(bar, run);
        }
        if view.runs.iter().all(|r| r.status.is_final()) {
            break;
        }
        std::thread::sleep(every);
        view = client.experiment(experiment)?;
    }
    for bar in &bars {
        bar.finish();
    }
    for (run, bar) in view.runs.iter().zip(&bars) {
        await_analyses(client, run, bar, every)?;
    }
    let code = succeeded(&view.runs);
    // Training has ended, so the view's accuracies are final; the claims need the analyses.
    let shown = Shown {
        claims: client.experiment_claims(experiment)?,
        experiment: view,
        blocks: None,
    };
    print_text(&describe(&shown))?;
    Ok(code)
}

/// Rows of cells as indented lines, each column as wide as its widest cell: the first
/// left-aligned (a name), the others right-aligned (numbers).
fn aligned<R: AsRef<[String]>>(rows: &[R]) -> Vec<String> {
    let columns = rows.first().map_or(0, |r| r.as_ref().len());
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            let cells = rows.iter().map(|r| r.as_ref()[i].chars().count());
            cells.max().unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .as_ref()
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, &width))| match i {
                    0 => format!("{cell:<width$}"),
                    _ => format!("{cell:>width$}"),
                })
                .collect();
            format!("  {}", cells.join("  "))
        })
        .collect()
}

/// The configurations' table, then the claims' (as the dashboard and `report.md` give them).
fn describe(
    Shown {
        experiment, claims, ..
    }: &Shown,
) -> String {
    let e = experiment;
    let mut lines = vec![format!(
        "experiment {} ({}), submitted {}: {} runs",
        e.id,
        e.name,
        e.created_at.format("%Y-%m-%d %H:%M UTC"),
        e.runs.len()
    )];
    let width = e
        .configs
        .iter()
        .map(|c| c.label.len())
        .max()
        .unwrap_or(0)
        .max(13);
    lines.push(format!(
        "  {:<width$} {:>5} {:>9}  test accuracy (mean ± sd over seeds)",
        "configuration", "runs", "succeeded"
    ));
    let percent = |x: f64| format!("{:.2}%", 100.0 * x);
    for c in &e.configs {
        let accuracy = match (c.test_accuracy_mean, c.test_accuracy_sd) {
            (Some(m), Some(sd)) => format!("{} ± {}", percent(m), percent(sd)),
            (Some(m), None) => percent(m),
            _ => "-".into(),
        };
        lines.push(format!(
            "  {:<width$} {:>5} {:>9}  {accuracy}",
            c.label, c.runs, c.succeeded
        ));
    }
    lines.push("Table 1 (paper.md):".into());
    let header = domain::paper::TABLE_HEADER.map(String::from);
    let rows: Vec<[String; 6]> = std::iter::once(header)
        .chain(claims.table.iter().map(|row| row.cells()))
        .collect();
    lines.extend(aligned(&rows));
    lines.push(format!("  {}", domain::paper::TABLE_NOTE));
    if claims.claims.is_empty() {
        lines.push("claims: no analysed run yet".into());
    } else {
        lines.push("claims (paper.md, thresholds fixed in advance):".into());
        let subject = claims
            .claims
            .iter()
            .map(|v| v.subject.len())
            .max()
            .unwrap_or(0);
        for v in &claims.claims {
            lines.push(format!(
                "  {:<3} {:<subject$} {:<9} {}",
                v.claim,
                v.subject,
                v.holds_text(),
                v.measured
            ));
        }
    }
    if let Some(note) = &claims.note {
        lines.push(format!("note: {note}"));
    }
    for l in &claims.left_out {
        let run = l.run();
        lines.push(format!(
            "left out: {run} ({}): {}",
            l.configuration, l.reason
        ));
    }
    lines.join("\n")
}
