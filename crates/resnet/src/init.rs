//! Seeded host-side initialisation: candle's CPU generator cannot be seeded, so every
//! initial value is drawn here from a ChaCha8 stream and copied to the device.

use crate::ops::ConvMath;
use crate::{Dtypes, Result};
use candle_core::{DType, Device, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

pub struct Init<'a> {
    rng: &'a mut ChaCha8Rng,
    device: Device,
    dtype: DType,
    conv_math: ConvMath,
}

impl<'a> Init<'a> {
    /// Parameters in `dtypes.params`; convolutions built with `dtypes.conv_math`.
    pub fn new(rng: &'a mut ChaCha8Rng, device: &Device, dtypes: Dtypes) -> Self {
        Self {
            rng,
            device: device.clone(),
            dtype: dtypes.params,
            conv_math: dtypes.conv_math,
        }
    }

    /// He-normal: N(0, 2 / fan_in), untruncated.
    pub fn he_normal(&mut self, shape: &[usize], fan_in: usize) -> Result<Var> {
        let std = (2.0 / fan_in as f64).sqrt();
        let n: usize = shape.iter().product();
        let values: Vec<f64> = (0..n)
            .map(|_| self.rng.sample::<f64, _>(StandardNormal) * std)
            .collect();
        self.var(values, shape)
    }

    pub fn constant(&mut self, shape: &[usize], value: f64) -> Result<Var> {
        let n: usize = shape.iter().product();
        self.var(vec![value; n], shape)
    }

    fn var(&self, values: Vec<f64>, shape: &[usize]) -> Result<Var> {
        let t = candle_core::Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?;
        Ok(Var::from_tensor(&t)?)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn conv_math(&self) -> ConvMath {
        self.conv_math
    }
}
