//! Self-test of a device (`stepwise selftest --device cuda`): evaluation's input and sums,
//! every custom op and a whole model's forward and backward on the device against the CPU
//! kernels on the same inputs, one SGD step, then a short training run on shapes10 that must
//! learn. On CUDA the ops and models run in both memory formats, NCHW and channels-last,
//! against the CPU's NCHW.
//!
//! Errors are compared as `max |device − cpu| / max |cpu|` over a tensor, so that values
//! near zero do not dominate. Tolerances are for f32 with different summation orders:
//! 1e-4 for single ops, 2e-3 for a whole network (errors compound through 8 layers and
//! ReLU boundaries), 1e-5 for the elementwise SGD update. TF32 convolutions round each
//! factor to 11 significant bits (2⁻¹¹ ≈ 4.9e-4 relative): 1e-2 per op and 5e-2 for the
//! network, loose enough for that rounding and tight enough to catch a wrong result. bf16
//! stores 8 significant bits (2⁻⁹ ≈ 2e-3 per rounding): 2e-2 per op (inputs rounded to bf16
//! on both devices, the CPU computing in f32) and 1e-1 for the network.

use crate::{Result, Sgd, SgdConfig};
use candle_core::{DType, Device, Tensor, Var};
use cifar::rng::{rng, Stream};
use domain::{ModelSpec, Precision, TrainSpec};
use rand::Rng;
use rand_distr::StandardNormal;
use resnet::layers::{BatchNorm, BnMode};
use resnet::loss::{cross_entropy, cross_entropy_per_example};
use resnet::ops::{ConvMath, MemoryFormat};
use resnet::{ops, Dtypes, Init, ProbeOptions, ResNet};
use serde::Serialize;
use std::collections::HashMap;

const OP_TOLERANCE: f64 = 1e-4;
const MODEL_TOLERANCE: f64 = 2e-3;
const SGD_TOLERANCE: f64 = 1e-5;
const TF32_OP_TOLERANCE: f64 = 1e-2;
const TF32_MODEL_TOLERANCE: f64 = 5e-2;
const BF16_OP_TOLERANCE: f64 = 2e-2;
const BF16_MODEL_TOLERANCE: f64 = 1e-1;

/// An f32 tensor as an op check in `precision` takes it: on the device in the activation
/// dtype; for the CPU reference (and on a CPU device, whose ops take bf16 only inside a
/// model) in f32, with the same values.
fn in_precision(t: Tensor, precision: Precision, reference: bool) -> Result<Tensor> {
    let reference = reference || t.device().is_cpu();
    Ok(match (precision, reference) {
        (Precision::Bf16, false) => t.to_dtype(DType::BF16)?,
        (Precision::Bf16, true) => t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?,
        _ => t,
    })
}

/// A random op input in `precision` (see [`in_precision`]).
fn op_input(
    shape: &[usize],
    seed: u64,
    dev: &Device,
    precision: Precision,
    reference: bool,
) -> Result<Tensor> {
    in_precision(random(shape, seed, dev)?, precision, reference)
}

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

/// The memory formats whose ops `device` runs: channels-last on CUDA only.
fn op_formats(device: &Device) -> Vec<MemoryFormat> {
    match device.is_cuda() {
        true => vec![MemoryFormat::Nchw, MemoryFormat::ChannelsLast],
        false => vec![MemoryFormat::Nchw],
    }
}

/// How a check names a memory format: nothing for NCHW.
fn format_name(format: MemoryFormat) -> &'static str {
    match format {
        MemoryFormat::Nchw => "",
        MemoryFormat::ChannelsLast => " channels-last",
    }
}

