//! Many workers, many requests: concurrent claims and concurrent duplicate submissions
//! through two API replicas over one database, bad requests over a real socket, and the
//! database restarted under load.

use client::ClientError;
use domain::service::JobState;
use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use system_tests::{serial, tiny_run, wait_for, Settings, Stack};
use uuid::Uuid;

const MINUTE: Duration = Duration::from_secs(60);

/// Every run, following the cursor through all pages.
fn all_runs(stack: &Stack) -> Vec<domain::service::RunView> {
    let client = stack.client();
    let mut query = client::RunQuery {
        limit: Some(200),
        ..Default::default()
    };
    let mut out = vec![];
    loop {
        let page = client.list_runs(&query).unwrap();
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return out,
        }
    }
}

/// Two API replicas over one database, as the Kubernetes base runs them: runs submitted to
/// either, four workers claiming from each.
#[test]
fn two_hundred_jobs_claimed_by_eight_workers_through_two_apis_run_once_each() {
    let _serial = serial();
    let mut stack = Stack::start(Settings::default());
    let second = stack.add_api();
    stack.synth("micro10", 64, 32);
    let clients = [stack.client(), client::Client::new(&second, None).unwrap()];
    let ids: Vec<Uuid> = (0..200)
        .map(|i| {
            let client = &clients[i % 2];
            client.submit_run(&tiny_run("micro10", 1), None).unwrap().id
        })
        .collect();
    for i in 0..8 {
        let api = if i % 2 == 0 { &stack.api_url } else { &second };
        let api = api.clone();
        stack.spawn_worker_with("stepwise-trainer", &[("STEPWISE_API_URL", &api)]);
    }
    wait_for("200 runs to finish", 5 * MINUTE, || {
        all_runs(&stack).iter().all(|r| r.status.is_final())
    });
    let runs = all_runs(&stack);
    assert_eq!(runs.len(), 200);
    let stored: HashSet<Uuid> = runs.iter().map(|r| r.id).collect();
    assert_eq!(stored, ids.iter().copied().collect(), "none lost");
    for run in &runs {
        assert_eq!(run.status, JobState::Succeeded, "{run:?}");
        assert_eq!(run.attempts, 1, "run {} was claimed twice", run.id);
    }
    // Each was trained by exactly one worker, and the work was spread.
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for i in 0..8 {
        let log = stack.worker_log(i);
        let claims = log.matches("claimed train job").count();
        by_worker.insert(format!("worker {i}"), claims);
    }
    assert_eq!(by_worker.values().sum::<usize>(), 200, "{by_worker:?}");
    assert!(
        by_worker.values().filter(|&&n| n > 0).count() >= 4,
        "{by_worker:?}"
    );
    let through = |api: usize| {
        (api..8)
            .step_by(2)
            .map(|i| by_worker[&format!("worker {i}")])
    };
    assert!(
        through(0).sum::<usize>() > 0 && through(1).sum::<usize>() > 0,
        "both APIs served claims: {by_worker:?}"
    );
}

/// The duplicates go to two API replicas: the key holds across them, as does a dashboard
/// session.
#[test]
fn fifty_concurrent_submissions_with_one_key_to_two_apis_make_one_run_and_bad_requests_get_4xx() {
    let _serial = serial();
    let mut stack = Stack::start(Settings {
        api_token: Some("user-token".into()),
        worker_token: Some("worker-token".into()),
        ..Settings::default()
    });
    let second = stack.add_api();
    let submission = tiny_run("shapes10", 1);
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let client = match i % 2 {
                0 => stack.client(),
                _ => client::Client::new(&second, stack.settings.api_token.clone()).unwrap(),
            };
            let submission = submission.clone();
            std::thread::spawn(move || client.submit_run(&submission, Some("one-key")).unwrap().id)
        })
        .collect();
    let ids: HashSet<Uuid> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(all_runs(&stack).len(), 1);

    // Over the socket: tokens, a body far over the limit, garbage.
    let http = reqwest::blocking::Client::new();
    let url = format!("{}/v1/runs", stack.api_url);
    let status_and_type = |r: reqwest::blocking::Response| {
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, kind)
    };
    let problem = "application/problem+json".to_string();
    assert_eq!(
        status_and_type(http.get(&url).send().unwrap()),
        (401, problem.clone())
    );
    assert_eq!(
        status_and_type(http.get(&url).bearer_auth("worker-token").send().unwrap()),
        (401, problem.clone())
    );
    let huge = vec![b'x'; 8 << 20];
    let reply = http
        .post(&url)
        .bearer_auth("user-token")
        .header("content-type", "application/json")
        .body(huge)
        .send();
    // The server may answer 413 before reading everything, or close the connection.
    if let Ok(r) = reply {
        assert_eq!(status_and_type(r), (413, problem.clone()));
    }
    let garbage = http
        .post(&url)
        .bearer_auth("user-token")
        .header("content-type", "application/json")
        .body(vec![0xff, 0xfe, 0x00, 0x7b])
        .send()
        .unwrap();
    assert_eq!(status_and_type(garbage), (400, problem.clone()));
    let claim = http
        .post(format!("{}/v1/worker/claim", stack.api_url))
        .bearer_auth("user-token")
        .json(&serde_json::json!({"kinds": ["train"], "worker": "w"}))
        .send()
        .unwrap();
    assert_eq!(status_and_type(claim), (401, problem));
    // The API is still healthy after all of it.
    assert!(http
        .get(format!("{}/readyz", stack.api_url))
        .send()
        .unwrap()
        .status()
        .is_success());

    // A dashboard session begun at one replica holds at the other.
    let browser = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = browser
        .post(format!("{}/login", stack.api_url))
        .form(&[("token", "user-token"), ("next", "/")])
        .send()
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let home = |cookie: Option<&str>| {
        let request = browser.get(format!("{second}/"));
        let request = match cookie {
            Some(c) => request.header("cookie", c),
            None => request,
        };
        request.send().unwrap().status().as_u16()
    };
    assert_eq!(home(None), 303, "to the login form");
    assert_eq!(home(Some(&cookie)), 200, "{cookie}");
}

