//! The training loop end to end on a tiny model: determinism, exact resume (at an epoch
//! boundary and in the middle of an epoch), divergence, dataset identity checks, and
//! weights trained elsewhere imported as a finished run.

use candle_core::{Device, Tensor};
use cifar::synth::{generate, SynthConfig};
use cifar::Dataset;
use domain::{
    Arch, DataSpec, LabelKind, MetricName, MetricRecord, ModelSpec, RunSpec, SchedulePreset,
    ScheduleSpec, Sharing, Split,
};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use train::{
    EventSink, ImportedWeights, Outcome, SinkError, TrainError, TrainEvent, TrainState, Trainer,
};

fn dataset(dir: &Path) -> Dataset {
    let path = dir.join("shapes");
    if !path.exists() {
        generate(
            &path,
            &SynthConfig {
                train: 48,
                test: 20,
                seed: 5,
            },
        )
        .unwrap();
    }
    Dataset::open(&path, LabelKind::Fine).unwrap()
}

fn spec(epochs: u32) -> RunSpec {
    let mut spec = RunSpec::new(
        ModelSpec {
            width: Some(4),
            blocks: Some(vec![1]),
            ..ModelSpec::new(Arch::Resnet)
        },
        DataSpec::new("shapes10"),
    );
    spec.train.epochs = Some(epochs);
    spec.train.batch_size = 16;
    spec.train.seed = 11;
    spec.train.monitor.eval_batch_size = 8;
    spec.train.schedule = ScheduleSpec {
        preset: SchedulePreset::Custom,
        boundaries: vec![2],
        values: vec![0.05, 0.01],
        ..ScheduleSpec::default()
    };
    spec
}

/// Collects epoch records and optionally requests a stop after a given step.
#[derive(Default)]
struct Recorder {
    records: Vec<MetricRecord>,
    stop_after: Option<(u64, Arc<AtomicBool>)>,
}

impl EventSink for Recorder {
    fn event(&mut self, event: &TrainEvent<'_>) -> Result<(), SinkError> {
        match event {
            TrainEvent::Epoch { records, .. } => self.records.extend(records.iter().cloned()),
            TrainEvent::Step { step, .. } => {
                if let Some((at, stop)) = &self.stop_after {
                    if step == at {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Records that must be reproduced exactly (timings excluded).
fn deterministic(records: &[MetricRecord]) -> Vec<MetricRecord> {
    records
        .iter()
        .filter(|r| {
            !matches!(
                r.name,
                MetricName::ImagesPerSecond | MetricName::EpochSeconds
            )
        })
        .cloned()
        .collect()
}

fn bits(trainer: &Trainer) -> Vec<(String, Vec<u8>)> {
    trainer
        .model()
        .state_dict()
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let t = t.flatten_all().unwrap();
            let bytes = match t.dtype() {
                candle_core::DType::I64 => t
                    .to_vec1::<i64>()
                    .unwrap()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                _ => t
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            };
            (k, bytes)
        })
        .collect()
}

/// A trainer on the CPU starting `spec` afresh in `dir/run`, on the dataset in `dir`.
fn fresh_trainer(spec: RunSpec, dir: &Path, run: &str) -> Trainer {
    Trainer::new(spec, dataset(dir), &Device::Cpu, dir.join(run)).unwrap()
}

fn uninterrupted(dir: &Path, spec: RunSpec) -> (Trainer, Vec<MetricRecord>) {
    let mut t = fresh_trainer(spec, dir, "full");
    let mut rec = Recorder::default();
    let outcome = t.run(&mut rec, &AtomicBool::new(false)).unwrap();
    assert!(matches!(outcome, Outcome::Finished));
    (t, rec.records)
}

#[test]
fn same_seed_same_run_and_metrics_are_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ra) = uninterrupted(dir.path(), spec(2));
    let again = tempfile::tempdir().unwrap();
    let (b, rb) = uninterrupted(again.path(), spec(2));
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(deterministic(&ra), deterministic(&rb));
    // Per epoch: train and test loss and accuracy, the head's accuracy and loss at the last
    // stage's one block, learning rate, throughput, time.
    let epoch1: Vec<_> = ra.iter().filter(|r| r.epoch == 1).collect();
    assert_eq!(epoch1.len(), 4 + 2 + 3);
    let inter: Vec<_> = epoch1
        .iter()
        .filter(|r| r.name == MetricName::IntermediateAccuracy)
        .map(|r| r.block.unwrap().to_string())
        .collect();
    assert_eq!(inter, ["s2.b0"]);
    let lr = |e| {
        ra.iter()
            .find(|r| r.name == MetricName::LearningRate && r.epoch == e)
            .unwrap()
            .value
    };
    assert_eq!((lr(1), lr(2)), (0.05, 0.05));
    // The final intermediate accuracy is the network's own test accuracy.
    let acc = |name| {
        ra.iter()
            .find(|r| r.name == name && r.epoch == 2 && r.split == Some(domain::Split::Test))
            .unwrap()
            .value
    };
    assert_eq!(
        acc(MetricName::IntermediateAccuracy),
        acc(MetricName::Accuracy)
    );
}

#[test]
fn resume_at_an_epoch_boundary_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (full, full_records) = uninterrupted(dir.path(), spec(3));

    let mut first = fresh_trainer(spec(1), dir.path(), "a");
    let mut rec = Recorder::default();
    first.run(&mut rec, &AtomicBool::new(false)).unwrap();
    let ck = resnet::checkpoint::read(&dir.path().join("a/epoch-0001.safetensors")).unwrap();
    let mut second = Trainer::resume(
        &ck,
        Some(3),
        dataset(dir.path()),
        &Device::Cpu,
        dir.path().join("b"),
    )
    .unwrap();
    second.run(&mut rec, &AtomicBool::new(false)).unwrap();

    assert_eq!(bits(&full), bits(&second));
    assert_eq!(deterministic(&full_records), deterministic(&rec.records));
    assert_eq!(full.state().step, second.state().step);
}

#[test]
fn kept_epochs_and_the_initial_weights_are_checkpointed_and_resume_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (full, full_records) = uninterrupted(dir.path(), spec(2));
    assert!(!dir.path().join("full/epoch-0000.safetensors").exists());

