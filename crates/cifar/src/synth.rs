//! `shapes10`: a deterministic synthetic dataset in the CIFAR-10 layout. Each image shows
//! one of ten procedurally drawn shapes with a random colour, size, position and rotation
//! on a textured background (gradient plus stripes), with pixel noise. Image `i` of a split
//! depends only on (seed, split, i), so any subset regenerates identically.

use crate::binary::{write_cifar10, write_whole};
use crate::dataset::Manifest;
use crate::rng::{rng, Stream};
use crate::{DataError, Images, Result, IMAGE_BYTES, SIDE};
use rand::Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::f64::consts::{PI, TAU};
use std::path::Path;

pub const NAME: &str = "shapes10";

pub const CLASSES: [&str; 10] = [
    "circle", "ring", "triangle", "square", "cross", "star", "crescent", "arrow", "hexagon",
    "heart",
];

/// Bumped whenever the drawing changes, so datasets of different versions differ in name
/// of generator and in fingerprint.
const GENERATOR_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthConfig {
    pub train: u32,
    pub test: u32,
    pub seed: u64,
}

impl Default for SynthConfig {
    /// The size generated on first use of the name `shapes10`.
    fn default() -> Self {
        Self {
            train: 10_000,
            test: 2_000,
            seed: 0,
        }
    }
}

/// Draws the dataset into `dir` (created; it must not exist yet). Written to a temporary
/// sibling first and renamed, so a crash or a concurrent generator never leaves half a
/// dataset under the name.
pub fn generate(dir: &Path, config: &SynthConfig) -> Result<()> {
    if config.train == 0 || config.test == 0 || config.train >= 1 << 24 || config.test >= 1 << 24 {
        return Err(DataError::Malformed {
            path: dir.to_path_buf(),
            reason: format!(
                "shapes10 needs 1 to 16,777,215 images per split (asked for {} train, {} test)",
                config.train, config.test
            ),
        });
    }
    if dir.exists() {
        return Err(DataError::Malformed {
            path: dir.to_path_buf(),
            reason: "already exists; remove it or choose another --out".into(),
        });
    }
    write_whole(dir, |tmp| {
        let train = draw_split(config.seed, 0, config.train);
        let test = draw_split(config.seed, 1, config.test);
        let names: Vec<String> = CLASSES.iter().map(|s| s.to_string()).collect();
        write_cifar10(tmp, &train, &test, &names)?;
        Manifest {
            name: NAME.to_string(),
            source: None,
            generator: Some(serde_json::json!({
                "generator": "shapes10",
                "version": GENERATOR_VERSION,
                "train": config.train,
                "test": config.test,
                "seed": config.seed,
            })),
        }
        .write(tmp)
    })
}

/// Split 0 = train, 1 = test. Labels cycle through the classes so they are balanced.
fn draw_split(seed: u64, split: u32, n: u32) -> Images {
    let images: Vec<(u32, Vec<u8>)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let class = i % CLASSES.len() as u32;
            let mut r = rng(seed, Stream::Synth, split, i);
            (class, draw(&mut r, class))
        })
        .collect();
    let mut out = Images::default();
    for (label, image) in images {
        out.push(&image, label);
    }
    out
}

