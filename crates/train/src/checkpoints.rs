//! Checkpoint files of one run directory: naming, writing and the retention policy.

use crate::state::{TrainState, META_CODE_VERSION, META_METRICS, META_SPEC, META_TRAIN_STATE};
use crate::{Result, Sgd, TrainError};
use domain::{CheckpointPolicy, MetricRecord, RunSpec};
use resnet::{Checkpoint, ResNet, WrittenFile};
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

/// The checkpoints in `dir` (none where it does not exist), as (epoch, batch, file name),
/// oldest first.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u32, u32, String)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(TrainError::Io {
                path: dir.to_path_buf(),
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

/// The checkpoints in `dir` as candidates to resume from ([`newest_intact`]), newest
/// first; unregistered, so each is checked by its tensors' own sha256.
pub fn resume_candidates(dir: &Path) -> Result<Vec<ResumeCandidate>> {
    Ok(list_checkpoints(dir)?
        .into_iter()
        .rev()
        .map(|(_, _, name)| ResumeCandidate {
            path: dir.join(name),
            sha256: None,
        })
        .collect())
}

/// The checkpoint directory of one run (or one attempt of it).
pub struct CheckpointStore {
    dir: PathBuf,
    policy: CheckpointPolicy,
    epochs: u32,
    /// Epoch-boundary checkpoints always written and never pruned: the policy's
    /// `keep_epochs` and those added by [`Self::keep_epochs`].
    kept: Vec<u32>,
}

impl CheckpointStore {
    pub fn new(dir: impl Into<PathBuf>, policy: CheckpointPolicy, epochs: u32) -> Self {
        Self {
            dir: dir.into(),
            kept: policy.keep_epochs.clone(),
            policy,
            epochs,
        }
    }

    /// Also writes, and never prunes, the epoch-boundary checkpoints after these epochs.
    pub fn keep_epochs(&mut self, epochs: &[u32]) {
        self.kept.extend_from_slice(epochs);
    }

