//! The CPU kernels against candle's own operations (the reference path) and against
//! central finite differences.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet::layers::conv2d_reference;
use resnet::ops::{self, BatchStats, ConvMath};

/// The CPU kernels compute exactly whatever the math (TF32 is for CUDA).
const EXACT: ConvMath = ConvMath::Exact;

fn random(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| r.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let b = b
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// (input, weight, stride, padding) shapes of every convolution in the paper's models.
const CONVS: [([usize; 4], [usize; 4], usize, usize); 6] = [
    ([4, 3, 32, 32], [16, 3, 3, 3], 1, 1),
    ([4, 16, 32, 32], [16, 16, 3, 3], 1, 1),
    ([4, 16, 32, 32], [32, 16, 3, 3], 2, 1),
    ([4, 16, 32, 32], [32, 16, 1, 1], 2, 0),
    ([3, 16, 8, 8], [40, 16, 1, 1], 1, 0),
    ([5, 8, 16, 16], [8, 8, 3, 3], 1, 1),
];

#[test]
fn convolution_matches_candle_forward_and_backward() {
    for (i, (xs, ws, stride, pad)) in CONVS.into_iter().enumerate() {
        let x = Var::from_tensor(&random(&xs, i as u64, DType::F32)).unwrap();
        let w = Var::from_tensor(&random(&ws, 100 + i as u64, DType::F32)).unwrap();
        let b = Var::from_tensor(&random(&[ws[0]], 200 + i as u64, DType::F32)).unwrap();
        let params = (w.as_tensor(), b.as_tensor());
        let ours = ops::conv2d(x.as_tensor(), params, None, stride, pad, EXACT).unwrap();
        let theirs =
            conv2d_reference(x.as_tensor(), w.as_tensor(), b.as_tensor(), stride, pad).unwrap();
        assert_eq!(ours.dims(), theirs.dims());
        assert!(max_rel_diff(&ours, &theirs) < 1e-5, "forward {xs:?} {ws:?}");
        // A loss with a non-uniform upstream gradient.
        let up = random(ours.dims(), 300 + i as u64, DType::F32);
        let vars = [("x", &x), ("w", &w), ("b", &b)];
        assert_same_gradients(&ours, &theirs, &up, &vars, 1e-5, &format!("{xs:?} {ws:?}"));

        // With a tensor added inside the op, as a block's shortcut: the same values as the
        // separate addition, bit for bit, and its gradient is the output's.
        let add = Var::from_tensor(&random(ours.dims(), 400 + i as u64, DType::F32)).unwrap();
        let fused = ops::conv2d(
            x.as_tensor(),
            params,
            Some(add.as_tensor()),
            stride,
            pad,
            EXACT,
        );
        let fused = fused.unwrap();
        let separate = (&ours + add.as_tensor()).unwrap();
        assert_eq!(max_rel_diff(&fused, &separate), 0.0, "add {xs:?} {ws:?}");
        let vars = [("x", &x), ("w", &w), ("b", &b), ("add", &add)];
        let context = format!("add {xs:?} {ws:?}");
        assert_same_gradients(&fused, &separate, &up, &vars, 1e-12, &context);
    }
    let x = random(&[2, 3, 8, 8], 1, DType::F32);
    let (w, b) = (
        random(&[4, 3, 3, 3], 2, DType::F32),
        random(&[4], 3, DType::F32),
    );
    let wrong = random(&[2, 4, 4, 4], 4, DType::F32);
    let err = ops::conv2d(&x, (&w, &b), Some(&wrong), 1, 1, EXACT).unwrap_err();
    assert!(err.to_string().contains("cannot add"), "{err}");
}

/// Gradients of Σ up ⊙ ours and Σ up ⊙ theirs with respect to `vars` agree within `tol`.
fn assert_same_gradients(
    ours: &Tensor,
    theirs: &Tensor,
    up: &Tensor,
    vars: &[(&str, &Var)],
    tol: f64,
    what: &str,
) {
    let g1 = (ours * up).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (theirs * up)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, v) in vars {
        let d = max_rel_diff(
            g1.get(v.as_tensor()).unwrap(),
            g2.get(v.as_tensor()).unwrap(),
        );
        assert!(d < tol, "{what}: d{name} differs by {d}");
    }
}

