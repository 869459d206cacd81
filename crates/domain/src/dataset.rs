//! What a run was trained on: a dataset's identity and the normalisation applied to it.

use serde::{Deserialize, Serialize};

/// A dataset's name plus a fingerprint of its files, recorded with every run so that
/// "cifar10-jpeg-q75" can never be mistaken for "cifar10".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetIdentity {
    pub name: String,
    /// `sha256:` + hex digest over the dataset's binary files (names and contents).
    pub fingerprint: String,
    pub classes: u32,
    pub train_examples: u32,
    pub test_examples: u32,
}

/// Per-channel normalisation `(x/255 - mean) / std`, in R, G, B order.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// The normalised value of every byte, per channel: `table[c][v] = (v/255 − mean[c]) /
    /// std[c]` in f32. The one definition of the input values: the host's data pipeline
    /// and the device's evaluation input both look them up here.
    pub fn lookup_table(&self) -> [[f32; 256]; 3] {
        let mut table = [[0f32; 256]; 3];
        for (c, row) in table.iter_mut().enumerate() {
            for (v, out) in row.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        table
    }
}
