//! One module per resource; each exposes its handlers, routed in `crate::app`.

pub mod analyses;
pub mod blocks;
pub mod checkpoints;
pub mod datasets;
pub mod experiments;
pub mod figures;
pub mod import;
pub mod ops;
pub mod runs;
pub mod worker;
pub mod workers;

use crate::error::ApiError;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use store::Idempotency;

/// Whether the client asked for CSV (`Accept: text/csv`).
pub fn wants(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(media)
        })
}

/// A body with its content type.
pub fn typed(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// The `Idempotency-Key` of a request, if any, with the body's digest.
pub fn idempotency(
    headers: &HeaderMap,
    body_sha256: &str,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1-255 printable ASCII characters")
        })?;
    Ok(Some(Idempotency {
        key: key.to_string(),
        request_sha256: body_sha256.to_string(),
    }))
}

/// 201 with the new resource's location, or 200 when an idempotent request was replayed.
pub fn created<T: serde::Serialize>(
    submitted: store::Submitted<T>,
    location: impl Fn(&T) -> String,
) -> Response {
    let (status, value) = match submitted {
        store::Submitted::Created(v) => (StatusCode::CREATED, v),
        store::Submitted::Replayed(v) => (StatusCode::OK, v),
    };
    let where_ = location(&value);
    let mut response = (status, axum::Json(value)).into_response();
    if let Ok(v) = HeaderValue::from_str(&where_) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}
