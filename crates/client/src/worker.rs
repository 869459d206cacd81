//! What `stepwise-trainer` and `stepwise-analyzer` share: configuration from the
//! environment, the claim loop, and the lease keeper that heartbeats on its own thread
//! while the work runs on the caller's.

use crate::Client;
use domain::service::{AnalysisResult, Claim, FailureKind, JobKind, Refusal, WorkerCapacity};
use domain::{DeviceSpec, Memory};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How often a worker reports where its job is: often enough for a live page, seldom
/// enough to leave the API's database alone.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// A worker's settings (documented in the README).
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `STEPWISE_API_URL` (default `http://127.0.0.1:8080`).
    pub api_url: String,
    /// `STEPWISE_WORKER_TOKEN`.
    pub token: Option<String>,
    /// `STEPWISE_CHECKPOINT_DIR` (default `checkpoints`): the checkpoint store shared with
    /// the API; attempts write only the directory their claim names.
    pub checkpoint_dir: PathBuf,
    /// `STEPWISE_DATA_DIR` (default `data`): datasets by name; `shapes10` is generated
    /// there on first use.
    pub data_dir: PathBuf,
    /// `STEPWISE_DEVICE`: `cpu` (default), `cuda` or `cuda:N`.
    pub device: DeviceSpec,
    /// `STEPWISE_GPU_MEMORY` (e.g. `20GiB`; default: the device's total): the GPU memory
    /// budget in bytes that batches are checked against before a job starts.
    pub gpu_memory: Option<u64>,
    /// `STEPWISE_CPU_MEMORY` (default: what is available when the worker starts): the
    /// same for host memory, where the device is the CPU.
    pub cpu_memory: Option<u64>,
    /// `STEPWISE_WORKER_NAME` (default host name and process id), shown in logs and in the
    /// API's list of workers, which it keys.
    pub name: String,
    /// `STEPWISE_POLL_SECS` (default 2): the wait between claims when nothing is queued.
    pub poll: Duration,
    /// `STEPWISE_IDLE_EXIT_SECS` (default: never): exit once no job has been claimed for
    /// this long, so that a batch allocation (Slurm) is given back when the queue drains.
    pub idle_exit: Option<Duration>,
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let device = match var("STEPWISE_DEVICE") {
            Some(d) => d.parse().map_err(|e| format!("STEPWISE_DEVICE: {e}"))?,
            None => DeviceSpec::Cpu,
        };
        let bytes = |name: &str| {
            var(name)
                .map(|m| match m.parse::<bytesize::ByteSize>() {
                    Ok(b) => Ok(b.as_u64()),
                    Err(e) => Err(format!("{name}: {e}")),
                })
                .transpose()
        };
        let seconds = |name: &str, most: f64| {
            var(name)
                .map(|p| {
                    p.parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0 && *s <= most)
                        .map(Duration::from_secs_f64)
                        .ok_or(format!(
                            "{name}: {p:?} is not a number of seconds (above 0, at most {most})"
                        ))
                })
                .transpose()
        };
        let poll = seconds("STEPWISE_POLL_SECS", 3600.0)?.unwrap_or(Duration::from_secs(2));
        let idle_exit = seconds("STEPWISE_IDLE_EXIT_SECS", 1e9)?;
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "worker".into());
        Ok(Self {
            api_url: var("STEPWISE_API_URL").unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            token: var("STEPWISE_WORKER_TOKEN"),
            checkpoint_dir: var("STEPWISE_CHECKPOINT_DIR")
                .map_or("checkpoints".into(), PathBuf::from),
            data_dir: var("STEPWISE_DATA_DIR").map_or("data".into(), PathBuf::from),
            device,
            gpu_memory: bytes("STEPWISE_GPU_MEMORY")?,
            cpu_memory: bytes("STEPWISE_CPU_MEMORY")?,
            name: var("STEPWISE_WORKER_NAME")
                .unwrap_or_else(|| format!("{host}-{}", std::process::id())),
            poll,
            idle_exit,
        })
    }
}

/// What a worker needs to do one job: its configuration, the API, the claim, the lease
/// keeper and the shutdown flag.
pub struct JobContext<'a> {
    pub config: &'a WorkerConfig,
    pub client: &'a Client,
    pub claim: &'a Claim,
    pub keeper: &'a LeaseKeeper,
    pub shutdown: &'a AtomicBool,
}

