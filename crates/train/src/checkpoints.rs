//! Checkpoint files of one run directory: naming, writing and the retention policy.

use crate::state::{TrainState, META_CODE_VERSION, META_METRICS, META_SPEC, META_TRAIN_STATE};
use crate::{Result, Sgd, TrainError};
use domain::{CheckpointPolicy, MetricRecord, RunSpec};
use resnet::{ResNet, WrittenFile};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `epoch-0005.safetensors` after 5 epochs; `epoch-0005-batch-00017.safetensors` when
/// stopped after 17 batches of the sixth.
pub fn checkpoint_name(epoch: u32, batch: u32) -> String {
    if batch == 0 {
        format!("epoch-{epoch:04}.safetensors")
    } else {
        format!("epoch-{epoch:04}-batch-{batch:05}.safetensors")
    }
}

fn parse_name(name: &str) -> Option<(u32, u32)> {
    let stem = name.strip_prefix("epoch-")?.strip_suffix(".safetensors")?;
    match stem.split_once("-batch-") {
        Some((e, b)) => Some((e.parse().ok()?, b.parse().ok()?)),
        None => Some((stem.parse().ok()?, 0)),
    }
}

/// The checkpoint directory of one run (or one attempt of it).
pub struct CheckpointStore {
    dir: PathBuf,
    policy: CheckpointPolicy,
    epochs: u32,
    /// Epoch-boundary checkpoints never pruned.
    kept: Vec<u32>,
}

impl CheckpointStore {
    pub fn new(dir: impl Into<PathBuf>, policy: CheckpointPolicy, epochs: u32) -> Self {
        Self {
            dir: dir.into(),
            policy,
            epochs,
            kept: vec![],
        }
    }

    /// Never prunes the epoch-boundary checkpoints after these epochs.
    pub fn keep_epochs(&mut self, epochs: &[u32]) {
        self.kept = epochs.to_vec();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the policy asks for a checkpoint after `epoch` completed epochs.
    pub fn due(&self, epoch: u32) -> bool {
        epoch == self.epochs || epoch.is_multiple_of(self.policy.every_epochs)
    }

    /// Checkpoints present, as (epoch, batch, file name), oldest first.
    pub fn list(&self) -> Result<Vec<(u32, u32, String)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => {
                return Err(TrainError::Io {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut out: Vec<_> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                parse_name(&name).map(|(ep, b)| (ep, b, name))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Writes the model, optimizer state, spec, train state and metric summary.
    pub fn write(
        &self,
        model: &ResNet,
        optimizer: &Sgd,
        spec: &RunSpec,
        state: &TrainState,
        metrics: &[MetricRecord],
    ) -> Result<(String, WrittenFile)> {
        std::fs::create_dir_all(&self.dir).map_err(|source| TrainError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let name = checkpoint_name(state.epoch, state.batch);
        let mut tensors = model.state_dict()?;
        tensors.extend(optimizer.state_tensors());
        let metadata = HashMap::from([
            (META_SPEC.to_string(), json(spec)),
            (META_TRAIN_STATE.to_string(), json(state)),
            (META_METRICS.to_string(), json(metrics)),
            (
                META_CODE_VERSION.to_string(),
                domain::CODE_VERSION.to_string(),
            ),
        ]);
        let file = resnet::checkpoint::write(&self.dir.join(&name), &tensors, metadata)?;
        Ok((name, file))
    }

    /// Deletes what the policy no longer keeps: beyond the newest `keep_last`, except
    /// epoch-boundary checkpoints at multiples of `keep_every`, those kept by
    /// [`Self::keep_epochs`] and the final one.
    pub fn prune(&self) -> Result<Vec<String>> {
        if self.policy.keep_last == 0 {
            return Ok(vec![]);
        }
        let all = self.list()?;
        let newest = all.len().saturating_sub(self.policy.keep_last as usize);
        let mut removed = vec![];
        for (i, (epoch, batch, name)) in all.into_iter().enumerate() {
            let boundary = batch == 0;
            let keep = i >= newest
                || (boundary && (epoch == self.epochs || self.kept.contains(&epoch)))
                || (boundary
                    && self.policy.keep_every > 0
                    && epoch.is_multiple_of(self.policy.keep_every));
            if !keep {
                let path = self.dir.join(&name);
                std::fs::remove_file(&path).map_err(|source| TrainError::Io { path, source })?;
                removed.push(name);
            }
        }
        Ok(removed)
    }
}

/// JSON of a metadata value (our types serialise infallibly).
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("metadata serialises to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse() {
        assert_eq!(checkpoint_name(5, 0), "epoch-0005.safetensors");
        assert_eq!(
            parse_name("epoch-0005-batch-00017.safetensors"),
            Some((5, 17))
        );
        assert_eq!(parse_name("epoch-0005.safetensors"), Some((5, 0)));
        assert_eq!(parse_name("epoch-x.safetensors"), None);
        assert_eq!(parse_name(".epoch-0005.safetensors.1.tmp"), None);
    }

    #[test]
    fn retention_keeps_newest_multiples_and_final() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(
            dir.path(),
            CheckpointPolicy {
                every_epochs: 1,
                keep_last: 2,
                keep_every: 4,
            },
            10,
        );
        for (e, b) in [(1, 0), (2, 0), (2, 7), (3, 0), (4, 0), (5, 0), (6, 0)] {
            std::fs::write(dir.path().join(checkpoint_name(e, b)), b"x").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let mut store = store;
        store.keep_epochs(&[3]);
        let removed = store.prune().unwrap();
        assert_eq!(
            removed,
            [
                "epoch-0001.safetensors",
                "epoch-0002.safetensors",
                "epoch-0002-batch-00007.safetensors",
            ]
        );
        let left: Vec<_> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|(e, b, _)| (e, b))
            .collect();
        assert_eq!(left, [(3, 0), (4, 0), (5, 0), (6, 0)]);
        assert!(dir.path().join("notes.txt").exists());
    }
}