/// Convolutions of every kind the models use (3×3 stride 1 and 2, 1×1 projection; a
/// block's last convolution with its shortcut added inside), small and at the shapes of
/// ResNet's first downsampling block, in f32, TF32 and bf16 (the CPU computes in f32
/// throughout), in each memory format of the device (the CPU's NCHW the reference).
fn conv_checks(device: &Device, out: &mut Vec<Check>) -> Result<()> {
    for format in op_formats(device) {
        for precision in [Precision::F32, Precision::Tf32, Precision::Bf16] {
            conv_checks_in((precision, format), device, out)?;
        }
    }
    Ok(())
}

fn conv_checks_in(
    (precision, format): (Precision, MemoryFormat),
    device: &Device,
    out: &mut Vec<Check>,
) -> Result<()> {
    let (math, tolerance) = match precision {
        Precision::F32 => (ConvMath::Exact, OP_TOLERANCE),
        Precision::Tf32 => (ConvMath::Tf32, TF32_OP_TOLERANCE),
        Precision::Bf16 => (ConvMath::Exact, BF16_OP_TOLERANCE),
    };
    for (n, c, size, co, k, stride, adding) in [
        (4, 8, 16, 16, 3, 1, false),
        (4, 8, 16, 16, 3, 2, false),
        (4, 8, 16, 16, 1, 2, false),
        (32, 16, 32, 32, 3, 2, false),
        (32, 16, 32, 32, 1, 2, false),
        (4, 8, 16, 8, 3, 1, true),
        (32, 32, 16, 32, 3, 1, true),
    ] {
        // NCHW inputs and outputs, their gradients NCHW too; in `format` on the device only.
        let run = |dev: &Device, reference: bool| -> Result<Vec<Tensor>> {
            let format = if reference {
                MemoryFormat::Nchw
            } else {
                format
            };
            let input = |shape: &[usize], seed| op_input(shape, seed, dev, precision, reference);
            let x = Var::from_tensor(&input(&[n, c, size, size], 1)?)?;
            let w = Var::from_tensor(&input(&[co, c, k, k], 2)?)?;
            let b = Var::from_tensor(&input(&[co], 3)?)?;
            let add = match adding {
                true => Some(Var::from_tensor(&input(&[n, co, size, size], 5)?)?),
                false => None,
            };
            let (xf, wf) = (format.from_nchw(&x)?, format.from_nchw(&w)?);
            let addf = add.as_deref().map(|a| format.from_nchw(a)).transpose()?;
            let settings = (stride, k / 2);
            let y = ops::conv2d_in(format, &xf, (&wf, &b), addf.as_ref(), settings, math)?;
            let y = format.to_nchw(&y)?;
            let r = input(y.dims(), 4)?;
            let grads = (&y * &r)?.sum_all()?.backward()?;
            let grad = |v: &Var| grads.get(v).cloned().expect("all inputs need gradients");
            let mut parts = vec![y.clone(), grad(&x), grad(&w), grad(&b)];
            parts.extend(add.as_ref().map(grad));
            Ok(parts)
        };
        let (cpu, dev) = (run(&Device::Cpu, true)?, run(device, false)?);
        let parts = [
            "forward",
            "input gradient",
            "weight gradient",
            "bias gradient",
            "addend gradient",
        ];
        for (i, part) in parts.iter().enumerate().take(cpu.len()) {
            let name = format!(
                "conv {}{}{} {n}x{c}x{size}² → {co}, {k}x{k} stride {stride}: {part}",
                precision.as_str(),
                format_name(format),
                if adding { " + shortcut" } else { "" },
            );
            out.push(compare(&name, &dev[i], &cpu[i], tolerance)?);
        }
    }
    Ok(())
}

/// BatchNorm+ReLU in each mode, at a small shape, at one whose per-channel reductions
/// are split over several blocks and at one of more channels than a channels-last kernel
/// block serves (32): output, gradients, running statistics (left as they were by batch
/// statistics without the update); with f32 and bf16 activations (parameters f32), in each
/// memory format of the device.
fn batch_norm_checks(device: &Device, out: &mut Vec<Check>) -> Result<()> {
    for format in op_formats(device) {
        for (precision, tolerance) in [
            (Precision::F32, OP_TOLERANCE),
            (Precision::Bf16, BF16_OP_TOLERANCE),
        ] {
            batch_norm_checks_in((precision, format), tolerance, device, out)?;
        }
    }
    Ok(())
}