/// A worker process from start to exit: logs to stderr, configuration from the environment,
/// signal handlers, `prepare` (that the device works: fail at start, not at the first job;
/// it returns the memory budget the claims carry), then the claim loop for `kind` until
/// SIGTERM.
pub fn run(
    kind: JobKind,
    prepare: impl FnOnce(&WorkerConfig) -> Result<WorkerCapacity, String>,
    mut work: impl FnMut(&JobContext<'_>) -> JobEnd,
) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = WorkerConfig::from_env()?;
    let client = Client::new(&config.api_url, config.token.clone()).map_err(|e| e.to_string())?;
    let shutdown = shutdown_flag().map_err(|e| format!("installing signal handlers: {e}"))?;
    let capacity = prepare(&config)?;
    claim_loop(
        &config,
        &client,
        &[kind],
        capacity,
        &shutdown,
        |claim, keeper| {
            work(&JobContext {
                config: &config,
                client: &client,
                claim,
                keeper,
                shutdown: &shutdown,
            })
        },
    );
    Ok(())
}

/// SIGTERM and SIGINT set the returned flag: finish or checkpoint the job, then exit.
pub fn shutdown_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok(flag)
}

/// How a job's work ended, as the worker reports it.
#[derive(Debug)]
pub enum JobEnd {
    /// Done (an analyze job with its results).
    Completed(Option<Box<AnalysisResult>>),
    /// Stopped early (a train job after a checkpoint): cancelled by the user, or the worker
    /// is shutting down. The job is released: it ends cancelled, or another worker takes it.
    Stopped,
    Failed(FailureKind, String),
    /// The job needs `need_mib` of `memory`, more than this worker has: estimated so
    /// before it started, or the GPU ran out while it ran (a worker that takes it resumes
    /// from the latest registered checkpoint).
    Refused {
        memory: Memory,
        need_mib: u64,
        error: String,
    },
    /// The lease was lost: nothing more may be written or reported.
    Abandoned,
}

impl JobEnd {
    /// A failure of `kind`; a refusal instead where the work needs more memory than the
    /// worker's budget (`memory_need`), which a worker with more can take.
    pub fn failed(kind: FailureKind, error: String, memory_need: Option<(Memory, u64)>) -> Self {
        match memory_need {
            Some((memory, need_mib)) => Self::Refused {
                memory,
                need_mib,
                error,
            },
            None => Self::Failed(kind, error),
        }
    }
}

/// Claims jobs of `kinds` that fit `capacity` until `shutdown` is set; `work` does each one
/// with the lease kept alive beside it, and its result is reported.
pub fn claim_loop(
    config: &WorkerConfig,
    client: &Client,
    kinds: &[JobKind],
    capacity: WorkerCapacity,
    shutdown: &AtomicBool,
    mut work: impl FnMut(&Claim, &LeaseKeeper) -> JobEnd,
) {
    tracing::info!(
        "{} claiming {} jobs from {}",
        config.name,
        kinds
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join("/"),
        client.base()
    );
    // Since the last job ended, or the start: an API out of reach counts as no job.
    let mut idle_since = Instant::now();
    while !shutdown.load(Ordering::SeqCst) {
        let asked = Instant::now();
        let claim = match client.claim(kinds, &config.name, capacity) {
            Ok(Some(claim)) => claim,
            no_job => {
                if let Err(e) = no_job {
                    tracing::warn!("claim: {e}");
                }
                if let Some(limit) = config.idle_exit.filter(|l| idle_since.elapsed() >= *l) {
                    tracing::info!(
                        "no job for {} s (STEPWISE_IDLE_EXIT_SECS): exiting",
                        limit.as_secs_f64()
                    );
                    break;
                }
                sleep_unless(shutdown, config.poll);
                continue;
            }
        };
        tracing::info!(
            "claimed {} job {} of run {} (attempt {})",
            claim.kind,
            claim.job_id,
            claim.run_id,
            claim.attempt
        );
        let keeper = LeaseKeeper::start(client.clone(), &claim, asked);
        let end = work(&claim, &keeper);
        let reporter = keeper.lease_bound(client);
        keeper.stop();
        report(&reporter, &claim, end);
        idle_since = Instant::now();
    }
    tracing::info!("{} stopping", config.name);
}

