//! Datasets submissions may name: the built-in names and whatever the data directory holds.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use domain::service::DatasetView;
use domain::{DataSpec, ExperimentSpec, FieldError, LabelKind, RunSpec, SpecError};
use std::path::Path;

/// Names workers can always resolve: `shapes10` is generated on first use, the CIFAR sets
/// once fetched (`stepwise data fetch`).
const BUILT_IN: [(&str, u32); 3] = [("shapes10", 10), ("cifar10", 10), ("cifar100", 100)];

#[utoipa::path(get, path = "/v1/datasets", tag = "datasets",
    responses((status = 200, body = Vec<DatasetView>)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<DatasetView>>, ApiError> {
    Ok(Json(available(&state).await?))
}

/// The built-in names, and every dataset the data directory holds.
pub async fn available(state: &AppState) -> Result<Vec<DatasetView>, ApiError> {
    let dir = state.config.data_dir.clone();
    let names = tokio::task::spawn_blocking(move || present(&dir))
        .await
        .map_err(ApiError::internal)?;
    let mut out: Vec<DatasetView> = BUILT_IN
        .iter()
        .map(|(name, _)| DatasetView {
            name: name.to_string(),
            present: names.iter().any(|n| n == name),
        })
        .collect();
    for name in names {
        if !out.iter().any(|d| d.name == name) {
            out.push(DatasetView {
                name,
                present: true,
            });
        }
    }
    Ok(out)
}

/// Directory names under the data directory (an unreadable directory lists nothing).
fn present(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Checks that a run's dataset exists and fits its model's class count.
pub async fn check_run(state: &AppState, spec: &RunSpec) -> Result<(), ApiError> {
    check(state, &spec.data, spec.model.classes, "spec.").await
}

/// [`check_run`] for every configuration of an experiment.
pub async fn check_experiment(state: &AppState, spec: &ExperimentSpec) -> Result<(), ApiError> {
    for (i, config) in spec.configs.iter().enumerate() {
        let prefix = format!("spec.configs[{i}].");
        check(state, &spec.data, config.model.classes, &prefix).await?;
    }
    Ok(())
}

/// Checks that a submission's dataset exists and fits the model's class count.
async fn check(
    state: &AppState,
    data: &DataSpec,
    classes: u32,
    prefix: &str,
) -> Result<(), ApiError> {
    let field = |name: &str, message: String| {
        ApiError::invalid(SpecError(vec![FieldError {
            field: format!("{prefix}{name}"),
            message,
        }]))
    };
    if let Some((_, n)) = BUILT_IN.iter().find(|(name, _)| *name == data.dataset) {
        let expected = match (data.dataset.as_str(), data.labels) {
            ("cifar100", LabelKind::Coarse) => 20,
            _ => *n,
        };
        if classes != expected {
            return Err(field(
                "model.classes",
                format!("{classes}, but {} has {expected} classes", data.dataset),
            ));
        }
        return Ok(());
    }
    let dir = state.config.data_dir.join(&data.dataset);
    if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
        return Err(field(
            "data.dataset",
            format!(
                "unknown dataset {:?}; GET /v1/datasets lists those available",
                data.dataset
            ),
        ));
    }
    Ok(())
}
