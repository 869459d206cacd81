//! The training loop: one optimizer step per batch, evaluation and metrics per epoch,
//! checkpoints by policy, a clean stop on request, exact resume.

use crate::checkpoints::CheckpointStore;
use crate::state::{
    ImportedWeights, RngState, RunningTotals, TrainState, META_SPEC, META_TRAIN_STATE,
};
use crate::{EventSink, Result, Sgd, SgdConfig, TrainError, TrainEvent};
use candle_core::{Device, Tensor};
use cifar::augment::channel_stats;
use cifar::batch::fixed_subset;
use cifar::rng::{rng, Stream};
use cifar::{BatchPlan, Dataset, Images};
use domain::{MetricName as M, MetricRecord, ModelLayout, Precision, RunSpec, Split};
use resnet::checkpoint::Checkpoint;
use resnet::eval::{evaluate, grad_norm_ratio, scalar, to_device, Inputs};
use resnet::loss::{correct, cross_entropy};
use resnet::memory::Work;
use resnet::{BnMode, Dtypes, ResNet, WrittenFile};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How a call to [`Trainer::run`] ended (errors, divergence included, are `Err`).
#[derive(Debug)]
pub enum Outcome {
    Finished,
    /// Stopped on request after writing this checkpoint.
    Stopped {
        file_name: String,
        file: WrittenFile,
    },
}

pub struct Trainer {
    spec: RunSpec,
    model: ResNet,
    optimizer: Sgd,
    train: Arc<Images>,
    test: Images,
    plan: BatchPlan,
    state: TrainState,
    store: CheckpointStore,
    /// Started from the initialisation rather than a checkpoint: the weights before the
    /// first step are still to be checkpointed where kept (epoch 0).
    fresh: bool,
    /// Full batches on CUDA run as a captured graph.
    #[cfg(feature = "cuda")]
    graph_steps: crate::graph_step::GraphSteps,
}

/// Builds the model a spec describes, computing in `precision`, initialised from the spec's
/// seed.
fn build_model(spec: &RunSpec, precision: Precision, device: &Device) -> Result<ResNet> {
    let layout = spec.model.layout()?;
    let mut init = rng(spec.train.seed, Stream::Init, 0, 0);
    Ok(ResNet::new(
        &layout,
        &mut init,
        device,
        Dtypes::for_precision_on(precision, device),
    )?)
}

/// The model stored in a checkpoint, computing as it was trained, with the spec it was
/// trained under.
pub fn load_model(checkpoint: &Checkpoint, device: &Device) -> Result<(ResNet, RunSpec)> {
    load_model_in(checkpoint, device, |trained| trained)
}

/// The model stored in a checkpoint as it is measured (evaluation, analysis), with the spec
/// it was trained under: a run trained with TF32 convolutions computes in exact f32. TF32
/// speeds training up; its rounding of the convolutions' operands to 10-bit mantissas is no
/// part of the function the weights compute, and would be in every metric. bf16 runs stay
/// in bf16, the activations their weights were trained for.
pub fn load_model_to_measure(
    checkpoint: &Checkpoint,
    device: &Device,
) -> Result<(ResNet, RunSpec)> {
    load_model_in(checkpoint, device, |trained| match trained {
        Precision::Tf32 => Precision::F32,
        other => other,
    })
}

fn load_model_in(
    checkpoint: &Checkpoint,
    device: &Device,
    precision: impl FnOnce(Precision) -> Precision,
) -> Result<(ResNet, RunSpec)> {
    // A checkpoint is user data (it may come from elsewhere): its spec is validated like a
    // submitted one, and a tensor it lacks names the file, not an internal state.
    let bad = |reason: String| resnet::Error::BadCheckpoint {
        path: checkpoint.path.clone(),
        reason,
    };
    let spec: RunSpec = checkpoint.meta_json(META_SPEC)?;
    spec.validate()
        .map_err(|e| bad(format!("metadata {META_SPEC:?}: {e}")))?;
    let model = build_model(&spec, precision(spec.model.dtype), device)?;
    model.load_state_dict(&checkpoint.tensors).map_err(|e| {
        bad(format!(
            "its tensors are not those of the model its spec describes: {e}"
        ))
    })?;
    Ok((model, spec))
}

