//! Converts an image-folder tree (`train/<class>/*`, `test/<class>/*`, PNG or JPEG, 32×32)
//! into the CIFAR-10 binary layout, class names in `batches.meta.txt`.

use crate::binary::{write_cifar10, write_whole};
use crate::dataset::Manifest;
use crate::{DataError, Images, Result, IMAGE_BYTES, SIDE};
use rayon::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSummary {
    pub classes: Vec<String>,
    pub train: usize,
    pub test: usize,
}

/// Imports `from` into the new directory `out` under the dataset name `name`. Classes are
/// the sub-folders of `from/train`, in sorted order (CIFAR-10's official order is sorted).
pub fn import(from: &Path, out: &Path, name: &str) -> Result<ImportSummary> {
    domain::spec::check_dataset_name(name).map_err(|reason| DataError::Malformed {
        path: out.to_path_buf(),
        reason: format!("{reason}; give --name"),
    })?;
    if out.exists() {
        return Err(DataError::Malformed {
            path: out.to_path_buf(),
            reason: "already exists; choose a new --out".into(),
        });
    }
    let classes = subdirs(&from.join("train"))?;
    if classes.is_empty() || classes.len() > 256 {
        return Err(DataError::Malformed {
            path: from.join("train"),
            reason: format!("{} class folders; expected 1 to 256", classes.len()),
        });
    }
    for class in subdirs(&from.join("test"))? {
        if !classes.contains(&class) {
            return Err(DataError::Malformed {
                path: from.join("test").join(&class),
                reason: "a test class with no training folder".into(),
            });
        }
    }
    let train = read_split(&from.join("train"), &classes)?;
    let test = read_split(&from.join("test"), &classes)?;
    write_whole(out, |tmp| {
        write_cifar10(tmp, &train, &test, &classes)?;
        Manifest {
            name: name.to_string(),
            source: Some(from.display().to_string()),
            generator: None,
        }
        .write(tmp)
    })?;
    Ok(ImportSummary {
        classes,
        train: train.len(),
        test: test.len(),
    })
}

fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            path: dir.to_path_buf(),
            what: "a folder of class folders".into(),
        },
        _ => DataError::io(dir)(e),
    })?;
    let mut names = vec![];
    for entry in entries {
        let entry = entry.map_err(DataError::io(dir))?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn read_split(dir: &Path, classes: &[String]) -> Result<Images> {
    let mut files: Vec<(PathBuf, u32)> = vec![];
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        if !class_dir.is_dir() {
            continue;
        }
        let mut paths: Vec<PathBuf> = fs::read_dir(&class_dir)
            .map_err(DataError::io(&class_dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let ext = p
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase());
                matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
            })
            .collect();
        paths.sort();
        files.extend(paths.into_iter().map(|p| (p, label as u32)));
    }
    if files.is_empty() {
        return Err(DataError::Malformed {
            path: dir.to_path_buf(),
            reason: "no PNG or JPEG images".into(),
        });
    }
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(p, _)| decode(p))
        .collect::<Result<_>>()?;
    let mut images = Images::default();
    for (pixels, (_, label)) in decoded.iter().zip(&files) {
        images.push(pixels, *label);
    }
    Ok(images)
}

/// Decodes one 32×32 image into R, G, B planes.
fn decode(path: &Path) -> Result<Vec<u8>> {
    let bad = |reason: String| DataError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let img = image::open(path).map_err(|e| bad(e.to_string()))?.to_rgb8();
    if img.dimensions() != (SIDE as u32, SIDE as u32) {
        let (w, h) = img.dimensions();
        return Err(bad(format!(
            "{w}×{h} pixels; only 32×32 images can be imported"
        )));
    }
    let mut planes = vec![0u8; IMAGE_BYTES];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            planes[c * SIDE * SIDE + i] = px[c];
        }
    }
    Ok(planes)
}