fn report(client: &Client, claim: &Claim, end: JobEnd) {
    let (job, token) = (claim.job_id, claim.lease_token);
    let result = match end {
        JobEnd::Completed(analysis) => client.complete(job, token, analysis.map(|a| *a)),
        // Released, a `cancelling` job ends `cancelled`, a running one is queued again.
        JobEnd::Stopped => client.release(job, token),
        JobEnd::Failed(kind, error) => {
            tracing::error!("job {job} failed ({kind}): {error}");
            client.fail(job, token, kind, &error)
        }
        JobEnd::Refused {
            memory,
            need_mib,
            error,
        } => {
            tracing::warn!("job {job} does not fit this worker: {error}");
            let refusal = Refusal {
                lease_token: token,
                memory,
                need_mib,
                error,
            };
            client.refuse(job, &refusal)
        }
        JobEnd::Abandoned => {
            tracing::warn!("job {job}: lease lost; abandoned without further writes");
            return;
        }
    };
    match result {
        Ok(state) => tracing::info!("job {job} is now {state}"),
        Err(e) if e.is_lease_lost() => {
            tracing::warn!("job {job}: lease lost before the report: {e}")
        }
        Err(e) => tracing::error!("job {job}: reporting failed: {e}"),
    }
}

fn sleep_unless(flag: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while !flag.load(Ordering::SeqCst) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

struct Shared {
    cancel: AtomicBool,
    lost: AtomicBool,
    /// The lease is certainly held until then: the send time of the last good heartbeat
    /// plus the TTL. A worker that was stalled (SIGSTOP, a long GC-like pause) sees this
    /// pass before it can ask the API, and stops writing at once.
    valid_until: Mutex<Instant>,
    /// [`HeartbeatReply::keep_epochs`](domain::service::HeartbeatReply::keep_epochs) of the
    /// last good heartbeat.
    keep_epochs: Mutex<Vec<u32>>,
    stopping: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    /// One heartbeat, its reply taken in. Returns the epochs analyses wait for (after a
    /// failure that may be transient, the last good reply's), or `None` once the lease is
    /// lost.
    fn beat(&self, client: &Client, job: Uuid, token: Uuid, ttl: Duration) -> Option<Vec<u32>> {
        let sent = Instant::now();
        match client.heartbeat(job, token) {
            Ok(reply) => {
                {
                    // The lease thread and `LeaseKeeper::keep_epochs` both beat.
                    let mut valid_until = self.valid_until.lock().expect("lease mutex");
                    *valid_until = (*valid_until).max(sent + ttl);
                }
                *self.keep_epochs.lock().expect("lease mutex") = reply.keep_epochs.clone();
                if reply.cancel {
                    self.cancel.store(true, Ordering::SeqCst);
                }
                Some(reply.keep_epochs)
            }
            Err(e) if e.is_lease_lost() => {
                tracing::warn!("job {job}: {e}");
                self.lost.store(true, Ordering::SeqCst);
                None
            }
            Err(e) => {
                tracing::warn!("job {job}: heartbeat: {e}");
                Some(self.keep_epochs.lock().expect("lease mutex").clone())
            }
        }
    }
}

/// Heartbeats a job's lease on its own thread; tells the work whether to cancel and
/// whether the lease is still held.
pub struct LeaseKeeper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The heartbeats' client, patient for one heartbeat interval.
    client: Client,
    ttl: Duration,
    pub job: Uuid,
    pub lease_token: Uuid,
}

impl LeaseKeeper {
    /// Starts heartbeating `claim`'s lease, claimed by a request sent at `asked`.
    pub fn start(client: Client, claim: &Claim, asked: Instant) -> Self {
        let ttl = Duration::from_secs_f64(claim.lease_ttl_seconds);
        let every = Duration::from_secs_f64(claim.heartbeat_seconds);
        let shared = Arc::new(Shared {
            cancel: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            valid_until: Mutex::new(asked + ttl),
            keep_epochs: Mutex::new(vec![]),
            stopping: Mutex::new(false),
            wake: Condvar::new(),
        });
        let (job, token) = (claim.job_id, claim.lease_token);
        // A heartbeat must not outlive the lease it tries to extend.
        let client = client.with_patience(every);
        let thread = {
            let (shared, client) = (shared.clone(), client.clone());
            std::thread::Builder::new()
                .name(format!("lease-{job}"))
                .spawn(move || loop {
                    {
                        let stopping = shared.stopping.lock().expect("lease mutex");
                        let (stopping, _) = shared
                            .wake
                            .wait_timeout_while(stopping, every, |s| !*s)
                            .expect("lease mutex");
                        if *stopping {
                            return;
                        }
                    }
                    if shared.beat(&client, job, token, ttl).is_none() {
                        return;
                    }
                })
                .expect("spawning the lease thread")
        };
        Self {
            shared,
            thread: Some(thread),
            client,
            ttl,
            job,
            lease_token: token,
        }
    }

    /// The user asked to cancel the job.
    pub fn cancelled(&self) -> bool {
        self.shared.cancel.load(Ordering::SeqCst)
    }