/// Checks that `dataset` is what the spec says and fills in identity and normalisation.
fn bind_dataset(spec: &mut RunSpec, dataset: &Dataset) -> Result<()> {
    match &spec.data.identity {
        Some(expected) if *expected != dataset.identity => {
            return Err(TrainError::DatasetMismatch {
                expected: Box::new(expected.clone()),
                found: Box::new(dataset.identity.clone()),
            })
        }
        _ => spec.data.identity = Some(dataset.identity.clone()),
    }
    spec.data.dataset = dataset.identity.name.clone();
    if spec.model.classes != dataset.identity.classes {
        return Err(domain::SpecError::one(
            "model.classes",
            format!(
                "{} but dataset {} has {} classes",
                spec.model.classes, dataset.identity.name, dataset.identity.classes
            ),
        )
        .into());
    }
    if spec.data.normalization.is_none() {
        spec.data.normalization = Some(channel_stats(&dataset.train));
    }
    Ok(())
}

impl Trainer {
    /// A fresh run of `spec` on `dataset`, checkpointing into `checkpoint_dir`.
    pub fn new(
        mut spec: RunSpec,
        dataset: Dataset,
        device: &Device,
        checkpoint_dir: PathBuf,
    ) -> Result<Self> {
        spec.validate()?;
        bind_dataset(&mut spec, &dataset)?;
        let model = build_model(&spec, spec.model.dtype, device)?;
        let state = TrainState {
            epoch: 0,
            batch: 0,
            step: 0,
            lr: 0.0,
            schedule: spec.train.schedule(spec.model.arch),
            rng: RngState::new(spec.train.seed),
            running: None,
            imported: None,
        };
        check_memory(&spec, model.layout(), model.dtypes(), model.device())?;
        Self::assemble(spec, model, None, state, dataset, checkpoint_dir)
    }

    /// Continues the run saved in `checkpoint`, writing new checkpoints into
    /// `checkpoint_dir`. `epochs` may extend (or shorten) the run.
    pub fn resume(
        checkpoint: &Checkpoint,
        epochs: Option<u32>,
        dataset: Dataset,
        device: &Device,
        checkpoint_dir: PathBuf,
    ) -> Result<Self> {
        let path = &checkpoint.path;
        let (model, mut spec) = load_model(checkpoint, device)?;
        let mut state: TrainState = checkpoint.meta_json(META_TRAIN_STATE)?;
        if let Some(epochs) = epochs {
            spec.train.epochs = Some(epochs);
            spec.validate()?;
            state.schedule = spec.train.schedule(spec.model.arch);
        }
        if state.epoch >= spec.epochs() {
            return Err(TrainError::Resume {
                path: path.clone(),
                reason: format!(
                    "it already completed all {} epochs (pass more epochs to extend it)",
                    spec.epochs()
                ),
            });
        }
        bind_dataset(&mut spec, &dataset)?;
        check_memory(&spec, model.layout(), model.dtypes(), model.device())?;
        Self::assemble(
            spec,
            model,
            Some(checkpoint),
            state,
            dataset,
            checkpoint_dir,
        )
        .map_err(|e| match e {
            TrainError::Resume { reason, .. } => TrainError::Resume {
                path: path.clone(),
                reason,
            },
            e => e,
        })
    }

    fn assemble(
        spec: RunSpec,
        model: ResNet,
        checkpoint: Option<&Checkpoint>,
        state: TrainState,
        dataset: Dataset,
        checkpoint_dir: PathBuf,
    ) -> Result<Self> {
        let mut optimizer = Sgd::new(model.parameters(), SgdConfig::from_spec(&spec.train))?;
        if let Some(ck) = checkpoint {
            optimizer.load_state(&ck.tensors)?;
        }
        let plan = BatchPlan::of_run(&spec).expect("bound to the dataset");
        let store =
            CheckpointStore::new(checkpoint_dir, spec.train.checkpoint.clone(), spec.epochs());
        Ok(Self {
            spec,
            model,
            optimizer,
            train: Arc::new(dataset.train),
            test: dataset.test,
            plan,
            state,
            store,
            fresh: checkpoint.is_none(),
            #[cfg(feature = "cuda")]
            graph_steps: crate::graph_step::GraphSteps::new(),
        })
    }

