//! A short training run with stepwise's CPU kernels follows the run with candle's own
//! operations (the path before the kernels) within float tolerance. Its own test binary: the
//! switch between the two is process-wide.

use candle_core::Device;
use cifar::synth::{generate, SynthConfig};
use cifar::Dataset;
use domain::{
    Arch, DataSpec, LabelKind, MetricName, MetricRecord, ModelSpec, RunSpec, SchedulePreset,
    ScheduleSpec,
};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use train::{EventSink, Outcome, SinkError, TrainEvent, Trainer};

#[derive(Default)]
struct Losses(Vec<MetricRecord>);

impl EventSink for Losses {
    fn event(&mut self, event: &TrainEvent<'_>) -> Result<(), SinkError> {
        if let TrainEvent::Epoch { records, .. } = event {
            self.0.extend(
                records
                    .iter()
                    .filter(|r| matches!(r.name, MetricName::Loss | MetricName::Accuracy))
                    .cloned(),
            );
        }
        Ok(())
    }
}

fn train(dir: &Path, reference: bool) -> Vec<MetricRecord> {
    let data = dir.join("shapes");
    if !data.exists() {
        let config = SynthConfig {
            train: 64,
            test: 32,
            seed: 2,
        };
        generate(&data, &config).unwrap();
    }
    let mut spec = RunSpec::new(
        ModelSpec {
            width: Some(4),
            blocks: Some(vec![1]),
            ..ModelSpec::new(Arch::Resnet)
        },
        DataSpec::new("shapes10"),
    );
    spec.train.epochs = Some(3);
    spec.train.batch_size = 16;
    spec.train.seed = 4;
    spec.train.schedule = ScheduleSpec {
        preset: SchedulePreset::Custom,
        boundaries: vec![],
        values: vec![0.05],
        ..ScheduleSpec::default()
    };
    resnet::ops::use_reference_ops(reference);
    let out = dir.join(if reference { "reference" } else { "kernels" });
    let dataset = Dataset::open(&data, LabelKind::Fine).unwrap();
    let mut trainer = Trainer::new(spec, dataset, &Device::Cpu, out).unwrap();
    let mut losses = Losses::default();
    let outcome = trainer.run(&mut losses, &AtomicBool::new(false)).unwrap();
    resnet::ops::use_reference_ops(false);
    assert!(matches!(outcome, Outcome::Finished));
    losses.0
}

#[test]
fn kernels_follow_the_reference_operations_through_training() {
    let dir = tempfile::tempdir().unwrap();
    let kernels = train(dir.path(), false);
    let reference = train(dir.path(), true);
    // Train and test loss and accuracy for each of 3 epochs.
    assert_eq!(kernels.len(), 12, "{kernels:?}");
    assert_eq!(kernels.len(), reference.len());
    for (k, r) in kernels.iter().zip(&reference) {
        assert_eq!((k.epoch, k.name, k.split), (r.epoch, r.name, r.split));
        let tol = 1e-3 * r.value.abs().max(1.0);
        assert!(
            (k.value - r.value).abs() <= tol,
            "epoch {} {:?} {:?}: kernels {} reference {}",
            k.epoch,
            k.split,
            k.name,
            k.value,
            r.value
        );
    }
    // The run learns: the loss moves, so the comparison is not between two constants.
    let loss = |e: u32| {
        kernels
            .iter()
            .find(|m| m.epoch == e && m.name == MetricName::Loss)
            .unwrap()
            .value
    };
    assert!((loss(1) - loss(3)).abs() > 1e-3, "{kernels:?}");
}
