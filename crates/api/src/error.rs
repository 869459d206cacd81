//! Every error leaves the API here, as RFC 9457 `application/problem+json`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::FieldError;
use serde::Serialize;
use store::StoreError;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem: `type` is `about:blank`, so `title` is the status's phrase.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For invalid input: each bad field by its path (`spec.model.depth`) and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<FieldError>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    pub errors: Vec<FieldError>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            errors: vec![],
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error (logged)")
    }

    /// 422 naming each bad field.
    pub fn invalid(errors: domain::SpecError) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: errors.to_string(),
            errors: errors.0,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::Conflict(_) | StoreError::LeaseLost(_) => StatusCode::CONFLICT,
            StoreError::IdempotencyMismatch(_) | StoreError::Invalid(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            StoreError::Database(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Database(_) | StoreError::Migrate(_) | StoreError::Json(_) => {
                return Self::internal(e)
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<domain::service::JsonError> for ApiError {
    fn from(e: domain::service::JsonError) -> Self {
        match e {
            domain::service::JsonError::Malformed(m) => {
                Self::bad_request(format!("malformed JSON: {m}"))
            }
            domain::service::JsonError::Invalid(errors) => Self::invalid(errors),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: "about:blank",
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let mut response = (self.status, axum::Json(problem)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}
