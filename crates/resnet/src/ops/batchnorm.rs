//! BatchNorm followed by ReLU, fused, on the CPU (NCHW). Statistics are reduced per channel
//! in f64 in a fixed order (channels in parallel), the elementwise passes run per image in
//! parallel. ReLU lets NaN through, as PyTorch's does, so divergence stays visible.

use super::Real;
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

/// Per-channel batch mean and biased variance (two passes).
pub fn channel_stats<T: Real>(g: &BnGeom, x: &[T]) -> (Vec<f64>, Vec<f64>) {
    let m = g.count() as f64;
    (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let sum: f64 = g.channel(x, ch).flatten().map(|v| v.to_f64()).sum();
            let mean = sum / m;
            let sq: f64 = g
                .channel(x, ch)
                .flatten()
                .map(|v| (v.to_f64() - mean).powi(2))
                .sum();
            (mean, sq / m)
        })
        .unzip()
}

fn relu<T: Real>(v: T) -> T {
    // `NaN <= 0` is false: NaN passes through.
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
            for ch in 0..g.c {
                let (a, b) = (scale[ch], shift[ch]);
                let range = ch * g.hw..(ch + 1) * g.hw;
                for (o, &v) in y_n[range.clone()].iter_mut().zip(&x_n[range]) {
                    *o = relu(v * a + b);
                }
            }
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
pub fn backward<T: Real>(g: &BnGeom, s: &BnBackward, x: &[T], y: &[T], dy: &[T]) -> Vec<T> {
    let m = g.count() as f64;
    // dz = dy where the ReLU was open.
    let (sum_dz, sum_dz_xhat): (Vec<f64>, Vec<f64>) = (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let (mean, invstd) = (s.mean[ch], s.invstd[ch]);
            let mut sum = 0.0;
            let mut dot = 0.0;
            for ((xr, yr), dr) in g
                .channel(x, ch)
                .zip(g.channel(y, ch))
                .zip(g.channel(dy, ch))
            {
                for ((&xv, &yv), &dv) in xr.iter().zip(yr).zip(dr) {
                    if yv > T::zero() {
                        let d = dv.to_f64();
                        sum += d;
                        dot += d * (xv.to_f64() - mean) * invstd;
                    }
                }
            }
            (sum, dot)
        })
        .unzip();
    let mut out = vec![T::zero(); x.len() + 2 * g.c];
    let (dx, dparams) = out.split_at_mut(x.len());
    dx.par_chunks_mut(g.c * g.hw)
        .zip(x.par_chunks(g.c * g.hw))
        .zip(y.par_chunks(g.c * g.hw).zip(dy.par_chunks(g.c * g.hw)))
        .for_each(|((dx_n, x_n), (y_n, dy_n))| {
            for ch in 0..g.c {
                let k = s.gamma[ch] * s.invstd[ch];
                let (mean, invstd) = (s.mean[ch], s.invstd[ch]);
                let (mean_dz, mean_dot) = if s.batch_stats {
                    (sum_dz[ch] / m, sum_dz_xhat[ch] / m)
                } else {
                    (0.0, 0.0)
                };
                let range = ch * g.hw..(ch + 1) * g.hw;
                for i in range {
                    let dz = if y_n[i] > T::zero() {
                        dy_n[i].to_f64()
                    } else {
                        0.0
                    };
                    let xhat = (x_n[i].to_f64() - mean) * invstd;
                    dx_n[i] = T::from_f64(k * (dz - mean_dz - xhat * mean_dot));
                }
            }
        });
    for ch in 0..g.c {
        dparams[ch] = T::from_f64(sum_dz_xhat[ch]);
        dparams[g.c + ch] = T::from_f64(sum_dz[ch]);
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
