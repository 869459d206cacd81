//! Convolution kernels on the CPU (NCHW, square kernels, no dilation or groups) as im2col +
//! GEMM. Images are processed in parallel, one single-threaded GEMM each; the weight
//! gradient sums images in fixed chunks reduced in a fixed order, so results do not depend
//! on thread scheduling.

use super::gemm::{matmul, Shape2};
use super::{lane_sum, vectorized, Real};
use rayon::prelude::*;

/// The shapes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeom {
    pub fn ho(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }

    pub fn wo(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Output positions per image.
    pub fn p(&self) -> usize {
        self.ho() * self.wo()
    }

    /// Rows of the im2col matrix: C·k·k (the weight's row length in OIHW).
    pub fn kk(&self) -> usize {
        self.c * self.k * self.k
    }

    fn image(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Rows and columns of the zero-padded image.
    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.pad, self.w + 2 * self.pad)
    }

    /// A 1×1, stride-1 convolution reads the image itself as its im2col matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Output columns `ox` whose input column `ox·s + kx − pad` lies inside the image.
    fn valid_ox(&self, kx: usize) -> std::ops::Range<usize> {
        let s = self.stride;
        let lo = self.pad.saturating_sub(kx).div_ceil(s);
        let hi = (self.w + self.pad)
            .saturating_sub(kx)
            .div_ceil(s)
            .min(self.wo());
        lo..hi.max(lo)
    }
}

/// `out` = every `stride`-th element of `src`, from the first. Unit-stride rows of the
/// paper's widths are copied as fixed-size arrays, which compile to a few vector moves
/// instead of a `memmove` call per 8–32 values.
#[inline(always)]
fn gather_row<T: Real>(out: &mut [T], src: &[T], stride: usize) {
    #[inline(always)]
    fn fixed<T: Real, const N: usize>(out: &mut [T], src: &[T]) {
        let out: &mut [T; N] = out.try_into().expect("a row of N");
        *out = src[..N].try_into().expect("a row of N");
    }
    match (stride, out.len()) {
        (1, 8) => fixed::<T, 8>(out, src),
        (1, 16) => fixed::<T, 16>(out, src),
        (1, 32) => fixed::<T, 32>(out, src),
        (1, n) => out.copy_from_slice(&src[..n]),
        (s, _) => {
            for (o, v) in out.iter_mut().zip(src.iter().step_by(s)) {
                *o = *v;
            }
        }
    }
}

/// Unfolds one image (C, H, W) into `cols` (C·k·k, Ho·Wo) through `padded`, the image with
/// its zero border (C, H + 2·pad, W + 2·pad), whose border the caller keeps zero: every
/// patch row is then a plain strided read (the version that handled the border per row
/// spent 40% of an 8×8 layer's forward pass in its branches and short copies).
fn im2col<T: Real>(g: &ConvGeom, x: &[T], padded: &mut [T], cols: &mut [T]) {
    let (hp, wp) = g.padded();
    let (wo, p, s) = (g.wo(), g.p(), g.stride);
    for (plane, image) in padded.chunks_exact_mut(hp * wp).zip(x.chunks_exact(g.h * g.w)) {
        for (iy, row) in image.chunks_exact(g.w).enumerate() {
            plane[(iy + g.pad) * wp + g.pad..][..g.w].copy_from_slice(row);
        }
    }
    vectorized(|| {
        for (c, plane) in padded.chunks_exact(hp * wp).enumerate() {
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let row = &mut cols[((c * g.k + ky) * g.k + kx) * p..][..p];
                    for (oy, out) in row.chunks_exact_mut(wo).enumerate() {
                        gather_row(out, &plane[(oy * s + ky) * wp + kx..], s);
                    }
                }
            }
        }
    });
}

