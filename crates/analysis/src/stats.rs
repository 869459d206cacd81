//! Per-example quantities, computed on the model's device, and their summaries on the host.

use crate::Result;
use candle_core::{DType, Tensor, D};
use resnet::layers::{per_example_norm, per_example_rows};

/// A batch of scalars (any float dtype) as host f64.
pub(crate) fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// ‖x_n‖ per example, (N,) in f64 (summed in f32 for f32 and bf16 tensors, f64 for f64:
/// [`per_example_rows`]).
pub(crate) fn norms(x: &Tensor) -> Result<Tensor> {
    Ok(per_example_norm(x)?.to_dtype(DType::F64)?)
}

/// ⟨a_n, b_n⟩ per example, (N,) in f64 (summed as [`norms`]).
pub(crate) fn dots(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((per_example_rows(a)? * per_example_rows(b)?)?
        .sum(D::Minus1)?
        .to_dtype(DType::F64)?)
}

/// a / b elementwise; not finite where b is zero (summaries leave those out).
pub(crate) fn ratios(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((a / b)?)
}

/// cos(a_n, b_n) per example; NaN where either vector is zero.
pub(crate) fn cosines(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    ratios(&dots(a, b)?, &(norms(a)? * norms(b)?)?)
}

/// Per-example values of several series (one per block, say), left on the device as they are
/// computed and read back together: on a GPU every read waits for the work before it, and
/// one read per block and batch would stall the analysis thousands of times.
pub(crate) struct Series(Vec<Vec<Tensor>>);

impl Series {
    pub fn new(series: usize) -> Self {
        Self(vec![vec![]; series])
    }

    /// Appends (N,) values to series `i`.
    pub fn push(&mut self, i: usize, values: Tensor) {
        self.0[i].push(values);
    }

    /// Every series' values, in the order they were pushed.
    pub fn read(self) -> Result<Vec<Vec<f64>>> {
        let parts: Vec<&Tensor> = self.0.iter().flatten().collect();
        if parts.is_empty() {
            return Ok(vec![vec![]; self.0.len()]);
        }
        let parts: Vec<Tensor> = parts
            .into_iter()
            .map(|t| t.flatten_all()?.to_dtype(DType::F64))
            .collect::<candle_core::Result<_>>()?;
        let mut all = host(&Tensor::cat(&parts, 0)?)?.into_iter();
        Ok(self
            .0
            .iter()
            .map(|series| {
                let n = series.iter().map(Tensor::elem_count).sum();
                all.by_ref().take(n).collect()
            })
            .collect())
    }
}

/// What the head's output says about each example.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeadStats {
    /// Cross-entropy −log p_y.
    pub loss: Vec<f64>,
    /// 1 if the arg-max is the label, else 0.
    pub correct: Vec<f64>,
    /// Predictive entropy −Σ p log p.
    pub entropy: Vec<f64>,
    /// p_y − max_{c≠y} p_c.
    pub margin: Vec<f64>,
}

/// Softmax statistics, computed in f64, of logits (N, C) read back row by row (as
/// [`Series`] reads them, so that many heads' logits come back in one read).
pub(crate) fn head_stats(logits: &[f64], classes: usize, labels: &[u32]) -> HeadStats {
    let mut out = HeadStats::default();
    for (row, &y) in logits.chunks_exact(classes).zip(labels) {
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_z = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        let log_p: Vec<f64> = row.iter().map(|v| v - log_z).collect();
        let y = y as usize;
        let best_other = (0..classes)
            .filter(|&c| c != y)
            .map(|c| log_p[c].exp())
            .fold(0.0, f64::max);
        let argmax = (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
        out.loss.push(-log_p[y]);
        out.correct.push(if argmax == y { 1.0 } else { 0.0 });
        out.entropy
            .push(-log_p.iter().map(|l| l.exp() * l).sum::<f64>());
        out.margin.push(log_p[y].exp() - best_other);
    }
    out
}

/// Mean and median of the finite values, and how many there are.
pub(crate) fn mean_median(values: &[f64]) -> Option<(f64, f64, usize)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v.iter().sum::<f64>() / n as f64, median, n))
}

/// Pearson correlation of paired finite values (NaN with fewer than two or no variance).
pub(crate) fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let pairs: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(a, b)| (*a, *b))
        .collect();
    let n = pairs.len() as f64;
    if pairs.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = pairs.iter().map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = pairs.iter().map(|(a, _)| (a - mx).powi(2)).sum();
    let vy: f64 = pairs.iter().map(|(_, b)| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn summaries_ignore_undefined_values() {
        assert_eq!(mean_median(&[3.0, f64::NAN, 1.0, 2.0]), Some((2.0, 2.0, 3)));
        assert_eq!(mean_median(&[1.0, 4.0]), Some((2.5, 2.5, 2)));
        assert_eq!(mean_median(&[f64::NAN]), None);
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.5]) - 0.9986).abs() < 1e-3);
        assert!(pearson(&[1.0], &[1.0]).is_nan());
    }

    #[test]
    fn head_statistics_of_known_logits() {
        let s = head_stats(&[0.0, 0.0, 10.0, 0.0], 2, &[0, 1]);
        assert!((s.loss[0] - std::f64::consts::LN_2).abs() < 1e-9);
        assert!((s.entropy[0] - std::f64::consts::LN_2).abs() < 1e-9);
        assert_eq!(s.margin[0], 0.0);
        assert_eq!(s.correct, [1.0, 0.0]);
        assert!(s.margin[1] < -0.99 && s.loss[1] > 9.9);
    }

    #[test]
    fn cosines_and_norms_per_example() {
        let a = Tensor::new(&[[1.0f32, 0.0], [0.0, 2.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[2.0f32, 0.0], [0.0, -1.0], [1.0, 1.0]], &Device::Cpu).unwrap();
        let c = host(&cosines(&a, &b).unwrap()).unwrap();
        assert_eq!(c[..2], [1.0, -1.0]);
        assert!(c[2].is_nan());
        assert_eq!(host(&norms(&a).unwrap()).unwrap(), [1.0, 2.0, 0.0]);
    }

    #[test]
    fn series_read_back_in_push_order() {
        let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
        let mut s = Series::new(3);
        s.push(1, t(&[1.0, 2.0]));
        s.push(0, t(&[3.0]));
        s.push(1, t(&[4.0]));
        assert_eq!(s.read().unwrap(), [vec![3.0], vec![1.0, 2.0, 4.0], vec![]]);
        assert_eq!(
            Series::new(2).read().unwrap(),
            [vec![], vec![]] as [Vec<f64>; 2]
        );
    }
}
