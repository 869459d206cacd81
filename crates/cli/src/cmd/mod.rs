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

/// The data a trained model is applied to: its own dataset unless `data` names another,
/// which must have as many classes. Found by name, the dataset must be the one the model
/// was trained on (same fingerprint); given explicitly, a different one is allowed, said
/// on stderr and returned.
pub fn data_for(
    spec: &domain::RunSpec,
    data: Option<&str>,
    data_dir: &std::path::Path,
) -> anyhow::Result<(cifar::Dataset, Option<domain::DatasetIdentity>)> {
    let dataset = open_dataset(
        data.unwrap_or(&spec.data.dataset),
        data_dir,
        spec.data.labels,
    )?;
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
        anyhow::ensure!(
            data.is_some(),
            "the model was trained on {} ({}), but {} in {} is {}; pass --data with the \
             training data's directory (or another dataset on purpose)",
            t.name,
            t.fingerprint,
            spec.data.dataset,
            data_dir.display(),
            dataset.identity.fingerprint
        );
        eprintln!(
            "note: using {} ({}); the model was trained on {} ({})",
            dataset.identity.name, dataset.identity.fingerprint, t.name, t.fingerprint
        );
    }
    Ok((dataset, trained_on))
}
