//! Bearer tokens: one for users, one for workers, both from the environment. A role whose
//! token is not configured is open (and the server then binds to loopback only).

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

pub async fn require_user(State(state): State<AppState>, req: Request, next: Next) -> Response {
    check(
        state.config.api_token.as_deref(),
        req,
        next,
        "STEPWISE_API_TOKEN",
    )
    .await
}

pub async fn require_worker(State(state): State<AppState>, req: Request, next: Next) -> Response {
    check(
        state.config.worker_token.as_deref(),
        req,
        next,
        "STEPWISE_WORKER_TOKEN",
    )
    .await
}

async fn check(expected: Option<&str>, req: Request, next: Next, which: &str) -> Response {
    let Some(expected) = expected else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if same(token, expected) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("wrong bearer token ({which})"),
        )
        .into_response(),
        None => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("send Authorization: Bearer <token> ({which})"),
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// Compares digests, so the time taken says nothing about how much of a guess matched.
fn same(given: &str, expected: &str) -> bool {
    Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes())
}