    /// Also writes and keeps the checkpoints after these epochs, whatever the spec's policy
    /// says (those an analysis plan needs).
    pub fn keep_epochs(&mut self, epochs: &[u32]) {
        self.store.keep_epochs(epochs);
    }

    /// The resolved spec (dataset identity and normalisation filled in).
    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }

    pub fn model(&self) -> &ResNet {
        &self.model
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// Trains until the last epoch, or until `stop` is set: then the current position is
    /// checkpointed and the run can be resumed from it.
    pub fn run(&mut self, sink: &mut dyn EventSink, stop: &AtomicBool) -> Result<Outcome> {
        let epochs = self.spec.epochs();
        let per_epoch = self.plan.batches_per_epoch(self.train.len());
        sink.event(&TrainEvent::Started {
            spec: &self.spec,
            steps_per_epoch: per_epoch,
            start_step: self.state.step,
            total_steps: epochs as u64 * per_epoch as u64,
        })?;
        let [(training, batch_size), (evaluation, eval_batch)] = memory_work(&self.spec);
        // Where the spec's policy or the analysis plan keeps epoch 0, the initial weights
        // are its checkpoint: the start of the blocks' course over training.
        if std::mem::take(&mut self.fresh) && self.store.due(0) {
            self.checkpoint(sink, &[])?;
        }
        while self.state.epoch < epochs {
            let epoch = self.state.epoch;
            let start = self.state.batch as usize;
            let mut totals = self.state.running.take().unwrap_or_default();
            let batches = self.plan.epoch(self.train.clone(), epoch, start);
            for (index, batch) in (start..).zip(batches) {
                let started = Instant::now();
                let lr = self.state.schedule.lr(epoch, index, per_epoch);
                let n = batch.len();
                let (x, y) = to_device(batch.into(), self.model.device())?;
                let (loss, hits) = self
                    .step(&x, &y, lr)
                    .map_err(|e| e.name_batch_if_out_of_memory(training, batch_size))?;
                self.state.step += 1;
                if !loss.is_finite() {
                    return Err(TrainError::Diverged {
                        epoch: epoch + 1,
                        step: self.state.step,
                        cause: format!("the loss is {loss}"),
                    });
                }
                self.state.batch = index as u32 + 1;
                self.state.lr = lr;
                totals.loss_sum += loss * n as f64;
                totals.correct += hits as u64;
                totals.seen += n as u64;
                totals.seconds += started.elapsed().as_secs_f64();
                sink.event(&TrainEvent::Step {
                    epoch: epoch + 1,
                    step: self.state.step,
                    loss,
                    lr,
                })?;
                if stop.load(Ordering::SeqCst) && index + 1 < per_epoch {
                    self.check_parameters(epoch + 1)?;
                    self.state.running = Some(totals);
                    let (file_name, file) = self.checkpoint(sink, &[])?;
                    return Ok(Outcome::Stopped { file_name, file });
                }
            }
            self.check_parameters(epoch + 1)?;
            self.state.epoch += 1;
            self.state.batch = 0;
            sink.event(&TrainEvent::Evaluating { epoch: epoch + 1 })?;
            let records = self
                .epoch_records(epoch + 1, &totals)
                .map_err(|e| e.name_batch_if_out_of_memory(evaluation, eval_batch))?;
            sink.event(&TrainEvent::Epoch {
                epoch: epoch + 1,
                records: &records,
            })?;
            let stopping = stop.load(Ordering::SeqCst) && self.state.epoch < epochs;
            if self.store.due(self.state.epoch) || stopping {
                let (file_name, file) = self.checkpoint(sink, &records)?;
                if stopping {
                    return Ok(Outcome::Stopped { file_name, file });
                }
            }
        }
        Ok(Outcome::Finished)
    }

    /// One training step: full batches on CUDA as a captured graph, else the loop's own.
    fn step(&mut self, x: &Tensor, y: &Tensor, lr: f64) -> Result<(f64, usize)> {
        #[cfg(feature = "cuda")]
        if self.model.device().is_cuda() && x.dim(0)? == self.plan.batch_size {
            let (model, optimizer) = (&self.model, &mut self.optimizer);
            return self.graph_steps.step(model, optimizer, (x, y), lr);
        }
        train_step(&self.model, &mut self.optimizer, x, y, lr)
    }

    /// A finite loss does not prove finite weights (candle's ReLU maps NaN to 0), so no
    /// checkpoint is written before every parameter has been checked.
    fn check_parameters(&self, epoch: u32) -> Result<()> {
        for p in self.model.parameters() {
            // Any NaN or infinity makes the (f64) sum non-finite.
            if !scalar(&p.var.as_tensor().sum_all()?)?.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    step: self.state.step,
                    cause: format!("parameter {} is not finite", p.name),
                });
            }
        }
        Ok(())
    }

    fn checkpoint(
        &self,
        sink: &mut dyn EventSink,
        records: &[MetricRecord],
    ) -> Result<(String, WrittenFile)> {
        sink.event(&TrainEvent::Checkpointing {
            epoch: self.state.epoch,
            batch: self.state.batch,
        })?;
        let (name, file) = self.store.write(
            &self.model,
            &self.optimizer,
            &self.spec,
            &self.state,
            records,
        )?;
        sink.event(&TrainEvent::Checkpoint {
            epoch: self.state.epoch,
            batch: self.state.batch,
            step: self.state.step,
            file_name: &name,
            file: &file,
        })?;
        for removed in self.store.prune(|| Ok(sink.keep_epochs()?))? {
            sink.event(&TrainEvent::CheckpointRemoved {
                file_name: &removed,
            })?;
        }
        Ok((name, file))
    }

    /// The metrics of a finished epoch (1-based): the training figures of its steps, then
    /// [`Self::evaluation_records`].
    fn epoch_records(&self, epoch: u32, totals: &RunningTotals) -> Result<Vec<MetricRecord>> {
        let seen = totals.seen.max(1) as f64;
        let record = |name, split, value| MetricRecord::new(name, split, epoch, value);
        let mut records = vec![
            record(M::Loss, Some(Split::Train), totals.loss_sum / seen),
            record(
                M::Accuracy,
                Some(Split::Train),
                totals.correct as f64 / seen,
            ),
        ];
        records.extend(self.evaluation_records(epoch)?);
        records.push(record(M::LearningRate, None, self.state.lr));
        records.push(record(
            M::ImagesPerSecond,
            None,
            totals.seen as f64 / totals.seconds.max(1e-9),
        ));
        records.push(record(M::EpochSeconds, None, totals.seconds));
        Ok(records)
    }

    /// What the weights score after epoch `epoch`: test loss and accuracy, the head at
    /// every block of the last stage, and the gradient-norm ratio where it is tracked.
    fn evaluation_records(&self, epoch: u32) -> Result<Vec<MetricRecord>> {
        let monitor = &self.spec.train.monitor;
        let norm = self.plan.normalization;
        let eval_batch = monitor.eval_batch_size as usize;
        let layout = self.model.layout();
        let blocks = layout.blocks();
        let last_stage: Vec<_> = blocks
            .iter()
            .filter(|b| b.id.stage == layout.last_stage())
            .collect();
        let taps: Vec<usize> = if monitor.intermediate_accuracy {
            last_stage.iter().map(|b| b.index as usize).collect()
        } else {
            vec![]
        };
        let inputs = Inputs::new(&norm, self.model.device())?;
        let batches = self.test.batches(eval_batch);
        let (test, at_blocks) = evaluate(&self.model, &inputs, batches, &taps)?;
        let record = |name, split, value| MetricRecord::new(name, split, epoch, value);
        let mut records = vec![
            record(M::Loss, Some(Split::Test), test.loss),
            record(M::Accuracy, Some(Split::Test), test.accuracy),
        ];
        for (block, result) in last_stage.iter().zip(&at_blocks) {
            let split = Some(Split::Test);
            records.push(
                record(M::IntermediateAccuracy, split, result.accuracy)
                    .at_block(block.id, block.index),
            );
            records.push(
                record(M::IntermediateLoss, split, result.loss).at_block(block.id, block.index),
            );
        }
        if self.spec.train.grad_norm_ratio_for(self.spec.model.sharing) {
            let deep = last_stage[0].index as usize;
            let n = monitor.grad_norm_examples as usize;
            let seed = self.spec.train.seed;
            for (split, images, id) in [
                (Split::Train, &*self.train, 0),
                (Split::Test, &self.test, 1),
            ] {
                let subset = fixed_subset(images, n, seed, id);
                let batches = subset.batches(eval_batch);
                let ratio = grad_norm_ratio(&self.model, &inputs, batches, deep)?;
                records.push(record(M::GradNormRatio, Some(split), ratio));
            }
        }
        Ok(records)
    }
}

