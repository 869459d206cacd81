//! The paper's figures as SVG and PNG, from metric records: [`paper::figures`] builds
//! Figs. 2–8 and the Taylor check from runs (seeds of one label drawn as mean ± standard
//! deviation), [`chart::write`] renders a figure with plotters and a bundled font.

pub mod chart;
pub mod paper;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("drawing {0}")]
    Draw(String),
    #[error("encoding a PNG: {0}")]
    Png(image::ImageError),
}

pub type Result<T, E = FigureError> = std::result::Result<T, E>;

pub use chart::{png, svg, write, Figure};
pub use paper::{figures, Run, OVER_TRAINING};
