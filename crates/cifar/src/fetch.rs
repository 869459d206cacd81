//! Download of the official binary releases, verified against the size and MD5 the CIFAR
//! site publishes, unpacked so that nothing half-written is ever left under the final name.

use crate::{DataError, Dataset, Result};
use domain::LabelKind;
use md5::{Digest, Md5};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A downloadable archive and what it must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub url: String,
    pub size: u64,
    /// Lower-case hex MD5 of the archive.
    pub md5: String,
    /// The folder the archive unpacks to.
    pub folder: String,
}

impl Release {
    pub fn cifar10() -> Self {
        Self {
            name: "cifar10".into(),
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz".into(),
            size: 170_052_171,
            md5: "c32a1d4ab5d03f1284b67883e8d87530".into(),
            folder: "cifar-10-batches-bin".into(),
        }
    }

    pub fn cifar100() -> Self {
        Self {
            name: "cifar100".into(),
            url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz".into(),
            size: 168_513_733,
            md5: "03b5dce01913d631647c71ecec9e9cb8".into(),
            folder: "cifar-100-binary".into(),
        }
    }

    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "cifar10" => Some(Self::cifar10()),
            "cifar100" => Some(Self::cifar100()),
            _ => None,
        }
    }
}

/// Downloads, verifies and unpacks `release` into `out/<folder>`; returns that folder.
/// An already complete dataset there is kept as it is. `progress(bytes, total)` is called
/// as the download advances.
pub fn fetch(release: &Release, out: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<PathBuf> {
    let target = out.join(&release.folder);
    if target.exists() {
        Dataset::open(&target, LabelKind::Fine).map_err(|e| DataError::Malformed {
            path: target.clone(),
            reason: format!(
                "exists but is not a complete dataset ({e}); remove it and fetch again"
            ),
        })?;
        return Ok(target);
    }
    fs::create_dir_all(out).map_err(DataError::io(out))?;
    let archive = out.join(format!(".{}.download.tmp", release.name));
    let unpacked = out.join(format!(".{}.unpack.tmp", release.name));
    let result = download(release, &archive, progress)
        .and_then(|()| unpack(&archive, &unpacked, release))
        .and_then(|()| {
            let from = unpacked.join(&release.folder);
            fs::rename(&from, &target).map_err(DataError::io(&target))
        });
    let _ = fs::remove_file(&archive);
    let _ = fs::remove_dir_all(&unpacked);
    result.map(|()| target)
}

fn download(release: &Release, to: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let fail = |reason: String| DataError::Download {
        url: release.url.clone(),
        reason,
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .timeout(None)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut response = client
        .get(&release.url)
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(|e| fail(e.to_string()))?;
    let mut file = BufWriter::new(File::create(to).map_err(DataError::io(to))?);
    let mut md5 = Md5::new();
    let mut done = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = response.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        done += n as u64;
        if done > release.size {
            return Err(fail(format!(
                "more than the expected {} bytes",
                release.size
            )));
        }
        md5.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(DataError::io(to))?;
        progress(done, release.size);
    }
    file.flush().map_err(DataError::io(to))?;
    if done != release.size {
        return Err(fail(format!("got {done} bytes, expected {}", release.size)));
    }
    let digest = hex::encode(md5.finalize());
    if digest != release.md5 {
        return Err(fail(format!(
            "MD5 {digest} does not match the published {}; the download was discarded",
            release.md5
        )));
    }
    Ok(())
}

/// Unpacks into a scratch directory and checks that the expected folder is a readable
/// dataset before anything is moved into place.
fn unpack(archive: &Path, into: &Path, release: &Release) -> Result<()> {
    let _ = fs::remove_dir_all(into);
    fs::create_dir_all(into).map_err(DataError::io(into))?;
    let file = File::open(archive).map_err(DataError::io(archive))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(into)
        .map_err(|e| DataError::Malformed {
            path: archive.to_path_buf(),
            reason: format!("unpacking the archive from {}: {e}", release.url),
        })?;
    let folder = into.join(&release.folder);
    if !folder.is_dir() {
        return Err(DataError::Malformed {
            path: archive.to_path_buf(),
            reason: format!("the archive holds no folder {}", release.folder),
        });
    }
    Dataset::open(&folder, LabelKind::Fine)?;
    Ok(())
}