    /// Whether the checkpoint after `epoch` is one the policy's list or [`Self::keep_epochs`]
    /// keeps.
    fn keeps(&self, epoch: u32) -> bool {
        self.kept.contains(&epoch)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a checkpoint is written after `epoch` completed epochs (0: the initial
    /// weights): the final one, the policy's periodic ones, and the kept ones whatever the
    /// interval (the policy's `keep_epochs` and [`Self::keep_epochs`]'s, which an analysis
    /// plan waits for).
    pub fn due(&self, epoch: u32) -> bool {
        epoch == self.epochs
            || self.keeps(epoch)
            || (epoch > 0 && epoch.is_multiple_of(self.policy.every_epochs))
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
    /// [`Self::keep_epochs`] or by `also` (epochs kept for now, asked only when something
    /// else would go: it may ask a service; its error deletes nothing), and the final one.
    pub fn prune(&self, also: impl FnOnce() -> Result<Vec<u32>>) -> Result<Vec<String>> {
        if self.policy.keep_last == 0 {
            return Ok(vec![]);
        }
        let all = list_checkpoints(&self.dir)?;
        let newest = all.len().saturating_sub(self.policy.keep_last as usize);
        let candidates: Vec<(u32, u32, String)> = all
            .into_iter()
            .enumerate()
            .filter(|&(i, (epoch, batch, _))| {
                let boundary = batch == 0;
                let every = self.policy.keep_every;
                let keep = i >= newest
                    || (boundary
                        && (epoch == self.epochs
                            || self.keeps(epoch)
                            || (every > 0 && epoch.is_multiple_of(every))));
                !keep
            })
            .map(|(_, checkpoint)| checkpoint)
            .collect();
        if candidates.is_empty() {
            return Ok(vec![]);
        }
        let also = also()?;
        let mut removed = vec![];
        for (epoch, batch, name) in candidates {
            if batch == 0 && also.contains(&epoch) {
                continue;
            }
            let path = self.dir.join(&name);
            std::fs::remove_file(&path).map_err(|source| TrainError::Io { path, source })?;
            removed.push(name);
        }
        Ok(removed)
    }
}

/// A checkpoint a run may resume from: its file and, where the API registered it, the
/// file's sha256.
#[derive(Clone, Debug)]
pub struct ResumeCandidate {
    pub path: PathBuf,
    pub sha256: Option<String>,
}

/// Where a run resumes ([`newest_intact`]): a checkpoint, or none to start from the
/// beginning, and the newer checkpoints passed over with why.
pub struct ResumePoint {
    pub checkpoint: Option<Checkpoint>,
    pub passed_over: Vec<(PathBuf, resnet::Error)>,
}

impl ResumePoint {
    /// What the run's log says of the files passed over and of starting over.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .passed_over
            .iter()
            .map(|(_, e)| format!("passed over for resuming: {e}"))
            .collect();
        if self.checkpoint.is_none() && !out.is_empty() {
            out.push("no checkpoint reads intact: training from the start".into());
        }
        out
    }

    /// Renames the damaged files passed over to `NAME.damaged`, out of the checkpoint
    /// listing, so that the run's own directory shows only what it resumes from (and the
    /// retention policy does not count them as the newest); returns the new paths. For a
    /// run directory of its own: a trainer never touches an earlier attempt's files.
    pub fn set_aside_damaged(&self) -> Result<Vec<PathBuf>> {
        let mut moved = vec![];
        let damaged = self
            .passed_over
            .iter()
            .filter(|(_, e)| matches!(e, resnet::Error::BadCheckpoint { .. }));
        for (path, _) in damaged {
            let mut aside = path.clone().into_os_string();
            aside.push(".damaged");
            let aside = PathBuf::from(aside);
            std::fs::rename(path, &aside).map_err(|source| TrainError::Io {
                path: path.clone(),
                source,
            })?;
            moved.push(aside);
        }
        Ok(moved)
    }
}

/// Where a run resumes: the newest of `candidates` (newest first) that reads intact.
/// Exact resume makes training on from an earlier checkpoint give the same run as from a
/// later one, so a damaged or missing file costs only the time to retrain from there. No
/// checkpoint when every file that is there is damaged: the run starts over, which again
/// gives the same run. When none of the files is there, the store itself is more likely
/// missing (unmounted) than every file lost, so that is an error, as is any other failure
/// to read the store.
pub fn newest_intact(candidates: &[ResumeCandidate]) -> Result<ResumePoint> {
    let mut passed_over = vec![];
    for candidate in candidates {
        let read = match &candidate.sha256 {
            Some(sha256) => resnet::checkpoint::read_registered(&candidate.path, sha256),
            None => resnet::checkpoint::read(&candidate.path),
        };
        match read {
            Ok(checkpoint) => {
                return Ok(ResumePoint {
                    checkpoint: Some(checkpoint),
                    passed_over,
                })
            }
            Err(e) if e.is_unusable_checkpoint() => passed_over.push((candidate.path.clone(), e)),
            Err(e) => return Err(e.into()),
        }
    }
    let missing = |(_, e): &(PathBuf, resnet::Error)| matches!(e, resnet::Error::Io { .. });
    if !passed_over.is_empty() && passed_over.iter().all(missing) {
        return Err(passed_over.swap_remove(0).1.into());
    }
    Ok(ResumePoint {
        checkpoint: None,
        passed_over,
    })
}

/// JSON of a metadata value (our types serialise infallibly).
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("metadata serialises to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

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
                keep_epochs: vec![],
            },
            10,
        );
        for (e, b) in [(1, 0), (2, 0), (2, 7), (3, 0), (4, 0), (5, 0), (6, 0)] {
            std::fs::write(dir.path().join(checkpoint_name(e, b)), b"x").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let mut store = store;
        store.keep_epochs(&[3]);
        // Epoch 2's boundary checkpoint kept for now as well (an analysis waits for it).
        let removed = store.prune(|| Ok(vec![2])).unwrap();
        assert_eq!(
            removed,
            [
                "epoch-0001.safetensors",
                "epoch-0002-batch-00007.safetensors",
            ]
        );
        let left = || -> Vec<_> {
            list_checkpoints(dir.path())
                .unwrap()
                .into_iter()
                .map(|(e, b, _)| (e, b))
                .collect()
        };
        assert_eq!(left(), [(2, 0), (3, 0), (4, 0), (5, 0), (6, 0)]);
        // Unless the keep list cannot be had (a worker that lost its job): nothing goes.
        let lost = || Err(TrainError::Sink("the lease is gone".into()));
        assert!(store.prune(lost).is_err());
        assert_eq!(left(), [(2, 0), (3, 0), (4, 0), (5, 0), (6, 0)]);
        // Once it is analysed, it goes.
        assert_eq!(
            store.prune(|| Ok(vec![])).unwrap(),
            ["epoch-0002.safetensors"]
        );
        assert_eq!(left(), [(3, 0), (4, 0), (5, 0), (6, 0)]);
        // Nothing else would go: the epochs kept for now are not asked for.
        let asked = std::cell::Cell::new(false);
        let removed = store.prune(|| {
            asked.set(true);
            Ok(vec![])
        });
        assert!(removed.unwrap().is_empty() && !asked.get());
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn kept_epochs_are_written_whatever_the_interval() {
        let policy = CheckpointPolicy {
            every_epochs: 5,
            ..CheckpointPolicy::default()
        };
        let due = |store: &CheckpointStore| (0..=12).filter(|&e| store.due(e)).collect::<Vec<_>>();
        let mut store = CheckpointStore::new("unused", policy.clone(), 12);
        assert_eq!(due(&store), [5, 10, 12]);
        store.keep_epochs(&[0, 3]);
        assert_eq!(due(&store), [0, 3, 5, 10, 12]);
        // The spec's own list, and an analysis plan's beside it.
        let policy = CheckpointPolicy {
            keep_epochs: vec![7],
            ..policy
        };
        let mut store = CheckpointStore::new("unused", policy, 12);
        assert_eq!(due(&store), [5, 7, 10, 12]);
        store.keep_epochs(&[0]);
        assert_eq!(due(&store), [0, 5, 7, 10, 12]);
    }

    /// Checkpoints `epoch-0001` … `epoch-0003` in `dir`, each registered with its sha256.
    fn three(dir: &Path) -> Vec<ResumeCandidate> {
        let mut out: Vec<ResumeCandidate> = (1..=3)
            .map(|epoch| {
                let t = Tensor::full(epoch as f32, 4, &Device::Cpu).unwrap();
                let path = dir.join(checkpoint_name(epoch, 0));
                let file =
                    resnet::checkpoint::write(&path, &[("w".into(), t)], HashMap::new()).unwrap();
                ResumeCandidate {
                    path,
                    sha256: Some(file.sha256),
                }
            })
            .collect();
        out.reverse();
        out
    }

    fn epoch_of(checkpoint: &Checkpoint) -> f32 {
        checkpoint.tensors["w"].to_vec1::<f32>().unwrap()[0]
    }

    /// Flips one byte of the tensor data at the end of the file.
    fn damage(path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn the_newest_intact_checkpoint_serves_and_damaged_or_missing_ones_are_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let candidates = three(dir.path());
        let resume = newest_intact(&candidates).unwrap();
        assert_eq!(epoch_of(resume.checkpoint.as_ref().unwrap()), 3.0);
        assert!(resume.warnings().is_empty());

        damage(&candidates[0].path);
        std::fs::remove_file(&candidates[1].path).unwrap();
        let resume = newest_intact(&candidates).unwrap();
        assert_eq!(epoch_of(resume.checkpoint.as_ref().unwrap()), 1.0);
        let why = resume.warnings();
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(
            why[0].contains("epoch-0003") && why[0].contains("damaged"),
            "{why:?}"
        );
        assert!(
            why[1].contains("epoch-0002") && why[1].contains("No such file"),
            "{why:?}"
        );
    }

    #[test]
    fn a_file_other_than_the_registered_one_is_passed_over_though_it_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut candidates = three(dir.path());
        candidates[0].sha256 = candidates[1].sha256.clone();
        let resume = newest_intact(&candidates).unwrap();
        assert_eq!(epoch_of(resume.checkpoint.as_ref().unwrap()), 2.0);
        let why = resume.warnings();
        assert!(why[0].contains("registered"), "{why:?}");
        // Unregistered (a local run directory): its tensors' own digest is the check.
        let unregistered: Vec<ResumeCandidate> = candidates
            .into_iter()
            .map(|c| ResumeCandidate { sha256: None, ..c })
            .collect();
        let resume = newest_intact(&unregistered).unwrap();
        assert_eq!(epoch_of(resume.checkpoint.as_ref().unwrap()), 3.0);
    }

