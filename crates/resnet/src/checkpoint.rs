//! The checkpoint container: one safetensors file holding named tensors and string metadata
//! (the run spec, dataset identity and train state travel in it as JSON), written
//! crash-safe: temp file, fsync, rename, fsync the directory. The metadata also holds a
//! sha256 of the tensors, checked on every read: safetensors itself checks only that the
//! header and the data's length agree, so damaged weights would otherwise load silently.

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, View};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Metadata key naming the container format; its value is [`FORMAT`].
pub const FORMAT_KEY: &str = "format";
pub const FORMAT: &str = "stepwise-checkpoint/1";
/// Metadata key of `tensors_sha256`'s digest. Files without it (written before it
/// existed) are read unchecked.
pub const TENSORS_SHA256_KEY: &str = "tensors_sha256";

/// A checkpoint read back: tensors on the CPU and the metadata strings.
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

impl Checkpoint {
    /// A metadata entry, or an error naming the file and the missing key.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::BadCheckpoint {
                path: self.path.clone(),
                reason: format!("metadata {key:?} is missing"),
            })
    }

    /// Parses a JSON metadata entry.
    pub fn meta_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        serde_json::from_str(self.meta(key)?).map_err(|e| Error::BadCheckpoint {
            path: self.path.clone(),
            reason: format!("metadata {key:?}: {e}"),
        })
    }
}

/// A file written and made durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

struct HostTensor {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &HostTensor {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn host_tensor(t: &Tensor) -> Result<HostTensor> {
    let flat = t.flatten_all()?.to_device(&Device::Cpu)?;
    fn le<T: Copy, const N: usize>(v: Vec<T>, f: fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }
    let (dtype, data) = match t.dtype() {
        DType::F32 => (StDtype::F32, le(flat.to_vec1::<f32>()?, f32::to_le_bytes)),
        DType::F64 => (StDtype::F64, le(flat.to_vec1::<f64>()?, f64::to_le_bytes)),
        DType::BF16 => (
            StDtype::BF16,
            le(flat.to_vec1::<half::bf16>()?, half::bf16::to_le_bytes),
        ),
        DType::I64 => (StDtype::I64, le(flat.to_vec1::<i64>()?, i64::to_le_bytes)),
        DType::U32 => (StDtype::U32, le(flat.to_vec1::<u32>()?, u32::to_le_bytes)),
        DType::U8 => (StDtype::U8, flat.to_vec1::<u8>()?),
        other => {
            return Err(Error::StateDict(format!(
                "cannot store dtype {other:?} in a checkpoint"
            )))
        }
    };
    Ok(HostTensor {
        dtype,
        shape: t.dims().to_vec(),
        data,
    })
}

/// Serialises tensors and metadata and writes them crash-safe to `path`.
pub fn write(
    path: &Path,
    tensors: &[(String, Tensor)],
    mut metadata: HashMap<String, String>,
) -> Result<WrittenFile> {
    metadata.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
    let host = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), host_tensor(t)?)))
        .collect::<Result<Vec<_>>>()?;
    metadata.insert(
        TENSORS_SHA256_KEY.to_string(),
        tensors_sha256(host.iter().map(|(n, t)| (n.as_str(), t.data.as_slice()))),
    );
    let bytes = safetensors::serialize(host.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
        .map_err(|e| Error::StateDict(format!("serialising: {e}")))?;
    write_atomic(path, &bytes)?;
    Ok(WrittenFile {
        path: path.to_path_buf(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        size: bytes.len() as u64,
    })
}

/// Reads a checkpoint, checking its format; tensors land on the CPU.
pub fn read(path: &Path) -> Result<Checkpoint> {
    parse(path, &fs::read(path).map_err(Error::io(path))?)
}

/// [`read`] of a checkpoint registered with `sha256`, the hex digest of the whole file: a
/// file that hashes otherwise is damaged (or not the one registered), even where its
/// tensors pass their own check.
pub fn read_registered(path: &Path, sha256: &str) -> Result<Checkpoint> {
    let bytes = fs::read(path).map_err(Error::io(path))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != sha256 {
        return Err(Error::BadCheckpoint {
            path: path.to_path_buf(),
            reason: format!(
                "its sha256 is {actual}, not the {sha256} registered: the file is damaged"
            ),
        });
    }
    parse(path, &bytes)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Checkpoint> {
    let bad = |reason: String| Error::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    match metadata.get(FORMAT_KEY) {
        Some(f) if f == FORMAT => {}
        Some(f) => return Err(bad(format!("format {f:?}, expected {FORMAT:?}"))),
        None => return Err(bad("not written by stepwise (no format metadata)".into())),
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    if let Some(recorded) = metadata.get(TENSORS_SHA256_KEY) {
        let views = st.tensors();
        let actual = tensors_sha256(views.iter().map(|(n, v)| (n.as_str(), v.data())));
        if actual != *recorded {
            return Err(bad(format!(
                "its tensors do not match their recorded sha256 ({recorded}, read {actual}): \
                 the file is damaged"
            )));
        }
    }
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            StDtype::F32 => DType::F32,
            StDtype::F64 => DType::F64,
            StDtype::BF16 => DType::BF16,
            StDtype::I64 => DType::I64,
            StDtype::U32 => DType::U32,
            StDtype::U8 => DType::U8,
            other => return Err(bad(format!("tensor {name}: unsupported dtype {other:?}"))),
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)?;
        tensors.insert(name, t);
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        tensors,
        metadata,
    })
}

