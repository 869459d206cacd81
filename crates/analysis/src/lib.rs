//! The block-wise metrics of paper.md computed from a trained model, with BatchNorm in
//! inference mode, on fixed seeded subsets of the chosen splits, in batches that bound
//! memory. Results are [`domain::AnalysisRecord`]s keyed by block id.
//!
//! - `blocks`: cosine and ℓ2 ratio per block, block dropping, intermediate accuracy,
//!   sharing diagnostics;
//! - `paths`: borderline examples over the last blocks, unrolling the last block;
//! - `taylor`: the first-order check of each last-stage block.

pub mod bench;
mod blocks;
mod paths;
mod stats;
mod taylor;

use candle_core::Tensor;
use cifar::batch::fixed_subset;
use cifar::Images;
use domain::{
    AnalysisKind, AnalysisProgress, AnalysisRecord, AnalysisSpec, BlockId, BlockInfo, BlockKind,
    MetricName, PassTime, RunSpec, Split, SplitExamples, Stat,
};
use resnet::eval::{HostBatch, Inputs};
use resnet::memory::{is_out_of_memory, name_batch_if_out_of_memory, Work};
use resnet::ResNet;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] resnet::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("invalid analysis: {0}")]
    Spec(#[from] domain::SpecError),
    #[error("{0}")]
    Unsupported(String),
    /// [`Input::stop`] was set: the analysis ended before it finished.
    #[error("the analysis was stopped before it finished")]
    Stopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A trained model and the data to analyse it on.
pub struct Input<'a> {
    pub model: &'a ResNet,
    /// The run the model comes from: its normalisation, seed (for the fresh model of the
    /// sharing diagnostics) and model spec.
    pub run: &'a RunSpec,
    /// Epochs the model was trained for.
    pub epoch: u32,
    pub train: &'a Images,
    pub test: &'a Images,
    /// Set (by another thread) to end the analysis at its next batch with
    /// [`Error::Stopped`]: a cancelled job or a worker shutting down need not wait for the
    /// whole analysis.
    pub stop: Option<&'a AtomicBool>,
    /// Told at the start of every pass and at every batch a pass uploads, for a progress
    /// display (an analysis of thousands of examples takes minutes on a CPU).
    pub progress: Option<&'a (dyn Fn(&AnalysisProgress) + Sync)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub spec: AnalysisSpec,
    pub epoch: u32,
    pub examples: Vec<SplitExamples>,
    /// The blocks the borderline analysis follows.
    pub window: Vec<BlockId>,
    /// paper.md's rule: the α with the lowest mean train loss after the last unrolling step
    /// among those whose hidden states stay finite.
    pub selected_alpha: Option<f64>,
    /// What could not be computed for this model, and why.
    pub notes: Vec<String>,
    pub seconds: f64,
    /// Each pass's share of `seconds`, summed over the splits, in the order they ran.
    #[serde(default)]
    pub passes: Vec<PassTime>,
    pub records: Vec<AnalysisRecord>,
}

/// What every metric needs: the model, one split's batches, where to put results.
pub(crate) struct Ctx<'a> {
    pub model: &'a ResNet,
    pub spec: &'a AnalysisSpec,
    pub split: Split,
    pub epoch: u32,
    pub blocks: Vec<BlockInfo>,
    pub batches: Vec<HostBatch<'a>>,
    pub inputs: Inputs,
    pub records: Vec<AnalysisRecord>,
    pub notes: Vec<String>,
    pub stop: Option<&'a AtomicBool>,
    pub progress: Option<&'a (dyn Fn(&AnalysisProgress) + Sync)>,
    /// The pass running, and the batches it has uploaded.
    pub pass: Vec<AnalysisKind>,
    pub uploaded: Cell<usize>,
}

