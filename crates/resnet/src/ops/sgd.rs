//! The SGD-momentum update in place, with PyTorch's arithmetic: d = g + wd·p,
//! buf ← μ·buf + d, p ← p − lr·(d + μ·buf with Nesterov, else buf), or p − lr·d without
//! momentum. On the CPU one pass over each tensor instead of six candle ops that each
//! allocate their result (over a thousand per ResNet-56 step); on CUDA one kernel for up
//! to 32 tensors at a time (a ResNet-56 has 226 parameter tensors: a launch each would
//! cost more than the arithmetic).

#[cfg(feature = "cuda")]
use super::profile::timed_cuda;
use super::profile::{timed, Kernel};
use super::{slice, Real};
use candle_core::{bail, CpuStorage, InplaceOp3, Layout, Result, Tensor};

/// The hyper-parameters of one update.
#[derive(Clone, Copy, Debug)]
pub struct SgdStep {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

/// One parameter's update: `param` and its `momentum_buffer` change in place.
#[derive(Clone, Copy, Debug)]
pub struct SgdUpdate<'a> {
    pub param: &'a Tensor,
    pub grad: &'a Tensor,
    pub momentum_buffer: &'a Tensor,
    pub step: SgdStep,
}

/// Inputs of a CUDA update read from device memory when it runs, so that a captured graph
/// can replay it: the learning rate (the updates' own `lr` is then ignored), and the loss,
/// a non-finite value of which leaves every parameter untouched (as the training loop's host
/// check does).
#[derive(Clone, Copy, Debug)]
pub struct OnDevice<'a> {
    /// One f32 value.
    pub lr: &'a Tensor,
    /// One f32 value.
    pub loss: &'a Tensor,
}

/// Whether [`sgd_step`] updates parameters like `param`: CPU tensors of f32 or f64, or CUDA
/// f32 with the `cuda` feature.
pub fn sgd_serves(param: &Tensor) -> bool {
    super::has_cpu_kernels(param)
        || (super::has_cuda_kernels(param) && param.dtype() == candle_core::DType::F32)
}

/// Applies every update in place (the buffer only with momentum); every parameter must be
/// one [`sgd_serves`], and with `on_device` a CUDA one.
pub fn sgd_step(updates: &[SgdUpdate], on_device: Option<OnDevice>) -> Result<()> {
    #[cfg(feature = "cuda")]
    let updates = {
        let (on_cuda, rest): (Vec<SgdUpdate>, Vec<SgdUpdate>) =
            updates.iter().partition(|u| u.param.device().is_cuda());
        if let Some(candle_core::Device::Cuda(device)) = on_cuda.first().map(|u| u.param.device()) {
            timed_cuda(Kernel::SgdUpdate, device, || {
                super::cuda::sgd_step(&on_cuda, on_device)
            })?;
        }
        rest
    };
    if on_device.is_some() && !updates.is_empty() {
        bail!("sgd_step: device-side learning rates are for CUDA parameters");
    }
    if updates.is_empty() {
        return Ok(());
    }
    timed(Kernel::SgdUpdate, || {
        for u in updates.iter() {
            if u.step.momentum > 0.0 {
                let op = InPlace(BufferUpdate(u.step));
                u.momentum_buffer.inplace_op3(u.grad, u.param, &op)?;
            }
            let op = InPlace(ParamUpdate(u.step));
            u.param.inplace_op3(u.grad, u.momentum_buffer, &op)?;
        }
        Ok(())
    })
}

/// One element's new value from its old one and two others.
trait Update {
    const NAME: &'static str;
    fn apply<T: Real>(&self, old: T, a: T, b: T) -> T;
}

/// An [`Update`] as a candle in-place op on its first tensor.
struct InPlace<U>(U);

/// buf ← μ·buf + (g + wd·p): sources g, p.
struct BufferUpdate(SgdStep);

impl Update for BufferUpdate {
    const NAME: &'static str = "sgd-momentum-buffer";

    #[inline(always)]
    fn apply<T: Real>(&self, buf: T, g: T, p: T) -> T {
        let s = &self.0;
        let d = g + p * T::from_f64(s.weight_decay);
        buf * T::from_f64(s.momentum) + d
    }
}

