//! `stepwise checkpoint`: a run's checkpoints on the API — list them, download one.

use super::{json, run_id, Api};
use crate::cmd::print_text;
use anyhow::{anyhow, Result};
use domain::service::CheckpointView;
use std::io::Seek;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn list(api: &Api, run: &str, as_json: bool) -> Result<ExitCode> {
    let client = api.client()?;
    let checkpoints = client.checkpoints(run_id(&client, run)?)?;
    if as_json {
        return json(&checkpoints);
    }
    let row = |id: &str, epoch: &str, batch: &str, size: &str, file: &str| {
        format!("{id:<36}  {epoch:>5} {batch:>6} {size:>10}  {file}")
    };
    let mut lines = vec![row("id", "epoch", "batch", "MB", "file")];
    for c in &checkpoints {
        let file = if c.removed {
            format!("{} (removed by the retention policy)", c.file_name)
        } else {
            c.file_name.clone()
        };
        lines.push(row(
            &c.id.to_string(),
            &c.epoch.to_string(),
            &c.batch.to_string(),
            &format!("{:.2}", c.size as f64 / 1e6),
            &file,
        ));
    }
    print_text(&lines.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// Streams the checkpoint into a temp file beside `out`, checks its sha256 against the
/// registered one and only then renames it into place: a failed or corrupted download
/// leaves nothing behind.
pub fn download(
    api: &Api,
    run: &str,
    epoch: Option<u32>,
    out: Option<PathBuf>,
) -> Result<ExitCode> {
    let client = api.client()?;
    let run = run_id(&client, run)?;
    let checkpoints = client.checkpoints(run)?;
    let chosen =
        epoch_checkpoint(&checkpoints, epoch).map_err(|why| anyhow!("run {run}: {why}"))?;
    let path = out.unwrap_or_else(|| PathBuf::from(&chosen.file_name));
    resnet::checkpoint::write_atomic_with(&path, |file| {
        client
            .checkpoint_file(chosen.id, file)
            .map_err(std::io::Error::other)?;
        file.rewind()?;
        let digest = resnet::checkpoint::sha256_of(&mut *file)?;
        if digest != chosen.sha256 {
            return Err(std::io::Error::other(format!(
                "the download's sha256 {digest} is not the registered {}",
                chosen.sha256
            )));
        }
        Ok(())
    })?;
    print_text(&format!(
        "{} (epoch {}, {} bytes, sha256 {})",
        path.display(),
        chosen.epoch,
        chosen.size,
        chosen.sha256
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// A run's checkpoints written at an epoch's end and not removed by its retention policy.
pub(super) fn epoch_ends_on_disk(
    checkpoints: &[CheckpointView],
) -> impl Iterator<Item = &CheckpointView> {
    checkpoints.iter().filter(|c| c.is_epoch_end_on_disk())
}

/// The checkpoint at the end of `epoch` (default: of the latest epoch) that is still on
/// disk; or why there is none.
fn epoch_checkpoint(
    checkpoints: &[CheckpointView],
    epoch: Option<u32>,
) -> Result<&CheckpointView, String> {
    let asked = |c: &&CheckpointView| epoch.is_none_or(|e| c.epoch == e);
    if let Some(c) = epoch_ends_on_disk(checkpoints)
        .filter(asked)
        .max_by_key(|c| (c.epoch, c.created_at))
    {
        return Ok(c);
    }
    // None is on disk: one listed was removed.
    let removed = checkpoints.iter().any(|c| c.batch == 0 && asked(&c));
    Err(match (epoch, removed) {
        (Some(e), true) => {
            format!("the checkpoint after epoch {e} was removed by the run's retention policy")
        }
        (Some(e), false) => format!("no checkpoint after epoch {e}"),
        (None, _) => "no epoch checkpoint on disk yet".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    fn checkpoint(epoch: u32, batch: u32, removed: bool) -> CheckpointView {
        CheckpointView {
            id: Uuid::new_v4(),
            run_id: Uuid::nil(),
            attempt: 1,
            file_name: format!("epoch-{epoch}-{batch}.safetensors"),
            epoch,
            batch,
            step: 0,
            sha256: String::new(),
            size: 0,
            removed,
            created_at: Utc
                .timestamp_opt(i64::from(epoch * 100 + batch), 0)
                .unwrap(),
        }
    }

    #[test]
    fn the_latest_epoch_checkpoint_on_disk_is_chosen() {
        let all = [
            checkpoint(1, 0, true),
            checkpoint(2, 0, false),
            checkpoint(2, 40, false),
            checkpoint(3, 0, true),
        ];
        assert_eq!(epoch_checkpoint(&all, None).unwrap().epoch, 2);
        assert_eq!(epoch_checkpoint(&all, Some(2)).unwrap().batch, 0);
        let removed = epoch_checkpoint(&all, Some(3)).unwrap_err();
        assert!(removed.contains("retention policy"), "{removed}");
        let missing = epoch_checkpoint(&all, Some(7)).unwrap_err();
        assert_eq!(missing, "no checkpoint after epoch 7");
        let none = epoch_checkpoint(&all[2..3], None).unwrap_err();
        assert!(none.contains("no epoch checkpoint"), "{none}");
    }
}