    // The policy's interval writes the final checkpoint only; the epochs its own list keeps
    // (the initial weights here) and those added (as an analysis plan's) are written too.
    let mut final_only = spec(2);
    final_only.train.checkpoint.every_epochs = 2;
    final_only.train.checkpoint.keep_epochs = vec![0];
    let mut first = fresh_trainer(final_only, dir.path(), "a");
    first.keep_epochs(&[1]);
    let mut rec = Recorder::default();
    first.run(&mut rec, &AtomicBool::new(false)).unwrap();
    // Kept through the retention policy, beside the final one; the run itself is unchanged.
    for epoch in ["0001", "0002"] {
        assert!(dir
            .path()
            .join(format!("a/epoch-{epoch}.safetensors"))
            .exists());
    }
    assert_eq!(bits(&full), bits(&first));
    let ck = resnet::checkpoint::read(&dir.path().join("a/epoch-0000.safetensors")).unwrap();
    let state: train::TrainState = ck.meta_json(train::META_TRAIN_STATE).unwrap();
    assert_eq!((state.epoch, state.batch, state.step), (0, 0, 0));
    let fresh = fresh_trainer(spec(2), dir.path(), "c");
    let initial = Trainer::resume(
        &ck,
        None,
        dataset(dir.path()),
        &Device::Cpu,
        dir.path().join("d"),
    )
    .unwrap();
    assert_eq!(bits(&fresh), bits(&initial));

    // Resumed from it, the run trains as if never stopped, and writes no second epoch 0.
    let mut second = initial;
    second.keep_epochs(&[0]);
    let mut rec = Recorder::default();
    second.run(&mut rec, &AtomicBool::new(false)).unwrap();
    assert_eq!(bits(&full), bits(&second));
    assert_eq!(deterministic(&full_records), deterministic(&rec.records));
    assert!(!dir.path().join("d/epoch-0000.safetensors").exists());
}

