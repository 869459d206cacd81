//! Checkpoint files: the safetensors bytes, streamed from the checkpoint store.

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::Id;
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

#[utoipa::path(get, path = "/v1/checkpoints/{id}/file", tag = "runs",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "the safetensors file (header x-checksum-sha256)",
        content_type = "application/octet-stream"),
        (status = 404, body = Problem), (status = 410, body = Problem)))]
pub async fn file(State(state): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    let (view, relative) = state.store.checkpoint_file(id).await?;
    if view.removed {
        return Err(ApiError::new(
            axum::http::StatusCode::GONE,
            format!(
                "{} was deleted by the run's retention policy",
                view.file_name
            ),
        ));
    }
    let path = state.config.checkpoint_dir.join(&relative);
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ApiError::new(
                axum::http::StatusCode::GONE,
                format!(
                    "{} is registered but missing from the checkpoint store",
                    view.file_name
                ),
            )
        } else {
            ApiError::internal(format!("{}: {e}", path.display()))
        }
    })?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let disposition =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", view.file_name))
            .map_err(ApiError::internal)?;
    let digest = HeaderValue::from_str(&view.sha256).map_err(ApiError::internal)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CONTENT_LENGTH, HeaderValue::from(view.size)),
            (header::HeaderName::from_static("x-checksum-sha256"), digest),
        ],
        body,
    )
        .into_response())
}