/// Transposes a row-major `rows × cols` matrix into `dst` (`cols × rows`) through 8×8
/// tiles held in registers (the element-wise loop was 5% of a training step).
fn transpose<T: Real>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const B: usize = 8;
    let (rb, cb) = (rows / B * B, cols / B * B);
    vectorized(|| {
        for r0 in (0..rb).step_by(B) {
            for c0 in (0..cb).step_by(B) {
                let mut tile = [[T::zero(); B]; B];
                for (i, row) in tile.iter_mut().enumerate() {
                    row.copy_from_slice(&src[(r0 + i) * cols + c0..][..B]);
                }
                for j in 0..B {
                    let out = &mut dst[(c0 + j) * rows + r0..][..B];
                    for (o, row) in out.iter_mut().zip(&tile) {
                        *o = row[j];
                    }
                }
            }
        }
    });
    // The edges the tiles leave: the last rows % 8 rows, and the last cols % 8 columns.
    for r in 0..rows {
        let cs = if r < rb { cb..cols } else { 0..cols };
        for c in cs {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// Folds `cols` back onto one image, adding overlapping contributions (the adjoint of
/// [`im2col`]).
fn col2im<T: Real>(g: &ConvGeom, cols: &[T], dx: &mut [T]) {
    let (wo, p) = (g.wo(), g.p());
    dx.fill(T::zero());
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &cols[((c * g.k + ky) * g.k + kx) * p..][..p];
                let valid = g.valid_ox(kx);
                for oy in 0..g.ho() {
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..][..g.w];
                    let src = &row[oy * wo..(oy + 1) * wo][valid.clone()];
                    let first = valid.start * g.stride + kx - g.pad;
                    for (d, v) in dst[first..].iter_mut().step_by(g.stride).zip(src) {
                        *d += *v;
                    }
                }
            }
        }
    }
}

/// y (N, Co, Ho, Wo) = conv(x, w) + b.
pub fn forward<T: Real>(g: &ConvGeom, x: &[T], w: &[T], b: &[T]) -> Vec<T> {
    let (p, kk, co) = (g.p(), g.kk(), g.co);
    let mut y = vec![T::zero(); g.n * co * p];
    y.par_chunks_mut(co * p).enumerate().for_each_init(
        || {
            let (hp, wp) = g.padded();
            let scratch = |len| vec![T::zero(); if g.pointwise() { 0 } else { len }];
            (scratch(g.c * hp * wp), scratch(kk * p))
        },
        |(padded, cols), (n, y_n)| {
            let x_n = &x[n * g.image()..(n + 1) * g.image()];
            let src: &[T] = if g.pointwise() {
                x_n
            } else {
                im2col(g, x_n, padded, cols);
                cols
            };
            for (o, row) in y_n.chunks_exact_mut(p).enumerate() {
                row.fill(b[o]);
            }
            let (d, l, r) = (
                Shape2::row_major(co, p),
                Shape2::row_major(co, kk),
                Shape2::row_major(kk, p),
            );
            matmul(y_n, d, w, l, src, r, true);
        },
    );
    y
}

/// The weights of the convolution that computes a stride-1 convolution's input gradient:
/// input and output channels swapped, kernel rotated by 180° (C, Co, k, k).
fn flipped<T: Real>(g: &ConvGeom, w: &[T]) -> Vec<T> {
    let kk = g.k * g.k;
    let mut out = vec![T::zero(); w.len()];
    for o in 0..g.co {
        for c in 0..g.c {
            let src = &w[(o * g.c + c) * kk..][..kk];
            let dst = &mut out[(c * g.co + o) * kk..][..kk];
            for (d, v) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *v;
            }
        }
    }
    out
}

/// dx (N, C, H, W) = convᵀ(dy, w).
///
/// With stride 1 this is itself a convolution of dy (padding k − 1 − pad, flipped weights),
/// which runs as the forward's im2col + GEMM with a long inner dimension (Co·k·k) instead of
/// a GEMM over only Co followed by col2im's scattered adds: measured 9.4 → 5 ms for the
/// 16-channel 32×32 layer at batch 128.
pub fn backward_data<T: Real>(g: &ConvGeom, dy: &[T], w: &[T]) -> Vec<T> {
    if g.stride == 1 && g.pad < g.k {
        let transposed = ConvGeom {
            n: g.n,
            c: g.co,
            h: g.ho(),
            w: g.wo(),
            co: g.c,
            k: g.k,
            stride: 1,
            pad: g.k - 1 - g.pad,
        };
        return forward(&transposed, dy, &flipped(g, w), &vec![T::zero(); g.c]);
    }
    let (p, kk, co) = (g.p(), g.kk(), g.co);
    let mut dx = vec![T::zero(); g.n * g.image()];
    let wt = Shape2::transposed(kk, co);
    dx.par_chunks_mut(g.image()).enumerate().for_each_init(
        || vec![T::zero(); if g.pointwise() { 0 } else { kk * p }],
        |dcols, (n, dx_n)| {
            let dy_n = &dy[n * co * p..(n + 1) * co * p];
            // A pointwise convolution's column matrix is the image itself.
            let dst: &mut [T] = if g.pointwise() { dx_n } else { dcols };
            let (d, r) = (Shape2::row_major(kk, p), Shape2::row_major(co, p));
            matmul(dst, d, w, wt, dy_n, r, false);
            if !g.pointwise() {
                col2im(g, dcols, dx_n);
            }
        },
    );
    dx
}