/// BatchNorm + ReLU from candle ops, the definition.
fn bn_relu_reference(x: &Tensor, g: &Tensor, b: &Tensor, mean: &Tensor, var: &Tensor) -> Tensor {
    let c = |t: &Tensor| t.reshape((1, (), 1, 1)).unwrap();
    x.broadcast_sub(&c(mean))
        .unwrap()
        .broadcast_div(&c(&(var + 1e-5).unwrap().sqrt().unwrap()))
        .unwrap()
        .broadcast_mul(&c(g))
        .unwrap()
        .broadcast_add(&c(b))
        .unwrap()
        .relu()
        .unwrap()
}

#[test]
fn batch_norm_relu_matches_candle_in_both_modes() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
        let x = Var::from_tensor(&(random(&[6, 5, 7, 7], 1, dtype) * 3.0).unwrap()).unwrap();
        let g = Var::from_tensor(&random(&[5], 2, dtype)).unwrap();
        let b = Var::from_tensor(&random(&[5], 3, dtype)).unwrap();
        let up = random(&[6, 5, 7, 7], 4, dtype);

        // Training mode: batch statistics, which depend on x.
        let (ours, stats) =
            ops::batch_norm_relu_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let mean = x
            .as_tensor()
            .mean_keepdim((0, 2, 3))
            .unwrap()
            .flatten_all()
            .unwrap();
        let centred = x
            .as_tensor()
            .broadcast_sub(&mean.reshape((1, 5, 1, 1)).unwrap())
            .unwrap();
        let var = centred
            .sqr()
            .unwrap()
            .mean_keepdim((0, 2, 3))
            .unwrap()
            .flatten_all()
            .unwrap();
        let theirs = bn_relu_reference(x.as_tensor(), g.as_tensor(), b.as_tensor(), &mean, &var);
        assert!(max_rel_diff(&ours, &theirs) < tol);
        let host = |t: &Tensor| {
            Tensor::new(
                t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap(),
                &Device::Cpu,
            )
            .unwrap()
        };
        assert!(
            max_rel_diff(
                &Tensor::new(stats.mean.clone(), &Device::Cpu).unwrap(),
                &host(&mean)
            ) < tol
        );
        assert!(
            max_rel_diff(
                &Tensor::new(stats.var.clone(), &Device::Cpu).unwrap(),
                &host(&var)
            ) < tol
        );
        let vars = [("x", &x), ("gamma", &g), ("beta", &b)];
        assert_same_gradients(&ours, &theirs, &up, &vars, tol, &format!("train {dtype:?}"));

        // Inference mode: fixed statistics.
        let rm = random(&[5], 5, dtype);
        let rv = (random(&[5], 6, dtype).abs().unwrap() + 0.5).unwrap();
        let running = BatchStats {
            mean: rm.to_dtype(DType::F64).unwrap().to_vec1().unwrap(),
            var: rv.to_dtype(DType::F64).unwrap().to_vec1().unwrap(),
        };
        let ours =
            ops::batch_norm_relu_eval(x.as_tensor(), g.as_tensor(), b.as_tensor(), running, 1e-5)
                .unwrap();
        let theirs = bn_relu_reference(x.as_tensor(), g.as_tensor(), b.as_tensor(), &rm, &rv);
        assert!(max_rel_diff(&ours, &theirs) < tol);
        let vars = [("x", &x), ("gamma", &g), ("beta", &b)];
        assert_same_gradients(&ours, &theirs, &up, &vars, tol, &format!("eval {dtype:?}"));
    }
}

