//! The dashboard in a real browser: headless Chromium, driven over WebDriver
//! (`chromedriver`, from Debian's `chromium-driver`), against the real API and workers
//! with tokens set. It logs in, reads a finished run's and an experiment's pages (figures
//! and tables rendered), cancels a running job with the button and watches the page's
//! live part follow it to `cancelled`, and saves a screenshot of each page under
//! `$STEPWISE_SCREENSHOTS` (default: `target/tmp/screenshots`).

use domain::service::{ExperimentSubmission, JobState, RunSubmission};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use system_tests::{serial, wait_for, Settings, Stack};
use uuid::Uuid;

/// `chromedriver` on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian: apt-get install chromium chromium-driver; scripts/test installs it)");
        wait_for("chromedriver to listen", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = std::env::var_os("STEPWISE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn save(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

async fn count(browser: &Client, css: &str) -> usize {
    browser.find_all(Locator::Css(css)).await.unwrap().len()
}

/// Polls the page (without reloading it) until `css`'s text is `want`.
async fn wait_text(browser: &Client, css: &str, want: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        if let Ok(el) = browser.find(Locator::Css(css)).await {
            if el.text().await.is_ok_and(|t| t.trim() == want) {
                return;
            }
        }
        assert!(start.elapsed() < timeout, "{css} never read {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn submission(value: serde_json::Value) -> RunSubmission {
    serde_json::from_value(value).expect("a valid run submission")
}

const MODEL: &str = r#"{"arch": "resnet", "depth": 8, "width": 4}"#;

#[test]
fn the_dashboard_logs_in_shows_results_and_cancels_a_running_job() {
    let _serial = serial();
    let mut stack = Stack::start(Settings {
        api_token: Some("open-sesame".into()),
        worker_token: Some("worker-token".into()),
        ..Settings::default()
    });
    stack.spawn_worker("stepwise-trainer");
    stack.spawn_worker("stepwise-analyzer");
    let api = stack.client();
    let model: serde_json::Value = serde_json::from_str(MODEL).unwrap();

    // A finished run with an analysis, and an experiment of two seeds.
    let finished = api
        .submit_run(
            &submission(json!({
                "spec": {"name": "baseline", "tags": ["demo"], "model": model,
                         "data": {"dataset": "shapes10"},
                         "train": {"epochs": 2, "batch_size": 64}},
                "analysis": {"checkpoints": "final", "spec": {"max_examples": 100}}})),
            None,
        )
        .unwrap();
    let experiment: ExperimentSubmission = serde_json::from_value(json!({"spec": {
        "name": "seeds", "seeds": [0, 1], "data": {"dataset": "shapes10"},
        "train": {"epochs": 1, "batch_size": 64}, "analysis": {"max_examples": 100},
        "configs": [{"model": model}]}}))
    .unwrap();
    let experiment = api.submit_experiment(&experiment.spec, None).unwrap();
    let all_analysed = |run: Uuid| {
        api.analyses(run)
            .is_ok_and(|a| !a.is_empty() && a.iter().all(|a| a.status == JobState::Succeeded))
    };
    wait_for(
        "the runs to be trained and analysed",
        Duration::from_secs(300),
        || all_analysed(finished.id) && experiment.runs.iter().all(|r| all_analysed(r.id)),
    );
    // A long run, running when the button is pressed.
    let long = api
        .submit_run(
            &submission(json!({"spec": {"name": "long", "model": model,
                "data": {"dataset": "shapes10"}, "train": {"epochs": 200, "batch_size": 64}}})),
            None,
        )
        .unwrap();
    wait_for("the long run to start", Duration::from_secs(60), || {
        api.run(long.id)
            .is_ok_and(|r| r.status == JobState::Running)
    });

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let base = stack.api_url.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,2000",
                format!("--user-data-dir={}", profile.path().display())]}),
        );
        let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a Chromium session");

        // Every page needs the token: the runs list sends us to the login form.
        browser.goto(&format!("{base}/")).await.unwrap();
        assert!(browser.current_url().await.unwrap().path() == "/login");
        save(&browser, "login").await;
        let token = browser.find(Locator::Id("token")).await.unwrap();
        token.send_keys("a wrong token").await.unwrap();
        browser.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();
        browser.find(Locator::Id("login-error")).await.expect("the login form says the token is wrong");
        let token = browser.find(Locator::Id("token")).await.unwrap();
        token.send_keys("open-sesame").await.unwrap();
        browser.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();
        wait_for_path(&browser, "/").await;

        // The runs list: four runs, the experiment, filters.
        assert_eq!(count(&browser, "table.runs tbody tr").await, 4);
        assert!(browser.source().await.unwrap().contains("seeds"));
        save(&browser, "runs").await;

        // The finished run: training curves and the analysis' figures and block table.
        browser.goto(&format!("{base}/runs/{}", finished.id)).await.unwrap();
        assert_eq!(browser.find(Locator::Id("run-status")).await.unwrap().text().await.unwrap(), "succeeded");
        for figure in ["curves", "fig2_cosine", "fig3_l2_ratio", "fig4_drop"] {
            let css = format!(r#"figure[data-figure="{figure}"] svg"#);
            assert_eq!(count(&browser, &css).await, 1, "{figure} is not drawn");
        }
        assert!(count(&browser, "table.blocks tbody tr").await >= 3, "the per-block table");
        assert!(count(&browser, "table.checkpoints a[download]").await >= 1);
        // The figures are real SVG with drawn content, laid out with a size.
        let drawn = browser
            .execute(
                "const svg = document.querySelector('figure[data-figure=\"fig2_cosine\"] svg');
                 const box = svg.getBoundingClientRect();
                 return [svg.querySelectorAll('path, polyline, circle, line, rect').length, box.width, box.height];",
                vec![],
            )
            .await
            .unwrap();
        let drawn: Vec<f64> = serde_json::from_value(drawn).unwrap();
        assert!(drawn[0] > 10.0 && drawn[1] > 200.0 && drawn[2] > 100.0, "{drawn:?}");
        // Tall enough for the analysis section in the screenshot.
        browser.set_window_size(1280, 4200).await.unwrap();
        save(&browser, "run").await;
        browser.set_window_size(1280, 2000).await.unwrap();

        // The experiment: figures over seeds and the claim table.
        browser.goto(&format!("{base}/experiments/{}", experiment.id)).await.unwrap();
        assert!(count(&browser, "table.claims tbody tr").await >= 5, "claims C1…");
        assert!(count(&browser, "figure.chart svg").await >= 3);
        save(&browser, "experiment").await;

        // Cancel the running job with its button; the live part follows without a reload.
        browser.goto(&format!("{base}/runs/{}", long.id)).await.unwrap();
        wait_text(&browser, "#run-status", "running", Duration::from_secs(10)).await;
        browser.execute("window.notReloaded = true;", vec![]).await.unwrap();
        browser.find(Locator::Id("cancel")).await.unwrap().click().await.unwrap();
        wait_for_path(&browser, &format!("/runs/{}", long.id)).await;
        browser.execute("window.notReloaded = true;", vec![]).await.unwrap();
        wait_text(&browser, "#run-status", "cancelled", Duration::from_secs(60)).await;
        let same_page = browser.execute("return window.notReloaded === true;", vec![]).await.unwrap();
        assert_eq!(same_page, json!(true), "the status changed by the live update, not a reload");
        save(&browser, "cancelled").await;
        browser.close().await.unwrap();
    });
    assert_eq!(api.run(long.id).unwrap().status, JobState::Cancelled);
}

async fn wait_for_path(browser: &Client, path: &str) {
    let start = Instant::now();
    while browser.current_url().await.unwrap().path() != path {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never reached {path}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