/// How many of `names` there are and the first few in order: "none", or
/// "3 (a, b, c)", or "40 (a, b, c, …)".
fn some_of<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut names: Vec<&str> = names.map(String::as_str).collect();
    names.sort_unstable();
    match names.len() {
        0 => "none".into(),
        n => {
            let more = if n > 3 { ", …" } else { "" };
            let shown = names[..n.min(3)].join(", ");
            format!("{n} ({shown}{more})")
        }
    }
}

/// Whether `weights` (read from `file`) are the tensors of the model `spec` describes, by
/// name and shape, as [`import`] requires: for a client to check before it uploads them.
pub fn check_weights(spec: &RunSpec, weights: &HashMap<String, Tensor>, file: &str) -> Result<()> {
    spec.validate()?;
    let model = build_model(spec, spec.model.dtype, &Device::Cpu)?;
    load_strict(&model, weights, file)
}

/// Loads `weights` into `model` as `load_state_dict(strict=True)` does: every tensor of the
/// model and no other (the model's own loader passes over names outside it, such as a
/// checkpoint's optimizer state), each of its shape.
fn load_strict(model: &ResNet, weights: &HashMap<String, Tensor>, file: &str) -> Result<()> {
    let not_the_model = |reason: String| resnet::Error::BadWeights {
        path: PathBuf::from(file),
        reason: format!("not the tensors of the model the spec describes: {reason}"),
    };
    let expected: HashSet<String> = model.state_dict()?.into_iter().map(|(n, _)| n).collect();
    let given: HashSet<String> = weights.keys().cloned().collect();
    if expected != given {
        let missing = some_of(expected.difference(&given));
        let unexpected = some_of(given.difference(&expected));
        return Err(not_the_model(format!(
            "missing {missing}; unexpected {unexpected} (`stepwise model summary --tensors` \
             lists the model's names and shapes)"
        ))
        .into());
    }
    model
        .load_state_dict(weights)
        .map_err(|e| not_the_model(e.to_string()))?;
    Ok(())
}