impl Ctx<'_> {
    pub fn record(&self, name: MetricName, value: f64, n: usize) -> AnalysisRecord {
        AnalysisRecord::new(name, self.split, self.epoch, value, n)
    }

    pub fn at_block(&self, r: AnalysisRecord, index: usize) -> AnalysisRecord {
        let b = &self.blocks[index];
        r.at_block(b.id, b.index, b.kind)
    }

    /// Mean and median records of per-example values at a block (nothing if none is
    /// defined).
    pub fn summarise(&mut self, name: MetricName, index: usize, values: &[f64]) {
        if let Some((mean, median, n)) = stats::mean_median(values) {
            for (stat, v) in [(Stat::Mean, mean), (Stat::Median, median)] {
                let r = self
                    .at_block(self.record(name, v, n), index)
                    .with_stat(stat);
                self.records.push(r);
            }
        }
    }

    /// A batch on the model's device; every metric's loop over batches comes here first,
    /// so this is where a stop is seen.
    pub fn to_device(&self, batch: &HostBatch) -> Result<(Tensor, Tensor)> {
        self.unless_stopped()?;
        self.uploaded.set(self.uploaded.get() + 1);
        self.report();
        Ok(self.inputs.upload(*batch)?)
    }

    /// Tells [`Input::progress`] where the analysis is.
    fn report(&self) {
        if let Some(progress) = self.progress {
            progress(&AnalysisProgress {
                split: self.split,
                pass: self.pass.clone(),
                batch: self.uploaded.get() as u32,
                batches: self.batches.len() as u32,
            });
        }
    }

    /// The labels of every batch, in order: those of a [`stats::Series`] of per-batch
    /// values.
    pub fn labels(&self) -> Vec<u32> {
        self.batches
            .iter()
            .flat_map(|b| b.1.iter().copied())
            .collect()
    }

    /// [`Error::Stopped`] once [`Input::stop`] is set.
    pub fn unless_stopped(&self) -> Result<()> {
        match self.stop {
            Some(stop) if stop.load(Ordering::Relaxed) => Err(Error::Stopped),
            _ => Ok(()),
        }
    }

    /// Blocks of the last stage whose input has the head's input shape (the head can be
    /// plugged in there), in order.
    pub fn head_compatible(&self) -> Vec<usize> {
        let last = self.blocks.last().expect("a model has blocks");
        self.blocks
            .iter()
            .filter(|b| b.id.stage == last.id.stage && b.in_shape == last.out_shape)
            .map(|b| b.index as usize)
            .collect()
    }
}

/// Runs the analyses `spec` asks for. Nothing here trains, so the parameters are frozen:
/// backward passes compute the input gradients the metrics need, and no weight gradients.
pub fn analyze(input: &Input, spec: &AnalysisSpec) -> Result<Analysis> {
    let (work, batch) = (Work::Analysis, spec.eval_batch as usize);
    let model = input.model;
    resnet::memory::check(work, model.layout(), model.dtypes(), batch, model.device())?;
    resnet::layers::with_frozen_parameters(|| analyze_frozen(input, spec)).map_err(|e| match e {
        Error::Candle(c) if is_out_of_memory(&c) => {
            name_batch_if_out_of_memory(c.into(), work, batch).into()
        }
        Error::Model(e) => name_batch_if_out_of_memory(e, work, batch).into(),
        e => e,
    })
}

