//! CIFAR-10/100 binary datasets and everything that feeds a training run from them.
//!
//! One on-disk format serves every dataset: the official binary layout. [`fetch`] downloads
//! the official releases, [`import`] converts image folders, [`synth`] draws `shapes10`, and
//! [`Dataset::open`] reads any of them with its [`domain::DatasetIdentity`]. [`batch`] turns a
//! dataset into seeded, augmented, normalised batches on a prefetch thread.

pub mod augment;
pub mod batch;
pub mod binary;
pub mod dataset;
mod error;
pub mod fetch;
pub mod import;
pub mod rng;
pub mod synth;

pub use batch::{Batch, BatchPlan};
pub use binary::Images;
pub use dataset::{locate, open_trained_on, Dataset, Manifest};
pub use error::{DataError, Result};

/// Images are 32×32 RGB, stored as three planes (R, G, B) of row-major bytes.
pub const SIDE: usize = 32;
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