#[test]
fn stop_mid_epoch_then_resume_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (full, full_records) = uninterrupted(dir.path(), spec(3));

    let stop = Arc::new(AtomicBool::new(false));
    let mut rec = Recorder {
        stop_after: Some((5, stop.clone())),
        ..Recorder::default()
    };
    let mut pruning = spec(3);
    pruning.train.checkpoint.keep_last = 2;
    let mut first = fresh_trainer(pruning, dir.path(), "a");
    let outcome = first.run(&mut rec, &stop).unwrap();
    let Outcome::Stopped { file_name, .. } = outcome else {
        panic!("expected a stop, got {outcome:?}");
    };
    // 3 batches per epoch: step 5 is batch 2 of epoch 2.
    assert_eq!(file_name, "epoch-0001-batch-00002.safetensors");
    let ck = resnet::checkpoint::read(&dir.path().join("a").join(&file_name)).unwrap();
    let mut rest = Recorder::default();
    let mut second = Trainer::resume(
        &ck,
        None,
        dataset(dir.path()),
        &Device::Cpu,
        dir.path().join("a"),
    )
    .unwrap();
    assert!(matches!(
        second.run(&mut rest, &AtomicBool::new(false)).unwrap(),
        Outcome::Finished
    ));

    assert_eq!(bits(&full), bits(&second));
    let mut all = rec.records;
    all.extend(rest.records);
    assert_eq!(deterministic(&full_records), deterministic(&all));
    // keep_last = 2 pruned the mid-epoch checkpoint once two later ones existed.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.contains(&file_name), "{left:?}");
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn checkpoints_are_self_describing() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = uninterrupted(dir.path(), spec(1));
    let ck = resnet::checkpoint::read(&dir.path().join("full/epoch-0001.safetensors")).unwrap();
    let spec: RunSpec = ck.meta_json(train::META_SPEC).unwrap();
    assert_eq!(&spec, t.spec());
    let identity = spec.data.identity.as_ref().unwrap();
    assert_eq!(identity.name, "shapes10");
    assert!(identity.fingerprint.starts_with("sha256:"));
    assert!(spec.data.normalization.is_some());
    let state: train::TrainState = ck.meta_json(train::META_TRAIN_STATE).unwrap();
    assert_eq!((state.epoch, state.batch, state.step), (1, 0, 3));
    assert_eq!(state.rng.seed, 11);
    let metrics: Vec<MetricRecord> = ck.meta_json(train::META_METRICS).unwrap();
    assert!(metrics.iter().any(|r| r.name == MetricName::Accuracy));
    assert!(ck
        .meta(train::META_CODE_VERSION)
        .unwrap()
        .starts_with("stepwise "));
    assert!(ck.tensors.contains_key("optimizer.momentum.stem.weight"));
    assert!(ck
        .tensors
        .contains_key("stages.0.blocks.0.bn1.num_batches_tracked"));
    let (model, _) = train::load_model(&ck, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 3, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let a = model
        .infer(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = t
        .model()
        .infer(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_checkpoint_whose_spec_or_tensors_do_not_hold_up_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    uninterrupted(dir.path(), spec(1));
    let ck = resnet::checkpoint::read(&dir.path().join("full/epoch-0001.safetensors")).unwrap();
    let trained: RunSpec = ck.meta_json(train::META_SPEC).unwrap();
    // The same tensors under an edited spec, as a hand-made or converted file could be.
    let edited = |name: &str, edit: &dyn Fn(&mut RunSpec)| {
        let mut spec = trained.clone();
        edit(&mut spec);
        let mut metadata = ck.metadata.clone();
        metadata.insert(
            train::META_SPEC.into(),
            serde_json::to_string(&spec).unwrap(),
        );
        let path = dir.path().join(name);
        let tensors: Vec<_> = ck.tensors.clone().into_iter().collect();
        resnet::checkpoint::write(&path, &tensors, metadata).unwrap();
        let edited = resnet::checkpoint::read(&path).unwrap();
        let err = train::load_model(&edited, &Device::Cpu).err().unwrap();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{}: ", path.display())), "{msg}");
        msg
    };
    let msg = edited("std0.safetensors", &|s| {
        s.data.normalization.as_mut().unwrap().std = [0.0; 3];
    });
    assert!(msg.contains("data.normalization.std"), "{msg}");
    let msg = edited("deeper.safetensors", &|s| s.model.blocks = Some(vec![2]));
    assert!(
        msg.contains("not those of the model its spec describes")
            && msg.contains("missing tensor stages.0.blocks.1."),
        "{msg}"
    );
}

#[test]
fn divergence_is_an_error_naming_epoch_and_step_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut good = fresh_trainer(spec(1), dir.path(), "run");
    good.run(&mut Recorder::default(), &AtomicBool::new(false))
        .unwrap();
    let kept = run.join("epoch-0001.safetensors");
    let sha = resnet::checkpoint::sha256_file(&kept).unwrap();

    // A normalisation this extreme turns every pixel into -inf; the first convolution
    // then adds infinities of both signs and NaN reaches the weights.
    let mut poisoned = spec(2);
    poisoned.data.normalization = Some(domain::Normalization {
        mean: [1e30; 3],
        std: [1e-30; 3],
    });
    let mut t = fresh_trainer(poisoned, dir.path(), "run");
    let err = t
        .run(&mut Recorder::default(), &AtomicBool::new(false))
        .unwrap_err();
    let msg = err.to_string();
    let TrainError::Diverged { epoch, .. } = err else {
        panic!("expected divergence, got {err}");
    };
    assert_eq!(epoch, 1);
    assert!(msg.starts_with("diverged at epoch 1 step "), "{msg}");
    assert!(msg.contains("not finite") || msg.contains("NaN"), "{msg}");
    // Nothing was written or pruned: the last good checkpoint is intact.
    let names: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["epoch-0001.safetensors"]);
    assert_eq!(resnet::checkpoint::sha256_file(&kept).unwrap(), sha);
}

