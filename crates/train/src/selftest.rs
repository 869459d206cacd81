//! Self-test of a device (`stepwise selftest --device cuda`): every custom op and a whole
//! model's forward and backward on the device against the CPU kernels on the same inputs,
//! one SGD step, then a short training run on shapes10 that must learn.
//!
//! Errors are compared as `max |device − cpu| / max |cpu|` over a tensor, so that values
//! near zero do not dominate. Tolerances are for f32 with different summation orders:
//! 1e-4 for single ops, 2e-3 for a whole network (errors compound through 8 layers and
//! ReLU boundaries), 1e-5 for the elementwise SGD update.

use crate::{Result, Sgd, SgdConfig};
use candle_core::{DType, Device, Tensor, Var};
use cifar::rng::{rng, Stream};
use domain::{ModelSpec, TrainSpec};
use rand::Rng;
use rand_distr::StandardNormal;
use resnet::layers::{BatchNorm, BnMode};
use resnet::loss::cross_entropy;
use resnet::{ops, Dtypes, Init, ResNet};
use serde::Serialize;
use std::collections::HashMap;

const OP_TOLERANCE: f64 = 1e-4;
const MODEL_TOLERANCE: f64 = 2e-3;
const SGD_TOLERANCE: f64 = 1e-5;

/// One comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    /// `max |device − cpu| / max |cpu|`.
    pub error: f64,
    pub tolerance: f64,
    pub passed: bool,
}

fn random(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let mut r = rng(seed, Stream::Init, 7, 0);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| r.sample(StandardNormal)).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

fn max_abs(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?
        .abs()?
        .max_all()?
        .to_scalar::<f64>()?)
}

fn compare(name: &str, got: &Tensor, want: &Tensor, tolerance: f64) -> Result<Check> {
    compare_at_scale(name, got, want, 0.0, tolerance)
}

/// As [`compare`], with the error relative to at least `floor`: for tensors that are
/// zero in exact arithmetic, such as the gradient of a bias that a training-mode BatchNorm
/// follows, whose computed values are rounding noise.
fn compare_at_scale(
    name: &str,
    got: &Tensor,
    want: &Tensor,
    floor: f64,
    tolerance: f64,
) -> Result<Check> {
    let got = got.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let want = want.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let diff = max_abs(&(got - &want)?)?;
    let scale = max_abs(&want)?.max(floor).max(1e-30);
    let error = diff / scale;
    Ok(Check {
        name: name.into(),
        error,
        tolerance,
        passed: error <= tolerance,
    })
}

/// Convolutions of every kind the models use (3×3 stride 1 and 2, 1×1 projection), small
/// and at the shapes of ResNet's first downsampling block.
fn conv_checks(device: &Device, out: &mut Vec<Check>) -> Result<()> {
    for (n, c, size, co, k, stride) in [
        (4, 8, 16, 16, 3, 1),
        (4, 8, 16, 16, 3, 2),
        (4, 8, 16, 16, 1, 2),
        (32, 16, 32, 32, 3, 2),
        (32, 16, 32, 32, 1, 2),
    ] {
        let run = |dev: &Device| -> Result<Vec<Tensor>> {
            let x = Var::from_tensor(&random(&[n, c, size, size], 1, dev)?)?;
            let w = Var::from_tensor(&random(&[co, c, k, k], 2, dev)?)?;
            let b = Var::from_tensor(&random(&[co], 3, dev)?)?;
            let y = ops::conv2d(&x, &w, &b, stride, k / 2)?;
            let r = random(y.dims(), 4, dev)?;
            let grads = (&y * &r)?.sum_all()?.backward()?;
            let grad = |v: &Var| grads.get(v).cloned().expect("all inputs need gradients");
            Ok(vec![y.clone(), grad(&x), grad(&w), grad(&b)])
        };
        let (cpu, dev) = (run(&Device::Cpu)?, run(device)?);
        for (i, part) in [
            "forward",
            "input gradient",
            "weight gradient",
            "bias gradient",
        ]
        .iter()
        .enumerate()
        {
            let name = format!("conv {n}x{c}x{size}² → {co}, {k}x{k} stride {stride}: {part}");
            out.push(compare(&name, &dev[i], &cpu[i], OP_TOLERANCE)?);
        }
    }
    Ok(())
}

