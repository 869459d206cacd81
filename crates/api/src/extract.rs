//! Extractors whose rejections are problem+json: JSON bodies parsed with the failing
//! field named, query strings, ids in paths.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A JSON body, with the SHA-256 of its bytes (for idempotency keys).
pub struct JsonBody<T> {
    pub value: T,
    pub sha256: String,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json") || v.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        let value = domain::service::parse_json(&bytes)?;
        Ok(Self {
            value,
            sha256: hex::encode(Sha256::digest(&bytes)),
        })
    }
}

/// A query string; a bad one is a 400 naming the parameter (`group: unknown variant …`),
/// which axum's own extractor does not.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("").as_bytes();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query));
        serde_path_to_error::deserialize(de)
            .map(Self)
            .map_err(|e| match e.path().to_string() {
                root if root == "." => ApiError::bad_request(e.inner().to_string()),
                field => ApiError::bad_request(format!("{field}: {}", e.inner())),
            })
    }
}

/// The one id in a path (`/v1/runs/{id}`), a UUID.
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_request(e.body_text()))?;
        parse_id(&raw).map(Self)
    }
}

pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        let shown: String = raw.chars().take(80).collect();
        ApiError::bad_request(format!("{shown:?} is not an id (a UUID)"))
    })
}

/// A page cursor (`next_cursor` of an earlier page), if one was given.
pub fn parse_cursor(raw: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    raw.map(|c| {
        Uuid::parse_str(c).map_err(|_| ApiError::bad_request("cursor: not a cursor this API gave"))
    })
    .transpose()
}

/// The most runs named together in `?runs=`.
const MAX_RUNS: usize = 100;

/// `?runs=ID,ID,…`, or `runs` repeated as a form's checkboxes send it: 1 to 100 distinct
/// run ids, in order. Any other parameter is refused.
pub struct RunIds(pub Vec<Uuid>);

impl<S: Send + Sync> FromRequestParts<S> for RunIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
                .map_err(|e| ApiError::bad_request(format!("the query: {e}")))?;
        if let Some((key, _)) = pairs.iter().find(|(k, _)| k != "runs") {
            return Err(ApiError::bad_request(format!(
                "unknown parameter {key:?}: this takes runs"
            )));
        }
        let mut ids: Vec<Uuid> = vec![];
        for (_, value) in &pairs {
            for id in value.split(',').map(str::trim).filter(|id| !id.is_empty()) {
                let id = parse_id(id)?;
                if ids.contains(&id) {
                    return Err(ApiError::bad_request(format!("runs: {id} is listed twice")));
                }
                ids.push(id);
            }
        }
        if ids.is_empty() || ids.len() > MAX_RUNS {
            return Err(ApiError::bad_request(format!(
                "runs: 1 to {MAX_RUNS} run ids, comma-separated"
            )));
        }
        Ok(Self(ids))
    }
}