/// p ← p − lr·step: sources g and the already updated buffer.
struct ParamUpdate(SgdStep);

impl Update for ParamUpdate {
    const NAME: &'static str = "sgd-parameter";

    #[inline(always)]
    fn apply<T: Real>(&self, p: T, g: T, buf: T) -> T {
        let s = &self.0;
        let d = g + p * T::from_f64(s.weight_decay);
        let step = match (s.momentum > 0.0, s.nesterov) {
            (false, _) => d,
            (true, false) => buf,
            (true, true) => d + buf * T::from_f64(s.momentum),
        };
        p - step * T::from_f64(s.lr)
    }
}

/// `dst[i] = u(dst[i], a[i], b[i])` over contiguous tensors of one dtype.
fn in_place<U: Update>(
    u: &U,
    dst: &mut CpuStorage,
    dl: &Layout,
    (a, al): (&CpuStorage, &Layout),
    (b, bl): (&CpuStorage, &Layout),
) -> Result<()> {
    fn run<T: Real, U: Update>(u: &U, dst: &mut [T], a: &[T], b: &[T]) -> Result<()> {
        if a.len() != dst.len() || b.len() != dst.len() {
            bail!("{}: tensor sizes differ", U::NAME);
        }
        for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            *d = u.apply(*d, x, y);
        }
        Ok(())
    }
    let name = U::NAME;
    let Some((start, end)) = dl.contiguous_offsets() else {
        bail!("{name}: the updated tensor must be contiguous");
    };
    match dst {
        CpuStorage::F32(dst) => run(u, &mut dst[start..end], slice(a, al)?, slice(b, bl)?),
        CpuStorage::F64(dst) => run(u, &mut dst[start..end], slice(a, al)?, slice(b, bl)?),
        _ => bail!("{name}: the CPU kernels take f32 or f64"),
    }
}

impl<U: Update> InplaceOp3 for InPlace<U> {
    fn name(&self) -> &'static str {
        U::NAME
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        l: &Layout,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<()> {
        in_place(&self.0, dst, l, (a, al), (b, bl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The update as candle ops, in the same order (the path for other devices and dtypes).
    fn composed(p: &Tensor, g: &Tensor, buf: &Tensor, s: SgdStep) -> (Tensor, Tensor) {
        let d = (g + (p * s.weight_decay).unwrap()).unwrap();
        if s.momentum == 0.0 {
            return ((p - (d * s.lr).unwrap()).unwrap(), buf.clone());
        }
        let buf = ((buf * s.momentum).unwrap() + &d).unwrap();
        let step = if s.nesterov {
            (d + (&buf * s.momentum).unwrap()).unwrap()
        } else {
            buf.clone()
        };
        ((p - (step * s.lr).unwrap()).unwrap(), buf)
    }

    #[test]
    fn updates_in_place_exactly_as_the_composed_ops() {
        let dev = Device::Cpu;
        let values = |seed: f32| -> Vec<f32> {
            (0..37)
                .map(|i| ((i as f32 * 0.37 + seed).sin()) * 2.0)
                .collect()
        };
        for (momentum, nesterov) in [(0.0, false), (0.9, false), (0.9, true)] {
            let s = SgdStep {
                lr: 0.05,
                momentum,
                weight_decay: 5e-4,
                nesterov,
            };
            let p = Var::new(values(0.1), &dev).unwrap();
            let buf = Var::new(values(0.2), &dev).unwrap();
            let (mut want_p, mut want_buf) = (
                p.as_tensor().copy().unwrap(),
                buf.as_tensor().copy().unwrap(),
            );
            for step in 0..3 {
                let g = Tensor::new(values(step as f32), &dev).unwrap();
                let update = SgdUpdate {
                    param: p.as_tensor(),
                    grad: &g,
                    momentum_buffer: buf.as_tensor(),
                    step: s,
                };
                sgd_step(&[update], None).unwrap();
                (want_p, want_buf) = composed(&want_p, &g, &want_buf, s);
                let bits = |t: &Tensor| -> Vec<u32> {
                    t.to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect()
                };
                assert_eq!(bits(p.as_tensor()), bits(&want_p), "{s:?}");
                assert_eq!(bits(buf.as_tensor()), bits(&want_buf), "{s:?}");
            }
        }
    }
}
