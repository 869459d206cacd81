//! Dashboard sessions and CSRF tokens.
//!
//! Logging in with the user token (`STEPWISE_API_TOKEN`) starts a session: the cookie
//! holds 32 random bytes (`HttpOnly`, `SameSite=Strict`, `Secure` behind a TLS proxy), the
//! store keeps their SHA-256 with the session's CSRF token and expiry. Every form that
//! changes something carries the CSRF token and is refused without it. Without a user
//! token the API is open (and on loopback): every visitor gets a session without logging
//! in, so forms still carry a token a foreign page cannot read.

use super::pages::{render, LoginPage};
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::AppState;
use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const COOKIE: &str = "stepwise_session";

/// The session of a dashboard request (a request extension set by [`require`]).
#[derive(Clone, Debug)]
pub struct Session {
    pub csrf: String,
    /// Whether logging in is needed at all (a user token is configured): shows "log out".
    pub login: bool,
}

fn random_hex() -> String {
    // `rand::random` draws from the thread-local ChaCha generator seeded by the OS: a CSPRNG.
    hex::encode(rand::random::<[u8; 32]>())
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The session of the request's cookie, if it names a live one.
pub async fn lookup(state: &AppState, jar: &CookieJar) -> ApiResult<Option<Session>> {
    let Some(cookie) = jar.get(COOKIE) else {
        return Ok(None);
    };
    Ok(state
        .store
        .session_csrf(&digest(cookie.value()))
        .await?
        .map(|csrf| Session {
            csrf,
            login: state.config.api_token.is_some(),
        }))
}

/// Whether the request reached a TLS-terminating proxy in front of the API.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// Starts a session; returns its cookie.
async fn start(state: &AppState, headers: &HeaderMap) -> ApiResult<(Cookie<'static>, Session)> {
    let secret = random_hex();
    let csrf = random_hex();
    state
        .store
        .create_session(&digest(&secret), &csrf, state.config.session_ttl)
        .await?;
    let cookie = Cookie::build((COOKIE, secret))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(over_tls(headers))
        .build();
    let session = Session {
        csrf,
        login: state.config.api_token.is_some(),
    };
    Ok((cookie, session))
}

/// Middleware of the dashboard's pages: a live session, or (without a user token) a new
/// one, or a redirect to the login form.
pub async fn require(
    State(state): State<AppState>,
    jar: CookieJar,
    mut req: Request,
    next: Next,
) -> Response {
    match lookup(&state, &jar).await {
        Ok(Some(session)) => {
            req.extensions_mut().insert(session);
            next.run(req).await
        }
        Ok(None) if state.config.api_token.is_none() => match start(&state, req.headers()).await {
            Ok((cookie, session)) => {
                req.extensions_mut().insert(session);
                let response = next.run(req).await;
                (jar.add(cookie), response).into_response()
            }
            Err(e) => e.into_response(),
        },
        Ok(None) => {
            let back = if req.method() == Method::GET {
                req.uri()
                    .path_and_query()
                    .map_or("/".to_string(), |p| p.to_string())
            } else {
                "/".to_string()
            };
            let query = serde_urlencoded::to_string([("next", back)]).unwrap_or_default();
            Redirect::to(&format!("/login?{query}")).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Refuses a form whose CSRF token is not the session's.
pub fn check_csrf(session: &Session, given: &str) -> ApiResult<()> {
    if crate::auth::same(given, &session.csrf) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this form's CSRF token is not this session's: reload the page and try again",
        ))
    }
}

/// Where to go after logging in: a path on this site only.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.into(),
        _ => "/".into(),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_form(
    State(state): State<AppState>,
    Query(q): Query<LoginQuery>,
) -> ApiResult<Response> {
    let next = local_path(q.next.as_deref());
    if state.config.api_token.is_none() {
        return Ok(Redirect::to(&next).into_response());
    }
    Ok(render(&LoginPage { next, error: None })?.into_response())
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> ApiResult<Response> {
    let next = local_path(form.next.as_deref());
    let Some(expected) = state.config.api_token.as_deref() else {
        return Ok(Redirect::to(&next).into_response());
    };
    if !crate::auth::same(&form.token, expected) {
        tracing::warn!("dashboard login with a wrong token");
        let page = render(&LoginPage {
            next,
            error: Some("That is not the API token (STEPWISE_API_TOKEN)."),
        })?;
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    let (cookie, _) = start(&state, &headers).await?;
    Ok((jar.add(cookie), Redirect::to(&next)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    jar: CookieJar,
    axum::Extension(session): axum::Extension<Session>,
    Form(form): Form<CsrfForm>,
) -> ApiResult<Response> {
    check_csrf(&session, &form.csrf)?;
    if let Some(cookie) = jar.get(COOKIE) {
        state.store.delete_session(&digest(cookie.value())).await?;
    }
    let jar = jar.remove(Cookie::build(COOKIE).path("/"));
    let mut response = (jar, Redirect::to("/login")).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/runs/x?y=1")), "/runs/x?y=1");
        for foreign in ["//evil.example", "https://evil.example", "/\\evil", "runs"] {
            assert_eq!(local_path(Some(foreign)), "/", "{foreign}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn secure_cookies_behind_a_tls_proxy() {
        let mut h = HeaderMap::new();
        assert!(!over_tls(&h));
        h.insert("x-forwarded-proto", "HTTPS".parse().unwrap());
        assert!(over_tls(&h));
    }
}
