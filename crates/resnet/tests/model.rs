//! Semantics of the model: probed forward, input gradients, block skipping and scaling,
//! BatchNorm modes, state dicts and checkpoints.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, D};
use domain::{Arch, ModelSpec, Sharing};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet::loss::cross_entropy_per_example;
use resnet::{BnMode, Dtypes, ProbeOptions, Probed, ResNet};
use std::collections::HashMap;

fn tiny(arch: Arch, dtypes: Dtypes) -> ResNet {
    let spec = ModelSpec {
        width: Some(4),
        blocks: Some(vec![2]),
        ..ModelSpec::new(arch)
    };
    build(&spec, dtypes, 1)
}

fn build(spec: &ModelSpec, dtypes: Dtypes, seed: u64) -> ResNet {
    let layout = spec.layout().unwrap();
    ResNet::new(
        &layout,
        &mut ChaCha8Rng::seed_from_u64(seed),
        &Device::Cpu,
        dtypes,
    )
    .unwrap()
}

fn input(n: usize, dtype: DType) -> (Tensor, Tensor) {
    let mut r = ChaCha8Rng::seed_from_u64(9);
    let x: Vec<f64> = (0..n * 3 * 32 * 32)
        .map(|_| r.random_range(-2.0..2.0))
        .collect();
    let y: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    (
        Tensor::from_vec(x, (n, 3, 32, 32), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
        Tensor::from_vec(y, n, &Device::Cpu).unwrap(),
    )
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Warms BatchNorm running statistics so that inference mode differs from identity.
fn warm(model: &ResNet, dtype: DType) {
    let (x, _) = input(6, dtype);
    model.forward(&x, BnMode::Train).unwrap();
}

#[test]
fn probed_plain_and_inference_forwards_agree() {
    for arch in [Arch::Resnet, Arch::Avgpool, Arch::Single, Arch::Wide] {
        let model = tiny(arch, Dtypes::uniform(DType::F32));
        warm(&model, DType::F32);
        let (x, _) = input(3, DType::F32);
        let plain = model.forward(&x, BnMode::Eval).unwrap();
        let probed = model
            .forward_probed(&x, &ProbeOptions::eval().with_gradients())
            .unwrap();
        assert_eq!(max_abs_diff(&plain, &probed.logits), 0.0, "{arch}");
        assert_eq!(
            max_abs_diff(&plain, &model.infer(&x).unwrap()),
            0.0,
            "{arch}"
        );
        let blocks = model.layout().blocks();
        assert_eq!(probed.inputs.len(), blocks.len());
        for (i, b) in blocks.iter().enumerate() {
            let shape: Vec<usize> = b.in_shape.iter().map(|&d| d as usize).collect();
            assert_eq!(probed.inputs[i].dims()[1..], shape[..], "{arch} {}", b.id);
            let f = probed.residuals[i].as_ref().unwrap();
            let block = model.block(i).unwrap();
            let out = (block.shortcut(&probed.inputs[i]).unwrap() + f).unwrap();
            assert_eq!(max_abs_diff(&out, &probed.outputs[i]), 0.0);
        }
        // The head on the last output is the network's output.
        let last = probed.outputs.last().unwrap();
        let head = model.head().forward(last, BnMode::Eval).unwrap();
        assert_eq!(max_abs_diff(&head, &plain), 0.0);
    }
}

/// Inference runs each block through the fused kernels (BatchNorm + ReLU applied as the
/// convolution reads, the shortcut added in place): the values of the separate layers, bit
/// for bit, for every block kind, and no graph.
#[test]
fn inference_kernels_equal_the_separate_layers_bit_for_bit() {
    for (arch, dtype) in [
        (Arch::Resnet, DType::F32),
        (Arch::Resnet, DType::F64),
        (Arch::Wide, DType::F32),
        (Arch::Avgpool, DType::F32),
    ] {
        let model = tiny(arch, Dtypes::uniform(dtype));
        warm(&model, dtype);
        let (x, _) = input(3, dtype);
        let probed = model
            .forward_probed(&x, &ProbeOptions::eval().with_gradients())
            .unwrap();
        for (i, h) in probed.inputs.iter().enumerate() {
            let block = model.block(i).unwrap();
            let at = format!("{arch} {dtype:?} block {i}");
            let whole = block.infer(h).unwrap();
            let eval = block.forward(h, BnMode::Eval).unwrap();
            assert_eq!(max_abs_diff(&whole, &eval), 0.0, "{at}");
            let residual = block.infer_residual(h).unwrap();
            let f = probed.residuals[i].as_ref().unwrap();
            assert_eq!(max_abs_diff(&residual, f), 0.0, "{at}");
            assert!(!whole.track_op() && !residual.track_op(), "{at}");
        }
    }
}

#[test]
fn tapped_inference_returns_block_outputs() {
    let model = tiny(Arch::Resnet, Dtypes::uniform(DType::F32));
    warm(&model, DType::F32);
    let (x, _) = input(2, DType::F32);
    let probed = model.forward_probed(&x, &ProbeOptions::eval()).unwrap();
    let (logits, taps) = model.infer_tapped(&x, &[1, 4, 5]).unwrap();
    assert_eq!(max_abs_diff(&logits, &probed.logits), 0.0);
    for (t, i) in taps.iter().zip([1, 4, 5]) {
        assert_eq!(max_abs_diff(t, &probed.outputs[i]), 0.0);
    }
}

/// The probed inference-mode forward pass and the gradients of its summed cross-entropy.
fn probed_backward(model: &ResNet, x: &Tensor, y: &Tensor) -> (Probed, GradStore) {
    let probed = model
        .forward_probed(x, &ProbeOptions::eval().with_gradients())
        .unwrap();
    let loss = cross_entropy_per_example(&probed.logits, y)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = probed.backward(&loss).unwrap();
    (probed, grads)
}

/// ∂L/∂h_i from the probes against central finite differences, in f64, for every block
/// (projection blocks and pooled stages included).
#[test]
fn input_gradients_match_central_finite_differences() {
    for arch in [Arch::Resnet, Arch::Avgpool] {
        let model = tiny(arch, Dtypes::uniform(DType::F64));
        warm(&model, DType::F64);
        let (x, y) = input(2, DType::F64);
        let (probed, grads) = probed_backward(&model, &x, &y);
        let grads = probed.input_gradients(&grads).unwrap();
        let mut r = ChaCha8Rng::seed_from_u64(4);
        for (i, h) in probed.inputs.iter().enumerate() {
            let h = h.detach();
            let flat = h.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let g = grads[i].flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for _ in 0..4 {
                let k = r.random_range(0..flat.len());
                let eps = 1e-5;
                let at = |delta: f64| {
                    let mut v = flat.clone();
                    v[k] += delta;
                    let h = Tensor::from_vec(v, h.shape(), &Device::Cpu).unwrap();
                    let logits = model.forward_from(i, &h, BnMode::Eval).unwrap();
                    cross_entropy_per_example(&logits, &y)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                let tol = 1e-6 * (1.0 + numeric.abs());
                assert!(
                    (numeric - g[k]).abs() < tol,
                    "{arch} block {i} coord {k}: autograd {} vs numeric {numeric}",
                    g[k]
                );
            }
        }
    }
}

/// Frozen parameters (how analysis runs) give the same input gradients and no parameter
/// gradients at all.
#[test]
fn frozen_parameters_get_no_gradients_and_change_no_input_gradient() {
    let model = tiny(Arch::Resnet, Dtypes::uniform(DType::F32));
    warm(&model, DType::F32);
    let (x, y) = input(3, DType::F32);
    let backward = || {
        let (probed, grads) = probed_backward(&model, &x, &y);
        let inputs = probed.input_gradients(&grads).unwrap();
        let params: Vec<bool> = model
            .parameters()
            .iter()
            .map(|p| grads.get(p.var.as_tensor()).is_some())
            .collect();
        (inputs, params)
    };
    let (free_inputs, free_params) = backward();
    let (frozen_inputs, frozen_params) = resnet::layers::with_frozen_parameters(backward);
    assert!(free_params.iter().all(|&has| has), "{free_params:?}");
    assert!(frozen_params.iter().all(|&has| !has), "{frozen_params:?}");
    for (a, b) in free_inputs.iter().zip(&frozen_inputs) {
        assert_eq!(max_abs_diff(a, b), 0.0);
    }
    // The scope ends with the closure.
    assert!(backward().1.iter().all(|&has| has));
}

#[test]
fn skipped_blocks_keep_only_their_shortcut() {
    let model = tiny(Arch::Resnet, Dtypes::uniform(DType::F32));
    warm(&model, DType::F32);
    let (x, _) = input(2, DType::F32);
    // Block 2 is the projection block s1.b0: skipping it keeps P(h).
    let opts = ProbeOptions {
        skip: vec![1, 2],
        ..ProbeOptions::eval()
    };
    let probed = model.forward_probed(&x, &opts).unwrap();
    assert!(probed.residuals[1].is_none() && probed.residuals[2].is_none());
    assert_eq!(max_abs_diff(&probed.outputs[1], &probed.inputs[1]), 0.0);
    let projected = model.block(2).unwrap().shortcut(&probed.inputs[2]).unwrap();
    assert_eq!(max_abs_diff(&probed.outputs[2], &projected), 0.0);
    assert_eq!(probed.outputs[2].dims(), &[2, 8, 16, 16]);

    // Skipping every block of `single` leaves the head on the stem's output.
    let single = tiny(Arch::Single, Dtypes::uniform(DType::F32));
    warm(&single, DType::F32);
    let all = ProbeOptions {
        skip: vec![0, 1],
        ..ProbeOptions::eval()
    };
    let logits = single.forward_probed(&x, &all).unwrap().logits;
    let direct = single
        .head()
        .forward(&single.stem(&x).unwrap(), BnMode::Eval)
        .unwrap();
    assert_eq!(max_abs_diff(&logits, &direct), 0.0);
}

#[test]
fn scaled_block_interpolates_between_shortcut_and_block() {
    let model = tiny(Arch::Resnet, Dtypes::uniform(DType::F32));
    warm(&model, DType::F32);
    let (x, _) = input(2, DType::F32);
    let h = model.stem(&x).unwrap();
    let block = model.block(1).unwrap();
    let zero = block.forward_scaled(&h, 0.0, BnMode::Eval).unwrap();
    assert_eq!(max_abs_diff(&zero, &h), 0.0);
    let one = block.forward_scaled(&h, 1.0, BnMode::Eval).unwrap();
    assert_eq!(
        max_abs_diff(&one, &block.forward(&h, BnMode::Eval).unwrap()),
        0.0
    );
    let half = block.forward_scaled(&h, 0.5, BnMode::Eval).unwrap();
    let f = block.residual(&h, BnMode::Eval).unwrap();
    assert!(max_abs_diff(&half, &(&h + (f * 0.5).unwrap()).unwrap()) < 1e-6);
}

fn running_stats(model: &ResNet) -> Vec<(String, Vec<f32>)> {
    model
        .state_dict()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.contains("running_") || k.contains("num_batches"))
        .map(|(k, t)| {
            (
                k,
                t.to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn inference_mode_leaves_running_statistics_unchanged() {
    let model = tiny(Arch::Resnet, Dtypes::uniform(DType::F32));
    warm(&model, DType::F32);
    let before = running_stats(&model);
    let (x, y) = input(3, DType::F32);
    let probed = model
        .forward_probed(&x, &ProbeOptions::eval().with_gradients())
        .unwrap();
    let loss = cross_entropy_per_example(&probed.logits, &y)
        .unwrap()
        .sum_all()
        .unwrap();
    loss.backward().unwrap();
    model.infer(&x).unwrap();
    assert_eq!(before, running_stats(&model));
    model.forward(&x, BnMode::Train).unwrap();
    assert_ne!(before, running_stats(&model));
}

/// Batch statistics without the update: the output training mode gives, the running
/// statistics as they were — in the stepwise kernels (f32) and candle's ops (bf16 on the
/// CPU).
#[test]
fn batch_statistics_normalise_as_training_does_and_keep_the_running_ones() {
    for dtype in [DType::F32, DType::BF16] {
        let model = tiny(Arch::Resnet, Dtypes::uniform(dtype));
        warm(&model, dtype);
        let before = running_stats(&model);
        let (x, _) = input(3, dtype);
        let h = model.stem(&x).unwrap();
        let block = model.block(0).unwrap();
        let batch = block.residual(&h, BnMode::BatchStats).unwrap();
        assert_eq!(before, running_stats(&model), "{dtype:?}");
        let eval = block.residual(&h, BnMode::Eval).unwrap();
        let train = block.residual(&h, BnMode::Train).unwrap();
        assert_ne!(before, running_stats(&model), "{dtype:?}");
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert_eq!(diff(&batch, &train), 0.0, "{dtype:?}");
        assert!(diff(&batch, &eval) > 1e-3, "{dtype:?}");
    }
}

/// running ← 0.9·running + 0.1·batch with the unbiased variance; one count per call.
#[test]
fn batchnorm_updates_running_statistics_like_pytorch() {
    let model = tiny(Arch::Single, Dtypes::uniform(DType::F64));
    let (x, _) = input(3, DType::F64);
    let h = model.stem(&x).unwrap();
    model.block(0).unwrap().residual(&h, BnMode::Train).unwrap();
    let sd: HashMap<String, Tensor> = model.state_dict().unwrap().into_iter().collect();
    let per_channel = h.transpose(0, 1).unwrap().flatten_from(1).unwrap(); // (C, N·H·W)
    let n = per_channel.dim(1).unwrap() as f64;
    let mean = per_channel.mean(D::Minus1).unwrap();
    let var = per_channel
        .broadcast_sub(&mean.unsqueeze(1).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .sum(D::Minus1)
        .unwrap()
        / (n - 1.0);
    let expected_mean = (mean * 0.1).unwrap();
    let expected_var = ((var.unwrap() * 0.1).unwrap() + 0.9).unwrap();
    let bn = "stages.0.blocks.0.bn1";
    assert!(max_abs_diff(&sd[&format!("{bn}.running_mean")], &expected_mean) < 1e-12);
    assert!(max_abs_diff(&sd[&format!("{bn}.running_var")], &expected_var) < 1e-12);
    let tracked = &sd[&format!("{bn}.num_batches_tracked")];
    assert_eq!(tracked.dtype(), DType::I64);
    assert_eq!(tracked.dims(), &[] as &[usize]);
    assert_eq!(tracked.to_scalar::<i64>().unwrap(), 1);
}

#[test]
fn state_dict_uses_pytorch_names_and_shared_tensors_once() {
    let spec = |sharing| ModelSpec {
        width: Some(4),
        blocks: Some(vec![3]),
        sharing,
        unshared_blocks: 1,
        ..ModelSpec::new(Arch::Resnet)
    };
    let keys = |sharing| -> Vec<String> {
        build(&spec(sharing), Dtypes::uniform(DType::F32), 0)
            .state_dict()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    let plain = keys(Sharing::None);
    for k in [
        "stem.weight",
        "stem.bias",
        "stages.0.blocks.0.bn1.running_mean",
        "stages.0.blocks.2.conv2.weight",
        "stages.1.blocks.0.shortcut.weight",
        "stages.2.blocks.0.shortcut.bias",
        "head.bn.num_batches_tracked",
        "head.fc.weight",
        "head.fc.bias",
    ] {
        assert!(plain.contains(&k.to_string()), "{k} missing");
    }
    let naive = keys(Sharing::Naive);
    assert!(naive.contains(&"stages.0.shared.conv1.weight".to_string()));
    assert!(naive.contains(&"stages.0.shared.bn2.running_var".to_string()));
    assert!(!naive.iter().any(|k| k.starts_with("stages.0.blocks.1.")));
    let ubn = keys(Sharing::Ubn);
    assert!(ubn.contains(&"stages.0.shared.conv2.bias".to_string()));
    assert!(!ubn.iter().any(|k| k.starts_with("stages.0.shared.bn")));
    assert!(ubn.contains(&"stages.0.blocks.2.bn1.weight".to_string()));
    assert!(!ubn.contains(&"stages.0.blocks.2.conv1.weight".to_string()));
    // UBN's shared steps start with γ = 0.1.
    let model = build(&spec(Sharing::Ubn), Dtypes::uniform(DType::F32), 0);
    let sd: HashMap<String, Tensor> = model.state_dict().unwrap().into_iter().collect();
    let gamma = sd["stages.0.blocks.2.bn2.weight"].to_vec1::<f32>().unwrap();
    assert!(gamma.iter().all(|&g| g == 0.1));
    let gamma = sd["stages.0.blocks.0.bn2.weight"].to_vec1::<f32>().unwrap();
    assert!(gamma.iter().all(|&g| g == 1.0));
}

#[test]
fn shared_steps_really_share_their_convolutions() {
    let spec = ModelSpec {
        width: Some(4),
        blocks: Some(vec![3]),
        sharing: Sharing::Ubn,
        unshared_blocks: 1,
        ..ModelSpec::new(Arch::Resnet)
    };
    let model = build(&spec, Dtypes::uniform(DType::F32), 0);
    let (x, y) = input(2, DType::F32);
    let logits = model.forward(&x, BnMode::Train).unwrap();
    let loss = cross_entropy_per_example(&logits, &y)
        .unwrap()
        .mean_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let names: Vec<String> = model.parameters().into_iter().map(|p| p.name).collect();
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "a parameter listed twice");
    for p in model.parameters() {
        assert!(
            grads.get(p.var.as_tensor()).is_some(),
            "{} gets no gradient",
            p.name
        );
    }
}

#[test]
fn checkpoints_round_trip_bit_for_bit() {
    let spec = ModelSpec {
        width: Some(4),
        blocks: Some(vec![1]),
        ..ModelSpec::new(Arch::Resnet)
    };
    let a = build(&spec, Dtypes::uniform(DType::F32), 1);
    warm(&a, DType::F32);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    let meta = HashMap::from([("note".to_string(), "hello".to_string())]);
    let written = resnet::checkpoint::write(&path, &a.state_dict().unwrap(), meta).unwrap();
    assert_eq!(written.size, std::fs::metadata(&path).unwrap().len());
    assert_eq!(
        written.sha256,
        resnet::checkpoint::sha256_file(&path).unwrap()
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temp files left behind");

    let ck = resnet::checkpoint::read(&path).unwrap();
    assert_eq!(ck.meta("note").unwrap(), "hello");
    assert!(ck.meta("missing").is_err());
    let b = build(&spec, Dtypes::uniform(DType::F32), 2);
    b.load_state_dict(&ck.tensors).unwrap();
    let (x, _) = input(2, DType::F32);
    assert_eq!(
        max_abs_diff(&a.infer(&x).unwrap(), &b.infer(&x).unwrap()),
        0.0
    );
    assert_eq!(running_stats(&a), running_stats(&b));

    // A model of another shape refuses it, naming the tensor.
    let wider = build(
        &ModelSpec {
            width: Some(8),
            ..spec.clone()
        },
        Dtypes::uniform(DType::F32),
        0,
    );
    let err = wider.load_state_dict(&ck.tensors).unwrap_err().to_string();
    assert!(err.contains("stem.weight"), "{err}");
    let mut missing = ck.tensors.clone();
    missing.remove("head.fc.bias");
    assert!(b
        .load_state_dict(&missing)
        .unwrap_err()
        .to_string()
        .contains("head.fc.bias"));
    let mut extra = ck.tensors.clone();
    extra.insert(
        "stages.9.blocks.0.conv1.weight".into(),
        Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(b
        .load_state_dict(&extra)
        .unwrap_err()
        .to_string()
        .contains("stages.9"));
}

#[test]
fn unreadable_checkpoints_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file at all").unwrap();
    assert!(resnet::checkpoint::read(&garbage).is_err());
    let foreign = dir.path().join("foreign.safetensors");
    let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    t.save_safetensors("x", &foreign).unwrap();
    let err = resnet::checkpoint::read(&foreign)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not written by stepwise"), "{err}");
    let model = tiny(Arch::Resnet, Dtypes::uniform(DType::F32));
    let good = dir.path().join("good.safetensors");
    resnet::checkpoint::write(&good, &model.state_dict().unwrap(), HashMap::new()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(resnet::checkpoint::read(&cut).is_err());
    assert!(resnet::checkpoint::read(&dir.path().join("absent")).is_err());
    // One bit flipped in the last tensor's data: the header still parses, the checksum
    // does not match.
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let damaged = dir.path().join("damaged.safetensors");
    std::fs::write(&damaged, &flipped).unwrap();
    let err = resnet::checkpoint::read(&damaged)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("damaged"), "{err}");
    assert!(resnet::checkpoint::read(&good).is_ok());
}

#[test]
fn bf16_compute_stays_close_to_f32() {
    let spec = ModelSpec {
        width: Some(4),
        blocks: Some(vec![1]),
        ..ModelSpec::new(Arch::Resnet)
    };
    let f32_model = build(&spec, Dtypes::uniform(DType::F32), 3);
    let bf16_model = build(&spec, Dtypes::for_precision(domain::Precision::Bf16), 3);
    let (x, y) = input(4, DType::F32);
    let a = f32_model.forward(&x, BnMode::Train).unwrap();
    let b = bf16_model.forward(&x, BnMode::Train).unwrap();
    assert_eq!(b.dtype(), DType::F32);
    let scale = a
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert!(
        max_abs_diff(&a, &b) < 0.05 * scale.max(1.0),
        "{}",
        max_abs_diff(&a, &b)
    );
    let loss = cross_entropy_per_example(&b, &y)
        .unwrap()
        .mean_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let stem = bf16_model.parameters().into_iter().next().unwrap();
    assert_eq!(grads.get(stem.var.as_tensor()).unwrap().dtype(), DType::F32);
}

/// What the autograd graph keeps per residual block, counted in block-sized tensors: a
/// training step keeps PyTorch's four (the block input, both BatchNorm + ReLU outputs and the
/// first convolution's output; the shortcut is added inside the last convolution, so its
/// output before the addition is never kept), and the probed pass of the analysis one more,
/// the residual F(h) it reports (PyTorch's reference keeps it too). Measured as the growth
/// from two to three blocks per stage: one identity block more in each of the three stages.
#[test]
fn graphs_keep_four_tensors_per_block_in_training_and_five_in_analysis() {
    let (x, y) = input(2, DType::F32);
    // One block's output in each stage: (2, 4, 32, 32), (2, 8, 16, 16), (2, 16, 8, 8) f32.
    let block_bytes = 2 * (4 * 32 * 32 + 8 * 16 * 16 + 16 * 8 * 8) * 4;
    let kept = |blocks: u32| {
        let spec = ModelSpec {
            width: Some(4),
            blocks: Some(vec![blocks]),
            ..ModelSpec::new(Arch::Resnet)
        };
        let model = build(&spec, Dtypes::uniform(DType::F32), 1);
        let logits = model.forward(&x, BnMode::Train).unwrap();
        let training = resnet::memory::graph_bytes(&logits);
        let analysis = resnet::layers::with_frozen_parameters(|| {
            let (probed, _) = probed_backward(&model, &x, &y);
            resnet::memory::graph_bytes(&probed.logits)
        });
        (training, analysis)
    };
    let ((train2, analysis2), (train3, analysis3)) = (kept(2), kept(3));
    assert_eq!(train3 - train2, 4 * block_bytes);
    assert_eq!(analysis3 - analysis2, 5 * block_bytes);
}

/// Channels-last activations (the format of bf16 on CUDA) change the memory layout and
/// nothing else: on the CPU every layer serves them through its NCHW path on views, so a
/// channels-last model computes exactly what the NCHW model does — training logits, every
/// parameter gradient, running statistics, inference logits, tapped block outputs (NCHW at
/// the model's interface) and the continuation after a block.
#[test]
fn channels_last_models_compute_exactly_what_nchw_models_do() {
    let f32 = Dtypes::uniform(DType::F32);
    let channels_last = Dtypes {
        memory_format: resnet::ops::MemoryFormat::ChannelsLast,
        ..f32
    };
    let (x, y) = input(3, DType::F32);
    for arch in Arch::ALL {
        let (a, b) = (tiny(arch, f32), tiny(arch, channels_last));
        let train = |m: &ResNet| {
            let logits = m.forward(&x, BnMode::Train).unwrap();
            let loss = cross_entropy_per_example(&logits, &y)
                .unwrap()
                .mean_all()
                .unwrap();
            (logits, loss.backward().unwrap())
        };
        let ((logits_a, grads_a), (logits_b, grads_b)) = (train(&a), train(&b));
        assert_eq!(max_abs_diff(&logits_a, &logits_b), 0.0, "{arch:?} logits");
        for (pa, pb) in a.parameters().iter().zip(b.parameters()) {
            let (ga, gb) = (
                grads_a.get(pa.var.as_tensor()).unwrap(),
                grads_b.get(pb.var.as_tensor()).unwrap(),
            );
            assert_eq!(ga.dims(), gb.dims(), "{arch:?} {}", pa.name);
            assert_eq!(max_abs_diff(ga, gb), 0.0, "{arch:?} {} gradient", pa.name);
        }
        for ((name, ta), (_, tb)) in a.state_dict().unwrap().iter().zip(b.state_dict().unwrap()) {
            let (ta, tb) = (
                ta.to_dtype(DType::F64).unwrap(),
                tb.to_dtype(DType::F64).unwrap(),
            );
            assert_eq!(max_abs_diff(&ta, &tb), 0.0, "{arch:?} {name}");
        }
        let last = a.layout().block_count() - 1;
        let (infer_a, taps_a) = a.infer_tapped(&x, &[0, last]).unwrap();
        let (infer_b, taps_b) = b.infer_tapped(&x, &[0, last]).unwrap();
        assert_eq!(max_abs_diff(&infer_a, &infer_b), 0.0, "{arch:?} inference");
        for (ta, tb) in taps_a.iter().zip(&taps_b) {
            assert_eq!(ta.dims(), tb.dims(), "{arch:?} taps are NCHW");
            assert_eq!(max_abs_diff(ta, tb), 0.0, "{arch:?} tapped output");
        }
        let after = |m: &ResNet, h: &Tensor| m.forward_after(0, h, BnMode::Eval).unwrap();
        assert_eq!(
            max_abs_diff(&after(&a, &taps_a[0]), &after(&b, &taps_b[0])),
            0.0,
            "{arch:?} continuation"
        );
    }
    let bf16 = domain::Precision::Bf16;
    assert_eq!(
        Dtypes::for_precision_on(bf16, &Device::Cpu),
        Dtypes::for_precision(bf16),
        "channels-last is for CUDA's kernels only"
    );
}
