//! A bounds-checked, safe wrapper around the `gemm` crate (the GEMM candle itself uses):
//! its entry point takes raw pointers and strides, so every call here first checks that the
//! described matrices lie inside the slices.
#![allow(unsafe_code)]

use super::Real;
use gemm::Parallelism;

/// A strided matrix view: element (i, j) at `offset + i·rs + j·cs` (non-negative strides).
#[derive(Clone, Copy, Debug)]
pub struct Shape2 {
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Shape2 {
    /// A row-major `rows × cols` matrix.
    pub fn row_major(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `cols × rows` matrix, seen as `rows × cols`.
    pub fn transposed(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            rs: 1,
            cs: rows,
        }
    }

    fn fits(&self, len: usize) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < len
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, single-threaded (callers parallelise over
/// images), so each output element is summed in one fixed order.
pub fn matmul<T: Real>(
    dst: &mut [T],
    d: Shape2,
    lhs: &[T],
    l: Shape2,
    rhs: &[T],
    r: Shape2,
    accumulate: bool,
) {
    assert!(
        l.rows == d.rows && r.cols == d.cols && l.cols == r.rows,
        "matmul shapes {l:?} · {r:?} → {d:?}"
    );
    assert!(
        d.fits(dst.len()) && l.fits(lhs.len()) && r.fits(rhs.len()),
        "matmul out of bounds"
    );
    if d.rows == 0 || d.cols == 0 {
        return;
    }
    if l.cols == 0 {
        if !accumulate {
            for i in 0..d.rows {
                for j in 0..d.cols {
                    dst[i * d.rs + j * d.cs] = T::zero();
                }
            }
        }
        return;
    }
    // SAFETY: the three views were checked to lie within their slices above; `dst` is
    // borrowed mutably and cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            l.cols,
            dst.as_mut_ptr(),
            d.cs as isize,
            d.rs as isize,
            accumulate,
            lhs.as_ptr(),
            l.cs as isize,
            l.rs as isize,
            rhs.as_ptr(),
            r.cs as isize,
            r.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplies_plain_and_transposed_views() {
        // lhs 2×3, rhs 3×2
        let a = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0f64, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut c = [1.0f64; 4];
        matmul(
            &mut c,
            Shape2::row_major(2, 2),
            &a,
            Shape2::row_major(2, 3),
            &b,
            Shape2::row_major(3, 2),
            false,
        );
        assert_eq!(c, [58.0, 64.0, 139.0, 154.0]);
        matmul(
            &mut c,
            Shape2::row_major(2, 2),
            &a,
            Shape2::row_major(2, 3),
            &b,
            Shape2::row_major(3, 2),
            true,
        );
        assert_eq!(c, [116.0, 128.0, 278.0, 308.0]);
        // aᵀ (3×2) · a (2×3)
        let mut g = [0.0f64; 9];
        matmul(
            &mut g,
            Shape2::row_major(3, 3),
            &a,
            Shape2::transposed(3, 2),
            &a,
            Shape2::row_major(2, 3),
            false,
        );
        assert_eq!(g, [17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn refuses_views_outside_the_slice() {
        let a = [0.0f32; 5];
        let mut c = [0.0f32; 4];
        matmul(
            &mut c,
            Shape2::row_major(2, 2),
            &a,
            Shape2::row_major(2, 3),
            &a,
            Shape2::row_major(3, 2),
            false,
        );
    }
}
