//! SGD with momentum and weight decay as PyTorch's `torch.optim.SGD` computes it (decay
//! added to the gradient, dampening 0, optional Nesterov), with its state saved.
//! candle-nn's SGD has no momentum and no saveable state, hence this one.

use crate::{Result, TrainError};
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use domain::{DecayScope, TrainSpec};
use resnet::ops::{OnDevice, SgdStep, SgdUpdate};
use resnet::{Param, ParamRole};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub decay_on: DecayScope,
}

impl SgdConfig {
    pub fn from_spec(train: &TrainSpec) -> Self {
        Self {
            momentum: train.momentum,
            nesterov: train.nesterov,
            weight_decay: train.weight_decay,
            decay_on: train.decay_on,
        }
    }
}

pub struct Sgd {
    params: Vec<Param>,
    /// One buffer per parameter, zero until its first step (PyTorch's first step sets it to
    /// the gradient, which `0.9·0 + g` reproduces exactly).
    momentum: Vec<Tensor>,
    config: SgdConfig,
}

/// Checkpoint key prefix of the momentum buffers.
pub const MOMENTUM_PREFIX: &str = "optimizer.momentum.";

impl Sgd {
    pub fn new(params: Vec<Param>, config: SgdConfig) -> Result<Self> {
        let momentum = params
            .iter()
            .map(|p| p.var.as_tensor().zeros_like())
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            params,
            momentum,
            config,
        })
    }

    fn decays(&self, role: ParamRole) -> bool {
        match self.config.decay_on {
            DecayScope::All => true,
            DecayScope::Weights => role == ParamRole::Weight,
        }
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.update(grads, lr, None)
    }

    /// One update whose learning rate and finiteness check the kernel reads from device
    /// memory when it runs (see [`OnDevice`]), as a captured CUDA graph replays it. Every
    /// parameter must be served by the CUDA kernel.
    pub fn step_on_device(&mut self, grads: &GradStore, on_device: OnDevice) -> Result<()> {
        self.update(grads, 0.0, Some(on_device))
    }

    fn update(&mut self, grads: &GradStore, lr: f64, on_device: Option<OnDevice>) -> Result<()> {
        let SgdConfig {
            momentum,
            nesterov,
            weight_decay,
            ..
        } = self.config;
        // Kernel-served parameters are updated together (one CUDA launch per 32 tensors).
        let mut updates = Vec::with_capacity(self.params.len());
        // New momentum buffers of the other parameters (candle ops), stored after the loop.
        let mut buffers = vec![];
        for (i, p) in self.params.iter().enumerate() {
            let Some(grad) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let value = p.var.as_tensor();
            let decay = if self.decays(p.role) {
                weight_decay
            } else {
                0.0
            };
            if resnet::ops::sgd_serves(value) {
                updates.push(SgdUpdate {
                    param: value,
                    grad,
                    momentum_buffer: &self.momentum[i],
                    step: SgdStep {
                        lr,
                        momentum,
                        weight_decay: decay,
                        nesterov,
                    },
                });
                continue;
            }
            if on_device.is_some() {
                return Err(candle_core::Error::Msg(format!(
                    "{}: a device-side update needs CUDA f32 parameters",
                    p.name
                ))
                .into());
            }
            let mut d = if decay > 0.0 {
                (grad + (value * decay)?)?
            } else {
                grad.clone()
            };
            if momentum > 0.0 {
                let buf = ((&self.momentum[i] * momentum)? + &d)?;
                d = if nesterov {
                    (d + (&buf * momentum)?)?
                } else {
                    buf.clone()
                };
                buffers.push((i, buf));
            }
            p.var.set(&(value - (d * lr)?)?)?;
        }
        resnet::ops::sgd_step(&updates, on_device)?;
        for (i, buf) in buffers {
            self.momentum[i] = buf;
        }
        Ok(())
    }

    /// Momentum buffers under `optimizer.momentum.<parameter name>`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.momentum)
            .map(|(p, m)| (format!("{MOMENTUM_PREFIX}{}", p.name), m.clone()))
            .collect()
    }

    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (p, m) in self.params.iter().zip(self.momentum.iter_mut()) {
            let key = format!("{MOMENTUM_PREFIX}{}", p.name);
            let t = tensors.get(&key).ok_or_else(|| TrainError::Resume {
                path: Default::default(),
                reason: format!("missing optimizer state {key}"),
            })?;
            if t.dims() != p.var.dims() {
                return Err(TrainError::Resume {
                    path: Default::default(),
                    reason: format!("{key}: shape {:?}, expected {:?}", t.dims(), p.var.dims()),
                });
            }
            *m = t.to_device(p.var.device())?.to_dtype(p.var.dtype())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn param(name: &str, values: &[f64], role: ParamRole) -> Param {
        Param {
            name: name.into(),
            var: Var::new(values, &Device::Cpu).unwrap(),
            role,
        }
    }

    /// Hand-computed PyTorch SGD: d = g + wd·p; buf = m·buf + d; p -= lr·buf.
    #[test]
    fn matches_pytorch_sgd_with_decay_only_on_weights() {
        let w = param("w", &[1.0, -2.0], ParamRole::Weight);
        let b = param("b", &[0.5], ParamRole::Bias);
        let mut sgd = Sgd::new(
            vec![
                Param {
                    name: "w".into(),
                    var: w.var.clone(),
                    role: w.role,
                },
                Param {
                    name: "b".into(),
                    var: b.var.clone(),
                    role: b.role,
                },
            ],
            SgdConfig {
                momentum: 0.9,
                nesterov: false,
                weight_decay: 0.1,
                decay_on: DecayScope::Weights,
            },
        )
        .unwrap();
        let (mut pw, mut pb) = ([1.0f64, -2.0], 0.5f64);
        let (mut bw, mut bb) = ([0.0f64; 2], 0.0f64);
        for _ in 0..3 {
            // loss = 3·Σw + 2·b² → g_w = 3, g_b = 4b
            let loss = ((w.var.as_tensor().sum_all().unwrap() * 3.0).unwrap()
                + (b.var.as_tensor().sqr().unwrap().sum_all().unwrap() * 2.0).unwrap())
            .unwrap();
            sgd.step(&loss.backward().unwrap(), 0.05).unwrap();
            for k in 0..2 {
                bw[k] = 0.9 * bw[k] + (3.0 + 0.1 * pw[k]);
                pw[k] -= 0.05 * bw[k];
            }
            bb = 0.9 * bb + 4.0 * pb;
            pb -= 0.05 * bb;
        }
        let got_w = w.var.as_tensor().to_vec1::<f64>().unwrap();
        let got_b = b.var.as_tensor().to_vec1::<f64>().unwrap();
        for k in 0..2 {
            assert!((got_w[k] - pw[k]).abs() < 1e-12, "{got_w:?} vs {pw:?}");
        }
        assert!((got_b[0] - pb).abs() < 1e-12);
    }

    #[test]
    fn nesterov_looks_ahead() {
        let w = param("w", &[1.0], ParamRole::Weight);
        let mut sgd = Sgd::new(
            vec![Param {
                name: "w".into(),
                var: w.var.clone(),
                role: w.role,
            }],
            SgdConfig {
                momentum: 0.5,
                nesterov: true,
                weight_decay: 0.0,
                decay_on: DecayScope::Weights,
            },
        )
        .unwrap();
        for _ in 0..2 {
            let loss = w.var.as_tensor().sum_all().unwrap();
            sgd.step(&loss.backward().unwrap(), 1.0).unwrap();
        }
        // step 1: buf = 1, d = 1 + 0.5 = 1.5 → 1 − 1.5; step 2: buf = 1.5, d = 1 + 0.75.
        let got = w.var.as_tensor().to_vec1::<f64>().unwrap()[0];
        assert!((got - (1.0 - 1.5 - 1.75)).abs() < 1e-12, "{got}");
    }
}