/// A PostgreSQL cluster of the test's own (scripts/postgres on another port and folder).
struct Cluster {
    env: Vec<(String, String)>,
    url: String,
}

impl Cluster {
    fn script(&self, verb: &str) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres");
        let out = Command::new("bash")
            .arg(script)
            .arg(verb)
            .envs(self.env.iter().cloned())
            .output()
            .expect("scripts/postgres");
        assert!(
            out.status.success(),
            "postgres {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cluster = Self {
            env: vec![
                ("STEPWISE_PG_DIR".into(), format!("/tmp/stepwise-pg-{port}")),
                ("STEPWISE_PG_PORT".into(), port.to_string()),
            ],
            url: String::new(),
        };
        let exports = cluster.script("start");
        cluster.url = exports
            .trim()
            .strip_prefix("export DATABASE_URL=")
            .expect("scripts/postgres prints DATABASE_URL")
            .to_string();
        cluster
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.script("stop");
        let _ = std::fs::remove_dir_all(&self.env[0].1);
    }
}

#[test]
fn nothing_acknowledged_is_lost_when_postgres_restarts_under_load() {
    let _serial = serial();
    let cluster = Cluster::start();
    let mut stack = Stack::start_on(
        Settings::default(),
        cluster.url.clone(),
        "stepwise".into(),
        cluster.url.clone(),
    );
    stack.synth("micro10", 64, 32);
    for _ in 0..2 {
        stack.spawn_worker("stepwise-trainer");
    }
    let acknowledged = Arc::new(Mutex::new(vec![]));
    let refused = Arc::new(Mutex::new(vec![]));
    let stop = Arc::new(AtomicBool::new(false));
    let submitters: Vec<_> = (0..4)
        .map(|t| {
            let client = stack.client().with_patience(Duration::from_secs(20));
            let (acknowledged, refused, stop) =
                (acknowledged.clone(), refused.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("load-{t}-{i}");
                    match client.submit_run(&tiny_run("micro10", 1), Some(&key)) {
                        Ok(run) => acknowledged.lock().unwrap().push(run.id),
                        Err(e @ ClientError::Api { .. })
                            if e.status().is_some_and(|s| s.is_client_error()) =>
                        {
                            panic!("a valid submission was refused: {e}")
                        }
                        Err(e) => refused.lock().unwrap().push(e.to_string()),
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    cluster.script("restart");
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    for s in submitters {
        s.join().unwrap();
    }
    let acknowledged: HashSet<Uuid> = acknowledged.lock().unwrap().iter().copied().collect();
    assert!(
        acknowledged.len() > 20,
        "too little load: {}",
        acknowledged.len()
    );
    wait_for("every run to finish", 5 * MINUTE, || {
        all_runs(&stack).iter().all(|r| r.status.is_final())
    });
    let runs = all_runs(&stack);
    let stored: HashSet<Uuid> = runs.iter().map(|r| r.id).collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    for run in &runs {
        assert_eq!(run.status, JobState::Succeeded, "{run:?}\n{}", stack.logs());
    }
    let refused = refused.lock().unwrap();
    eprintln!(
        "{} submissions acknowledged, {} runs stored, {} not acknowledged: {:?}",
        acknowledged.len(),
        runs.len(),
        refused.len(),
        refused.first()
    );
}
