//! BatchNorm followed by ReLU, fused, on the CPU (NCHW). Statistics are reduced per channel
//! in a fixed order (channels in parallel; each row summed in the tensor's type, rows in
//! f64), the elementwise passes run per image in parallel. ReLU lets NaN through, as
//! PyTorch's does, so divergence stays visible.

use super::{lane_sum, lane_sum3, vectorized, Real};
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
            vectorized(|| {
                let mean = g.channel(x, ch).map(|r| lane_sum(r, |v| v)).sum::<f64>() / m;
                let mu = T::from_f64(mean);
                let sq: f64 = g
                    .channel(x, ch)
                    .map(|r| lane_sum(r, |v| (v - mu) * (v - mu)))
                    .sum();
                (mean, sq / m)
            })
        })
        .unzip()
}

/// ReLU that lets NaN through, as PyTorch's does (`NaN <= 0` is false).
#[inline(always)]
fn relu<T: Real>(v: T) -> T {
    if v <= T::zero() {
        T::zero()
    } else {
        v
    }
}

/// y = relu(x·scale_c + shift_c).
pub fn scale_shift_relu<T: Real>(g: &BnGeom, x: &[T], scale: &[T], shift: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(g.c * g.hw)
        .zip(x.par_chunks(g.c * g.hw))
        .for_each(|(y_n, x_n)| {
            vectorized(|| {
                for ch in 0..g.c {
                    let (a, b) = (scale[ch], shift[ch]);
                    let range = ch * g.hw..(ch + 1) * g.hw;
                    for (o, &v) in y_n[range.clone()].iter_mut().zip(&x_n[range]) {
                        *o = relu(v * a + b);
                    }
                }
            })
        });
    y
}

/// Saved values of the forward pass that the backward pass needs.
#[derive(Clone, Debug)]
pub struct BnBackward {
    pub gamma: Vec<f64>,
    pub mean: Vec<f64>,
    pub invstd: Vec<f64>,
    /// Batch statistics (the mean and variance depend on x) or running ones (constants).
    pub batch_stats: bool,
}

/// dx (N, C, HW) followed by dγ (C) and dβ (C), packed.
///
/// With dz = dy where the ReLU was open and x̂ = (x − μ)·s (s = 1/σ):
/// dβ = Σ dz, dγ = Σ dz·x̂, and dx = γs·(dz − dβ/M − x̂·dγ/M) for batch statistics
/// (γs·dz for running ones), which is dx = a·dz + b·x + c per channel.
pub fn backward<T: Real>(g: &BnGeom, s: &BnBackward, x: &[T], y: &[T], dy: &[T]) -> Vec<T> {
    let m = g.count() as f64;
    let open = |yv: T, dv: T| if yv > T::zero() { dv } else { T::zero() };
    let (dbeta, dgamma): (Vec<f64>, Vec<f64>) = (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let mu = T::from_f64(s.mean[ch]);
            let rows = g
                .channel(x, ch)
                .zip(g.channel(y, ch))
                .zip(g.channel(dy, ch));
            let (sum, dot) = vectorized(|| {
                rows.fold((0.0, 0.0), |(sum, dot), ((xr, yr), dr)| {
                    // Two passes: fused into one, the loop did not vectorise (measured 2×
                    // slower).
                    let s = lane_sum3(yr, dr, dr, |yv, dv, _| open(yv, dv));
                    let d = lane_sum3(xr, yr, dr, |xv, yv, dv| open(yv, dv) * (xv - mu));
                    (sum + s, dot + d)
                })
            });
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
    let mut out = vec![T::zero(); x.len() + 2 * g.c];
    let (dx, dparams) = out.split_at_mut(x.len());
    let image = g.c * g.hw;
    dx.par_chunks_mut(image)
        .zip(x.par_chunks(image))
        .zip(y.par_chunks(image).zip(dy.par_chunks(image)))
        .for_each(|((dx_n, x_n), (y_n, dy_n))| {
            vectorized(|| {
                for (ch, &(a, b, c)) in coefficients.iter().enumerate() {
                    let range = ch * g.hw..(ch + 1) * g.hw;
                    let rows = x_n[range.clone()]
                        .iter()
                        .zip(&y_n[range.clone()])
                        .zip(&dy_n[range.clone()]);
                    for (o, ((&xv, &yv), &dv)) in dx_n[range].iter_mut().zip(rows) {
                        *o = a * open(yv, dv) + b * xv + c;
                    }
                }
            })
        });
    for ch in 0..g.c {
        dparams[ch] = T::from_f64(dgamma[ch]);
        dparams[g.c + ch] = T::from_f64(dbeta[ch]);
    }
    out
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
