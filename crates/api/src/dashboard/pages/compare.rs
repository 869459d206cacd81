//! Runs drawn together (`/compare`), and blocks side by side, which an experiment's page
//! shows too.

use super::list::RunItem;
use super::{csv_download, number, render, FigureItem, Nav};
use crate::dashboard::session::Session;
use crate::error::ApiResult;
use crate::extract::RunIds;
use crate::routes::blocks;
use crate::routes::figures::{draw_all, together};
use crate::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::{Html, Response};
use axum::Extension;
use domain::{BlockSummary, MetricName};
use uuid::Uuid;

/// A run on the compare page, with the label its figures draw it under and why its analysis
/// is left out of them, if it is.
pub struct ComparedRun {
    item: RunItem,
    label: String,
    left_out: Option<String>,
}

#[derive(Template)]
#[template(path = "compare.html")]
pub struct ComparePage {
    nav: Nav,
    runs: Vec<ComparedRun>,
    figures: Vec<FigureItem>,
    /// The same figures' list on the API.
    api_list: String,
    blocks: Vec<SideBySide>,
    blocks_csv: String,
}

/// `/compare?runs=ID&runs=ID…` (the runs table's checkboxes) or `?runs=ID,ID,…`: the runs'
/// figures drawn together, as `GET /v1/figures?runs=` draws them.
pub async fn compare(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    RunIds(ids): RunIds,
) -> ApiResult<Html<String>> {
    let (runs, results) = together(&state, &ids).await?;
    let runs = runs
        .iter()
        .zip(&results)
        .map(|(run, r)| ComparedRun {
            item: RunItem::of(run),
            label: r.label.clone(),
            left_out: r.left_out.map(|why| why.to_string()),
        })
        .collect();
    let blocks = side_by_side(&blocks::of_results(&results));
    let figures = draw_all(results).await?;
    let ids = ids
        .iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(",");
    render(&ComparePage {
        nav: Nav::of(&session),
        runs,
        figures: figures.into_iter().map(FigureItem::from).collect(),
        api_list: format!("/v1/figures?runs={ids}"),
        blocks,
        blocks_csv: format!("/compare/blocks.csv?runs={ids}"),
    })
}

/// `/compare/blocks.csv?runs=…`: the compare page's blocks side by side, every split.
pub async fn compare_blocks_csv(
    State(state): State<AppState>,
    RunIds(ids): RunIds,
) -> ApiResult<Response> {
    let summaries = blocks::of_run_ids(&state, &ids).await?;
    Ok(csv_download("blocks.csv", domain::csv::to_csv(&summaries)))
}

/// One metric's blocks side by side: a column per configuration, a row per block.
pub struct SideBySide {
    pub(super) metric: &'static str,
    pub(super) split: &'static str,
    /// Configurations, each with its seeds.
    pub(super) columns: Vec<String>,
    pub(super) rows: Vec<SideBySideRow>,
    /// Shown unfolded: the metrics of the paper's Figures 2–4.
    pub(super) open: bool,
}

pub struct SideBySideRow {
    pub(super) block: String,
    pub(super) projection: bool,
    pub(super) cells: Vec<String>,
}

/// The summaries as one table per metric, on the test split where the metric has one.
pub(super) fn side_by_side(summaries: &[BlockSummary]) -> Vec<SideBySide> {
    domain::compare::metric_tables(summaries)
        .into_iter()
        .map(|table| SideBySide {
            metric: table.name.as_str(),
            split: table.split.as_str(),
            columns: table.columns.iter().map(|c| c.title()).collect(),
            rows: table
                .rows
                .iter()
                .map(|row| SideBySideRow {
                    block: row.block.to_string(),
                    projection: row.projection,
                    cells: row
                        .cells
                        .iter()
                        .map(|cell| cell.map_or(String::new(), mean_sd))
                        .collect(),
                })
                .collect(),
            open: matches!(
                table.name,
                MetricName::Cosine | MetricName::L2Ratio | MetricName::DropAccuracy
            ),
        })
        .collect()
}

/// `mean ± sd`, or the mean alone of one seed.
fn mean_sd(s: &BlockSummary) -> String {
    match s.runs {
        1 => number(s.mean),
        _ => format!("{} ± {}", number(s.mean), number(s.sd)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{BlockId, BlockKind, Split};

    #[test]
    fn blocks_side_by_side_have_a_table_per_metric_and_a_column_per_configuration() {
        let summary = |configuration: &str, name, split, block, runs, mean, sd| BlockSummary {
            configuration: configuration.into(),
            epoch: 6,
            name,
            split,
            block: BlockId::new(block, 0),
            block_index: block,
            kind: if block == 1 {
                BlockKind::Projection
            } else {
                BlockKind::Identity
            },
            runs,
            mean,
            sd,
        };
        let tables = side_by_side(&[
            summary("a", MetricName::Cosine, Split::Test, 1, 2, -0.5, 0.25),
            summary("a", MetricName::Cosine, Split::Test, 0, 2, -0.125, 0.0),
            summary("a", MetricName::Cosine, Split::Train, 0, 2, 9.0, 0.0),
            summary(
                "a",
                MetricName::ActivationNorm,
                Split::Train,
                0,
                1,
                3.0,
                0.0,
            ),
            summary("b", MetricName::Cosine, Split::Test, 0, 1, 0.5, 0.0),
        ]);
        let cosine = &tables[0];
        assert_eq!(
            (cosine.metric, cosine.split, cosine.open),
            ("cosine", "test", true)
        );
        assert_eq!(cosine.columns, ["a (2 seeds, epoch 6)", "b (epoch 6)"]);
        let rows: Vec<(&str, bool, Vec<&str>)> = cosine
            .rows
            .iter()
            .map(|r| {
                (
                    r.block.as_str(),
                    r.projection,
                    r.cells.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("s0.b0", false, vec!["-0.1250 ± 0", "0.5000"]),
                ("s1.b0", true, vec!["-0.5000 ± 0.2500", ""]),
            ]
        );
        // A metric measured on the training split only is shown on it, folded.
        let norms = &tables[1];
        assert_eq!(
            (norms.metric, norms.split, norms.open),
            ("activation_norm", "train", false)
        );
        assert_eq!(norms.rows[0].cells, ["3.000"]);
    }
}
