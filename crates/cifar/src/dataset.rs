//! Opening a dataset directory, its identity, and resolving dataset names.

use crate::binary::{read_names, read_records, Layout};
use crate::{synth, DataError, Images, Result};
use domain::{DatasetIdentity, LabelKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

/// Written beside the binary files by `synth` and `import`: the dataset's name and origin.
pub const MANIFEST: &str = "stepwise-dataset.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Generator settings of a synthetic dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<serde_json::Value>,
}

impl Manifest {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self).expect("a manifest serialises");
        fs::write(&path, text + "\n").map_err(DataError::io(path))
    }

    fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let manifest: Self =
                    serde_json::from_str(&text).map_err(|e| DataError::Malformed {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                // Its name goes into every run's spec, which must stay valid to be read back.
                domain::spec::check_dataset_name(&manifest.name)
                    .map_err(|reason| DataError::Malformed { path, reason })?;
                Ok(Some(manifest))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DataError::io(path)(e)),
        }
    }
}

/// A dataset in memory with its identity.
#[derive(Debug)]
pub struct Dataset {
    pub identity: DatasetIdentity,
    pub class_names: Vec<String>,
    pub train: Images,
    pub test: Images,
    /// The directory holding the binary files.
    pub dir: PathBuf,
}

impl Dataset {
    /// Reads a dataset directory (the files themselves, or the folder the official tarball
    /// unpacks to inside it). `labels` picks CIFAR-100's fine or coarse labels.
    pub fn open(dir: &Path, labels: LabelKind) -> Result<Self> {
        let (files_dir, layout, name) = inspect(dir)?;
        let (train_files, test_file, names_file) = match layout {
            Layout::Cifar10 => (
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
                "test_batch.bin",
                "batches.meta.txt",
            ),
            Layout::Cifar100 => (
                vec!["train.bin".to_string()],
                "test.bin",
                match labels {
                    LabelKind::Fine => "fine_label_names.txt",
                    LabelKind::Coarse => "coarse_label_names.txt",
                },
            ),
        };
        if layout == Layout::Cifar10 && labels == LabelKind::Coarse {
            return Err(DataError::Malformed {
                path: files_dir,
                reason: "coarse labels exist only in CIFAR-100".into(),
            });
        }
        let class_names = read_names(&files_dir.join(names_file))?;
        let classes = class_names.len() as u32;
        // Fingerprint: names and contents of every data file and of the label names.
        let mut hasher = Sha256::new();
        hasher.update(names_file.as_bytes());
        hasher.update(class_names.join("\n").as_bytes());
        let mut read_split = |files: &[String]| -> Result<Images> {
            let mut images = Images::default();
            for file in files {
                let bytes =
                    read_records(&files_dir.join(file), layout, labels, classes, &mut images)?;
                hasher.update(file.as_bytes());
                hasher.update(Sha256::digest(&bytes));
            }
            Ok(images)
        };
        let train = read_split(&train_files)?;
        let test = read_split(&[test_file.to_string()])?;
        for (split, images) in [("training", &train), ("test", &test)] {
            if images.is_empty() {
                return Err(DataError::Malformed {
                    path: files_dir.clone(),
                    reason: format!("the {split} split holds no images"),
                });
            }
        }
        Ok(Self {
            identity: DatasetIdentity {
                name,
                fingerprint: format!("sha256:{}", hex::encode(hasher.finalize())),
                classes,
                train_examples: train.len() as u32,
                test_examples: test.len() as u32,
            },
            class_names,
            train,
            test,
            dir: files_dir,
        })
    }
}

/// The dataset in `dir`: the directory of its files, their layout, and its own name (its
/// manifest's, else the official release's).
fn inspect(dir: &Path) -> Result<(PathBuf, Layout, String)> {
    let (files_dir, layout) = find_layout(dir)?;
    let manifest = Manifest::read(&files_dir)?.or(Manifest::read(dir)?);
    let name = manifest.map_or_else(
        || {
            match layout {
                Layout::Cifar10 => "cifar10",
                Layout::Cifar100 => "cifar100",
            }
            .to_string()
        },
        |m| m.name,
    );
    Ok((files_dir, layout, name))
}

