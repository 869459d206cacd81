//! Terminal output of long commands: indicatif bars (hidden when stderr is not a terminal
//! or with --json) and the training event sink that also writes metrics.jsonl.

use crate::lock::{lock_dir, DirLock};
use anyhow::{Context, Result};
use domain::{AnalysisProgress, MetricName, MetricRecord, Split};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use train::{EventSink, SinkError, TrainEvent};

pub fn bytes(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("a valid template"),
    );
    bar.set_message(label.to_string());
    bar
}

/// A spinner while an analysis runs: `label`, then its split, pass and batch (hidden when
/// stderr is not a terminal or `quiet`). Cleared when dropped.
pub struct AnalysisBar {
    bar: ProgressBar,
    label: String,
}

impl AnalysisBar {
    pub fn new(label: impl Into<String>, quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} · {elapsed}").expect("a valid template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        let label = label.into();
        bar.set_message(label.clone());
        Self { bar, label }
    }

    pub fn show(&self, progress: &AnalysisProgress) {
        self.bar
            .set_message(format!("{} · {}", self.label, progress.describe()));
    }
}

impl Drop for AnalysisBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Console progress plus `metrics.jsonl` (one metric record per line), holding the run
/// directory's lock.
pub struct RunSink {
    _lock: DirLock,
    bar: ProgressBar,
    metrics: File,
    metrics_path: PathBuf,
    epochs: u32,
    quiet: bool,
    /// The newest checkpoint written and the newest epoch's records, for the summary.
    pub last_checkpoint: Option<String>,
    pub last_records: Vec<MetricRecord>,
}

impl RunSink {
    /// Locks `run_dir` ([`lock_dir`]: this sink is its one writer) and opens `metrics.jsonl`
    /// for appending, first dropping records of epochs after `completed` (left by a run that
    /// went further than the checkpoint resumed from).
    pub fn open(run_dir: &Path, completed: u32, epochs: u32, quiet: bool) -> Result<Self> {
        let lock = lock_dir(run_dir)?;
        let metrics_path = run_dir.join("metrics.jsonl");
        if metrics_path.exists() {
            let f = File::open(&metrics_path)
                .with_context(|| format!("reading {}", metrics_path.display()))?;
            let mut kept = String::new();
            for line in BufReader::new(f).lines() {
                let line = line.with_context(|| format!("reading {}", metrics_path.display()))?;
                let keep =
                    serde_json::from_str::<MetricRecord>(&line).is_ok_and(|r| r.epoch <= completed);
                if keep {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
            resnet::checkpoint::write_atomic(&metrics_path, kept.as_bytes())?;
        }
        let metrics = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("opening {}", metrics_path.display()))?;
        let bar = if quiet {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template("{wide_bar} {pos}/{len} steps · {msg} · eta {eta}")
                .expect("a valid template"),
        );
        Ok(Self {
            _lock: lock,
            bar,
            metrics,
            metrics_path,
            epochs,
            quiet,
            last_checkpoint: None,
            last_records: vec![],
        })
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn say(&self, line: String) {
        if self.quiet {
        } else if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

/// The value of a whole-model record (no block) of an epoch's records.
pub(crate) fn find(
    records: &[MetricRecord],
    name: MetricName,
    split: Option<Split>,
) -> Option<f64> {
    records
        .iter()
        .find(|r| r.name == name && r.split == split && r.block.is_none())
        .map(|r| r.value)
}

impl EventSink for RunSink {
    fn event(&mut self, event: &TrainEvent<'_>) -> Result<(), SinkError> {
        match event {
            TrainEvent::Started {
                start_step,
                total_steps,
                ..
            } => {
                self.bar.set_length(*total_steps);
                self.bar.set_position(*start_step);
                self.bar.reset_eta();
            }
            TrainEvent::Step {
                epoch,
                step,
                loss,
                lr,
            } => {
                self.bar.set_position(*step);
                self.bar.set_message(format!(
                    "epoch {epoch}/{} · loss {loss:.3} · lr {lr:.3e}",
                    self.epochs
                ));
            }
            TrainEvent::Evaluating { epoch } => {
                self.bar
                    .set_message(format!("epoch {epoch}/{} · evaluating", self.epochs));
            }
            TrainEvent::Epoch { epoch, records } => {
                let mut lines = String::new();
                for r in records.iter() {
                    lines.push_str(&serde_json::to_string(r)?);
                    lines.push('\n');
                }
                self.metrics
                    .write_all(lines.as_bytes())
                    .and_then(|()| self.metrics.flush())
                    .map_err(|e| format!("{}: {e}", self.metrics_path.display()))?;
                let get = |name, split| find(records, name, split).unwrap_or(f64::NAN);
                self.say(format!(
                    "epoch {epoch}/{}: train loss {:.4} acc {:.2}% · test loss {:.4} acc {:.2}% · lr {:.3e} · {:.0} img/s",
                    self.epochs,
                    get(MetricName::Loss, Some(Split::Train)),
                    100.0 * get(MetricName::Accuracy, Some(Split::Train)),
                    get(MetricName::Loss, Some(Split::Test)),
                    100.0 * get(MetricName::Accuracy, Some(Split::Test)),
                    get(MetricName::LearningRate, None),
                    get(MetricName::ImagesPerSecond, None),
                ));
                self.last_records = records.to_vec();
            }
            TrainEvent::Checkpoint {
                file_name, file, ..
            } => {
                self.last_checkpoint = Some(file_name.to_string());
                tracing::info!(file = %file_name, size = file.size, sha256 = %file.sha256, "checkpoint written");
            }
            TrainEvent::CheckpointRemoved { file_name } => {
                tracing::info!(file = %file_name, "checkpoint removed by the retention policy");
            }
            TrainEvent::Checkpointing { .. } => {}
        }
        Ok(())
    }
}
