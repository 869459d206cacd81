//! The dashboard in a real browser: headless Chromium, driven over WebDriver
//! (`chromedriver`, from Debian's `chromium-driver`; `system_tests::webdriver`), against
//! the real API and workers with tokens set. It logs in, reads a finished run's and an
//! experiment's pages (figures and tables rendered), asks for another analysis of the
//! finished run's checkpoint from its page, compares runs picked in the runs table, cancels a running job with the button and watches the page's live part follow it
//! to `cancelled`, submits a spec from the form, uploads weights through Swagger UI's form,
//! and saves a screenshot of each page under `$STEPWISE_SCREENSHOTS` (default:
//! `target/tmp/screenshots`).

use domain::service::{ExperimentSubmission, JobState, RunSubmission};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use system_tests::webdriver::{Browser, Driver};
use system_tests::{serial, wait_for, Settings, Stack};
use uuid::Uuid;

fn screenshots() -> PathBuf {
    let dir = std::env::var_os("STEPWISE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn save(browser: &Browser, name: &str) {
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, browser.screenshot()).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// Polls the page (without reloading it) until `css`'s text is `want`.
fn wait_text(browser: &Browser, css: &str, want: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        let text = browser.try_find(css).and_then(|el| el.text());
        if text.as_deref().map(str::trim) == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{css} never read {want:?} (last {text:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_path(browser: &Browser, path: &str) {
    wait_for(&format!("the page {path}"), Duration::from_secs(10), || {
        browser.path() == path
    });
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
    let args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-quic",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([format!("--user-data-dir={}", profile.path().display())])
    .collect();
    let browser = driver.session("/usr/bin/chromium", &args);

    // Every page needs the token: the runs list sends us to the login form.
    browser.goto(&format!("{base}/"));
    assert_eq!(browser.path(), "/login");
    save(&browser, "login");
    browser.find("#token").send_keys("a wrong token");
    browser.submit("#login button");
    browser.find("#login-error");
    browser.find("#token").send_keys("open-sesame");
    browser.submit("#login button");
    wait_path(&browser, "/");

    // The runs list: four runs and the experiment.
    assert_eq!(browser.count("table.runs tbody tr"), 4);
    assert!(browser.count(&format!(r#"a[href="/experiments/{}"]"#, experiment.id)) > 0);
    save(&browser, "runs");

    // Two runs picked in the table stay picked when it refreshes itself, and are drawn
    // together.
    let pick = |id: Uuid| format!(r#"input[name="runs"][value="{id}"]"#);
    browser.find(&pick(finished.id)).click();
    browser.find(&pick(experiment.runs[0].id)).click();
    let table = "document.querySelector('div.live[data-live^=\"/partials/runs\"]')";
    browser.execute(&format!("{table}.stepwiseOld = true;"));
    wait_for("the runs table to refresh", Duration::from_secs(10), || {
        browser.try_execute(&format!("return {table}.stepwiseOld === undefined;"))
            == Some(json!(true))
    });
    let picked = browser.execute(
        "return [...document.querySelectorAll('input[name=runs]:checked')].map(b => b.value);",
    );
    let mut picked: Vec<Uuid> = serde_json::from_value(picked).unwrap();
    picked.sort();
    let mut wanted = vec![finished.id, experiment.runs[0].id];
    wanted.sort();
    assert_eq!(picked, wanted, "the picks survive the refresh");
    browser.submit("#compare");
    wait_path(&browser, "/compare");
    assert_eq!(browser.count("table.compared tbody tr"), 2);
    assert!(browser.count("figure.chart svg") >= 3);
    save(&browser, "compare");

    // The finished run: training curves and the analysis' figures and block table.
    browser.goto(&format!("{base}/runs/{}", finished.id));
    assert_eq!(
        browser.find("#run-status").text().as_deref(),
        Some("succeeded")
    );
    for figure in ["curves", "fig2_cosine", "fig3_l2_ratio", "fig4_drop"] {
        let css = format!(r#"figure[data-figure="{figure}"] svg"#);
        assert_eq!(browser.count(&css), 1, "{figure} is not drawn");
    }
    assert!(
        browser.count("table.blocks tbody tr") >= 3,
        "the per-block table"
    );
    assert!(browser.count("table.checkpoints a[download]") >= 1);
    // The figures are real SVG with drawn content, laid out with a size.
    let drawn = browser.execute(
        "const svg = document.querySelector('figure[data-figure=\"fig2_cosine\"] svg');
         const box = svg.getBoundingClientRect();
         return [svg.querySelectorAll('path, polyline, circle, line, rect').length, box.width, box.height];",
    );
    let drawn: Vec<f64> = serde_json::from_value(drawn).unwrap();
    assert!(
        drawn[0] > 10.0 && drawn[1] > 200.0 && drawn[2] > 100.0,
        "{drawn:?}"
    );
    // Tall enough for the analysis section in the screenshot.
    browser.set_window_size(1280, 4200);
    save(&browser, "run");
    browser.set_window_size(1280, 2000);
    // Analysed again from its page with other settings: queued, and on the page.
    browser.find("details.analyse summary").click();
    let settings = browser.find(r#"#analyse textarea[name="settings"]"#);
    settings.clear();
    settings.send_keys("max_examples = 30");
    browser.submit("#analyse button");
    wait_path(&browser, &format!("/runs/{}", finished.id));
    // Both listed; the new one shown in full.
    assert_eq!(browser.count("table.analyses tbody tr"), 2);
    let analyses = api.analyses(finished.id).unwrap();
    let asked = analyses.iter().find(|a| a.spec.max_examples == 30);
    let asked = asked.unwrap_or_else(|| panic!("{analyses:?}"));
    assert_eq!(browser.count("section.analysis"), 1);
    assert_eq!(browser.count(&format!("section#analysis-{}", asked.id)), 1);
    save(&browser, "run-analyses");

    // The experiment: figures over seeds and the claim table.
    browser.goto(&format!("{base}/experiments/{}", experiment.id));
    assert!(browser.count("table.claims tbody tr") >= 5, "claims C1…");
    assert!(browser.count("figure.chart svg") >= 3);
    save(&browser, "experiment");

    // Cancel the running job with its button; the live part follows without a reload.
    browser.goto(&format!("{base}/runs/{}", long.id));
    wait_text(&browser, "#run-status", "running", Duration::from_secs(10));
    browser.submit("#cancel");
    wait_path(&browser, &format!("/runs/{}", long.id));
    browser.execute("window.notReloaded = true;");
    wait_text(
        &browser,
        "#run-status",
        "cancelled",
        Duration::from_secs(60),
    );
    assert_eq!(
        browser.execute("return window.notReloaded === true;"),
        json!(true),
        "the status changed by the live update, not a reload"
    );
    save(&browser, "cancelled");

    // A spec submitted from the form (the file input left empty): a bad one comes back
    // with its reasons and its text, the mended one becomes a run.
    browser.goto(&format!("{base}/submit"));
    let spec = "name = \"from-the-browser\"\n[model]\narch = \"resnet\"\ndepth = 9\nwidth = 4\n\
                [data]\ndataset = \"shapes10\"\n[train]\nepochs = 1\nbatch_size = 64\n";
    let write_spec = |text: &str| {
        browser.execute(&format!(
            "document.querySelector('textarea[name=spec]').value = {};",
            json!(text)
        ));
    };
    write_spec(spec);
    browser.submit("#submit button");
    assert!(browser
        .find("#submit-errors")
        .text()
        .is_some_and(|t| t.contains("model.depth")));
    assert_eq!(
        browser.execute("return document.querySelector('textarea[name=spec]').value;"),
        json!(spec)
    );
    save(&browser, "submit");
    write_spec(&spec.replace("depth = 9", "depth = 8"));
    browser.submit("#submit button");
    let path = browser.path();
    let id: Uuid = path
        .strip_prefix("/runs/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a run's page: {path}"));
    let run = api.run(id).unwrap();
    assert_eq!(run.name.as_deref(), Some("from-the-browser"));
    assert!(run.weights.is_none() && run.analysis.is_some());

    // Swagger UI, from the vendored assets: every operation listed; authorised with the
    // user token, its form of the weights upload sends a file that becomes a run.
    browser.goto(&format!("{base}/docs/"));
    wait_for(
        "Swagger UI to list the operations",
        Duration::from_secs(20),
        || browser.count(".opblock") >= 30,
    );
    browser.find(".btn.authorize").click();
    browser
        .find(r#"input[aria-label="auth-bearer-value"]"#)
        .send_keys("open-sesame");
    browser.find(".auth-btn-wrapper .btn.authorize").click();
    browser.find(".auth-btn-wrapper .btn-done").click();
    let operation = "#operations-runs-import";
    browser
        .find(&format!("{operation} .opblock-summary"))
        .click();
    wait_for(
        "the import operation to open",
        Duration::from_secs(10),
        || browser.count(&format!("{operation} .try-out__btn")) == 1,
    );
    browser.find(&format!("{operation} .try-out__btn")).click();
    wait_for("the upload form", Duration::from_secs(10), || {
        browser.count(&format!(r#"{operation} input[type="file"]"#)) == 1
    });
    let field = browser.find(&format!("{operation} .opblock-body textarea"));
    field.clear();
    field.send_keys(
        &json!({"spec": {"name": "from-swagger", "model": model,
                         "data": {"dataset": "shapes10"}, "train": {"epochs": 1}},
                "analysis": {"checkpoints": "final"}})
        .to_string(),
    );
    // The API checks only that the file begins as safetensors does; that these are not the
    // model's tensors is the trainer's to find.
    let weights = profile.path().join("weights.safetensors");
    let header = br#"{"__metadata__":{}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    std::fs::write(&weights, bytes).unwrap();
    browser
        .find(&format!(r#"{operation} input[type="file"]"#))
        .send_keys(&weights.display().to_string());
    browser.find(&format!("{operation} .btn.execute")).click();
    let response = format!("{operation} .live-responses-table tbody");
    wait_for("the upload's response", Duration::from_secs(10), || {
        browser.count(&format!("{response} .response-col_status")) == 1
    });
    let status = browser
        .find(&format!("{response} .response-col_status"))
        .text();
    let body = browser
        .find(&format!("{response} .response-col_description"))
        .text();
    assert_eq!(status.as_deref(), Some("201"), "{body:?}");
    save(&browser, "docs");
    let imported = api
        .list_runs(&client::RunQuery {
            name: Some("from-swagger".into()),
            ..Default::default()
        })
        .unwrap();
    let weights = imported.items[0].weights.as_ref().expect("made of weights");
    assert_eq!(weights.file_name, "weights.safetensors");
    drop(browser);
    assert_eq!(api.run(long.id).unwrap().status, JobState::Cancelled);
}
