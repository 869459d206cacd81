//! The CIFAR binary record format. CIFAR-10: 1 label byte + 3,072 pixel bytes per record;
//! CIFAR-100: coarse label byte, fine label byte, 3,072 pixel bytes.

use crate::{DataError, Result, IMAGE_BYTES};
use domain::LabelKind;
use std::fs;
use std::path::Path;

/// A split in memory: `pixels` holds `len()` images of [`IMAGE_BYTES`] each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Images {
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
}

impl Images {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    pub fn push(&mut self, image: &[u8], label: u32) {
        self.pixels.extend_from_slice(image);
        self.labels.push(label);
    }

    /// The images in order, unaugmented, as (pixels, labels) in batches of `batch_size`
    /// (evaluation; the last batch may be smaller).
    pub fn batches(&self, batch_size: usize) -> impl Iterator<Item = (&[u8], &[u32])> {
        let batch_size = batch_size.max(1);
        self.pixels
            .chunks(batch_size * IMAGE_BYTES)
            .zip(self.labels.chunks(batch_size))
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[u32]) -> Images {
        let mut out = Images::default();
        for &i in indices {
            out.push(self.image(i as usize), self.labels[i as usize]);
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Cifar10,
    Cifar100,
}

impl Layout {
    pub fn label_bytes(self) -> usize {
        match self {
            Self::Cifar10 => 1,
            Self::Cifar100 => 2,
        }
    }

    pub fn record_bytes(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }
}

/// Parses the records of one file, appending them to `out`; returns the file's bytes so
/// the caller can fingerprint them.
pub(crate) fn read_records(
    path: &Path,
    layout: Layout,
    labels: LabelKind,
    classes: u32,
    out: &mut Images,
) -> Result<Vec<u8>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::Missing {
                path: path.to_path_buf(),
                what: "a CIFAR binary batch file".into(),
            })
        }
        Err(e) => return Err(DataError::io(path)(e)),
    };
    let record = layout.record_bytes();
    let whole = bytes.len() / record * record;
    if whole != bytes.len() {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            offset: whole as u64,
            remaining: (bytes.len() - whole) as u64,
            record: record as u64,
        });
    }
    out.pixels.reserve(whole / record * IMAGE_BYTES);
    for (r, chunk) in bytes.chunks_exact(record).enumerate() {
        let label_at = match (layout, labels) {
            (Layout::Cifar100, LabelKind::Fine) => 1,
            _ => 0,
        };
        let label = chunk[label_at] as u32;
        if label >= classes {
            return Err(DataError::BadLabel {
                path: path.to_path_buf(),
                offset: (r * record + label_at) as u64,
                label,
                classes,
            });
        }
        out.push(&chunk[layout.label_bytes()..], label);
    }
    Ok(bytes)
}

/// Reads a label-names file: one name per line, blank lines ignored.
pub(crate) fn read_names(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            path: path.to_path_buf(),
            what: "the label names file".into(),
        },
        _ => DataError::io(path)(e),
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() || names.len() > 256 {
        return Err(DataError::Malformed {
            path: path.to_path_buf(),
            reason: format!("{} class names; expected 1 to 256", names.len()),
        });
    }
    Ok(names)
}

/// Writes the dataset directory `out` whole or not at all: `fill` writes into a hidden
/// directory beside it, renamed into place once complete and removed on failure, so that no
/// half-written dataset is ever found at `out`.
pub(crate) fn write_whole(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map_or("dataset".into(), |n| n.to_string_lossy());
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = fs::create_dir_all(parent)
        .map_err(DataError::io(parent))
        .and_then(|()| fill(&tmp))
        .and_then(|()| fs::rename(&tmp, out).map_err(DataError::io(out)));
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map_err(|e| DataError::Writing {
        out: out.to_path_buf(),
        source: Box::new(e),
    })
}

/// Writes a dataset in the CIFAR-10 layout: the training split over `data_batch_1..5.bin`,
/// the test split in `test_batch.bin`, class names in `batches.meta.txt`.
pub fn write_cifar10(dir: &Path, train: &Images, test: &Images, names: &[String]) -> Result<()> {
    assert!(
        names.len() <= 256,
        "the CIFAR-10 layout stores labels in one byte"
    );
    fs::create_dir_all(dir).map_err(DataError::io(dir))?;
    let write = |file: &str, images: &Images, range: std::ops::Range<usize>| -> Result<()> {
        let path = dir.join(file);
        let mut bytes = Vec::with_capacity(range.len() * Layout::Cifar10.record_bytes());
        for i in range {
            bytes.push(images.labels[i] as u8);
            bytes.extend_from_slice(images.image(i));
        }
        fs::write(&path, bytes).map_err(DataError::io(path))
    };
    let n = train.len();
    for part in 0..5 {
        write(
            &format!("data_batch_{}.bin", part + 1),
            train,
            n * part / 5..n * (part + 1) / 5,
        )?;
    }
    write("test_batch.bin", test, 0..test.len())?;
    let meta = dir.join("batches.meta.txt");
    fs::write(&meta, names.join("\n") + "\n").map_err(DataError::io(meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dataset_that_fails_halfway_leaves_nothing_behind_and_names_its_destination() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("shapes");
        let err = write_whole(&out, |tmp| {
            fs::create_dir_all(tmp).map_err(DataError::io(tmp))?;
            fs::write(tmp.join("data_batch_1.bin"), [0u8; 8]).map_err(DataError::io(tmp))?;
            Err(DataError::Malformed {
                path: tmp.join("test_batch.bin"),
                reason: "the disk filled up".into(),
            })
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}: could not write the dataset: ", out.display()))
                && msg.ends_with("the disk filled up"),
            "{msg}"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        write_whole(&out, |tmp| {
            fs::create_dir_all(tmp).map_err(DataError::io(tmp))
        })
        .unwrap();
        assert!(out.is_dir());
    }
}