#[test]
fn resuming_on_other_data_or_classes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    uninterrupted(dir.path(), spec(1));
    let ck = resnet::checkpoint::read(&dir.path().join("full/epoch-0001.safetensors")).unwrap();
    let other = dir.path().join("other");
    generate(
        &other,
        &SynthConfig {
            train: 48,
            test: 20,
            seed: 6,
        },
    )
    .unwrap();
    let other = Dataset::open(&other, LabelKind::Fine).unwrap();
    let err = Trainer::resume(&ck, Some(2), other, &Device::Cpu, dir.path().join("b"))
        .err()
        .unwrap();
    assert!(matches!(err, TrainError::DatasetMismatch { .. }), "{err}");
    let done = Trainer::resume(
        &ck,
        None,
        dataset(dir.path()),
        &Device::Cpu,
        dir.path().join("b"),
    )
    .err()
    .unwrap();
    assert!(done.to_string().contains("already completed"), "{done}");

    let mut wrong = spec(1);
    wrong.model.classes = 100;
    let err = Trainer::new(
        wrong,
        dataset(dir.path()),
        &Device::Cpu,
        dir.path().join("c"),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("model.classes"), "{err}");
}

#[test]
fn bf16_runs_train_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut half = spec(1);
    half.model.dtype = domain::Precision::Bf16;
    let (t, records) = uninterrupted(dir.path(), half);
    let loss = records
        .iter()
        .find(|r| r.name == MetricName::Loss && r.split == Some(domain::Split::Test))
        .unwrap();
    assert!(loss.value.is_finite());
    let ck = resnet::checkpoint::read(&dir.path().join("full/epoch-0001.safetensors")).unwrap();
    // Parameters stay f32 in the checkpoint; computation was bf16.
    assert_eq!(ck.tensors["stem.weight"].dtype(), candle_core::DType::F32);
    let mut more = Trainer::resume(
        &ck,
        Some(2),
        dataset(dir.path()),
        &Device::Cpu,
        dir.path().join("b"),
    )
    .unwrap();
    more.run(&mut Recorder::default(), &AtomicBool::new(false))
        .unwrap();
    assert_eq!(more.state().epoch, 2);
    assert_eq!(t.spec().model.dtype, domain::Precision::Bf16);
}

#[test]
fn tf32_runs_resume_in_tf32_and_are_measured_in_exact_f32() {
    let dir = tempfile::tempdir().unwrap();
    let mut tf32 = spec(1);
    tf32.model.dtype = domain::Precision::Tf32;
    uninterrupted(dir.path(), tf32);
    let ck = resnet::checkpoint::read(&dir.path().join("full/epoch-0001.safetensors")).unwrap();
    let (trained, spec) = train::load_model(&ck, &Device::Cpu).unwrap();
    let (measured, same) = train::load_model_to_measure(&ck, &Device::Cpu).unwrap();
    assert_eq!(trained.dtypes().conv_math, resnet::ops::ConvMath::Tf32);
    assert_eq!(measured.dtypes().conv_math, resnet::ops::ConvMath::Exact);
    assert_eq!(measured.dtypes().compute, candle_core::DType::F32);
    // The spec keeps what the run was trained with.
    assert_eq!(
        (spec.model.dtype, same.model.dtype),
        (domain::Precision::Tf32, domain::Precision::Tf32)
    );
}

#[test]
fn sharing_runs_report_the_gradient_norm_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(1);
    spec.model.blocks = Some(vec![2]);
    spec.model.sharing = Sharing::Ubn;
    spec.model.unshared_blocks = 1;
    spec.train.monitor.grad_norm_examples = 10;
    let (_, records) = uninterrupted(dir.path(), spec);
    let ratios: Vec<_> = records
        .iter()
        .filter(|r| r.name == MetricName::GradNormRatio)
        .collect();
    assert_eq!(ratios.len(), 2);
    assert!(ratios.iter().all(|r| r.value.is_finite() && r.value > 0.0));
}

