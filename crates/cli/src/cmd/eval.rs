use crate::args::EvalArgs;
use anyhow::Result;
use domain::{DatasetIdentity, Split};
use resnet::candle_device;
use resnet::eval::{evaluate, Inputs};
use resnet::memory::{name_batch_if_out_of_memory, Work};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use train::load_model_to_measure;

#[derive(Serialize)]
struct Report {
    checkpoint: PathBuf,
    split: Split,
    loss: f64,
    accuracy: f64,
    n: usize,
    dataset: DatasetIdentity,
    /// Present when the evaluation data differs from the training data.
    #[serde(skip_serializing_if = "Option::is_none")]
    trained_on: Option<DatasetIdentity>,
}

pub fn run(args: EvalArgs, data_dir: &Path) -> Result<ExitCode> {
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let device = candle_device(args.device)?;
    let ck = resnet::checkpoint::read(&args.checkpoint)?;
    let (model, spec) = load_model_to_measure(&ck, &device)?;
    let (layout, dtypes) = (model.layout(), model.dtypes());
    resnet::memory::check(Work::Evaluation, layout, dtypes, args.batch, &device)?;
    let (dataset, trained_on) = super::data_for(&spec, args.data.as_deref(), data_dir)?;
    let split: Split = args.split.into();
    let images = match split {
        Split::Train => &dataset.train,
        Split::Test => &dataset.test,
    };
    let normalization = spec
        .data
        .normalization
        .ok_or_else(|| anyhow::anyhow!("the checkpoint's spec records no normalisation"))?;
    let inputs = Inputs::new(&normalization, &device)?;
    let (result, _) = evaluate(&model, &inputs, images.batches(args.batch), &[])
        .map_err(|e| name_batch_if_out_of_memory(e, Work::Evaluation, args.batch))?;
    let report = Report {
        checkpoint: args.checkpoint,
        split,
        loss: result.loss,
        accuracy: result.accuracy,
        n: result.n,
        dataset: dataset.identity,
        trained_on,
    };
    if args.json {
        super::print_json(&report)?;
    } else {
        println!(
            "{} {}: loss {:.4}, accuracy {:.2}% over {} images",
            report.dataset.name,
            split,
            report.loss,
            100.0 * report.accuracy,
            report.n
        );
    }
    Ok(ExitCode::SUCCESS)
}