fn batch_norm_checks_in(
    (precision, format): (Precision, MemoryFormat),
    tolerance: f64,
    device: &Device,
    out: &mut Vec<Check>,
) -> Result<()> {
    for (shape, mode) in [
        ([4, 8, 8, 8], BnMode::Train),
        ([4, 8, 8, 8], BnMode::Eval),
        ([64, 8, 32, 32], BnMode::Train),
        ([64, 8, 32, 32], BnMode::Eval),
        ([8, 40, 8, 8], BnMode::Train),
        ([8, 40, 8, 8], BnMode::Eval),
        ([4, 8, 8, 8], BnMode::BatchStats),
        ([8, 40, 8, 8], BnMode::BatchStats),
    ] {
        let c = shape[1];
        let run = |dev: &Device, reference: bool| -> Result<Vec<Tensor>> {
            let format = if reference {
                MemoryFormat::Nchw
            } else {
                format
            };
            let mut r = rng(0, Stream::Init, 0, 0);
            let mut init = Init::new(&mut r, dev, Dtypes::uniform(DType::F32));
            let bn = BatchNorm::new(&mut init, c, 1.0)?;
            bn.weight.set(&(random(&[c], 5, dev)?.abs()? + 0.5)?)?;
            bn.bias.set(&random(&[c], 6, dev)?)?;
            bn.running_mean.set(&random(&[c], 7, dev)?)?;
            bn.running_var.set(&(random(&[c], 8, dev)?.abs()? + 0.5)?)?;
            // Shifted and scaled, so that the statistics are not trivially 0 and 1.
            let x = ((random(&shape, 9, dev)? * 3.0)? + 2.0)?;
            let x = Var::from_tensor(&in_precision(x, precision, reference)?)?;
            let y = bn.forward_relu_in(format, &format.from_nchw(&x)?, mode)?;
            let y = format.to_nchw(&y)?;
            let r = op_input(y.dims(), 10, dev, precision, reference)?;
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
        let (cpu, dev) = (run(&Device::Cpu, true)?, run(device, false)?);
        let parts = [
            "forward",
            "input gradient",
            "gamma gradient",
            "beta gradient",
            "running mean",
            "running variance",
        ];
        for (i, part) in parts.iter().enumerate() {
            let name = format!(
                "batch-norm+relu {}{} {shape:?} {mode:?}: {part}",
                precision.as_str(),
                format_name(format),
            );
            out.push(compare(&name, &dev[i], &cpu[i], tolerance)?);
        }
    }
    Ok(())
}

/// The narrow ResNet-8 of the model checks.
fn resnet8(precision: Precision) -> ModelSpec {
    ModelSpec {
        arch: domain::Arch::Resnet,
        depth: Some(8),
        classes: 10,
        width: Some(8),
        blocks: None,
        sharing: domain::Sharing::None,
        unshared_blocks: 0,
        dtype: precision,
    }
}

/// ResNet-8 in `precision` and memory `format` on `device`, initialised from the
/// selftest's seed: the same weights on every device.
fn resnet8_model(
    (precision, format): (Precision, MemoryFormat),
    device: &Device,
) -> Result<ResNet> {
    let spec = resnet8(precision);
    let mut r = rng(0, Stream::Init, 0, 0);
    let dtypes = Dtypes {
        memory_format: format,
        ..Dtypes::for_precision(spec.dtype)
    };
    Ok(ResNet::new(&spec.layout()?, &mut r, device, dtypes)?)
}

/// A narrow ResNet-8 with the same weights on both devices: logits, loss and every
/// parameter's gradient in training mode, logits in inference mode, then one SGD step; in
/// f32, TF32 (against the CPU's f32) and bf16 (against the CPU's bf16 model); f32 and bf16
/// also in channels-last (against the CPU's NCHW; on the CPU itself through its NCHW
/// kernels).
fn model_checks(device: &Device, out: &mut Vec<Check>) -> Result<()> {
    use MemoryFormat::{ChannelsLast, Nchw};
    for (precision, format, tolerance) in [
        (Precision::F32, Nchw, MODEL_TOLERANCE),
        (Precision::F32, ChannelsLast, MODEL_TOLERANCE),
        (Precision::Tf32, Nchw, TF32_MODEL_TOLERANCE),
        (Precision::Bf16, Nchw, BF16_MODEL_TOLERANCE),
        (Precision::Bf16, ChannelsLast, BF16_MODEL_TOLERANCE),
    ] {
        model_checks_in((precision, format), tolerance, device, out)?;
    }
    Ok(())
}

fn model_checks_in(
    (precision, format): (Precision, MemoryFormat),
    tolerance: f64,
    device: &Device,
    out: &mut Vec<Check>,
) -> Result<()> {
    let cpu_model = resnet8_model((precision, MemoryFormat::Nchw), &Device::Cpu)?;
    let dev_model = resnet8_model((precision, format), device)?;
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
    // bf16 rounds every activation to 8 significant bits, which through BatchNorm's backward
    // (differences of means) moves gradients far more than any op's own error: on the CPU
    // alone, this model's bf16 gradients differ from its f32 ones by up to 0.27 (measured as
    // below). So in bf16 a tensor may differ from the CPU's bf16 by twice what bf16 costs the
    // CPU on it (its distance from the CPU's f32), where that exceeds the tolerance.
    let f32_tensors = match precision {
        Precision::Bf16 => {
            let f32_model = resnet8_model((Precision::F32, MemoryFormat::Nchw), &Device::Cpu)?;
            Some(step(&f32_model, &Device::Cpu)?.1)
        }
        _ => None,
    };
    for (i, part) in [
        "logits (train mode)",
        "loss",
        "logits (inference mode, after the step)",
    ]
    .iter()
    .enumerate()
    {
        let name = format!(
            "resnet-8 {}{}: {part}",
            precision.as_str(),
            format_name(format)
        );
        out.push(compare(&name, &dev_out[i], &cpu_out[i], tolerance)?);
    }
    let names: Vec<String> = cpu_model.parameters().into_iter().map(|p| p.name).collect();
    let n = names.len();
    // Every conv bias has a zero gradient in exact arithmetic (a training-mode BatchNorm
    // follows each on every path), so errors are taken relative to at least a thousandth
    // of the largest value of the whole set; a hundredth in bf16, whose rounding noise in
    // those zero sums measured 7e-4 of the largest gradient on an H200.
    let floor = match precision {
        Precision::Bf16 => 1e-2,
        _ => 1e-3,
    };
    let worst = |range: std::ops::Range<usize>, what: &str, tol: f64| -> Result<Check> {
        let mut largest = 0.0f64;
        for t in &cpu_tensors[range.clone()] {
            largest = largest.max(max_abs(t)?);
        }
        let mut checks = vec![];
        for i in range {
            let name = format!(
                "resnet-8 {}{}: {what} {}",
                precision.as_str(),
                format_name(format),
                names[i % n]
            );
            let (got, want) = (&dev_tensors[i], &cpu_tensors[i]);
            let tol = match &f32_tensors {
                Some(exact) => {
                    let cost = compare_at_scale("", want, &exact[i], floor * largest, tol)?;
                    tol.max(2.0 * cost.error)
                }
                None => tol,
            };
            checks.push(compare_at_scale(&name, got, want, floor * largest, tol)?);
        }
        Ok(checks
            .into_iter()
            .max_by(|a, b| (a.error / a.tolerance).total_cmp(&(b.error / b.tolerance)))
            .expect("the model has parameters"))
    };
    out.push(worst(0..n, "worst gradient:", tolerance)?);
    out.push(worst(
        n..2 * n,
        "worst parameter after one SGD step:",
        tolerance,
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

/// The trainer's step as a CUDA graph against its loop step on the same device: one
/// ResNet-8, twice from the same weights, four steps on four batches with the learning rate
/// changing every step (the first step runs eagerly, the second is captured, two replay);
/// then losses, hits and the whole state (parameters, running statistics, batch counters).
/// The same kernels run in both, so they agree to rounding or exactly. In f32, NCHW and
/// channels-last.
#[cfg(feature = "cuda")]
fn graph_checks(device: &Device, out: &mut Vec<Check>) -> Result<()> {
    if !device.is_cuda() {
        return Ok(());
    }
    for format in op_formats(device) {
        graph_checks_in(format, device, out)?;
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn graph_checks_in(format: MemoryFormat, device: &Device, out: &mut Vec<Check>) -> Result<()> {
    use crate::graph_step::GraphSteps;
    use crate::trainer::train_step;
    let build = || -> Result<(ResNet, Sgd)> {
        let model = resnet8_model((Precision::F32, format), device)?;
        let sgd = Sgd::new(
            model.parameters(),
            SgdConfig::from_spec(&TrainSpec::default()),
        )?;
        Ok((model, sgd))
    };
    let ((looped, mut loop_sgd), (graphed, mut graph_sgd)) = (build()?, build()?);
    let mut graph = GraphSteps::new();
    let (mut loop_out, mut graph_out) = (vec![], vec![]);
    for k in 0..4u64 {
        let x = random(&[16, 3, 32, 32], 20 + k, device)?;
        let labels: Vec<u32> = (0..16u32).map(|i| (i * 7 + k as u32) % 10).collect();
        let y = Tensor::from_vec(labels, 16, device)?;
        let lr = 0.1 / (k + 1) as f64;
        let (loss, hits) = train_step(&looped, &mut loop_sgd, &x, &y, lr)?;
        loop_out.extend([loss, hits as f64]);
        let (loss, hits) = graph.step(&graphed, &mut graph_sgd, (&x, &y), lr)?;
        graph_out.extend([loss, hits as f64]);
    }
    let as_tensor = |v: Vec<f64>| Tensor::new(v, &Device::Cpu);
    let name = format!(
        "cuda graph step{}: losses and hits of four steps",
        format_name(format)
    );
    out.push(compare(
        &name,
        &as_tensor(graph_out)?,
        &as_tensor(loop_out)?,
        SGD_TOLERANCE,
    )?);
    let (want, got) = (looped.state_dict()?, graphed.state_dict()?);
    let mut worst: Option<Check> = None;
    for ((name, w), (_, g)) in want.iter().zip(&got) {
        let check = compare(
            &format!(
                "cuda graph step{}: worst state after four steps: {name}",
                format_name(format)
            ),
            g,
            w,
            SGD_TOLERANCE,
        )?;
        if worst.as_ref().is_none_or(|c| check.error > c.error) {
            worst = Some(check);
        }
    }
    out.extend(worst);
    Ok(())
}

/// Evaluation's input (stored bytes normalised on the device) and the sums of an
/// evaluation: the input must equal the CPU's exactly (a table lookup), loss and accuracy
/// within the op tolerance.
fn eval_checks(device: &Device, out: &mut Vec<Check>) -> Result<()> {
    let normalization = domain::Normalization {
        mean: [0.49, 0.48, 0.45],
        std: [0.25, 0.24, 0.26],
    };
    let mut r = rng(5, Stream::Init, 7, 0);
    let n: usize = 50;
    let pixels: Vec<u8> = (0..n * 3 * 32 * 32).map(|_| r.random()).collect();
    let labels: Vec<u32> = (0..n).map(|_| r.random_range(0..10)).collect();
    let logits = random(&[n, 10], 6, &Device::Cpu)?;
    let run = |dev: &Device| -> Result<(Tensor, Tensor)> {
        let inputs = resnet::eval::Inputs::new(&normalization, dev)?;
        let (x, y) = inputs.upload((&pixels, &labels))?;
        let mut sums = resnet::eval::EvalSums::default();
        sums.add(&logits.to_device(dev)?, &y)?;
        let r = sums.result()?;
        Ok((x, Tensor::new(&[r.loss, r.accuracy], &Device::Cpu)?))
    };
    let (cpu, dev) = (run(&Device::Cpu)?, run(device)?);
    let (input, sums) = ("evaluation input: bytes normalised", "evaluation sums");
    out.push(compare(input, &dev.0, &cpu.0, 0.0)?);
    out.push(compare(sums, &dev.1, &cpu.1, OP_TOLERANCE)?);
    Ok(())
}

/// The analysis' gradients: ∂L/∂h_i at every block input of ResNet-8 in f32 (inference
/// mode, frozen parameters, the summed loss), kept by one backward pass
/// ([`resnet::Probed::backward`]); the worst block is reported.
fn analysis_gradient_checks(device: &Device, out: &mut Vec<Check>) -> Result<()> {
    let gradients = |dev: &Device| -> Result<Vec<Tensor>> {
        let model = resnet8_model((Precision::F32, MemoryFormat::Nchw), dev)?;
        let x = random(&[16, 3, 32, 32], 12, dev)?;
        let y = Tensor::from_vec((0..16u32).map(|i| i % 10).collect(), 16, dev)?;
        resnet::layers::with_frozen_parameters(|| {
            let probed = model.forward_probed(&x, &ProbeOptions::eval().with_gradients())?;
            let loss = cross_entropy_per_example(&probed.logits, &y)?.sum_all()?;
            let grads = probed.backward(&loss)?;
            Ok(probed.input_gradients(&grads)?)
        })
    };
    let (cpu, dev) = (gradients(&Device::Cpu)?, gradients(device)?);
    let mut worst: Option<Check> = None;
    for (i, (d, c)) in dev.iter().zip(&cpu).enumerate() {
        let name = format!("resnet-8 f32 analysis: gradient at block {i}'s input");
        let check = compare(&name, d, c, MODEL_TOLERANCE)?;
        if worst.as_ref().is_none_or(|w| check.error > w.error) {
            worst = Some(check);
        }
    }
    out.extend(worst);
    Ok(())
}

/// Every op check of the device against the CPU (and, on CUDA, the graph step against the
/// loop's).
pub fn compare_with_cpu(device: &Device) -> Result<Vec<Check>> {
    let mut out = vec![];
    eval_checks(device, &mut out)?;
    conv_checks(device, &mut out)?;
    batch_norm_checks(device, &mut out)?;
    sgd_checks(device, &mut out)?;
    model_checks(device, &mut out)?;
    analysis_gradient_checks(device, &mut out)?;
    #[cfg(feature = "cuda")]
    graph_checks(device, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the CPU every comparison is of the CPU with itself: all pass, in every precision
    /// (the CPU computes TF32 convolutions exactly, and bf16 ones from the same rounded
    /// values), so the checks themselves run clean.
    #[test]
    fn every_check_passes_on_the_cpu_itself() {
        let checks = compare_with_cpu(&Device::Cpu).unwrap();
        let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
        assert!(failed.is_empty(), "{failed:?}");
        for kind in [
            "evaluation input",
            "conv tf32 + shortcut",
            "conv tf32",
            "conv bf16",
            "batch-norm+relu bf16",
            "resnet-8 tf32",
            "resnet-8 bf16 channels-last",
            "resnet-8 f32 analysis",
        ] {
            assert!(checks.iter().any(|c| c.name.starts_with(kind)), "{kind}");
        }
        assert!(
            checks.iter().all(|c| c.error == 0.0),
            "the same device, the same results"
        );
    }
}
