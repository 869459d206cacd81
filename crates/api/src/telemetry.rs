//! Prometheus metrics of the API: requests by route and status, their latency, the jobs by
//! kind and state, how long the queue of each kind has kept its oldest job waiting, and the
//! workers seen lately by job kind and memory (those three read from the database at each
//! scrape).

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub kind: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub kind: String,
    pub memory: String,
}

/// What a scrape reads from the database: (kind, state, count) of jobs, (kind, seconds)
/// the longest-waiting queued job of each kind has waited, and (kind, memory, count) of the
/// workers seen lately.
#[derive(Default)]
pub struct Counts {
    pub jobs: Vec<(String, String, i64)>,
    pub queue_waits: Vec<(String, f64)>,
    pub workers: Vec<(String, String, i64)>,
}

pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    jobs: Family<JobLabels, Gauge>,
    queue_waits: Family<KindLabels, Gauge<f64, AtomicU64>>,
    workers: Family<WorkerLabels, Gauge>,
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stepwise");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        let jobs = Family::<JobLabels, Gauge>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            latency.clone(),
        );
        registry.register("jobs", "Jobs by kind and state", jobs.clone());
        let queue_waits = Family::<KindLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "queue_wait_seconds",
            "Seconds the longest-waiting queued job of each kind has waited (absent: none queued)",
            queue_waits.clone(),
        );
        let workers = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "workers_live",
            format!(
                "Workers seen in the last {} minutes, by the job kind they take and their memory",
                domain::service::WORKER_SEEN_WITHIN.as_secs() / 60
            ),
            workers.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            jobs,
            queue_waits,
            workers,
        }
    }

    /// The exposition text, with the counts given.
    pub fn encode(&self, counts: &Counts) -> String {
        self.jobs.clear();
        for (kind, state, count) in &counts.jobs {
            self.jobs
                .get_or_create(&JobLabels {
                    kind: kind.clone(),
                    state: state.clone(),
                })
                .set(*count);
        }
        self.queue_waits.clear();
        for (kind, seconds) in &counts.queue_waits {
            self.queue_waits
                .get_or_create(&KindLabels { kind: kind.clone() })
                .set(*seconds);
        }
        self.workers.clear();
        for (kind, memory, count) in &counts.workers {
            self.workers
                .get_or_create(&WorkerLabels {
                    kind: kind.clone(),
                    memory: memory.clone(),
                })
                .set(*count);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts and times every request under its route pattern (never the raw path, which
/// would make one series per run id).
pub async fn track(State(state): State<crate::AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let t = &state.telemetry;
    t.latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    t.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