    /// Epochs whose checkpoints analyses wait for, not to be pruned now: asked by a
    /// heartbeat sent now, on the caller's thread, so that an analysis requested since the
    /// last one is seen (where the API does not answer, the last good heartbeat's list).
    /// `None` once the lease is gone or may be ([`Self::lost`]): nothing is to be pruned.
    pub fn keep_epochs(&self) -> Option<Vec<u32>> {
        let keep = self
            .shared
            .beat(&self.client, self.job, self.lease_token, self.ttl)?;
        (!self.lost()).then_some(keep)
    }

    /// The lease is gone, or may be: the API said so, or its time ran out unrenewed.
    pub fn lost(&self) -> bool {
        self.shared.lost.load(Ordering::SeqCst)
            || Instant::now() >= *self.shared.valid_until.lock().expect("lease mutex")
    }

    /// `client`, retrying transient failures for as long as the lease is certainly held
    /// instead of for its own patience: an API restart or a database failover shorter than
    /// the lease costs the job no work, and no write is retried past the moment another
    /// worker may hold the job.
    pub fn lease_bound(&self, client: &Client) -> Client {
        let valid_until = *self.shared.valid_until.lock().expect("lease mutex");
        client
            .clone()
            .with_patience(valid_until.saturating_duration_since(Instant::now()))
    }

    /// Marks the lease lost after a write was refused with 409.
    pub fn mark_lost(&self) {
        self.shared.lost.store(true, Ordering::SeqCst);
    }

    /// Stops heartbeating (the job is about to be reported).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        *self.shared.stopping.lock().expect("lease mutex") = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StatusCode;
    use domain::{Arch, DataSpec, ModelSpec, RunSpec};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// An API that answers 503 to every request until `down_for` has passed since it
    /// started, then 200 with a heartbeat's reply; returns its base URL.
    fn api_down_for(down_for: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let started = Instant::now();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut reader = BufReader::new(stream.unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                reader.read_exact(&mut vec![0; length]).unwrap();
                let (status, body) = if started.elapsed() < down_for {
                    ("503 Service Unavailable", "{}")
                } else {
                    (
                        "200 OK",
                        r#"{"cancel":false,"lease_expires_at":"2026-01-01T00:00:00Z"}"#,
                    )
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                reader.get_mut().write_all(reply.as_bytes()).unwrap();
            }
        });
        base
    }

    fn claim(ttl: Duration) -> Claim {
        Claim {
            job_id: Uuid::new_v4(),
            kind: JobKind::Train,
            run_id: Uuid::new_v4(),
            attempt: 1,
            lease_token: Uuid::new_v4(),
            lease_ttl_seconds: ttl.as_secs_f64(),
            heartbeat_seconds: ttl.as_secs_f64() / 3.0,
            directory: "runs/x/attempt-1".into(),
            spec: RunSpec::new(ModelSpec::new(Arch::Resnet), DataSpec::new("shapes10")),
            resume_from: vec![],
            keep_epochs: vec![],
            analysis: None,
            weights: None,
        }
    }

    #[test]
    fn a_write_under_a_lease_rides_out_an_outage_longer_than_the_clients_own_patience() {
        let client = Client::new(&api_down_for(Duration::from_millis(1500)), None)
            .unwrap()
            .with_patience(Duration::from_millis(200));
        let claim = claim(Duration::from_secs(20));
        let keeper = LeaseKeeper::start(client.clone(), &claim, Instant::now());
        // Without the lease's patience the write fails as soon as its own runs out.
        let error = client.events(claim.job_id, claim.lease_token, vec![]);
        assert!(
            matches!(error, Err(ref e) if e.status() == Some(StatusCode::SERVICE_UNAVAILABLE)),
            "{error:?}"
        );
        let started = Instant::now();
        keeper
            .lease_bound(&client)
            .events(claim.job_id, claim.lease_token, vec![])
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(1000));
        assert!(!keeper.lost());
    }

    #[test]
    fn a_write_under_a_lease_gives_up_when_the_lease_can_no_longer_be_held() {
        // The client's own patience (30 s) is far longer than the lease.
        let client = Client::new(&api_down_for(Duration::MAX), None).unwrap();
        let claim = claim(Duration::from_millis(1500));
        let keeper = LeaseKeeper::start(client.clone(), &claim, Instant::now());
        let started = Instant::now();
        let error = keeper
            .lease_bound(&client)
            .events(claim.job_id, claim.lease_token, vec![])
            .unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        // It gives up before the lease runs out, and well short of 30 s.
        assert!(started.elapsed() < Duration::from_millis(1500));
        std::thread::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed()));
        assert!(keeper.lost());
    }
}
