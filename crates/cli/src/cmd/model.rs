use crate::args::ModelCommand;
use anyhow::Result;
use candle_core::Device;
use cifar::rng::{rng, Stream};
use domain::{BlockInfo, ModelSpec};
use resnet::{Dtypes, ResNet};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Serialize)]
struct Summary {
    model: ModelSpec,
    depth: u32,
    trainable_params: usize,
    keras_params: usize,
    head_features: u32,
    blocks: Vec<BlockRow>,
}

/// A block with its stage spelled out, for readers of the JSON.
#[derive(Serialize)]
struct BlockRow {
    #[serde(flatten)]
    info: BlockInfo,
    stage: u32,
}

/// The model of a spec on the CPU: parameters are counted on the built model itself, so
/// the numbers are those of what trains.
pub fn build(spec: &ModelSpec) -> Result<ResNet> {
    Ok(ResNet::new(
        &spec.layout()?,
        &mut rng(0, Stream::Init, 0, 0),
        &Device::Cpu,
        Dtypes::for_precision(spec.dtype),
    )?)
}

pub fn run(cmd: ModelCommand) -> Result<ExitCode> {
    let ModelCommand::Summary { model, json } = cmd;
    let spec = model.to_spec()?;
    let layout = spec.layout()?;
    let net = build(&spec)?;
    let summary = Summary {
        depth: ModelSpec::depth_of(&layout),
        trainable_params: net.trainable_count(),
        keras_params: net.keras_count(),
        head_features: layout.head_features(),
        blocks: layout
            .blocks()
            .into_iter()
            .map(|info| BlockRow {
                stage: info.id.stage,
                info,
            })
            .collect(),
        model: spec,
    };
    if json {
        super::print_json(&summary)?;
        return Ok(ExitCode::SUCCESS);
    }
    let m = &summary.model;
    println!(
        "{} depth {} · {} classes · sharing {} · {}",
        m.arch,
        summary.depth,
        m.classes,
        m.sharing.as_str(),
        m.dtype.as_str()
    );
    println!("trainable parameters   {:>12}", summary.trainable_params);
    println!("keras-style total      {:>12}", summary.keras_params);
    println!("head features          {:>12}", summary.head_features);
    println!();
    println!(
        "{:>5}  {:<8} {:<10} {:<6} {:>14}  {:>14}",
        "index", "block", "kind", "shared", "input", "output"
    );
    for BlockRow { info: b, .. } in &summary.blocks {
        let shape = |s: [u32; 3]| format!("{}×{}×{}", s[0], s[1], s[2]);
        println!(
            "{:>5}  {:<8} {:<10} {:<6} {:>14}  {:>14}",
            b.index,
            b.id.to_string(),
            b.kind.as_str(),
            if b.shared { "yes" } else { "" },
            shape(b.in_shape),
            shape(b.out_shape)
        );
    }
    Ok(ExitCode::SUCCESS)
}