/// Elements of partial weight gradients held at once, across chunks.
const PARTIALS_BUDGET: usize = 1 << 24;
const MAX_CHUNKS: usize = 16;

/// Splits `n` images into contiguous chunks; the count depends only on the shapes.
pub(crate) fn chunks(n: usize, partial_len: usize) -> Vec<std::ops::Range<usize>> {
    let count = MAX_CHUNKS
        .min(n)
        .min((PARTIALS_BUDGET / partial_len.max(1)).max(1))
        .max(1);
    (0..count)
        .map(|i| n * i / count..n * (i + 1) / count)
        .collect()
}

/// Writes one image's patches as rows (Ho·Wo, k·k·C), each ordered (ky, kx, c), from the
/// image in HWC order: every kernel row of a patch is then one contiguous k·C run of
/// `x_hwc`, copied whole.
fn patch_rows_hwc<T: Real>(g: &ConvGeom, x_hwc: &[T], rows: &mut [T]) {
    let (s, kc) = (g.stride, g.k * g.c);
    for oy in 0..g.ho() {
        for ox in 0..g.wo() {
            let row = &mut rows[(oy * g.wo() + ox) * g.kk()..][..g.kk()];
            // Kernel columns whose input column ox·s + kx − pad lies inside the image.
            let kx_lo = g.pad.saturating_sub(ox * s).min(g.k);
            let kx_hi = (g.w + g.pad).saturating_sub(ox * s).clamp(kx_lo, g.k);
            for (ky, seg) in row.chunks_exact_mut(kc).enumerate() {
                let iy = (oy * s + ky) as isize - g.pad as isize;
                if iy < 0 || iy >= g.h as isize || kx_lo == kx_hi {
                    seg.fill(T::zero());
                    continue;
                }
                let first = (iy as usize * g.w + ox * s + kx_lo - g.pad) * g.c;
                seg[..kx_lo * g.c].fill(T::zero());
                seg[kx_hi * g.c..].fill(T::zero());
                seg[kx_lo * g.c..kx_hi * g.c]
                    .copy_from_slice(&x_hwc[first..first + (kx_hi - kx_lo) * g.c]);
            }
        }
    }
}