fn analyze_frozen(input: &Input, spec: &AnalysisSpec) -> Result<Analysis> {
    spec.validate()?;
    let started = Instant::now();
    let normalization = input.run.data.normalization.ok_or_else(|| {
        Error::Unsupported("the run records no normalisation (was it trained?)".into())
    })?;
    let mut out = Analysis {
        spec: spec.clone(),
        epoch: input.epoch,
        examples: vec![],
        window: vec![],
        selected_alpha: None,
        notes: vec![],
        seconds: 0.0,
        passes: vec![],
        records: vec![],
    };
    let mut final_train_losses = None;
    for &split in &spec.splits {
        let (images, id) = match split {
            Split::Train => (input.train, 0),
            Split::Test => (input.test, 1),
        };
        let subset = fixed_subset(images, spec.max_examples as usize, spec.seed, id);
        out.examples.push(SplitExamples {
            split,
            examples: subset.len() as u32,
        });
        let mut ctx = Ctx {
            model: input.model,
            spec,
            split,
            epoch: input.epoch,
            blocks: input.model.layout().blocks(),
            batches: subset.batches(spec.eval_batch as usize).collect(),
            inputs: Inputs::new(&normalization, input.model.device())?,
            records: vec![],
            notes: vec![],
            stop: input.stop,
            progress: input.progress,
            pass: vec![],
            uploaded: Cell::new(0),
        };
        let passes = &mut out.passes;
        let first: Vec<AnalysisKind> = [AnalysisKind::Cosine, AnalysisKind::L2, AnalysisKind::Drop]
            .into_iter()
            .filter(|&m| spec.wants(m))
            .collect();
        if !first.is_empty() {
            timed(passes, first, &mut ctx, |ctx| {
                let mut drops = spec
                    .wants(AnalysisKind::Drop)
                    .then(|| blocks::Drops::new(ctx.blocks.len()));
                if spec.wants(AnalysisKind::Cosine) || spec.wants(AnalysisKind::L2) {
                    // Dropping rides on this pass's probed forward.
                    blocks::cosine_and_l2(ctx, drops.as_mut())?;
                    drops.map_or(Ok(()), |drops| drops.record(ctx))
                } else {
                    drops.map_or(Ok(()), |drops| drops.measure(ctx))
                }
            })?;
        }
        if spec.wants(AnalysisKind::Intermediate) {
            let intermediate = vec![AnalysisKind::Intermediate];
            timed(passes, intermediate, &mut ctx, blocks::intermediate)?;
        }
        if spec.wants(AnalysisKind::Borderline) {
            let borderline = vec![AnalysisKind::Borderline];
            out.window = timed(passes, borderline, &mut ctx, paths::borderline)?;
        }
        if spec.wants(AnalysisKind::Unroll) {
            let losses = timed(passes, vec![AnalysisKind::Unroll], &mut ctx, paths::unroll)?;
            if split == Split::Train {
                final_train_losses = losses;
            }
        }
        if spec.wants(AnalysisKind::Sharing) {
            timed(passes, vec![AnalysisKind::Sharing], &mut ctx, |ctx| {
                blocks::sharing(ctx, input.run)
            })?;
        }
        if spec.wants(AnalysisKind::Taylor) {
            timed(passes, vec![AnalysisKind::Taylor], &mut ctx, taylor::taylor)?;
        }
        out.records.append(&mut ctx.records);
        for note in ctx.notes {
            if !out.notes.contains(&note) {
                out.notes.push(note);
            }
        }
    }
    out.selected_alpha = final_train_losses.and_then(|losses| paths::select_alpha(&losses));
    if spec.wants(AnalysisKind::Unroll) && !spec.splits.contains(&Split::Train) {
        out.notes
            .push("unroll: no α selected, the rule needs the train split".into());
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Runs the pass that computes `metrics` on `ctx`'s split, reporting its start, and adds its
/// time to theirs in `passes` (appended on the first split, summed over the others).
fn timed<'a, T>(
    passes: &mut Vec<PassTime>,
    metrics: Vec<AnalysisKind>,
    ctx: &mut Ctx<'a>,
    pass: impl FnOnce(&mut Ctx<'a>) -> Result<T>,
) -> Result<T> {
    ctx.pass.clone_from(&metrics);
    ctx.uploaded.set(0);
    ctx.report();
    let started = Instant::now();
    let out = pass(ctx)?;
    let seconds = started.elapsed().as_secs_f64();
    match passes.iter_mut().find(|p| p.metrics == metrics) {
        Some(p) => p.seconds += seconds,
        None => passes.push(PassTime { metrics, seconds }),
    }
    Ok(out)
}

/// Whether a block is measured against its shortcut output (see [`AnalysisRecord::kind`]).
pub(crate) fn is_projection(b: &BlockInfo) -> bool {
    b.kind == BlockKind::Projection
}