fn find_layout(dir: &Path) -> Result<(PathBuf, Layout)> {
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            what: "a dataset directory".into(),
        });
    }
    for candidate in [
        dir.to_path_buf(),
        dir.join("cifar-10-batches-bin"),
        dir.join("cifar-100-binary"),
    ] {
        if candidate.join("test_batch.bin").exists() || candidate.join("data_batch_1.bin").exists()
        {
            return Ok((candidate, Layout::Cifar10));
        }
        if candidate.join("train.bin").exists() || candidate.join("test.bin").exists() {
            return Ok((candidate, Layout::Cifar100));
        }
    }
    Err(DataError::NotADataset {
        dir: dir.to_path_buf(),
    })
}

/// Resolves `data` — an existing directory, or a dataset name looked up under `data_dir` —
/// to a dataset directory. `shapes10` is generated there on first use.
pub fn locate(data: &str, data_dir: &Path) -> Result<PathBuf> {
    let path = Path::new(data);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if data.contains(std::path::MAIN_SEPARATOR) || data.starts_with('.') {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            what: "a dataset directory".into(),
        });
    }
    let dir = data_dir.join(data);
    if dir.is_dir() {
        return Ok(dir);
    }
    let unknown = |hint: String| DataError::Unknown {
        name: data.to_string(),
        dir: data_dir.to_path_buf(),
        hint,
    };
    match data {
        synth::NAME => match synth::generate(&dir, &synth::SynthConfig::default()) {
            Ok(()) => Ok(dir),
            // Another process (workers share the data directory) generated it meanwhile;
            // generation is deterministic, so theirs is the same.
            Err(_) if dir.is_dir() => Ok(dir),
            Err(e) => Err(e),
        },
        "cifar10" | "cifar100" => Err(unknown(format!(
            "download it with `stepwise data fetch {data} --out {}`",
            dir.display()
        ))),
        _ => Err(unknown(format!(
            "import it with `stepwise data import --from IMAGE_FOLDERS --out {}`",
            dir.display()
        ))),
    }
}

/// Opens the dataset a run was trained on: `name` resolved as [`locate`] does, and, when
/// `trained_on` is known and that is other data, the datasets under `data_dir` named as
/// `trained_on` is. A run records its dataset's own name, which need not be its
/// directory's (`data synth --out data/tiny10` makes a `shapes10`, CIFAR-10 may be fetched
/// into `data/cifar-10`); looking only by name would open other data, or generate a
/// default `shapes10` for a model that never saw it. Fails with
/// [`DataError::NotTrainedOn`] when no dataset matches.
pub fn open_trained_on(
    name: &str,
    trained_on: Option<&DatasetIdentity>,
    data_dir: &Path,
    labels: LabelKind,
) -> Result<Dataset> {
    let Some(expected) = trained_on else {
        return Dataset::open(&locate(name, data_dir)?, labels);
    };
    let by_name = [Path::new(name).to_path_buf(), data_dir.join(name)]
        .into_iter()
        .find(|dir| dir.is_dir());
    let mut found = None;
    if let Some(dir) = &by_name {
        let dataset = Dataset::open(dir, labels)?;
        if dataset.identity == *expected {
            return Ok(dataset);
        }
        found = Some((dir.clone(), Box::new(dataset.identity)));
    }
    if let Some(dataset) = named_in(data_dir, &expected.name, by_name.as_deref())
        .into_iter()
        .filter_map(|dir| Dataset::open(&dir, labels).ok())
        .find(|d| d.identity == *expected)
    {
        return Ok(dataset);
    }
    if by_name.is_none() {
        // Nothing under the name yet: `shapes10` is generated, others get locate's hint.
        let dir = locate(name, data_dir)?;
        let dataset = Dataset::open(&dir, labels)?;
        if dataset.identity == *expected {
            return Ok(dataset);
        }
        found = Some((dir, Box::new(dataset.identity)));
    }
    Err(DataError::NotTrainedOn {
        expected: Box::new(expected.clone()),
        dir: data_dir.to_path_buf(),
        found,
    })
}

/// The dataset directories directly under `data_dir` whose dataset is named `name` (by
/// its manifest, or as an official release), in path order, `skip` left out.
fn named_in(data_dir: &Path, name: &str, skip: Option<&Path>) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return vec![];
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|dir| Some(dir.as_path()) != skip)
        .filter(|dir| inspect(dir).is_ok_and(|(_, _, own)| own == name))
        .collect();
    dirs.sort();
    dirs
}