/// BatchNorm+ReLU in both modes, at a small shape and at one whose per-channel reductions
/// are split over several blocks: output, gradients, running statistics.
fn batch_norm_checks(device: &Device, out: &mut Vec<Check>) -> Result<()> {
    for (shape, mode) in [
        ([4, 8, 8, 8], BnMode::Train),
        ([4, 8, 8, 8], BnMode::Eval),
        ([64, 8, 32, 32], BnMode::Train),
        ([64, 8, 32, 32], BnMode::Eval),
    ] {
        let run = |dev: &Device| -> Result<Vec<Tensor>> {
            let mut r = rng(0, Stream::Init, 0, 0);
            let mut init = Init::new(&mut r, dev, DType::F32);
            let bn = BatchNorm::new(&mut init, 8, 1.0)?;
            bn.weight.set(&(random(&[8], 5, dev)?.abs()? + 0.5)?)?;
            bn.bias.set(&random(&[8], 6, dev)?)?;
            bn.running_mean.set(&random(&[8], 7, dev)?)?;
            bn.running_var.set(&(random(&[8], 8, dev)?.abs()? + 0.5)?)?;
            // Shifted and scaled, so that the statistics are not trivially 0 and 1.
            let x = Var::from_tensor(&((random(&shape, 9, dev)? * 3.0)? + 2.0)?)?;
            let y = bn.forward_relu(&x, mode)?;
            let r = random(y.dims(), 10, dev)?;
            let grads = (&y * &r)?.sum_all()?.backward()?;
            let grad = |v: &Var| grads.get(v).cloned().expect("all inputs need gradients");
            Ok(vec![
                y.clone(),
                grad(&x),
                grad(&bn.weight),
                grad(&bn.bias),
                bn.running_mean.as_tensor().clone(),
                bn.running_var.as_tensor().clone(),
            ])
        };
        let (cpu, dev) = (run(&Device::Cpu)?, run(device)?);
        let parts = [
            "forward",
            "input gradient",
            "gamma gradient",
            "beta gradient",
            "running mean",
            "running variance",
        ];
        for (i, part) in parts.iter().enumerate() {
            let name = format!("batch-norm+relu {shape:?} {mode:?}: {part}");
            out.push(compare(&name, &dev[i], &cpu[i], OP_TOLERANCE)?);
        }
    }
    Ok(())
}

