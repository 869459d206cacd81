//! Records as CSV, one row per record with every column always present: analysis records
//! (`stepwise analyze`, the API) and training metrics (the API's `text/csv`).

use crate::{AnalysisRecord, MetricRecord};
use serde::Serialize;

#[derive(Serialize)]
struct Row<'a> {
    name: &'a str,
    split: &'a str,
    epoch: u32,
    block: Option<String>,
    block_index: Option<u32>,
    kind: Option<&'a str>,
    group: Option<&'a str>,
    alpha: Option<f64>,
    step: Option<u32>,
    stat: Option<&'a str>,
    value: f64,
    n: u32,
}

/// The records as CSV text with a header row.
pub fn analysis_csv(records: &[AnalysisRecord]) -> String {
    to_csv(records.iter().map(|r| Row {
        name: r.name.as_str(),
        split: r.split.as_str(),
        epoch: r.epoch,
        block: r.block.map(|b| b.to_string()),
        block_index: r.block_index,
        kind: r.kind.map(|k| k.as_str()),
        group: r.group.map(|g| g.as_str()),
        alpha: r.alpha,
        step: r.step,
        stat: r.stat.map(|s| s.as_str()),
        value: r.value,
        n: r.n,
    }))
}

#[derive(Serialize)]
struct MetricRow<'a> {
    name: &'a str,
    split: Option<&'a str>,
    epoch: u32,
    block: Option<String>,
    block_index: Option<u32>,
    value: f64,
}

/// Training metrics as CSV text with a header row.
pub fn metrics_csv(records: &[MetricRecord]) -> String {
    to_csv(records.iter().map(|r| MetricRow {
        name: r.name.as_str(),
        split: r.split.map(|s| s.as_str()),
        epoch: r.epoch,
        block: r.block.map(|b| b.to_string()),
        block_index: r.block_index,
        value: r.value,
    }))
}

/// Rows as CSV text, the header taken from the first row's field names.
pub fn to_csv<R: Serialize>(rows: impl IntoIterator<Item = R>) -> String {
    let mut w = ::csv::Writer::from_writer(vec![]);
    for row in rows {
        w.serialize(row).expect("rows serialise to memory");
    }
    String::from_utf8(w.into_inner().expect("in memory")).expect("CSV is UTF-8")
}
