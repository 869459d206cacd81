pub mod analyze;
pub mod bench;
pub mod data;
pub mod eval;
pub mod figures;
pub mod model;
pub mod remote;
pub mod run;
pub mod selftest;
pub mod train;

/// What `stepwise run` and `analyze` say when a signal stopped them before the end.
pub(crate) const STOPPED: &str = "stopped; run the same command again to continue";

/// Pretty JSON on stdout, for `--json`.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    print_text(&serde_json::to_string_pretty(value)?)
}

/// A line on stdout; a closed pipe (`| head`) is not an error.
pub fn print_text(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A dataset by name (under the data directory) or by path.
pub fn open_dataset(
    data: &str,
    data_dir: &std::path::Path,
    labels: domain::LabelKind,
) -> anyhow::Result<cifar::Dataset> {
    let dir = cifar::locate(data, data_dir)?;
    Ok(cifar::Dataset::open(&dir, labels)?)
}

/// The data a trained model is applied to: the dataset it was trained on (found by its
/// identity under the data directory, see [`cifar::open_trained_on`]) unless `data` names
/// another, which must have as many classes. A different dataset given explicitly is
/// allowed, said on stderr and returned.
pub fn data_for(
    spec: &domain::RunSpec,
    data: Option<&str>,
    data_dir: &std::path::Path,
) -> anyhow::Result<(cifar::Dataset, Option<domain::DatasetIdentity>)> {
    let dataset = match data {
        Some(data) => open_dataset(data, data_dir, spec.data.labels)?,
        None => cifar::open_trained_on(
            &spec.data.dataset,
            spec.data.identity.as_ref(),
            data_dir,
            spec.data.labels,
        )
        .map_err(|e| match e {
            e @ cifar::DataError::NotTrainedOn { .. } => anyhow::anyhow!(
                "{e}; pass --data with the training data's directory (or another dataset on \
                 purpose)"
            ),
            e => e.into(),
        })?,
    };
    anyhow::ensure!(
        dataset.identity.classes == spec.model.classes,
        "{} has {} classes; the model predicts {}",
        dataset.identity.name,
        dataset.identity.classes,
        spec.model.classes
    );
    let trained_on = spec
        .data
        .identity
        .clone()
        .filter(|t| *t != dataset.identity);
    if let Some(t) = &trained_on {
        eprintln!(
            "note: using {} ({}); the model was trained on {} ({})",
            dataset.identity.name, dataset.identity.fingerprint, t.name, t.fingerprint
        );
    }
    Ok((dataset, trained_on))
}