/// A run made of weights trained elsewhere ([`import`]).
pub struct Imported {
    /// The resolved spec (dataset identity and normalisation filled in).
    pub spec: RunSpec,
    pub file_name: String,
    pub file: WrittenFile,
    /// What the weights score: [`Trainer`]'s evaluation after an epoch.
    pub records: Vec<MetricRecord>,
}

/// Weights trained elsewhere made a finished run of `spec` on `dataset`, so that `eval`,
/// `analyze` and `figures` take them as they take a run of stepwise's own. The model the
/// spec describes takes `weights` — every tensor under its PyTorch name and shape, and no
/// other, as `load_state_dict(strict=True)` would — its train state is that after the
/// spec's last epoch, with fresh momentum buffers, and `source` is recorded in it. The
/// weights are evaluated as after an epoch (test loss and accuracy, the head at the last
/// stage's blocks, the gradient-norm ratio where tracked; no training figures, there were
/// no steps here) and checkpointed into `checkpoint_dir` with those records, which also go
/// to `sink`.
pub fn import(
    mut spec: RunSpec,
    dataset: Dataset,
    weights: &HashMap<String, Tensor>,
    source: ImportedWeights,
    device: &Device,
    checkpoint_dir: PathBuf,
    sink: &mut dyn EventSink,
) -> Result<Imported> {
    spec.validate()?;
    bind_dataset(&mut spec, &dataset)?;
    let model = build_model(&spec, spec.model.dtype, device)?;
    load_strict(&model, weights, &source.file)?;
    let [_, (evaluation, eval_batch)] = memory_work(&spec);
    resnet::memory::check(
        evaluation,
        model.layout(),
        model.dtypes(),
        eval_batch,
        device,
    )?;
    let epochs = spec.epochs();
    let plan = BatchPlan::of_run(&spec).expect("bound to the dataset");
    let per_epoch = plan.batches_per_epoch(dataset.train.len());
    let schedule = spec.train.schedule(spec.model.arch);
    let state = TrainState {
        epoch: epochs,
        batch: 0,
        step: epochs as u64 * per_epoch as u64,
        lr: schedule.lr(
            epochs.saturating_sub(1),
            per_epoch.saturating_sub(1),
            per_epoch,
        ),
        schedule,
        rng: RngState::new(spec.train.seed),
        running: None,
        imported: Some(source),
    };
    let step = state.step;
    let trainer = Trainer::assemble(spec, model, None, state, dataset, checkpoint_dir)?;
    sink.event(&TrainEvent::Started {
        spec: &trainer.spec,
        steps_per_epoch: per_epoch,
        start_step: step,
        total_steps: step,
    })?;
    sink.event(&TrainEvent::Evaluating { epoch: epochs })?;
    let records = trainer
        .evaluation_records(epochs)
        .map_err(|e| e.name_batch_if_out_of_memory(evaluation, eval_batch))?;
    sink.event(&TrainEvent::Epoch {
        epoch: epochs,
        records: &records,
    })?;
    let (file_name, file) = trainer.checkpoint(sink, &records)?;
    Ok(Imported {
        spec: trainer.spec,
        file_name,
        file,
        records,
    })
}

