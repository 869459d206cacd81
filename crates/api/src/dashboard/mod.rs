//! The dashboard at `/`: server-rendered HTML for watching runs and reading their
//! block-wise results in a browser, on the same store and token as the JSON API.
//!
//! Pages are askama templates (`templates/`, compiled in; every value escaped), figures
//! are inlined SVG from the `figures` crate, and `assets/dashboard.js` only refreshes the
//! parts of a page marked `data-live` with server-rendered fragments. No external
//! resource is loaded, so it works offline, under a Content-Security-Policy that allows
//! nothing but this origin's own script and stylesheet. Sessions and CSRF: [`session`].

mod pages;
pub mod session;
mod submit;

use crate::error::{ApiError, PROBLEM_JSON};
use crate::AppState;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pages::Button;

/// The dashboard's routes: pages behind a session, the login form and the assets open.
pub fn routes(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(pages::runs))
        .route("/partials/runs", get(pages::runs_partial))
        .route("/submit", get(submit::page))
        .route("/compare", get(pages::compare))
        .route("/compare/blocks.csv", get(pages::compare_blocks_csv))
        .route("/runs/{id}", get(pages::run))
        .route("/partials/runs/{id}", get(pages::run_partial))
        .route(
            "/runs/{id}/cancel",
            post(|s, e, p, f| Button::CancelRun.press(s, e, p, f)),
        )
        .route(
            "/runs/{id}/retry",
            post(|s, e, p, f| Button::RetryRun.press(s, e, p, f)),
        )
        .route(
            "/runs/{id}/delete",
            get(pages::delete_run).post(|s, e, p, f| Button::DeleteRun.press(s, e, p, f)),
        )
        .route("/runs/{id}/analyses", post(pages::analyse))
        .route("/runs/{id}/metrics.csv", get(pages::metrics_csv))
        .route("/runs/{id}/log.txt", get(pages::log_text))
        .route("/analyses/{id}/records.csv", get(pages::analysis_csv))
        .route("/experiments/{id}", get(pages::experiment))
        .route(
            "/experiments/{id}/cancel",
            post(|s, e, p, f| Button::CancelExperiment.press(s, e, p, f)),
        )
        .route(
            "/experiments/{id}/retry",
            post(|s, e, p, f| Button::RetryExperiment.press(s, e, p, f)),
        )
        .route(
            "/experiments/{id}/delete",
            get(pages::delete_experiment)
                .post(|s, e, p, f| Button::DeleteExperiment.press(s, e, p, f)),
        )
        .route(
            "/experiments/{id}/summary.csv",
            get(pages::experiment_summary_csv),
        )
        .route(
            "/experiments/{id}/blocks.csv",
            get(pages::experiment_blocks_csv),
        )
        .route(
            "/experiments/{id}/claims.csv",
            get(pages::experiment_claims_csv),
        )
        .route("/logout", post(session::logout))
        .route_layer(middleware::from_fn_with_state(state, session::require));
    Router::new()
        .merge(pages)
        .route("/login", get(session::login_form).post(session::login))
        .route("/assets/dashboard.css", get(stylesheet))
        .route("/assets/dashboard.js", get(script))
        .layer(middleware::from_fn(html_errors))
        .layer(middleware::from_fn(security_headers))
}

/// The submission form's POST, apart from the pages: it carries a file, so the caller puts
/// it under the upload limits instead of the request timeout and body limit.
pub fn submission(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/submit", post(submit::submit))
        .route_layer(middleware::from_fn_with_state(state, session::require))
        .layer(middleware::from_fn(html_errors))
        .layer(middleware::from_fn(security_headers))
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/dashboard.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/dashboard.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Only this origin's own script, stylesheet and fetches; inline SVG needs no source. No
/// framing, no foreign form targets, no referrer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Errors of the dashboard's routes come from the same `ApiError` as the API's, or are
/// axum's own rejections of a malformed request (plain text); a browser gets either as a
/// page instead.
async fn html_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let is_problem = content_type
        .as_ref()
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    let is_rejection = (response.status().is_client_error() || response.status().is_server_error())
        && content_type
            .as_ref()
            .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !is_problem && !is_rejection {
        return response;
    }
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let detail = if is_problem {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(String::from))
            .unwrap_or_default()
    } else {
        String::from_utf8_lossy(&body).into_owned()
    };
    let page = pages::ErrorPage {
        status: format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
        detail,
    };
    match pages::render(&page) {
        Ok(html) => (status, html).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A refusal's reasons as a form shows them: each bad field by its path in the spec or
/// settings as written (the API's paths begin with `spec.`, the field of its request body).
fn reasons(refused: ApiError) -> Vec<String> {
    if refused.errors.is_empty() {
        return vec![refused.detail];
    }
    refused
        .errors
        .into_iter()
        .map(|e| {
            let field = e.field.strip_prefix("spec.").unwrap_or(&e.field);
            format!("{field}: {}", e.message)
        })
        .collect()
}
