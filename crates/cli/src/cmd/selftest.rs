//! `stepwise selftest`: the device's ops against the CPU kernels, then a short training run
//! on shapes10 that must learn. Exits non-zero on any mismatch.

use anyhow::{Context, Result};
use domain::{DeviceSpec, LabelKind, MetricName, RunSpec, Split};
use resnet::candle_device;
use serde::Serialize;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use train::selftest::{compare_with_cpu, Check};
use train::{EventSink, SinkError, TrainEvent, Trainer};

/// The quick run's narrow ResNet-20 for six epochs on 10,000 shapes10 images.
const TRAINING: &str = r#"
name = "selftest"
[model]
arch = "resnet"
depth = 20
width = 8
[data]
dataset = "shapes10"
[train]
epochs = 6
batch_size = 128
seed = 0
[train.schedule]
preset = "custom"
boundaries = [4, 5]
values = [0.1, 0.02, 0.004]
"#;

/// The learning check passes when test accuracy reaches this (chance is 0.1; the same spec
/// on the CPU reaches 0.82, as the README's quick run).
const MIN_ACCURACY: f64 = 0.5;

#[derive(Serialize)]
struct Report {
    device: String,
    checks: Vec<Check>,
    training_test_accuracy: Option<f64>,
    training_min_accuracy: f64,
    training_seconds: f64,
    passed: bool,
}

struct LastAccuracy(Option<f64>);

impl EventSink for LastAccuracy {
    fn event(&mut self, event: &TrainEvent<'_>) -> Result<(), SinkError> {
        if let TrainEvent::Epoch { records, .. } = event {
            self.0 = records
                .iter()
                .find(|r| {
                    r.name == MetricName::Accuracy
                        && r.split == Some(Split::Test)
                        && r.block.is_none()
                })
                .map(|r| r.value)
                .or(self.0);
        }
        Ok(())
    }
}

pub fn run(device_spec: DeviceSpec, json: bool) -> Result<ExitCode> {
    let device = candle_device(device_spec)?;
    let described = resnet::describe_device(&device);
    if !json {
        println!("device {described}");
    }
    let checks = compare_with_cpu(&device).context("comparing with the CPU")?;
    if !json {
        for c in &checks {
            let verdict = if c.passed { "ok  " } else { "FAIL" };
            println!(
                "{verdict} {:<62} error {:.1e} (tolerance {:.0e})",
                c.name, c.error, c.tolerance
            );
        }
    }
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let data = scratch.path().join("shapes10");
    let synth = cifar::synth::SynthConfig {
        train: 10_000,
        test: 1_000,
        seed: 0,
    };
    cifar::synth::generate(&data, &synth)?;
    let dataset = cifar::Dataset::open(&data, LabelKind::Fine)?;
    let spec = RunSpec::from_toml(TRAINING)?;
    let started = std::time::Instant::now();
    let mut trainer = Trainer::new(spec, dataset, &device, scratch.path().join("checkpoints"))?;
    let mut sink = LastAccuracy(None);
    trainer.run(&mut sink, &AtomicBool::new(false))?;
    let report = Report {
        device: described,
        passed: checks.iter().all(|c| c.passed) && sink.0.is_some_and(|a| a >= MIN_ACCURACY),
        checks,
        training_test_accuracy: sink.0,
        training_min_accuracy: MIN_ACCURACY,
        training_seconds: started.elapsed().as_secs_f64(),
    };
    if json {
        super::print_json(&report)?;
    } else {
        println!(
            "training: narrow resnet-20 on shapes10, test accuracy {:.3} after 6 epochs (needs {MIN_ACCURACY}), {:.1} s",
            report.training_test_accuracy.unwrap_or(f64::NAN),
            report.training_seconds
        );
        println!(
            "{}",
            if report.passed {
                "selftest passed"
            } else {
                "selftest FAILED"
            }
        );
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
