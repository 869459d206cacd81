//! BatchNorm followed by ReLU, fused, on the CPU (NCHW). Statistics are reduced per channel
//! in a fixed order (channels in parallel; each row summed in the tensor's type, rows in
//! f64), the elementwise passes run per image in parallel. ReLU lets NaN through, as
//! PyTorch's does, so divergence stays visible.

use super::outputs::par_chunks_from;
use super::{lane_sum, lane_sum2, vectorized, Real};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnGeom {
    pub n: usize,
    pub c: usize,
    /// Spatial positions per channel and image.
    pub hw: usize,
}

impl BnGeom {
    /// Values per channel over the batch.
    pub fn count(&self) -> usize {
        self.n * self.hw
    }

    #[inline(always)]
    fn channel<'a, T>(&self, x: &'a [T], ch: usize) -> impl Iterator<Item = &'a [T]> + 'a {
        let (c, hw) = (self.c, self.hw);
        (0..self.n).map(move |n| &x[(n * c + ch) * hw..(n * c + ch + 1) * hw])
    }
}

/// Per-channel batch mean and biased variance (two passes: mean, then squared deviations).
pub fn channel_stats<T: Real>(g: &BnGeom, x: &[T]) -> (Vec<f64>, Vec<f64>) {
    let m = g.count() as f64;
    (0..g.c)
        .into_par_iter()
        .map(|ch| {
            vectorized(
                #[inline(always)]
                || {
                    let mut sum = 0.0;
                    for row in g.channel(x, ch) {
                        sum += lane_sum(row, |v| v);
                    }
                    let mean = sum / m;
                    let mu = T::from_f64(mean);
                    let mut sq = 0.0;
                    for row in g.channel(x, ch) {
                        sq += lane_sum(row, |v| (v - mu) * (v - mu));
                    }
                    (mean, sq / m)
                },
            )
        })
        .unzip()
}

/// ReLU that lets NaN through, as PyTorch's does (`NaN <= 0` is false).
#[inline(always)]
pub(crate) fn relu<T: Real>(v: T) -> T {
    if v <= T::zero() {
        T::zero()
    } else {
        v
    }
}

/// 1/√(σ² + ε) per channel.
pub fn invstd(var: &[f64], eps: f64) -> Vec<f64> {
    var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect()
}

/// BatchNorm as the per-channel map x ↦ x·scale + shift (before the ReLU), computed in f64
/// and applied in the tensor's type. The backward pass rebuilds the same map to recompute
/// where the ReLU was open, bit for bit, rather than reading the forward's output again.
#[derive(Clone, Debug)]
pub struct Affine {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
}

impl Affine {
    /// scale = γ/σ, shift = β − μ·γ/σ.
    pub fn new(gamma: &[f64], beta: &[f64], mean: &[f64], invstd: &[f64]) -> Self {
        let scale: Vec<f64> = gamma.iter().zip(invstd).map(|(g, s)| g * s).collect();
        let shift = (0..gamma.len())
            .map(|c| beta[c] - mean[c] * gamma[c] * invstd[c])
            .collect();
        Self { scale, shift }
    }

    /// Inference mode: the map with the running statistics.
    pub fn inference(gamma: &[f64], beta: &[f64], mean: &[f64], var: &[f64], eps: f64) -> Self {
        Self::new(gamma, beta, mean, &invstd(var, eps))
    }

    /// Channel `ch`'s scale and shift in the tensor's type.
    #[inline(always)]
    pub(crate) fn at<T: Real>(&self, ch: usize) -> (T, T) {
        (T::from_f64(self.scale[ch]), T::from_f64(self.shift[ch]))
    }
}

/// y = relu(x·scale_c + shift_c).
pub fn scale_shift_relu<T: Real>(g: &BnGeom, x: &[T], affine: &Affine) -> Vec<T> {
    let image = g.c * g.hw;
    par_chunks_from(
        g.n,
        &vec![T::zero(); image],
        &[],
        || (),
        |_, n, y_n| {
            let x_n = &x[n * image..(n + 1) * image];
            vectorized(
                #[inline(always)]
                || {
                    for ch in 0..g.c {
                        let (a, b) = affine.at::<T>(ch);
                        let range = ch * g.hw..(ch + 1) * g.hw;
                        for (o, &v) in y_n[range.clone()].iter_mut().zip(&x_n[range]) {
                            *o = relu(v * a + b);
                        }
                    }
                },
            )
        },
    )
}