/// The weight gradient (Co, C·k·k) followed by the bias gradient (Co), packed.
///
/// dW (Co, K) = Σₙ dyₙ (Co, P) · patchesₙ (P, K): the GEMM reads the patches fastest as rows
/// (one contiguous row per output position), which [`patch_rows_hwc`] writes directly in
/// (ky, kx, c) order; the sum is permuted to the weight's (c, ky, kx) order at the end.
pub fn backward_filter<T: Real>(g: &ConvGeom, x: &[T], dy: &[T]) -> Vec<T> {
    let (p, kk, co) = (g.p(), g.kk(), g.co);
    let len = co * kk + co;
    let partials: Vec<Vec<T>> = chunks(g.n, len)
        .into_par_iter()
        .map(|range| {
            let mut acc = vec![T::zero(); len];
            let mut x_hwc = vec![T::zero(); if g.pointwise() { 0 } else { g.image() }];
            let mut rows = vec![T::zero(); if g.pointwise() { 0 } else { p * kk }];
            for n in range {
                let x_n = &x[n * g.image()..(n + 1) * g.image()];
                let dy_n = &dy[n * co * p..(n + 1) * co * p];
                let (src, r) = if g.pointwise() {
                    (x_n, Shape2::transposed(p, kk))
                } else {
                    transpose(x_n, g.c, g.h * g.w, &mut x_hwc);
                    patch_rows_hwc(g, &x_hwc, &mut rows);
                    (&rows[..], Shape2::row_major(p, kk))
                };
                let (dw, db) = acc.split_at_mut(co * kk);
                let (d, l) = (Shape2::row_major(co, kk), Shape2::row_major(co, p));
                matmul(dw, d, dy_n, l, src, r, true);
                vectorized(|| {
                    for (o, row) in dy_n.chunks_exact(p).enumerate() {
                        db[o] += T::from_f64(lane_sum(row, |v| v));
                    }
                });
            }
            acc
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut out = parts.next().expect("at least one chunk");
    for part in parts {
        for (o, v) in out.iter_mut().zip(part) {
            *o += v;
        }
    }
    if !g.pointwise() {
        // (Co, ky, kx, c) → (Co, c, ky, kx)
        let (taps, c) = (g.k * g.k, g.c);
        for row in out[..co * kk].chunks_exact_mut(kk) {
            let hwc = row.to_vec();
            for (tap, chans) in hwc.chunks_exact(c).enumerate() {
                for (ch, &v) in chans.iter().enumerate() {
                    row[ch * taps + tap] = v;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution, the definition.
    fn direct(g: &ConvGeom, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; g.n * g.co * g.p()];
        for n in 0..g.n {
            for o in 0..g.co {
                for oy in 0..g.ho() {
                    for ox in 0..g.wo() {
                        let mut s = b[o];
                        for c in 0..g.c {
                            for ky in 0..g.k {
                                for kx in 0..g.k {
                                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                    if iy >= 0
                                        && ix >= 0
                                        && (iy as usize) < g.h
                                        && (ix as usize) < g.w
                                    {
                                        s += x[((n * g.c + c) * g.h + iy as usize) * g.w
                                            + ix as usize]
                                            * w[((o * g.c + c) * g.k + ky) * g.k + kx];
                                    }
                                }
                            }
                        }
                        y[((n * g.co + o) * g.ho() + oy) * g.wo() + ox] = s;
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f64 / 500.0) - 1.0)
            .collect()
    }

    fn geoms() -> Vec<ConvGeom> {
        let g = |n, c, h, w, co, k, stride, pad| ConvGeom {
            n,
            c,
            h,
            w,
            co,
            k,
            stride,
            pad,
        };
        vec![
            g(2, 3, 5, 5, 4, 3, 1, 1),
            g(3, 2, 6, 6, 3, 3, 2, 1),
            g(2, 3, 7, 5, 2, 3, 2, 1),
            g(2, 4, 4, 4, 3, 1, 1, 0),
            g(2, 4, 6, 6, 5, 1, 2, 0),
            g(1, 1, 3, 3, 1, 3, 1, 0),
        ]
    }

    #[test]
    fn forward_matches_the_direct_convolution() {
        for g in geoms() {
            let x = values(g.n * g.image(), 1);
            let w = values(g.co * g.kk(), 2);
            let b = values(g.co, 3);
            let got = forward(&g, &x, &w, &b);
            let want = direct(&g, &x, &w, &b);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12, "{g:?}");
            }
        }
    }

    /// ⟨dy, conv(x, w)⟩ is bilinear: its gradients are backward_data and backward_filter.
    #[test]
    fn gradients_are_the_adjoints_of_the_forward() {
        for g in geoms() {
            let x = values(g.n * g.image(), 4);
            let w = values(g.co * g.kk(), 5);
            let dy = values(g.n * g.co * g.p(), 6);
            let zero_b = vec![0.0; g.co];
            let inner = |x: &[f64], w: &[f64]| -> f64 {
                direct(&g, x, w, &zero_b)
                    .iter()
                    .zip(&dy)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let dx = backward_data(&g, &dy, &w);
            let packed = backward_filter(&g, &x, &dy);
            for i in 0..x.len() {
                let mut e = vec![0.0; x.len()];
                e[i] = 1.0;
                assert!((inner(&e, &w) - dx[i]).abs() < 1e-12, "{g:?} dx[{i}]");
            }
            for i in 0..w.len() {
                let mut e = vec![0.0; w.len()];
                e[i] = 1.0;
                assert!((inner(&x, &e) - packed[i]).abs() < 1e-12, "{g:?} dw[{i}]");
            }
            for o in 0..g.co {
                let s: f64 = (0..g.n)
                    .flat_map(|n| dy[(n * g.co + o) * g.p()..][..g.p()].to_vec())
                    .sum();
                assert!((packed[g.co * g.kk() + o] - s).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn transposes_every_shape() {
        for (rows, cols) in [(3, 1024), (16, 64), (8, 8), (13, 21), (1, 5), (9, 16)] {
            let src: Vec<f64> = (0..rows * cols).map(|i| i as f64).collect();
            let mut dst = vec![-1.0; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * rows + r], src[r * cols + c], "{rows}×{cols}");
                }
            }
        }
    }

    #[test]
    fn chunks_cover_every_image_once() {
        for (n, len) in [(1, 10), (7, 10), (128, 10), (128, 1 << 22), (3, 1 << 30)] {
            let c = chunks(n, len);
            assert_eq!(c.first().unwrap().start, 0);
            assert_eq!(c.last().unwrap().end, n);
            assert!(c.windows(2).all(|w| w[0].end == w[1].start));
            assert!(c.len() <= MAX_CHUNKS);
        }
    }
}
