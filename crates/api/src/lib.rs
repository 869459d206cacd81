//! `stepwise-api`: the REST API on Postgres. [`app`] builds the router (users' `/v1`
//! routes behind the user token, `/v1/worker` behind the worker token, open ops routes,
//! OpenAPI and Swagger UI, the HTML [`dashboard`] at `/`); [`serve`] runs it with the lease reaper and a graceful
//! shutdown. Handlers live in [`routes`], one module per resource.

pub mod auth;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod extract;
mod openapi;
pub mod routes;
mod state;
pub mod telemetry;

pub use config::Config;
pub use openapi::ApiDoc;
pub use state::AppState;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{middleware, Router};
use error::ApiError;
use routes::{
    analyses, blocks, checkpoints, datasets, experiments, figures, import, ops, runs, worker,
    workers,
};
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

/// The whole API.
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    let users = Router::new()
        .route("/v1/runs", post(runs::submit).get(runs::list))
        .route("/v1/runs/{id}", get(runs::get).delete(runs::delete))
        .route("/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/v1/runs/{id}/retry", post(runs::retry))
        .route("/v1/runs/{id}/metrics", get(runs::metrics))
        .route("/v1/runs/{id}/logs", get(runs::logs))
        .route("/v1/runs/{id}/attempts", get(runs::attempts))
        .route("/v1/runs/{id}/checkpoints", get(runs::checkpoints))
        .route(
            "/v1/runs/{id}/analyses",
            post(analyses::request).get(analyses::of_run),
        )
        .route("/v1/runs/{id}/figures", get(figures::run_list))
        .route("/v1/runs/{id}/figures/{name}", get(figures::run_figure))
        .route("/v1/checkpoints/{id}/file", get(checkpoints::file))
        .route("/v1/analyses/{id}", get(analyses::get))
        .route(
            "/v1/experiments",
            post(experiments::submit).get(experiments::list),
        )
        .route(
            "/v1/experiments/{id}",
            get(experiments::get).delete(experiments::delete),
        )
        .route("/v1/experiments/{id}/claims", get(experiments::claims))
        .route("/v1/experiments/{id}/report.md", get(experiments::report))
        .route("/v1/experiments/{id}/blocks", get(blocks::of_experiment))
        .route("/v1/experiments/{id}/cancel", post(experiments::cancel))
        .route("/v1/experiments/{id}/retry", post(experiments::retry))
        .route(
            "/v1/experiments/{id}/figures",
            get(figures::experiment_list),
        )
        .route(
            "/v1/experiments/{id}/figures/{name}",
            get(figures::experiment_figure),
        )
        .route("/v1/figures", get(figures::runs_list))
        .route("/v1/figures/{file}", get(figures::runs_figure))
        .route("/v1/blocks", get(blocks::of_runs))
        .route("/v1/datasets", get(datasets::list))
        .route("/v1/workers", get(workers::list))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_user,
        ));
    // Weights are uploaded under limits of their own: larger, and longer to arrive.
    let uploads = Router::new()
        .route("/v1/runs/import", post(import::import))
        .route("/v1/experiments/import", post(import::import_experiment))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_user,
        ))
        .merge(dashboard::submission(state.clone()))
        .layer(DefaultBodyLimit::max(config.max_upload_bytes))
        .layer(timeout(config.upload_timeout));
    let workers = Router::new()
        .route("/v1/worker/claim", post(worker::claim))
        .route("/v1/worker/jobs/{id}/heartbeat", post(worker::heartbeat))
        .route("/v1/worker/jobs/{id}/events", post(worker::events))
        .route(
            "/v1/worker/jobs/{id}/checkpoints",
            post(worker::register_checkpoint),
        )
        .route("/v1/worker/jobs/{id}/complete", post(worker::complete))
        .route("/v1/worker/jobs/{id}/fail", post(worker::fail))
        .route("/v1/worker/jobs/{id}/refuse", post(worker::refuse))
        .route("/v1/worker/jobs/{id}/release", post(worker::release))
        // Analysis results of a deep network run to a few MB.
        .layer(DefaultBodyLimit::max(
            config.max_body_bytes.saturating_mul(64),
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_worker,
        ));
    let ops = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics));
    Router::new()
        .merge(users)
        .merge(workers)
        .merge(ops)
        .merge(dashboard::routes(state.clone()))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .layer(timeout(config.request_timeout))
        .merge(uploads)
        .fallback(|| async { ApiError::not_found("no such endpoint (see /docs)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            telemetry::track,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Answers 408 to a request not done within `limit`.
fn timeout(limit: Duration) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit)
}

/// Connects, migrates, and serves until SIGTERM or Ctrl-C, reaping expired leases
/// meanwhile.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let store = store::Store::connect_lazy(&config.database_url, 32)
        .context("DATABASE_URL is not a usable Postgres URL")?;
    // The database may start after the API (compose, Kubernetes): wait for it a while.
    let mut waited = 0;
    loop {
        match store.migrate().await {
            Ok(()) => break,
            Err(e) if waited < 60 => {
                tracing::warn!("database not ready ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                waited += 1;
            }
            Err(e) => return Err(e).context("applying migrations"),
        }
    }
    let bind = config.effective_bind();
    if config.is_open() {
        let open: Vec<&str> = [
            config
                .api_token
                .is_none()
                .then_some("users (STEPWISE_API_TOKEN)"),
            config
                .worker_token
                .is_none()
                .then_some("workers (STEPWISE_WORKER_TOKEN)"),
        ]
        .into_iter()
        .flatten()
        .collect();
        tracing::warn!(
            "no token for {}: serving on loopback only ({bind}, asked {})",
            open.join(" and "),
            config.bind
        );
    }
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    tracing::info!(
        "stepwise-api listening on http://{}",
        listener.local_addr()?
    );
    let reaper = tokio::spawn(reap(store.clone(), config.reaper_interval));
    let (swept, checkpoints) = (store.clone(), config.checkpoint_dir.clone());
    tokio::spawn(async move {
        match import::sweep_uploads(&swept, &checkpoints).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} upload(s) left by requests that died"),
            Err(e) => tracing::warn!("sweeping uploads: {e}"),
        }
    });
    let state = AppState::new(store, config);
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    reaper.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Requeues jobs whose lease expired, and fails jobs stranded waiting for a larger worker
/// that is gone, every `interval`.
async fn reap(store: store::Store, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        match store.reap_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("reaped {n} job(s) with expired leases"),
            Err(e) => tracing::warn!("reaper: {e}"),
        }
        match store.fail_stranded().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!("failed {n} job(s) waiting for a larger worker that is gone"),
            Err(e) => tracing::warn!("reaper: {e}"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