/// What a run of `spec` computes at which batch size, each checked against the memory
/// budget before it starts: the training steps, and the evaluation after every epoch (with
/// the gradient-norm ratio's backward passes where it is on).
pub fn memory_work(spec: &RunSpec) -> [(Work, usize); 2] {
    let gradients = spec.train.grad_norm_ratio_for(spec.model.sharing);
    [
        (Work::Training, spec.train.batch_size as usize),
        (
            Work::EpochEvaluation { gradients },
            spec.train.monitor.eval_batch_size as usize,
        ),
    ]
}

/// Fails when any of [`memory_work`] is estimated not to fit `device`'s memory budget.
pub fn check_memory(
    spec: &RunSpec,
    layout: &ModelLayout,
    dtypes: Dtypes,
    device: &Device,
) -> resnet::Result<()> {
    for (work, batch) in memory_work(spec) {
        resnet::memory::check(work, layout, dtypes, batch, device)?;
    }
    Ok(())
}

/// Forward, loss, backward and one SGD update with BatchNorm in training mode; returns the
/// batch's mean loss and number of correct predictions.
pub(crate) fn train_step(
    model: &ResNet,
    optimizer: &mut Sgd,
    x: &Tensor,
    y: &Tensor,
    lr: f64,
) -> Result<(f64, usize)> {
    let logits = model.forward(x, BnMode::Train)?;
    let loss = cross_entropy(&logits, y)?;
    // The backward pass is queued before the loss is read, so that a GPU keeps working while
    // the host waits; a non-finite loss still leaves the parameters untouched.
    let grads = loss.backward()?;
    let value = scalar(&loss)?;
    if !value.is_finite() {
        return Ok((value, 0));
    }
    optimizer.step(&grads, lr)?;
    Ok((value, correct(&logits, y)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Arch, DataSpec, ModelSpec, Sharing};

    #[test]
    fn the_memory_checked_is_the_steps_and_the_evaluation_with_the_ratios_gradients() {
        let mut spec = RunSpec::new(ModelSpec::new(Arch::Resnet), DataSpec::new("shapes10"));
        spec.train.batch_size = 64;
        spec.train.monitor.eval_batch_size = 500;
        let evaluation = |gradients| Work::EpochEvaluation { gradients };
        assert_eq!(
            memory_work(&spec),
            [(Work::Training, 64), (evaluation(false), 500)]
        );
        // Sharing runs track the gradient-norm ratio by default: backward passes.
        spec.model.sharing = Sharing::Ubn;
        assert_eq!(memory_work(&spec)[1], (evaluation(true), 500));
        spec.train.monitor.grad_norm_ratio = Some(false);
        assert_eq!(memory_work(&spec)[1], (evaluation(false), 500));
    }
}
