//! `report.md`: an experiment's numbers beside the paper's — Table 1, claims C1–C7 and the
//! figures — as `stepwise run` writes it of local runs and `stepwise figures EXPERIMENT` of
//! an experiment on the API.

use domain::claims::Verdict;
use domain::paper::{self, TableRow};
use domain::ExperimentSpec;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the report says, however the results were gathered.
pub(crate) struct Report<'a> {
    pub spec: &'a ExperimentSpec,
    /// Who wrote the report from what, and when or how fast: one sentence.
    pub provenance: String,
    /// The runs made of weights trained elsewhere: "resnet-20 seed 0 from `r20.pt` (sha256
    /// `…`)".
    pub imported: Vec<String>,
    /// A caution when the runs are shorter than the paper's schedules.
    pub note: Option<String>,
    /// The seeds the claims and block-wise figures leave out: "resnet-20 seed 1, why".
    pub left_out: Vec<String>,
    pub table: Vec<TableRow>,
    pub claims: Vec<Verdict>,
    /// The figure files (the SVGs are linked) and `blocks.csv`, where written.
    pub figures: &'a [PathBuf],
    pub blocks: Option<&'a Path>,
}

impl Report<'_> {
    /// The Markdown, its links relative to `out` (the directory it is written in).
    pub fn markdown(&self, out: &Path) -> String {
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
                "Trained elsewhere, their weights imported: {}.\n",
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
        let _ = writeln!(md, "\n{}\n", domain::claims::LEGEND);
        let _ = writeln!(md, "## Figures\n");
        if let Some(blocks) = self.blocks {
            let rel = blocks.strip_prefix(out).unwrap_or(blocks);
            let _ = writeln!(
                md,
                "The numbers behind the block-wise figures, every block of every configuration \
                 (mean ± sd over seeds, each metric and split): [{0}]({0}).\n",
                rel.display()
            );
        }
        for f in self
            .figures
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "svg"))
        {
            let rel = f.strip_prefix(out).unwrap_or(f);
            let _ = writeln!(md, "![{}]({})", rel.display(), rel.display());
        }
        md
    }
}
