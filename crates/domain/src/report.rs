//! `report.md`: an experiment's numbers beside the paper's — Table 1, claims C1–C7 and the
//! figures — as `stepwise run` writes it of local runs, `stepwise figures EXPERIMENT` of an
//! experiment on the API, and the API serves it (`GET /v1/experiments/{id}/report.md`).

use crate::claims::Verdict;
use crate::paper::{self, TableRow};
use crate::service::{ClaimsView, ExperimentView, JobState};
use crate::ExperimentSpec;
use chrono::Utc;
use std::fmt::Write as _;

/// What the report says, however the results were gathered.
pub struct Report<'a> {
    pub spec: &'a ExperimentSpec,
    /// Who wrote the report from what, and when or how fast: one sentence.
    pub provenance: String,
    /// The runs made of weights trained elsewhere: "resnet-20 seed 0 from `r20.pt` (sha256
    /// `…`)", and how they came ("`stepwise model import`").
    pub imported: Vec<String>,
    pub imported_by: &'static str,
    /// A caution when the runs are shorter than the paper's schedules.
    pub note: Option<String>,
    /// The seeds the claims and block-wise figures leave out: "resnet-20 seed 1, why".
    pub left_out: Vec<String>,
    pub table: Vec<TableRow>,
    pub claims: Vec<Verdict>,
    /// Links to the figures (SVG), and to the numbers behind them (`blocks.csv`).
    pub figures: Vec<String>,
    pub blocks: Option<String>,
}

impl<'a> Report<'a> {
    /// The report of an experiment on the API, from its view and its claims, drawn now (by
    /// the API itself, or from `api_url` by a client).
    pub fn of_experiment(
        experiment: &'a ExperimentView,
        claims: ClaimsView,
        api_url: Option<&str>,
        figures: Vec<String>,
        blocks: Option<String>,
    ) -> Self {
        let succeeded = experiment
            .runs
            .iter()
            .filter(|r| r.status == JobState::Succeeded)
            .count();
        let provenance = format!(
            "Drawn by {} from experiment {}{} at {}: {succeeded} of {} runs succeeded.",
            crate::CODE_VERSION,
            experiment.id,
            api_url.map_or(String::new(), |url| format!(" on {url}")),
            Utc::now().format("%Y-%m-%d %H:%M UTC"),
            experiment.runs.len()
        );
        Self {
            spec: &experiment.spec,
            provenance,
            imported: experiment
                .runs
                .iter()
                .filter_map(|r| {
                    let w = r.weights.as_ref()?;
                    Some(format!(
                        "{} seed {} from `{}` (sha256 `{}`)",
                        r.label, r.spec.train.seed, w.file_name, w.sha256
                    ))
                })
                .collect(),
            imported_by: "uploaded to the API",
            note: claims.note,
            left_out: claims
                .left_out
                .iter()
                .map(|l| format!("run {} of {}, {}", l.run(), l.configuration, l.reason))
                .collect(),
            table: claims.table,
            claims: claims.claims,
            figures,
            blocks,
        }
    }

    /// The Markdown: title, provenance and cautions, Table 1, the claims, the figures.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let spec = self.spec;
        let _ = writeln!(md, "# Experiment `{}`\n", spec.name);
        if let Some(d) = &spec.description {
            let _ = writeln!(md, "{d}\n");
        }
        let _ = writeln!(
            md,
            "Data: `{}`. Seeds: {:?}. {} The paper's numbers are for CIFAR; on other data \
             only the parameter counts are comparable.\n",
            spec.data.dataset, spec.seeds, self.provenance
        );
        if !self.imported.is_empty() {
            let _ = writeln!(
                md,
                "Trained elsewhere, their weights imported ({}): {}.\n",
                self.imported_by,
                self.imported.join("; ")
            );
        }
        if let Some(note) = &self.note {
            let _ = writeln!(md, "{note}\n");
        }
        for seed in &self.left_out {
            let _ = writeln!(
                md,
                "Left out of the analysed train errors, the claims and the block-wise \
                 figures: {seed}.\n"
            );
        }
        let _ = writeln!(md, "## Table 1: parameters and errors\n");
        let _ = writeln!(md, "{}\n", paper::TABLE_NOTE);
        let _ = writeln!(md, "| {} |", paper::TABLE_HEADER.join(" | "));
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for row in &self.table {
            let _ = writeln!(md, "| {} |", row.cells().join(" | "));
        }
        let _ = writeln!(md, "\n## Claims (paper.md, thresholds fixed in advance)\n");
        if self.claims.is_empty() {
            let _ = writeln!(md, "No analysed run yet.");
        } else {
            let _ = writeln!(md, "| claim | configuration | holds | measured |");
            let _ = writeln!(md, "|---|---|---|---|");
        }
        for v in &self.claims {
            let holds = match v.holds {
                Some(false) => format!("**{}**", v.holds_text()),
                _ => v.holds_text().to_string(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {holds} | {} |",
                v.claim, v.subject, v.measured
            );
        }
        let _ = writeln!(md, "\n{}\n", crate::claims::LEGEND);
        let _ = writeln!(md, "## Figures\n");
        if let Some(blocks) = &self.blocks {
            let _ = writeln!(
                md,
                "The numbers behind the block-wise figures, every block of every configuration \
                 (mean ± sd over seeds, each metric and split): [{blocks}]({blocks}).\n"
            );
        }
        for f in &self.figures {
            let _ = writeln!(md, "![{f}]({f})");
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_where_its_runs_came_from_and_links_what_is_drawn() {
        let spec = ExperimentSpec::from_toml(
            "name = \"e\"\ndescription = \"Two seeds.\"\nseeds = [0, 1]\n[data]\n\
             dataset = \"shapes10\"\n[[configs]]\nmodel = { arch = \"resnet\", depth = 8 }\n",
        )
        .unwrap();
        let report = Report {
            spec: &spec,
            provenance: "Written by a test.".into(),
            imported: vec!["resnet-8 seed 0 from `w.pt` (sha256 `ab`)".into()],
            imported_by: "`stepwise model import`",
            note: None,
            left_out: vec![],
            table: vec![],
            claims: vec![],
            figures: vec!["figures/fig2_cosine.svg".into()],
            blocks: Some("blocks.csv".into()),
        };
        let md = report.markdown();
        for expected in [
            "# Experiment `e`\n\nTwo seeds.\n",
            "Data: `shapes10`. Seeds: [0, 1]. Written by a test. The paper's numbers",
            "weights imported (`stepwise model import`): resnet-8 seed 0 from `w.pt` (sha256 `ab`).",
            "## Claims (paper.md, thresholds fixed in advance)\n\nNo analysed run yet.\n",
            "[blocks.csv](blocks.csv)",
            "![figures/fig2_cosine.svg](figures/fig2_cosine.svg)\n",
        ] {
            assert!(md.contains(expected), "{expected}\n{md}");
        }
        assert!(!md.contains("Left out"), "{md}");
    }
}