/// Saved values of the forward pass that the backward pass needs.
#[derive(Clone, Debug)]
pub struct BnBackward {
    pub gamma: Vec<f64>,
    pub mean: Vec<f64>,
    pub invstd: Vec<f64>,
    /// The forward's map, for where the ReLU was open.
    pub affine: Affine,
    /// Batch statistics (the mean and variance depend on x) or running ones (constants).
    pub batch_stats: bool,
}

/// dx (N, C, HW) followed by dγ (C) and dβ (C), packed.
///
/// With dz = dy where the ReLU was open and x̂ = (x − μ)·s (s = 1/σ):
/// dβ = Σ dz, dγ = Σ dz·x̂, and dx = γs·(dz − dβ/M − x̂·dγ/M) for batch statistics
/// (γs·dz for running ones), which is dx = a·dz + b·x + c per channel.
pub fn backward<T: Real>(g: &BnGeom, s: &BnBackward, x: &[T], dy: &[T]) -> Vec<T> {
    let m = g.count() as f64;
    // dz: dy where the forward's ReLU was open (its input x·a + b positive).
    let dz = |xv: T, dv: T, (a, b): (T, T)| {
        if xv * a + b > T::zero() {
            dv
        } else {
            T::zero()
        }
    };
    let (dbeta, dgamma): (Vec<f64>, Vec<f64>) = (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let (mu, ab) = (T::from_f64(s.mean[ch]), s.affine.at::<T>(ch));
            let rows = g.channel(x, ch).zip(g.channel(dy, ch));
            let (sum, dot) = vectorized(
                #[inline(always)]
                || {
                    let (mut sum, mut dot) = (0.0, 0.0);
                    for (xr, dr) in rows {
                        // Two passes over the row (in L1 by then): fused into one, the loop did
                        // not vectorise (measured 2× slower).
                        sum += lane_sum2(xr, dr, |xv, dv| dz(xv, dv, ab));
                        dot += lane_sum2(xr, dr, |xv, dv| dz(xv, dv, ab) * (xv - mu));
                    }
                    (sum, dot)
                },
            );
            (sum, dot * s.invstd[ch])
        })
        .unzip();
    let coefficients: Vec<(T, T, T)> = (0..g.c)
        .map(|ch| {
            let k = s.gamma[ch] * s.invstd[ch];
            if s.batch_stats {
                let slope = -k * s.invstd[ch] * dgamma[ch] / m;
                let offset = -k * dbeta[ch] / m - slope * s.mean[ch];
                (T::from_f64(k), T::from_f64(slope), T::from_f64(offset))
            } else {
                (T::from_f64(k), T::zero(), T::zero())
            }
        })
        .collect();
    let dparams: Vec<T> = dgamma
        .iter()
        .chain(&dbeta)
        .map(|&v| T::from_f64(v))
        .collect();
    let image = g.c * g.hw;
    par_chunks_from(
        g.n,
        &vec![T::zero(); image],
        &dparams,
        || (),
        |_, n, dx_n| {
            let (x_n, dy_n) = (&x[n * image..][..image], &dy[n * image..][..image]);
            vectorized(
                #[inline(always)]
                || {
                    for (ch, &(a, b, c)) in coefficients.iter().enumerate() {
                        let ab = s.affine.at::<T>(ch);
                        let range = ch * g.hw..(ch + 1) * g.hw;
                        let rows = x_n[range.clone()].iter().zip(&dy_n[range.clone()]);
                        for (o, (&xv, &dv)) in dx_n[range].iter_mut().zip(rows) {
                            *o = a * dz(xv, dv, ab) + b * xv + c;
                        }
                    }
                },
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_keeps_nan_like_pytorch() {
        assert!(relu(f32::NAN).is_nan());
        assert_eq!(relu(-1.0f32), 0.0);
        assert_eq!(relu(2.0f32), 2.0);
    }

    #[test]
    fn stats_are_the_biased_batch_moments_per_channel() {
        let g = BnGeom { n: 2, c: 2, hw: 2 };
        // image 0: ch0 [1, 2], ch1 [10, 10]; image 1: ch0 [3, 4], ch1 [10, 30]
        let x = [1.0f64, 2.0, 10.0, 10.0, 3.0, 4.0, 10.0, 30.0];
        let (mean, var) = channel_stats(&g, &x);
        assert_eq!(mean, [2.5, 15.0]);
        assert_eq!(var, [1.25, 75.0]);
    }
}