/// d/dθ of Σ up ⊙ op(θ) by central differences, in f64, for a few coordinates.
fn check_fd(f: &dyn Fn(&Tensor) -> Tensor, at: &Tensor, grad: &Tensor, seed: u64) {
    let base = at.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let g = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..6 {
        let k = r.random_range(0..base.len());
        let eval = |d: f64| {
            let mut v = base.clone();
            v[k] += d;
            let t = Tensor::from_vec(v, at.shape(), &Device::Cpu).unwrap();
            f(&t).sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let eps = 1e-6;
        let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
        assert!(
            (numeric - g[k]).abs() < 1e-6 * (1.0 + numeric.abs()),
            "coord {k}: {} vs {numeric}",
            g[k]
        );
    }
}

type Op3<'a> = dyn Fn(&Tensor, &Tensor, &Tensor) -> Tensor + 'a;

/// Autograd gradients of Σ op(a, b, c) with respect to each argument, against central
/// differences.
fn check_gradients(op: &Op3<'_>, [a, b, c]: [&Tensor; 3], seed: u64) {
    let vars = [a, b, c].map(|t| Var::from_tensor(t).unwrap());
    let [va, vb, vc] = vars.each_ref().map(|v| v.as_tensor());
    let grads = op(va, vb, vc).sum_all().unwrap().backward().unwrap();
    check_fd(&|t| op(t, b, c), a, grads.get(va).unwrap(), seed);
    check_fd(&|t| op(a, t, c), b, grads.get(vb).unwrap(), seed + 1);
    check_fd(&|t| op(a, b, t), c, grads.get(vc).unwrap(), seed + 2);
}

#[test]
fn kernels_match_finite_differences_in_f64() {
    let x = random(&[3, 4, 6, 6], 1, DType::F64);
    let w = random(&[5, 4, 3, 3], 2, DType::F64);
    let b = random(&[5], 3, DType::F64);
    let up = random(&[3, 5, 3, 3], 4, DType::F64);
    let conv = |x: &Tensor, w: &Tensor, b: &Tensor| {
        (ops::conv2d(x, (w, b), None, 2, 1, EXACT).unwrap() * &up).unwrap()
    };
    check_gradients(&conv, [&x, &w, &b], 5);

    let gamma = (random(&[4], 8, DType::F64) + 1.5).unwrap();
    let beta = random(&[4], 9, DType::F64);
    let up = random(&[3, 4, 6, 6], 10, DType::F64);
    let bn = |x: &Tensor, g: &Tensor, b: &Tensor| {
        (ops::batch_norm_relu_train(x, g, b, 1e-5).unwrap().0 * &up).unwrap()
    };
    check_gradients(&bn, [&x, &gamma, &beta], 11);
}

#[test]
fn kernels_are_deterministic() {
    let x = Var::from_tensor(&random(&[33, 8, 16, 16], 1, DType::F32)).unwrap();
    let w = random(&[8, 8, 3, 3], 2, DType::F32);
    let b = random(&[8], 3, DType::F32);
    let run = || {
        let y = ops::conv2d(x.as_tensor(), (&w, &b), None, 1, 1, EXACT).unwrap();
        let (z, _) = ops::batch_norm_relu_train(&y, &b, &b, 1e-5).unwrap();
        let grads = z.sum_all().unwrap().backward().unwrap();
        grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let first = run();
    for _ in 0..3 {
        assert_eq!(first, run());
    }
}

/// A channels-last activation holds x[n, c, h, w] at [n, h, w, c] — the layout the CUDA
/// kernels and cuDNN's NHWC descriptors read — and its NCHW view reads it back; the CPU
/// convolution refuses it rather than misreading it.
#[test]
fn channels_last_tensors_lie_as_nhwc() {
    use ops::MemoryFormat::{ChannelsLast, Nchw};
    let x = random(&[2, 3, 4, 5], 3, DType::F32);
    let last = ChannelsLast.from_nchw(&x).unwrap();
    assert_eq!(last.dims(), ChannelsLast.shape((2, 3, 4, 5)).dims());
    assert_eq!(ChannelsLast.nchw([2, 4, 5, 3]), [2, 3, 4, 5]);
    assert!(last.is_contiguous());
    let ls = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let stored = last.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (n, c, h, w) in [(0, 0, 0, 0), (1, 2, 3, 4), (0, 1, 2, 3), (1, 0, 3, 1)] {
        assert_eq!(
            stored[((n * 4 + h) * 5 + w) * 3 + c],
            ls[((n * 3 + c) * 4 + h) * 5 + w]
        );
    }
    assert_eq!(max_rel_diff(&ChannelsLast.to_nchw(&last).unwrap(), &x), 0.0);
    assert_eq!(Nchw.from_nchw(&x).unwrap().dims(), x.dims());
    let w = random(&[4, 3, 3, 3], 4, DType::F32);
    let b = random(&[4], 5, DType::F32);
    let w_last = ChannelsLast.from_nchw(&w).unwrap();
    let err = ops::conv2d_in(
        ChannelsLast,
        &last,
        (&w_last, &b),
        None,
        (1, 1),
        ConvMath::Exact,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("channels-last"), "{err}");
}
