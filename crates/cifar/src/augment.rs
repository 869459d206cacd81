//! Augmentation and normalisation, fused into one pass from bytes to floats: random crop
//! from 4-pixel zero padding (zero = black pixel, as torchvision pads the image) and
//! horizontal flip, then `(x/255 − mean) / std` per channel.

use crate::{Images, IMAGE_BYTES, SIDE};
use domain::Normalization;
use rand::Rng;

pub const PAD: usize = 4;

/// Crop offset and flip of one example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jitter {
    /// Top-left corner of the crop in the padded image, each in `0..=2·PAD`.
    pub dy: usize,
    pub dx: usize,
    pub flip: bool,
}

impl Jitter {
    pub const NONE: Jitter = Jitter {
        dy: PAD,
        dx: PAD,
        flip: false,
    };

    pub fn random(r: &mut impl Rng) -> Self {
        Self {
            dy: r.random_range(0..=2 * PAD),
            dx: r.random_range(0..=2 * PAD),
            flip: r.random_bool(0.5),
        }
    }
}

/// Per-channel lookup tables from byte to normalised float.
pub struct Normalizer {
    lut: [[f32; 256]; 3],
}

impl Normalizer {
    pub fn new(n: &Normalization) -> Self {
        Self {
            lut: n.lookup_table(),
        }
    }

    /// Writes one jittered, normalised image (CHW) into `out`.
    pub fn write(&self, image: &[u8], jitter: Jitter, out: &mut [f32]) {
        debug_assert_eq!(image.len(), IMAGE_BYTES);
        for c in 0..3 {
            let src = &image[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
            let dst = &mut out[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
            let lut = &self.lut[c];
            for y in 0..SIDE {
                let sy = (y + jitter.dy) as isize - PAD as isize;
                for x in 0..SIDE {
                    let xo = if jitter.flip { SIDE - 1 - x } else { x };
                    let sx = (xo + jitter.dx) as isize - PAD as isize;
                    let inside =
                        (0..SIDE as isize).contains(&sy) && (0..SIDE as isize).contains(&sx);
                    let byte = if inside {
                        src[sy as usize * SIDE + sx as usize]
                    } else {
                        0
                    };
                    dst[y * SIDE + x] = lut[byte as usize];
                }
            }
        }
    }
}

/// Per-channel mean and standard deviation of `x/255` over a split.
pub fn channel_stats(images: &Images) -> Normalization {
    let mut sum = [0f64; 3];
    let mut sq = [0f64; 3];
    for image in images.pixels.chunks_exact(IMAGE_BYTES) {
        for (c, plane) in image.chunks_exact(SIDE * SIDE).enumerate() {
            for &b in plane {
                let v = b as f64 / 255.0;
                sum[c] += v;
                sq[c] += v * v;
            }
        }
    }
    let n = (images.len() * SIDE * SIDE) as f64;
    let mut out = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    for c in 0..3 {
        let mean = sum[c] / n;
        out.mean[c] = mean as f32;
        // A channel that (almost) never varies in training would be scaled up without bound,
        // turning a one-level difference in a test image into thousands of units: no
        // channel's standard deviation counts as less than one intensity level.
        out.std[c] = (sq[c] / n - mean * mean).max(0.0).sqrt().max(1.0 / 255.0) as f32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Vec<u8> {
        (0..IMAGE_BYTES).map(|i| (i % 251) as u8).collect()
    }

    const IDENTITY: Normalization = Normalization {
        mean: [0.0; 3],
        std: [1.0 / 255.0; 3],
    };

    #[test]
    fn no_jitter_is_plain_normalisation() {
        let img = ramp();
        let mut out = vec![0f32; IMAGE_BYTES];
        Normalizer::new(&IDENTITY).write(&img, Jitter::NONE, &mut out);
        for (a, b) in out.iter().zip(&img) {
            assert!((a - *b as f32).abs() < 1e-3);
        }
    }

    #[test]
    fn crop_shifts_and_pads_with_black_and_flip_mirrors() {
        let img = ramp();
        let mut out = vec![0f32; IMAGE_BYTES];
        let n = Normalizer::new(&IDENTITY);
        // Crop at the padded corner: content moves down-right by 4, top rows are padding.
        n.write(
            &img,
            Jitter {
                dy: 0,
                dx: 0,
                flip: false,
            },
            &mut out,
        );
        assert_eq!(out[0], 0.0);
        assert!((out[4 * SIDE + 4] - img[0] as f32).abs() < 1e-3);
        n.write(
            &img,
            Jitter {
                flip: true,
                ..Jitter::NONE
            },
            &mut out,
        );
        assert!((out[0] - img[SIDE - 1] as f32).abs() < 1e-3);
        assert!((out[SIDE - 1] - img[0] as f32).abs() < 1e-3);
    }

    #[test]
    fn channel_stats_of_a_constant_image() {
        let mut images = Images::default();
        images.push(&vec![51u8; IMAGE_BYTES], 0);
        let s = channel_stats(&images);
        assert!((s.mean[0] - 0.2).abs() < 1e-6);
        assert_eq!(s.std[0], (1.0f64 / 255.0) as f32);
    }
}