/// The tensors of a weights file written elsewhere, for `stepwise model import`: a
/// safetensors file (`safetensors.torch.save_file(model.state_dict(), …)`) or what
/// `torch.save` writes (its zip format, read by candle's unpickler, which interprets the
/// pickle in Rust and runs no code from it), told apart by the zip signature. `key` picks
/// the state dict inside a saved dict such as `{"state_dict": …, "epoch": …}`;
/// `strip_prefix` is taken off the names that begin with it (DataParallel's `module.`).
/// Tensors land on the CPU as stored.
pub fn read_weights(
    path: &Path,
    key: Option<&str>,
    strip_prefix: Option<&str>,
) -> Result<HashMap<String, Tensor>> {
    let bad = |reason: String| Error::BadWeights {
        path: path.to_path_buf(),
        reason,
    };
    let mut signature = [0u8; 4];
    let zip = File::open(path)
        .and_then(|mut f| f.read(&mut signature))
        .map_err(Error::io(path))?
        == 4
        && signature == *b"PK\x03\x04";
    let tensors: HashMap<String, Tensor> = if zip {
        candle_core::pickle::read_all_with_key(path, key)
            .map_err(|e| {
                bad(format!(
                    "not a torch.save file of tensors stepwise reads: {e}"
                ))
            })?
            .into_iter()
            .collect()
    } else if key.is_some() {
        return Err(bad(
            "a key applies to torch.save files only, and this is not one (no zip signature)".into(),
        ));
    } else {
        let bytes = fs::read(path).map_err(Error::io(path))?;
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            bad(format!(
                "neither safetensors nor a torch.save file (zip) of a state dict: {e}"
            ))
        })?
    };
    if tensors.is_empty() {
        let hint = match key {
            Some(key) => format!("under the key {key:?}"),
            None => "at the top level (a state dict saved inside a dict needs its key)".into(),
        };
        return Err(bad(format!("no tensors {hint}")));
    }
    Ok(match strip_prefix {
        Some(prefix) => tensors
            .into_iter()
            .map(|(name, t)| match name.strip_prefix(prefix) {
                Some(stripped) => (stripped.to_string(), t),
                None => (name, t),
            })
            .collect(),
        None => tensors,
    })
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the complete new
/// one: temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// [`write_atomic`] of what `fill` writes into the temp file (opened for reading too, so
/// that `fill` can check it); an error from `fill` leaves `path` as it was.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::StateDict(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(Error::io(path))
}

/// Hex sha256 over named tensors' bytes, in name order (each name and byte count before
/// the bytes, so that no two sets of tensors give the same stream).
fn tensors_sha256<'a>(tensors: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_unstable_by_key(|(name, _)| *name);
    let mut hasher = Sha256::new();
    for (name, data) in sorted {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((data.len() as u64).to_le_bytes());
        hasher.update(data);
    }
    hex::encode(hasher.finalize())
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String> {
    let f = File::open(path).map_err(Error::io(path))?;
    sha256_of(f).map_err(Error::io(path))
}

/// Hex sha256 of everything `reader` yields.
pub fn sha256_of(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut reader, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}