/// A narrow ResNet-8 with the same weights on both devices: logits, loss and every
/// parameter's gradient in training mode, logits in inference mode, then one SGD step.
fn model_checks(device: &Device, out: &mut Vec<Check>) -> Result<()> {
    let spec = ModelSpec {
        arch: domain::Arch::Resnet,
        depth: Some(8),
        classes: 10,
        width: Some(8),
        blocks: None,
        sharing: domain::Sharing::None,
        unshared_blocks: 0,
        dtype: domain::Precision::F32,
    };
    let layout = spec.layout()?;
    let build = |dev: &Device| -> Result<ResNet> {
        Ok(ResNet::new(
            &layout,
            &mut rng(0, Stream::Init, 0, 0),
            dev,
            Dtypes::for_precision(spec.dtype),
        )?)
    };
    let cpu_model = build(&Device::Cpu)?;
    let dev_model = build(device)?;
    let weights: HashMap<String, Tensor> = cpu_model.state_dict()?.into_iter().collect();
    dev_model.load_state_dict(&weights)?;
    let labels: Vec<u32> = (0..16u32).map(|i| i % 10).collect();
    let step = |model: &ResNet, dev: &Device| -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let x = random(&[16, 3, 32, 32], 11, dev)?;
        let y = Tensor::from_vec(labels.clone(), 16, dev)?;
        let logits = model.forward(&x, BnMode::Train)?;
        let loss = cross_entropy(&logits, &y)?;
        let grads = loss.backward()?;
        let params = model.parameters();
        let mut grad_list = vec![];
        for p in &params {
            grad_list.push(
                grads
                    .get(p.var.as_tensor())
                    .cloned()
                    .expect("every parameter"),
            );
        }
        let mut sgd = Sgd::new(params, SgdConfig::from_spec(&TrainSpec::default()))?;
        sgd.step(&grads, 0.1)?;
        let eval = model.forward(&x, BnMode::Eval)?;
        let updated = model
            .parameters()
            .into_iter()
            .map(|p| p.var.as_tensor().clone());
        Ok((
            vec![logits, loss, eval],
            grad_list.into_iter().chain(updated).collect(),
        ))
    };
    let (cpu_out, cpu_tensors) = step(&cpu_model, &Device::Cpu)?;
    let (dev_out, dev_tensors) = step(&dev_model, device)?;
    for (i, part) in [
        "logits (train mode)",
        "loss",
        "logits (inference mode, after the step)",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("resnet-8: {part}");
        out.push(compare(&name, &dev_out[i], &cpu_out[i], MODEL_TOLERANCE)?);
    }
    let names: Vec<String> = cpu_model.parameters().into_iter().map(|p| p.name).collect();
    let n = names.len();
    // Every conv bias has a zero gradient in exact arithmetic (a training-mode BatchNorm
    // follows each on every path), so errors are taken relative to at least a thousandth
    // of the largest value of the whole set.
    let worst = |range: std::ops::Range<usize>, what: &str, tol: f64| -> Result<Check> {
        let mut largest = 0.0f64;
        for t in &cpu_tensors[range.clone()] {
            largest = largest.max(max_abs(t)?);
        }
        let mut checks = vec![];
        for i in range {
            let name = format!("resnet-8: {what} {}", names[i % n]);
            let (got, want) = (&dev_tensors[i], &cpu_tensors[i]);
            checks.push(compare_at_scale(&name, got, want, 1e-3 * largest, tol)?);
        }
        Ok(checks
            .into_iter()
            .max_by(|a, b| (a.error / a.tolerance).total_cmp(&(b.error / b.tolerance)))
            .expect("the model has parameters"))
    };
    out.push(worst(0..n, "worst gradient:", MODEL_TOLERANCE)?);
    out.push(worst(
        n..2 * n,
        "worst parameter after one SGD step:",
        MODEL_TOLERANCE,
    )?);
    Ok(())
}

/// The SGD kernel alone against the CPU formula, with momentum, decay and Nesterov.
fn sgd_checks(device: &Device, out: &mut Vec<Check>) -> Result<()> {
    for nesterov in [false, true] {
        let run = |dev: &Device| -> Result<Tensor> {
            let p = Var::from_tensor(&random(&[1000], 12, dev)?)?;
            let mut sgd = Sgd::new(
                vec![resnet::Param {
                    name: "p".into(),
                    var: p.clone(),
                    role: resnet::ParamRole::Weight,
                }],
                SgdConfig {
                    momentum: 0.9,
                    nesterov,
                    weight_decay: 5e-4,
                    decay_on: domain::DecayScope::Weights,
                },
            )?;
            for k in 0..3 {
                let loss = (p.as_tensor() * &random(&[1000], 13 + k, dev)?)?.sum_all()?;
                sgd.step(&loss.backward()?, 0.1)?;
            }
            Ok(p.as_tensor().clone())
        };
        let name = format!("sgd momentum (nesterov {nesterov}): three steps");
        out.push(compare(
            &name,
            &run(device)?,
            &run(&Device::Cpu)?,
            SGD_TOLERANCE,
        )?);
    }
    Ok(())
}

/// Every op check of the device against the CPU.
pub fn compare_with_cpu(device: &Device) -> Result<Vec<Check>> {
    let mut out = vec![];
    conv_checks(device, &mut out)?;
    batch_norm_checks(device, &mut out)?;
    sgd_checks(device, &mut out)?;
    model_checks(device, &mut out)?;
    Ok(out)
}