/// Tensor values by name, for exact comparisons.
fn values_of(tensors: &HashMap<String, Tensor>) -> BTreeMap<String, Vec<f64>> {
    tensors
        .iter()
        .map(|(name, t)| {
            let v = t.to_dtype(candle_core::DType::F64).unwrap();
            (name.clone(), v.flatten_all().unwrap().to_vec1().unwrap())
        })
        .collect()
}

#[test]
fn weights_trained_elsewhere_become_a_finished_run_that_scores_as_they_did() {
    let dir = tempfile::tempdir().unwrap();
    let (trained, records) = uninterrupted(dir.path(), spec(2));
    // The weights alone, as PyTorch's state dict holds them: no optimizer state, no metadata.
    let ck = resnet::checkpoint::read(&dir.path().join("full/epoch-0002.safetensors")).unwrap();
    let weights: HashMap<String, Tensor> = ck
        .tensors
        .iter()
        .filter(|(name, _)| !name.starts_with("optimizer."))
        .map(|(name, t)| (name.clone(), t.clone()))
        .collect();
    let file = dir.path().join("weights.safetensors");
    candle_core::safetensors::save(&weights, &file).unwrap();
    let source = ImportedWeights {
        file: file.display().to_string(),
        sha256: resnet::checkpoint::sha256_file(&file).unwrap(),
    };
    let read = resnet::checkpoint::read_weights(&file, None, None).unwrap();
    let into = |run: &str| dir.path().join(run);
    let import = |weights: &HashMap<String, Tensor>, spec: RunSpec, run: &str| {
        let data = dataset(dir.path());
        train::import(
            spec,
            data,
            weights,
            source.clone(),
            &Device::Cpu,
            into(run),
            &mut Recorder::default(),
        )
    };
    let imported = import(&read, spec(2), "imported").unwrap();

    // It scores as the run did after its last epoch: every evaluation record, exactly.
    let evaluation: Vec<_> = records
        .iter()
        .filter(|r| r.epoch == 2 && r.split == Some(Split::Test))
        .cloned()
        .collect();
    assert!(evaluation.len() >= 4, "{evaluation:?}");
    assert_eq!(imported.records, evaluation);
    assert_eq!(&imported.spec, trained.spec());

    // A finished run's checkpoint: the weights as given, where the run stood, momentum fresh,
    // and the file it came from.
    assert_eq!(imported.file_name, "epoch-0002.safetensors");
    let written = resnet::checkpoint::read(&into("imported").join(&imported.file_name)).unwrap();
    let (model, momentum): (HashMap<_, _>, HashMap<_, _>) = written
        .tensors
        .into_iter()
        .partition(|(name, _)| !name.starts_with("optimizer."));
    assert_eq!(values_of(&model), values_of(&weights));
    assert!(!momentum.is_empty());
    assert!(values_of(&momentum).values().flatten().all(|&v| v == 0.0));
    let state: TrainState = ck.meta_json(train::META_TRAIN_STATE).unwrap();
    let imported_state: TrainState = resnet::checkpoint::read(&written.path)
        .unwrap()
        .meta_json(train::META_TRAIN_STATE)
        .unwrap();
    assert_eq!(imported_state.imported.as_ref(), Some(&source));
    assert_eq!(
        TrainState {
            imported: None,
            ..imported_state
        },
        state
    );

    // Not the model's tensors: refused, naming what differs, and nothing is written.
    let message = |result: train::Result<train::Imported>| match result {
        Err(e) => e.to_string(),
        Ok(_) => panic!("imported"),
    };
    let mut short = read.clone();
    short.remove("head.fc.bias");
    let m = message(import(&short, spec(2), "short"));
    assert!(m.contains("weights.safetensors"), "{m}");
    assert!(
        m.contains("missing 1 (head.fc.bias); unexpected none"),
        "{m}"
    );
    let mut long = read.clone();
    long.insert("head.fc2.weight".into(), read["head.fc.weight"].clone());
    let m = message(import(&long, spec(2), "long"));
    assert!(
        m.contains("missing none; unexpected 1 (head.fc2.weight)"),
        "{m}"
    );
    let mut wider = spec(2);
    wider.model.width = Some(8);
    let m = message(import(&read, wider, "wider"));
    assert!(
        m.contains("stem.weight: shape [4, 3, 3, 3], expected [8, 3, 3, 3]"),
        "{m}"
    );
    for run in ["short", "long", "wider"] {
        assert!(!into(run).exists(), "{run}");
    }
}
