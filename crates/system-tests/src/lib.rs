//! A stack of real processes for the tests in `tests/`: `stepwise-api` on a free loopback
//! port over a database of its own, and as many `stepwise-trainer` and
//! `stepwise-analyzer` processes as a test starts, sharing a checkpoint store and a data
//! directory in a temporary folder. Tests take [`serial`] first: they share two cores.
//!
//! The binaries are found beside the test executable (`target/<profile>/`); build them
//! first with `cargo build --bins` (`scripts/test` does). [`webdriver`] drives headless
//! Chromium for the dashboard's test.

pub mod webdriver;

use client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One test at a time: each starts several processes on a 2-core machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A binary of the workspace, built beside this test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --bins)",
        path.display()
    );
    path
}

/// Lease and token settings of a stack.
#[derive(Clone, Debug)]
pub struct Settings {
    pub lease_ttl_secs: f64,
    pub heartbeat_secs: f64,
    pub reaper_secs: f64,
    pub max_attempts: u32,
    pub api_token: Option<String>,
    pub worker_token: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lease_ttl_secs: 3.0,
            heartbeat_secs: 0.5,
            reaper_secs: 0.5,
            max_attempts: 5,
            api_token: None,
            worker_token: None,
        }
    }
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub api_url: String,
    pub database_url: String,
    admin_url: String,
    database: String,
    pub settings: Settings,
    /// The API processes: the first serves `api_url`, others come from [`Self::add_api`].
    apis: Vec<Child>,
    workers: Vec<Child>,
    worker_logs: Vec<PathBuf>,
    logs: Vec<PathBuf>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Runs SQL as the test role on the database of `url`.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql (the PostgreSQL client) runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Stack {
    /// A database of its own on DATABASE_URL's server, and the API over it.
    pub fn start(settings: Settings) -> Self {
        let admin_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL (a role that may create databases; scripts/postgres start)");
        let database = format!("stepwise_sys_{}", uuid::Uuid::new_v4().simple());
        psql(&admin_url, &format!("CREATE DATABASE {database}"));
        let database_url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{database}"),
            None => panic!("DATABASE_URL has no database name"),
        };
        Self::start_on(settings, admin_url, database, database_url)
    }

    /// The API over a database that exists already (a test's own server).
    pub fn start_on(
        settings: Settings,
        admin_url: String,
        database: String,
        database_url: String,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for sub in ["checkpoints", "data", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let mut stack = Self {
            dir,
            api_url: String::new(),
            database_url,
            admin_url,
            database,
            settings,
            apis: vec![],
            workers: vec![],
            worker_logs: vec![],
            logs: vec![],
        };
        stack.api_url = stack.start_api();
        stack
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.path().join("checkpoints")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&mut self, name: &str) -> std::fs::File {
        let path = self
            .dir
            .path()
            .join("logs")
            .join(format!("{}-{name}.log", self.logs.len()));
        self.logs.push(path.clone());
        std::fs::File::create(path).unwrap()
    }

    /// Another API process over the same database and checkpoint store (Kubernetes runs
    /// the API as a Deployment of two replicas); returns its URL.
    pub fn add_api(&mut self) -> String {
        self.start_api()
    }

    fn start_api(&mut self) -> String {
        let port = free_port();
        let log = self.log_file("api");
        let s = &self.settings;
        let mut cmd = Command::new(binary("stepwise-api"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,tower_http=warn,sqlx=warn")
            .env("DATABASE_URL", &self.database_url)
            .env("STEPWISE_BIND", format!("127.0.0.1:{port}"))
            .env("STEPWISE_CHECKPOINT_DIR", self.checkpoint_dir())
            .env("STEPWISE_DATA_DIR", self.data_dir())
            .env("STEPWISE_LEASE_TTL_SECS", s.lease_ttl_secs.to_string())
            .env("STEPWISE_HEARTBEAT_SECS", s.heartbeat_secs.to_string())
            .env("STEPWISE_REAPER_SECS", s.reaper_secs.to_string())
            .env("STEPWISE_MAX_ATTEMPTS", s.max_attempts.to_string());
        if let Some(t) = &s.api_token {
            cmd.env("STEPWISE_API_TOKEN", t);
        }
        if let Some(t) = &s.worker_token {
            cmd.env("STEPWISE_WORKER_TOKEN", t);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting stepwise-api");
        self.apis.push(child);
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/readyz");
        wait_for("the API to be ready", Duration::from_secs(60), || {
            reqwest::blocking::get(&ready).is_ok_and(|r| r.status().is_success())
        });
        url
    }

    /// A client with the users' token.
    pub fn client(&self) -> Client {
        Client::new(&self.api_url, self.settings.api_token.clone()).unwrap()
    }

    /// A client with the workers' token.
    pub fn worker_client(&self) -> Client {
        Client::new(&self.api_url, self.settings.worker_token.clone()).unwrap()
    }

    /// Starts a worker binary (`stepwise-trainer` or `stepwise-analyzer`); returns its index.
    pub fn spawn_worker(&mut self, binary_name: &str) -> usize {
        self.spawn_worker_with(binary_name, &[])
    }

    /// [`Self::spawn_worker`] with more environment variables.
    pub fn spawn_worker_with(&mut self, binary_name: &str, env: &[(&str, &str)]) -> usize {
        let log = self.log_file(binary_name);
        let mut cmd = Command::new(binary(binary_name));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("STEPWISE_API_URL", &self.api_url)
            .env("STEPWISE_CHECKPOINT_DIR", self.checkpoint_dir())
            .env("STEPWISE_DATA_DIR", self.data_dir())
            .env("STEPWISE_POLL_SECS", "0.2")
            .env(
                "STEPWISE_WORKER_NAME",
                format!("{binary_name}-{}", self.workers.len()),
            )
            // Tests run many workers on two cores.
            .env("RAYON_NUM_THREADS", "1")
            .envs(env.iter().copied());
        if let Some(t) = &self.settings.worker_token {
            cmd.env("STEPWISE_WORKER_TOKEN", t);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting a worker");
        self.workers.push(child);
        self.worker_logs
            .push(self.logs.last().expect("just created").clone());
        self.workers.len() - 1
    }

    pub fn worker_pid(&self, index: usize) -> u32 {
        self.workers[index].id()
    }

    /// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`) to a worker.
    pub fn signal(&self, index: usize, signal: &str) {
        signal_pid(self.worker_pid(index), signal);
    }

    /// Waits for a worker to exit; returns whether it exited successfully.
    pub fn wait_worker(&mut self, index: usize, timeout: Duration) -> bool {
        let child = &mut self.workers[index];
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                start.elapsed() < timeout,
                "worker {index} did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Generates a small synthetic dataset under the data directory.
    pub fn synth(&self, name: &str, train: u32, test: u32) {
        let status = Command::new(binary("stepwise"))
            .arg("data")
            .arg("synth")
            .arg("--out")
            .arg(self.data_dir().join(name))
            .args(["--train", &train.to_string(), "--test", &test.to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("stepwise data synth");
        assert!(status.success());
    }

    /// Runs the `stepwise` command line against the stack: whether it succeeded, its
    /// stdout and its stderr.
    pub fn stepwise(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(binary("stepwise"))
            .args(args)
            .env("STEPWISE_API_URL", &self.api_url)
            .env("STEPWISE_DATA_DIR", self.data_dir())
            .output()
            .expect("stepwise runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// What a worker has logged so far.
    pub fn worker_log(&self, index: usize) -> String {
        std::fs::read_to_string(&self.worker_logs[index]).unwrap_or_default()
    }

    /// Everything the processes logged, for failure messages.
    pub fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("==> {} <==\n{}\n", p.display(), tail.join("\n"))
            })
            .collect()
    }
}

pub fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain(self.apis.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let _ = Command::new("psql")
            .args([
                &self.admin_url,
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
            ])
            .output();
    }
}

/// Polls `done` every 100 ms until it holds; panics after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A small run on a dataset of the stack's data directory: ResNet-8 at width 4.
pub fn tiny_run(dataset: &str, epochs: u32) -> domain::service::RunSubmission {
    let mut model = domain::ModelSpec::new(domain::Arch::Resnet);
    model.depth = Some(8);
    model.width = Some(4);
    let mut spec = domain::RunSpec::new(model, domain::DataSpec::new(dataset));
    spec.train.epochs = Some(epochs);
    spec.train.batch_size = 64;
    spec.train.monitor.eval_batch_size = 128;
    domain::service::RunSubmission {
        spec,
        analysis: None,
    }
}
