//! Bearer tokens: one for users, one for workers, both from the environment. A role whose
//! token is not configured is open (and the server then binds to loopback only). The
//! dashboard's session cookie stands in for the user token on reads.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use sha2::{Digest, Sha256};

/// The user token, or for reading (GET, HEAD) a dashboard session's cookie, so that the
/// dashboard's download links work. Changes always need the token: a cookie alone never
/// authorises a POST or DELETE here, whatever a foreign page makes the browser send.
pub async fn require_user(
    State(state): State<AppState>,
    jar: CookieJar,
    req: Request,
    next: Next,
) -> Response {
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    let token_set = state.config.api_token.is_some();
    if token_set && reading && !req.headers().contains_key(header::AUTHORIZATION) {
        match crate::dashboard::session::lookup(&state, &jar).await {
            Ok(Some(_)) => return next.run(req).await,
            Ok(None) => {}
            Err(e) => return e.into_response(),
        }
    }
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
pub(crate) fn same(given: &str, expected: &str) -> bool {
    Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes())
}