/// Draws one image of class `class`.
pub fn draw(r: &mut impl Rng, class: u32) -> Vec<u8> {
    let colour = |r: &mut dyn rand::RngCore| -> [f64; 3] {
        [
            r.random_range(0.0..255.0),
            r.random_range(0.0..255.0),
            r.random_range(0.0..255.0),
        ]
    };
    // Background: a linear gradient between two colours plus sinusoidal stripes.
    let c0 = colour(r);
    let c1 = colour(r);
    let grad_angle = r.random_range(0.0..TAU);
    let stripe_angle = r.random_range(0.0..TAU);
    let stripe_freq = r.random_range(0.3..1.2);
    let stripe_phase = r.random_range(0.0..TAU);
    let stripe_amp = r.random_range(0.0..15.0);
    let background = |x: f64, y: f64, c: usize| {
        let t = ((x - 15.5) * grad_angle.cos() + (y - 15.5) * grad_angle.sin()) / 45.0 + 0.5;
        let s =
            (stripe_freq * (x * stripe_angle.cos() + y * stripe_angle.sin()) + stripe_phase).sin();
        c0[c] + (c1[c] - c0[c]) * t + stripe_amp * s
    };
    let bg_mean: Vec<f64> = (0..3).map(|c| (c0[c] + c1[c]) / 2.0).collect();
    // Object colour at a visible distance from the mean background colour.
    let mut fg = colour(r);
    for _ in 0..20 {
        let d: f64 = (0..3)
            .map(|c| (fg[c] - bg_mean[c]).powi(2))
            .sum::<f64>()
            .sqrt();
        if d >= 120.0 {
            break;
        }
        fg = colour(r);
    }
    let radius = r.random_range(9.0..14.0);
    let margin = radius * 0.9;
    let cx = r.random_range(margin..32.0 - margin);
    let cy = r.random_range(margin..32.0 - margin);
    let rotation = r.random_range(0.0..TAU);
    let noise = Normal::new(0.0, r.random_range(2.0..8.0)).expect("positive std");
    let (sin, cos) = rotation.sin_cos();

    let mut out = vec![0u8; IMAGE_BYTES];
    const SUB: usize = 3;
    for y in 0..SIDE {
        for x in 0..SIDE {
            let mut covered = 0;
            for sy in 0..SUB {
                for sx in 0..SUB {
                    let px = x as f64 + (sx as f64 + 0.5) / SUB as f64 - cx;
                    let py = y as f64 + (sy as f64 + 0.5) / SUB as f64 - cy;
                    let u = (px * cos + py * sin) / radius;
                    let v = (-px * sin + py * cos) / radius;
                    covered += inside(class, u, v) as usize;
                }
            }
            let a = covered as f64 / (SUB * SUB) as f64;
            for (c, plane) in out.chunks_exact_mut(SIDE * SIDE).enumerate() {
                let bg = background(x as f64, y as f64, c);
                let value = bg * (1.0 - a) + fg[c] * a + noise.sample(r);
                plane[y * SIDE + x] = value.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Whether the point (u, v) in the shape's unit frame lies inside the shape.
fn inside(class: u32, u: f64, v: f64) -> bool {
    let r2 = u * u + v * v;
    if r2 > 1.6 {
        return false;
    }
    match class {
        0 => r2 <= 1.0,
        1 => (0.3..=1.0).contains(&r2),
        2 => in_polygon(&regular(3, 1.0, 0.0), u, v),
        3 => u.abs() <= 0.8 && v.abs() <= 0.8,
        4 => (u.abs() <= 0.3 && v.abs() <= 1.0) || (v.abs() <= 0.3 && u.abs() <= 1.0),
        5 => in_polygon(&star(), u, v),
        6 => r2 <= 1.0 && (u - 0.5).powi(2) + v * v > 0.64,
        7 => in_polygon(&ARROW, u, v),
        8 => in_polygon(&regular(6, 1.0, 0.0), u, v),
        _ => {
            // The heart curve (x² + y² − 1)³ − x²y³ ≤ 0, scaled to the unit frame.
            let (x, y) = (u * 1.2, -v * 1.2 + 0.15);
            (x * x + y * y - 1.0).powi(3) - x * x * y.powi(3) <= 0.0
        }
    }
}

const ARROW: [(f64, f64); 7] = [
    (-1.0, -0.25),
    (0.1, -0.25),
    (0.1, -0.7),
    (1.0, 0.0),
    (0.1, 0.7),
    (0.1, 0.25),
    (-1.0, 0.25),
];

fn regular(n: usize, radius: f64, phase: f64) -> Vec<(f64, f64)> {
    (0..n)
        .map(|k| {
            let a = phase + TAU * k as f64 / n as f64;
            (radius * a.cos(), radius * a.sin())
        })
        .collect()
}

fn star() -> Vec<(f64, f64)> {
    (0..10)
        .map(|k| {
            let radius = if k % 2 == 0 { 1.0 } else { 0.42 };
            let a = PI / 2.0 + PI * k as f64 / 5.0;
            (radius * a.cos(), radius * a.sin())
        })
        .collect()
}

/// Even-odd rule.
fn in_polygon(poly: &[(f64, f64)], x: f64, y: f64) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_covers_a_reasonable_area() {
        for class in 0..10 {
            let n = 200;
            let hits = (0..n * n)
                .filter(|k| {
                    let u = (k % n) as f64 / n as f64 * 2.4 - 1.2;
                    let v = (k / n) as f64 / n as f64 * 2.4 - 1.2;
                    inside(class, u, v)
                })
                .count() as f64
                / (n * n) as f64;
            assert!(
                (0.08..0.6).contains(&hits),
                "{}: {hits}",
                CLASSES[class as usize]
            );
        }
    }

    #[test]
    fn images_depend_only_on_seed_split_and_index() {
        let a = draw(&mut rng(1, Stream::Synth, 0, 7), 3);
        let b = draw(&mut rng(1, Stream::Synth, 0, 7), 3);
        let c = draw(&mut rng(1, Stream::Synth, 0, 8), 3);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