    #[test]
    fn every_file_damaged_starts_over_and_every_file_missing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let candidates = three(dir.path());
        damage(&candidates[0].path);
        damage(&candidates[1].path);
        std::fs::remove_file(&candidates[2].path).unwrap();
        let resume = newest_intact(&candidates).unwrap();
        assert!(resume.checkpoint.is_none());
        let why = resume.warnings();
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[3].contains("training from the start"), "{why:?}");
        // Set aside, the damaged files leave the listing; the missing one is skipped.
        let moved = resume.set_aside_damaged().unwrap();
        assert_eq!(moved.len(), 2);
        assert!(moved[0].ends_with("epoch-0003.safetensors.damaged") && moved[0].exists());
        assert!(list_checkpoints(dir.path()).unwrap().is_empty());
        // None there at all: the store is more likely unmounted than every file lost.
        let Err(err) = newest_intact(&candidates) else {
            panic!("no file there, and no error");
        };
        assert!(matches!(&err, TrainError::Model(e) if e.is_io()), "{err}");
        let nothing = newest_intact(&[]).unwrap();
        assert!(nothing.checkpoint.is_none() && nothing.warnings().is_empty());
    }

    #[test]
    fn a_store_that_fails_otherwise_is_an_error_not_a_reason_to_look_further() {
        let dir = tempfile::tempdir().unwrap();
        let mut candidates = three(dir.path());
        // A directory where the newest file should be: reading it fails, not with NotFound.
        candidates[0].path = dir.path().to_path_buf();
        let Err(err) = newest_intact(&candidates) else {
            panic!("a directory read as a checkpoint");
        };
        assert!(matches!(&err, TrainError::Model(e) if e.is_io()), "{err}");
    }
}
