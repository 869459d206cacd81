//! The dashboard's pages in process, on a fresh database per test: login and sessions,
//! CSRF on the buttons, escaping of user strings, security headers, and a finished run's
//! page with its attempts, checkpoints, figures and per-block table.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{files_below, multipart, run_statuses, spawn_app, Reply, TestApp};
use serde_json::{json, Value};
use sqlx::PgPool;

const NASTY: &str = "<script>alert(1)</script>";

/// A form POST (urlencoded), with a cookie and extra headers.
async fn form(
    app: &TestApp,
    uri: &str,
    fields: &[(&str, &str)],
    cookie: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        builder = builder.header(header::COOKIE, c);
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let body = serde_urlencoded::to_string(fields).unwrap();
    app.send(builder.body(Body::from(body)).unwrap()).await
}

async fn page(app: &TestApp, uri: &str, cookie: Option<&str>) -> Reply {
    let mut builder = Request::builder().uri(uri);
    if let Some(c) = cookie {
        builder = builder.header(header::COOKIE, c);
    }
    app.send(builder.body(Body::empty()).unwrap()).await
}

/// `name=value` of the session cookie a reply sets, and the whole Set-Cookie line.
fn session_cookie(reply: &Reply) -> Option<(String, String)> {
    reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("stepwise_session="))
        .map(|line| {
            let pair = line.split(';').next().unwrap().to_string();
            (pair, line.to_string())
        })
}

fn location(reply: &Reply) -> String {
    reply
        .headers
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The CSRF token of the page's forms.
fn csrf(html: &str) -> String {
    let start = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    html[start..].split('"').next().unwrap().to_string()
}

fn assert_html(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert!(
        reply.content_type.starts_with("text/html"),
        "{}",
        reply.content_type
    );
    let csp = reply.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(reply.headers[header::X_FRAME_OPTIONS], "DENY");
}

fn run_body(epochs: u32, name: &str) -> Value {
    json!({
        "spec": {
            "name": name, "tags": ["baseline", "lr:0.1"],
            "model": {"arch": "resnet", "depth": 8, "width": 4},
            "data": {"dataset": "shapes10"},
            "train": {"epochs": epochs}
        },
        "analysis": {"checkpoints": "final", "spec": {"max_examples": 50}}
    })
}

/// What a worker reports for one block-wise record.
fn record(name: &str, block: u32, value: f64, stat: Option<&str>) -> Value {
    let mut r = json!({"name": name, "split": "test", "epoch": 1, "block": format!("s0.b{block}"),
        "block_index": block, "kind": "identity", "value": value, "n": 50});
    if let Some(s) = stat {
        r["stat"] = json!(s);
    }
    r
}

/// Submits a one-epoch run and finishes it.
async fn finished_run(app: &TestApp, name: &str) -> String {
    let run = app.post("/v1/runs", run_body(1, name)).await;
    assert_eq!(run.status, StatusCode::CREATED, "{}", run.text());
    let run_id = work(app).await;
    assert_eq!(run.json()["id"], run_id);
    run_id
}

/// Trains (one epoch) and analyses the oldest queued run the way the workers would, over
/// the worker API; returns its id.
async fn work(app: &TestApp) -> String {
    let events = json!([
        {"type": "epoch", "epoch": 1, "records": [
            {"name": "accuracy", "split": "test", "epoch": 1, "value": 0.625},
            {"name": "accuracy", "split": "train", "epoch": 1, "value": 0.5},
            {"name": "loss", "split": "test", "epoch": 1, "value": 1.25},
            // Not finite (JSON's null): stored, served and drawn around, never an error.
            {"name": "grad_norm_ratio", "split": "test", "epoch": 1, "value": null}]},
        {"type": "log", "level": "info", "message": format!("epoch 1 done {NASTY}")}]);
    let mut records: Vec<Value> = (0..3)
        .flat_map(|b| {
            [
                record("cosine", b, -0.1 * (b as f64 + 1.0), Some("mean")),
                record("l2_ratio", b, 0.5 / (b as f64 + 1.0), Some("mean")),
                record("drop_accuracy", b, 0.6, None),
            ]
        })
        .collect();
    let mut not_finite = record("drop_loss", 0, 0.0, None);
    not_finite["value"] = Value::Null;
    records.push(not_finite);
    // The analysed subset's accuracy (Table 1's train error).
    records.push(json!({"name": "accuracy", "split": "train", "epoch": 1, "value": 0.75, "n": 50}));
    // The unrolling at its selected step size: the train loss over one step, and its first order.
    let unrolled = |name, step, value| {
        json!({"name": name, "split": "train", "epoch": 1, "group": "all", "alpha": 0.05,
               "step": step, "value": value, "n": 50})
    };
    records.extend([
        unrolled("unroll_loss", 0, 0.5),
        unrolled("unroll_loss", 1, 0.6),
        unrolled("unroll_first_order", 0, 0.08),
    ]);
    let analysis = json!({"selected_alpha": 0.05, "notes": [format!("a note {NASTY}")],
        "examples": [{"split": "test", "examples": 12}], "seconds": 1.5,
        "passes": [{"metrics": ["cosine", "drop"], "seconds": 0.5},
            {"metrics": ["unroll"], "seconds": 0.7}],
        "records": records});
    app.train_and_analyse(events, analysis).await
}

/// While an analyzer works, the run's live part says where the analysis is, as the API's
/// JSON does (from the analyzer's reports); once the analysis ended, neither says it.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_live_run_page_says_where_a_running_analysis_is(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let run = app.post("/v1/runs", run_body(1, "live")).await;
    let run_id = run.json()["id"].as_str().unwrap().to_string();
    let training = app.start_training(json!([])).await;
    app.register_checkpoint(&training, 1).await;
    app.complete(&training, None).await;
    let analysing = app.claim("analyze", "gpu-8").await;
    let progress = json!({"split": "test", "pass": ["unroll"], "batch": 3, "batches": 8});
    let job = analysing["job_id"].as_str().unwrap();
    let report = app
        .post(
            &format!("/v1/worker/jobs/{job}/events"),
            json!({"lease_token": analysing["lease_token"],
                "events": [{"type": "analysing", "progress": progress}]}),
        )
        .await;
    assert_eq!(report.status, StatusCode::NO_CONTENT, "{}", report.text());
    let analysis_uri = format!(
        "/v1/analyses/{}",
        analysing["analysis"]["analysis_id"].as_str().unwrap()
    );
    let listed = app.get(&format!("/v1/runs/{run_id}/analyses")).await.json();
    assert_eq!(listed[0]["progress"], progress);
    assert_eq!(app.get(&analysis_uri).await.json()["progress"], progress);
    let live = || async {
        page(&app, &format!("/partials/runs/{run_id}"), None)
            .await
            .text()
    };
    let at = "test split · unroll · batch 3 of 8";
    let line = format!("Analysing the checkpoint of epoch 1: {at}");
    assert!(live().await.contains(&line), "{}", live().await);
    // The runs list says the run is still being analysed, and the workers' table where.
    let listed = || async { page(&app, "/partials/runs", None).await.text() };
    let list = listed().await;
    assert!(list.contains("epochs · 1 analysis pending"), "{list}");
    let workers = app.get("/v1/workers").await.json();
    let held = &workers[0]["job"];
    assert_eq!(held["analysis"]["epoch"], 1);
    assert_eq!(held["analysis"]["progress"], progress);
    let home = page(&app, "/", None).await.text();
    let doing = format!("/runs/{run_id}\">live</a> · the checkpoint of epoch 1: {at}");
    assert!(home.contains(&doing), "{home}");
    assert_eq!(
        app.get(&format!("/v1/runs/{run_id}")).await.json()["analyses_pending"],
        1
    );

    let result = json!({"selected_alpha": null, "notes": [], "examples": [], "seconds": 1.0,
        "records": []});
    app.complete(&analysing, Some(result)).await;
    assert_eq!(app.get(&analysis_uri).await.json()["progress"], Value::Null);
    assert!(!live().await.contains("Analysing the checkpoint"));
    assert!(!listed().await.contains("pending"));
}

/// Workers seen lately are listed; those seen only earlier in the week are folded away
/// (pods restarted under new names would otherwise fill the table).
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn workers_not_seen_lately_are_folded_away(pool: PgPool) {
    let app = spawn_app(pool.clone(), &[]);
    app.post("/v1/runs", run_body(1, "held")).await;
    app.claim("train", "gpu-live").await;
    let idle = json!({"kinds": ["analyze"], "worker": "gpu-gone",
        "capacity": {"memory": "gpu", "budget_mib": 1000}});
    let nothing = app.post("/v1/worker/claim", idle).await;
    assert_eq!(nothing.status, StatusCode::NO_CONTENT, "{}", nothing.text());
    let home = || async { page(&app, "/", None).await.text() };
    assert!(!home().await.contains("seen earlier this week"));
    sqlx::query("UPDATE workers SET seen_at = now() - interval '1 hour' WHERE name = 'gpu-gone'")
        .execute(&pool)
        .await
        .unwrap();
    let home = home().await;
    let (listed, folded) = home
        .split_once("1 seen earlier this week, not in the last 10 minutes")
        .unwrap_or_else(|| panic!("{home}"));
    assert!(
        listed.contains("gpu-live") && !listed.contains("gpu-gone"),
        "{home}"
    );
    assert!(
        folded.contains("gpu-gone") && folded.contains("not seen for over 10 min"),
        "{home}"
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn login_sets_a_strict_http_only_cookie_that_only_reads_the_api(pool: PgPool) {
    let app = spawn_app(pool, &[("STEPWISE_API_TOKEN", "sesame")]);
    let to_login = page(&app, "/?status=running", None).await;
    assert_eq!(to_login.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&to_login), "/login?next=%2F%3Fstatus%3Drunning");
    assert_html(&page(&app, "/login?next=/", None).await, StatusCode::OK);
    let wrong = form(
        &app,
        "/login",
        &[("token", "guess"), ("next", "/")],
        None,
        &[],
    )
    .await;
    assert_html(&wrong, StatusCode::UNAUTHORIZED);
    assert!(wrong.text().contains("not the API token"));
    assert!(session_cookie(&wrong).is_none());

    let login = form(
        &app,
        "/login",
        &[("token", "sesame"), ("next", "//evil.example/")],
        None,
        &[],
    )
    .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&login), "/", "only local paths are followed");
    let (cookie, line) = session_cookie(&login).expect("a session cookie");
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Strict"),
        "{line}"
    );
    assert!(!line.contains("Secure"), "plain HTTP: {line}");
    let behind_tls = form(
        &app,
        "/login",
        &[("token", "sesame")],
        None,
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(session_cookie(&behind_tls).unwrap().1.contains("Secure"));

    let home = page(&app, "/", Some(&cookie)).await;
    assert_html(&home, StatusCode::OK);
    assert!(home.text().contains("Log out"));
    // The cookie reads the API (download links) but never changes anything.
    assert_eq!(
        page(&app, "/v1/runs", Some(&cookie)).await.status,
        StatusCode::OK
    );
    let mut post = Request::builder()
        .method(Method::POST)
        .uri("/v1/runs")
        .header(header::COOKIE, &cookie)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(run_body(1, "x").to_string()))
        .unwrap();
    post.headers_mut().remove(header::AUTHORIZATION);
    assert_eq!(app.send(post).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        page(&app, "/v1/runs", Some("stepwise_session=forged"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Logging out needs the CSRF token and ends the session.
    let token = csrf(&home.text());
    let forged = form(&app, "/logout", &[("csrf", "forged")], Some(&cookie), &[]).await;
    assert_html(&forged, StatusCode::FORBIDDEN);
    let out = form(&app, "/logout", &[("csrf", &token)], Some(&cookie), &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page(&app, "/", Some(&cookie)).await.status,
        StatusCode::SEE_OTHER
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn pages_show_a_finished_run_and_escape_what_users_wrote(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let run_id = finished_run(&app, NASTY).await;

    let ratio = app
        .get(&format!("/v1/runs/{run_id}/metrics?name=grad_norm_ratio"))
        .await;
    assert_eq!(ratio.json()[0]["value"], Value::Null, "{}", ratio.text());
    let analyses = app.get(&format!("/v1/runs/{run_id}/analyses")).await.json();
    let analysis = app
        .get(&format!(
            "/v1/analyses/{}",
            analyses[0]["id"].as_str().unwrap()
        ))
        .await
        .json();
    let drop_loss: Vec<&Value> = analysis["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == "drop_loss")
        .collect();
    assert_eq!(drop_loss.len(), 1);
    assert_eq!(drop_loss[0]["value"], Value::Null);

    let home = page(&app, "/", None).await;
    assert_html(&home, StatusCode::OK);
    let html = home.text();
    assert!(!html.contains(NASTY), "unescaped: {html}");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{html}"
    );
    assert!(html.contains(&format!(r#"href="/runs/{run_id}""#)));
    assert!(html.contains("62.50%"), "best test accuracy: {html}");
    assert!(html.contains(r#"data-live="/partials/runs""#));
    // Filters select runs and keep their values in the form.
    let filtered = page(&app, "/?status=failed&arch=&tag=", None).await.text();
    assert!(filtered.contains("No runs match"), "{filtered}");
    assert!(
        filtered.contains(r#"<option value="failed" selected>"#),
        "{filtered}"
    );
    let tagged = page(&app, "/?tag=baseline", None).await.text();
    assert!(tagged.contains(&run_id), "{tagged}");

    let run = page(&app, &format!("/runs/{run_id}"), None).await;
    assert_html(&run, StatusCode::OK);
    let html = run.text();
    assert!(!html.contains(NASTY), "unescaped: {html}");
    for expected in [
        "succeeded",
        "gpu-7",             // the train attempt's worker
        "analyze (epoch 1)", // and the analysis attempt
        "epoch-0001.safetensors",
        "/v1/checkpoints/",             // download link
        r#"data-figure="curves""#,      // loss and accuracy per epoch
        r#"data-figure="fig2_cosine""#, // the analysis' figures
        r#"data-figure="fig4_drop""#,
        "<svg",
        "<th>cosine</th>", // per-block table
        "-0.3000",
        "12 test examples", // analysed, and how long it took
        "in 1.5 s (cosine+drop 0.5 s, unroll 0.7 s)", // and in which passes
        "selected unrolling α = 0.05 (train loss 0.500 → 0.600 (first order +0.080))",
        r#"data-figure="fig7_unrolling_"#,
        "Run spec",
        "&#34;depth&#34;: 8",
        "learning rate 0.1 for epoch 1.", // the schedule, resolved
    ] {
        assert!(
            html.contains(expected),
            "{expected:?} missing from the run page"
        );
    }
    assert!(
        !html.contains(r#"id="cancel""#),
        "a finished run has no cancel button"
    );
    let partial = page(&app, &format!("/partials/runs/{run_id}"), None).await;
    assert!(partial
        .text()
        .trim_start()
        .starts_with(r#"<div class="live""#));
    assert!(partial.text().contains("data-finished"));
    assert!(partial.text().contains(r#"data-reload-on="1:succeeded""#));

    // The same attempts as JSON.
    let attempts = app.get(&format!("/v1/runs/{run_id}/attempts")).await.json();
    let workers: Vec<(&str, &str, &str)> = attempts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap(),
                a["worker"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        workers,
        [
            ("train", "gpu-7", "succeeded"),
            ("analyze", "gpu-8", "succeeded")
        ]
    );

    let csv = page(&app, &format!("/runs/{run_id}/metrics.csv"), None).await;
    assert!(csv.content_type.starts_with("text/csv"));
    assert!(
        csv.text().contains("accuracy,test,1,,,0.625"),
        "{}",
        csv.text()
    );
    // The whole log as a file, as written (a text download, never a page).
    let html = page(&app, &format!("/runs/{run_id}"), None).await.text();
    assert!(html.contains(&format!(r#"<a href="/runs/{run_id}/log.txt">"#)));
    let log = page(&app, &format!("/runs/{run_id}/log.txt"), None).await;
    assert!(log.content_type.starts_with("text/plain"));
    assert!(log.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains(&format!("log-{run_id}.txt")));
    assert!(
        log.text()
            .contains(&format!(" info attempt 1: epoch 1 done {NASTY}\n")),
        "{}",
        log.text()
    );

    let missing = page(&app, "/runs/0190b8d6-0000-7000-8000-000000000000", None).await;
    assert_html(&missing, StatusCode::NOT_FOUND);
    assert!(missing.text().contains("not found"));
    assert_html(
        &page(&app, "/runs/not-a-uuid", None).await,
        StatusCode::BAD_REQUEST,
    );
    // Filters no run can match are answered as pages too, never reaching the database.
    for uri in [
        "/?arch=%00",
        "/?tag=%00",
        "/?colour=red",
        "/partials/runs?arch=deep",
    ] {
        let reply = page(&app, uri, None).await;
        assert_html(&reply, StatusCode::BAD_REQUEST);
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn buttons_need_the_sessions_csrf_token(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let run = app.post("/v1/runs", run_body(3, "cancel me")).await.json();
    let run_id = run["id"].as_str().unwrap();
    app.claim("train", "w").await;
    // The front page lists the worker with its budget and the run it works on.
    let front = page(&app, "/", None).await.text();
    let working = r#"<td>w</td><td>train</td><td class="num">1048576 MiB host</td>"#;
    assert!(front.contains(working), "{front}");
    assert!(front.contains(&format!(r#"train job of <a href="/runs/{run_id}">"#)));
    // Without a user token every visitor gets a session, so the forms carry a token.
    let first = page(&app, &format!("/runs/{run_id}"), None).await;
    let (cookie, _) = session_cookie(&first).expect("a session for the open dashboard");
    let token = csrf(&first.text());
    assert!(first.text().contains(r#"id="cancel""#));
    let uri = format!("/runs/{run_id}/cancel");
    for (cookie, token) in [
        (None, token.as_str()),
        (Some(cookie.as_str()), "forged"),
        (Some(cookie.as_str()), ""),
    ] {
        let refused = form(&app, &uri, &[("csrf", token)], cookie, &[]).await;
        assert_html(&refused, StatusCode::FORBIDDEN);
    }
    // A form without its fields (no browser sends one) is refused as a page too.
    let malformed = form(&app, &uri, &[("nothing", "")], Some(&cookie), &[]).await;
    assert_html(&malformed, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        malformed.text().contains("missing field `csrf`"),
        "{}",
        malformed.text()
    );
    assert_eq!(
        app.get(&format!("/v1/runs/{run_id}")).await.json()["status"],
        "running"
    );
    let cancelled = form(&app, &uri, &[("csrf", &token)], Some(&cookie), &[]).await;
    assert_eq!(
        cancelled.status,
        StatusCode::SEE_OTHER,
        "{}",
        cancelled.text()
    );
    assert_eq!(location(&cancelled), format!("/runs/{run_id}"));
    assert_eq!(
        app.get(&format!("/v1/runs/{run_id}")).await.json()["status"],
        "cancelling"
    );
    // A run being cancelled has no cancel button; pressing one again changes nothing.
    let page_now = page(&app, &format!("/runs/{run_id}"), Some(&cookie))
        .await
        .text();
    assert!(!page_now.contains(r#"id="cancel""#), "{page_now}");
    let again = form(&app, &uri, &[("csrf", &token)], Some(&cookie), &[]).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    let retry = form(
        &app,
        &format!("/runs/{run_id}/retry"),
        &[("csrf", &token)],
        Some(&cookie),
        &[],
    )
    .await;
    assert_html(&retry, StatusCode::CONFLICT);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_experiment_page_has_figures_claims_and_downloads(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let id = app.submit_experiment("demo", &[0]).await;
    let home = page(&app, "/", None).await.text();
    assert!(home.contains(&format!(r#"href="/experiments/{id}""#)));
    let listed = app.get("/v1/experiments?limit=500").await.json();
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert_eq!(
        (
            listed["items"][0]["runs"].as_u64(),
            listed["items"][0]["active"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let html = page(&app, &format!("/experiments/{id}"), None).await;
    assert_html(&html, StatusCode::OK);
    let html = html.text();
    assert!(
        html.contains("resnet-8") && html.contains("No analysed run yet"),
        "{html}"
    );
    let claims = app
        .get(&format!("/v1/experiments/{id}/claims"))
        .await
        .json();
    assert_eq!(claims["claims"], json!([]), "{claims}");
    work(&app).await;
    // The claims through the JSON API, as the CLI's `experiment show` reads them.
    let c1 = app.verdict(&id, "C1").await;
    let claims = app
        .get(&format!("/v1/experiments/{id}/claims"))
        .await
        .json();
    assert_eq!(
        (&c1["subject"], &c1["holds"]),
        (&json!("resnet-8"), &json!(true))
    );
    assert!(
        claims["note"]
            .as_str()
            .unwrap()
            .contains("resnet-8 1 of 300"),
        "{claims}"
    );
    assert!(claims["legend"].as_str().unwrap().starts_with("C1 cosine"));
    // Table 1: the configuration's parameters (ResNet-8 of width 4 is not the paper's
    // shape: no paper values), its seed's final test error and analysed train error.
    let row = &claims["table"][0];
    assert_eq!(row["configuration"], "resnet-8", "{claims}");
    assert!(row["parameters"].as_u64().unwrap() > 0, "{claims}");
    assert!(row["paper_parameters"].is_null() && row["paper_test_error"].is_null());
    assert_eq!(row["test_errors"].as_array().unwrap().len(), 1, "{claims}");
    assert_eq!(row["train_errors"], json!([0.25]), "{claims}");
    let html = page(&app, &format!("/experiments/{id}"), None).await.text();
    assert!(
        html.contains("Table 1: parameters and errors") && html.contains("(n=1)"),
        "{html}"
    );
    let csv = app
        .send(
            Request::get(format!("/v1/experiments/{id}/claims"))
                .header(header::ACCEPT, "text/csv")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .text();
    assert!(
        csv.starts_with("claim,subject,holds,measured\nC1,resnet-8,true,"),
        "{csv}"
    );
    let html = page(&app, &format!("/experiments/{id}"), None).await.text();
    for expected in [
        "<td>C1</td>", // the claims table
        "<td>C4</td>",
        "verdict-yes",                  // every block's cosine is negative here
        r#"data-figure="fig2_cosine""#, // figures over seeds
        "62.50%",                       // final test accuracy of the configuration
        "C1 cosine &#60; 0 for ≥ 80% of identity blocks", // the claims' legend, escaped
        "(epochs of the paper&#39;s): resnet-8 1 of 300", // one epoch is no trained network
    ] {
        assert!(
            html.contains(expected),
            "{expected:?} missing from the experiment page"
        );
    }
    assert!(
        html.contains(r#"<details class="blocks" data-metric="l2_ratio" open>"#),
        "{html}"
    );
    for download in ["summary.csv", "claims.csv", "blocks.csv"] {
        let reply = page(&app, &format!("/experiments/{id}/{download}"), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{download}");
        assert!(reply.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("attachment"));
    }
    let summary = page(&app, &format!("/experiments/{id}/summary.csv"), None)
        .await
        .text();
    assert!(summary.starts_with("label,runs,succeeded,"), "{summary}");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn experiments_are_paged_on_the_runs_page(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    for i in 0..21 {
        app.submit_experiment(&format!("exp-{i:02}"), &[0]).await;
    }
    let first = page(&app, "/", None).await.text();
    // Experiment links read `>name</a>`; runs are listed as `name/config/seed`.
    let listed = |html: &str, name: &str| html.contains(&format!(">{name}</a>"));
    assert!(listed(&first, "exp-20") && listed(&first, "exp-01") && !listed(&first, "exp-00"));
    let start = first
        .find("/?experiments_cursor=")
        .expect("a link to older experiments");
    let older = first[start..].split('"').next().unwrap().to_string();
    let second = page(&app, &older, None).await;
    assert_html(&second, StatusCode::OK);
    let second = second.text();
    assert!(
        listed(&second, "exp-00") && !listed(&second, "exp-01"),
        "{second}"
    );
    assert!(!second.contains("/?experiments_cursor="));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_experiment_s_runs_are_cancelled_and_retried_from_its_page(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let id = app.submit_experiment("buttons", &[0, 1]).await;
    let uri = format!("/experiments/{id}");
    let first = page(&app, &uri, None).await;
    let (cookie, _) = session_cookie(&first).expect("a session for the open dashboard");
    let html = first.text();
    assert!(html.contains(r#"id="cancel""#) && !html.contains(r#"id="retry""#));
    let token = csrf(&html);
    let press = |action: &'static str, token: String| {
        let (app, uri, cookie) = (&app, &uri, &cookie);
        async move {
            let action = format!("{uri}/{action}");
            form(app, &action, &[("csrf", &token)], Some(cookie), &[]).await
        }
    };
    assert_html(
        &press("cancel", "forged".into()).await,
        StatusCode::FORBIDDEN,
    );
    let statuses = || async {
        let view = app.get(&format!("/v1/experiments/{id}")).await.json();
        run_statuses(&view)
    };
    assert_eq!(statuses().await, ["queued", "queued"]);
    let cancelled = press("cancel", token.clone()).await;
    assert_eq!(
        cancelled.status,
        StatusCode::SEE_OTHER,
        "{}",
        cancelled.text()
    );
    assert_eq!(location(&cancelled), uri);
    assert_eq!(statuses().await, ["cancelled", "cancelled"]);
    let html = page(&app, &uri, Some(&cookie)).await.text();
    assert!(html.contains(r#"id="retry""#) && !html.contains(r#"id="cancel""#));
    let retried = press("retry", token).await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER, "{}", retried.text());
    assert_eq!(statuses().await, ["queued", "queued"]);
}

const RUN_SPEC: &str = r#"name = "from the form"
tags = ["form"]
[model]
arch = "resnet"
depth = 8
width = 4
[data]
dataset = "shapes10"
[train]
epochs = 2
"#;

const EXPERIMENT_SPEC: &str = r#"name = "two-widths"
seeds = [0]
[data]
dataset = "shapes10"
[train]
epochs = 2
[analysis]
max_examples = 32
[[configs]]
model = { arch = "resnet", depth = 8, width = 4 }
[[configs]]
label = "wider"
model = { arch = "resnet", depth = 8, width = 8 }
"#;

/// A safetensors file of no tensors (the API checks no more than how it begins).
fn safetensors_bytes() -> Vec<u8> {
    let header = br#"{"__metadata__":{}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes
}

/// A session's cookie and CSRF token, from the submission page.
async fn submit_page(app: &TestApp) -> (String, String, String) {
    let reply = page(app, "/submit", None).await;
    assert_html(&reply, StatusCode::OK);
    let (cookie, _) = session_cookie(&reply).expect("a session for the open dashboard");
    let html = reply.text();
    (cookie, csrf(&html), html)
}

/// The submission form as a browser sends it: the text fields, then the file input (empty,
/// without a file name, when no file was chosen).
async fn submit(
    app: &TestApp,
    cookie: &str,
    fields: &[(&str, &str)],
    weights: (&str, &[u8]),
) -> Reply {
    submit_files(app, cookie, fields, &[weights]).await
}

/// [`submit`] with several files chosen, each (file name, bytes).
async fn submit_files(
    app: &TestApp,
    cookie: &str,
    fields: &[(&str, &str)],
    files: &[(&str, &[u8])],
) -> Reply {
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = fields
        .iter()
        .map(|(name, text)| (*name, None, text.as_bytes()))
        .collect();
    parts.extend(
        files
            .iter()
            .map(|(name, bytes)| ("weights", Some(*name), *bytes)),
    );
    let (content_type, body) = multipart(&parts);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/submit")
        .header(header::CONTENT_TYPE, content_type)
        .header(header::COOKIE, cookie)
        .body(Body::from(body))
        .unwrap();
    app.send(request).await
}

/// The id at the end of a redirect to a run's or an experiment's page.
fn created_at(reply: &Reply, page: &str) -> String {
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    let to = location(reply);
    to.strip_prefix(page)
        .unwrap_or_else(|| panic!("{to} is not under {page}"))
        .to_string()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn runs_experiments_and_weights_are_submitted_from_the_submit_page(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let (cookie, token, html) = submit_page(&app).await;
    // The form starts from the README's quick run and names the datasets.
    assert!(html.contains("depth = 20") && html.contains("<code>shapes10</code>"));
    assert!(
        html.contains(r#"<a href="/submit">Submit</a>"#),
        "in the header"
    );

    let run = submit(
        &app,
        &cookie,
        &[
            ("csrf", &token),
            ("spec", RUN_SPEC),
            ("analysis", "every:1"),
            ("settings", "max_examples = 64"),
        ],
        ("", b""),
    )
    .await;
    let id = created_at(&run, "/runs/");
    let view = app.get(&format!("/v1/runs/{id}")).await.json();
    assert_eq!(
        (&view["name"], &view["status"], &view["weights"]),
        (&json!("from the form"), &json!("queued"), &Value::Null)
    );
    assert_eq!(view["analysis"]["checkpoints"], json!({"every": 1}));
    assert_eq!(view["analysis"]["spec"]["max_examples"], 64);
    // `none`: no checkpoint is analysed.
    let unanalysed = submit(
        &app,
        &cookie,
        &[("csrf", &token), ("spec", RUN_SPEC), ("analysis", "none")],
        ("", b""),
    )
    .await;
    let id = created_at(&unanalysed, "/runs/");
    assert_eq!(
        app.get(&format!("/v1/runs/{id}")).await.json()["analysis"],
        Value::Null
    );

    let experiment = submit(
        &app,
        &cookie,
        &[
            ("csrf", &token),
            ("spec", EXPERIMENT_SPEC),
            ("analysis", "final"),
            ("settings", ""),
        ],
        ("", b""),
    )
    .await;
    let id = created_at(&experiment, "/experiments/");
    let view = app.get(&format!("/v1/experiments/{id}")).await.json();
    assert_eq!(view["name"], "two-widths");
    assert_eq!(view["runs"].as_array().unwrap().len(), 2);
    assert_eq!(view["spec"]["analysis"]["max_examples"], 32);

    // A run made of weights: the file stored as the run's, its reading as given.
    let weights = safetensors_bytes();
    let imported = submit(
        &app,
        &cookie,
        &[
            ("csrf", &token),
            ("spec", RUN_SPEC),
            ("analysis", "final"),
            ("key", "state_dict"),
            ("strip_prefix", " "),
        ],
        ("r8.safetensors", &weights),
    )
    .await;
    let id = created_at(&imported, "/runs/");
    let view = app.get(&format!("/v1/runs/{id}")).await.json();
    assert_eq!(view["weights"]["file_name"], "r8.safetensors");
    assert_eq!(view["weights"]["key"], "state_dict");
    assert_eq!(view["weights"]["strip_prefix"], Value::Null, "blank: none");
    assert_eq!(
        std::fs::read(app.checkpoints.path().join(format!("runs/{id}/weights"))).unwrap(),
        weights
    );
    let page = page(&app, &format!("/runs/{id}"), Some(&cookie))
        .await
        .text();
    assert!(page.contains("<code>r8.safetensors</code>"), "{page}");

    // An experiment with one of its runs made of weights, the file named after it (with
    // the browser's empty part of no file among them); the other run trains.
    let imported = submit_files(
        &app,
        &cookie,
        &[
            ("csrf", &token),
            ("spec", EXPERIMENT_SPEC),
            ("key", "state_dict"),
        ],
        &[("", b""), ("wider-seed0.safetensors", &weights)],
    )
    .await;
    let id = created_at(&imported, "/experiments/");
    let view = app.get(&format!("/v1/experiments/{id}")).await.json();
    let runs: Vec<(&str, &Value)> = view["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["label"].as_str().unwrap(), &r["weights"]))
        .collect();
    assert_eq!(runs[0], ("resnet-8", &Value::Null), "{view}");
    assert_eq!(runs[1].0, "wider", "{view}");
    assert_eq!(runs[1].1["file_name"], "wider-seed0.safetensors", "{view}");
    assert_eq!(runs[1].1["key"], "state_dict", "{view}");
    let wider = view["runs"][1]["id"].as_str().unwrap();
    assert_eq!(
        std::fs::read(app.checkpoints.path().join(format!("runs/{wider}/weights"))).unwrap(),
        weights
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_refused_submission_comes_back_as_written_with_every_reason(pool: PgPool) {
    let app = spawn_app(pool, &[("STEPWISE_MAX_UPLOAD_BYTES", "4096")]);
    let (cookie, token, _) = submit_page(&app).await;
    let weights = safetensors_bytes();
    let bad_run = format!(
        "# {NASTY}\n{}",
        RUN_SPEC
            .replace("depth = 8", "depth = 9")
            .replace("width = 4", "width = 0")
    );
    let elsewhere = RUN_SPEC.replace("shapes10", "nowhere");
    let too_large = [weights.as_slice(), &[0; 8192]].concat();
    /// Text fields, the files (name, bytes), the status, and what the errors must say.
    type Case<'a> = (
        Vec<(&'a str, &'a str)>,
        Vec<(&'a str, &'a [u8])>,
        StatusCode,
        Vec<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            vec![("spec", &bad_run), ("settings", "max_examples = \"many\"")],
            vec![("", b"")],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![
                "model.depth: ",
                "analysis.spec.max_examples: line 1, column 16: invalid type",
            ],
        ),
        (
            vec![
                ("spec", RUN_SPEC),
                ("analysis", "none"),
                ("settings", "window = 3"),
            ],
            vec![("", b"")],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["analysis.spec: settings of no analysis"],
        ),
        (
            vec![("spec", &bad_run)],
            vec![("", b"")],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["model.depth: ", "model.width: "],
        ),
        (
            vec![("spec", "[model\n")],
            vec![("", b"")],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["spec: "],
        ),
        (
            vec![("spec", &elsewhere)],
            vec![("", b"")],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["data.dataset: "],
        ),
        (
            vec![("spec", RUN_SPEC), ("analysis", "sometimes")],
            vec![("", b"")],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["analysis: &#34;sometimes&#34;: expected final, every:K"],
        ),
        (
            vec![("spec", RUN_SPEC), ("analysis", "every:1")],
            vec![("r8.safetensors", &weights)],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["analysis.checkpoints: an imported run has one checkpoint"],
        ),
        (
            vec![("spec", RUN_SPEC)],
            vec![("notes.txt", b"not weights at all")],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["neither safetensors nor"],
        ),
        (
            vec![("spec", EXPERIMENT_SPEC)],
            vec![
                ("wider-seed0.safetensors", &weights),
                ("r8.safetensors", &weights),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![
                "weights: the file &#34;r8.safetensors&#34; is named after no run of the \
                 experiment: name each file after its run, resnet-8-seed0, wider-seed0,",
            ],
        ),
        (
            vec![("spec", EXPERIMENT_SPEC)],
            vec![
                ("wider-seed0.pt", &weights),
                ("wider-seed0.safetensors", &weights),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["weights: two files are named after wider-seed0: one per run"],
        ),
        (
            vec![("spec", RUN_SPEC)],
            vec![
                ("r8.safetensors", &weights),
                ("again.safetensors", &weights),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["weights: a run is made of one file: choose one"],
        ),
        (
            vec![("spec", EXPERIMENT_SPEC), ("analysis", "every:1")],
            vec![("", b"")],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["analysis: an experiment&#39;s runs are analysed as its"],
        ),
        (
            vec![("spec", EXPERIMENT_SPEC), ("settings", "max_examples = 5")],
            vec![("", b"")],
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["leave the checkpoints at final and the settings empty"],
        ),
    ];
    for (fields, files, status, reasons) in &cases {
        let mut all = vec![("csrf", token.as_str())];
        all.extend(fields);
        let refused = submit_files(&app, &cookie, &all, files).await;
        assert_html(&refused, *status);
        let html = refused.text();
        assert!(html.contains(r#"id="submit-errors""#), "{html}");
        for reason in reasons {
            assert!(html.contains(reason), "{reason}: {html}");
        }
        // The spec comes back as written, escaped.
        let spec = fields.iter().find(|(name, _)| *name == "spec").unwrap().1;
        let first_line = spec.lines().next().unwrap();
        let escaped = first_line
            .replace('<', "&#60;")
            .replace('>', "&#62;")
            .replace('"', "&#34;");
        assert!(html.contains(&escaped), "{escaped}: {html}");
        assert!(!html.contains(NASTY));
    }
    // A form over the upload limit cannot be read: a page says so, and where the form is.
    let large = submit(
        &app,
        &cookie,
        &[("csrf", &token), ("spec", RUN_SPEC)],
        ("big.safetensors", &too_large),
    )
    .await;
    assert_html(&large, StatusCode::PAYLOAD_TOO_LARGE);
    let html = large.text();
    assert!(
        html.contains("upload limit (STEPWISE_MAX_UPLOAD_BYTES)"),
        "{html}"
    );
    assert!(html.contains("Back button returns to the form"), "{html}");
    // Without the session's token nothing is read further.
    let forged = submit(
        &app,
        &cookie,
        &[("csrf", "forged"), ("spec", RUN_SPEC)],
        ("", b""),
    )
    .await;
    assert_html(&forged, StatusCode::FORBIDDEN);
    // A part after the files (no browser sends one) is refused: what was checked before
    // the files were received is what would be submitted.
    let (content_type, body) = multipart(&[
        ("csrf", None, token.as_bytes()),
        ("spec", None, RUN_SPEC.as_bytes()),
        ("weights", Some("r8.safetensors"), &weights),
        ("spec", None, b"[model]"),
    ]);
    let late = app
        .send(
            Request::post("/submit")
                .header(header::CONTENT_TYPE, content_type)
                .header(header::COOKIE, &cookie)
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_html(&late, StatusCode::BAD_REQUEST);
    assert!(
        late.text().contains("comes after the files"),
        "{}",
        late.text()
    );
    // Nothing was created, and no file was left in the checkpoint store.
    assert_eq!(app.get("/v1/runs").await.json()["items"], json!([]));
    assert_eq!(app.get("/v1/experiments").await.json()["items"], json!([]));
    assert_eq!(files_below(app.checkpoints.path()), Vec::<String>::new());
}

/// The text of the form's field `name` (an input's value or a textarea's content), as the
/// browser would send it.
fn field(html: &str, name: &str) -> String {
    let textarea = format!(r#"<textarea name="{name}""#);
    let raw = if let Some(at) = html.find(&textarea) {
        let content = &html[at..];
        let start = content.find('>').unwrap() + 1;
        &content[start..content.find("</textarea>").unwrap()]
    } else {
        let input = format!(r#"name="{name}" value=""#);
        let at = html
            .find(&input)
            .unwrap_or_else(|| panic!("no field {name}"))
            + input.len();
        html[at..].split('"').next().unwrap()
    };
    raw.replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_run_or_an_experiment_is_submitted_again_from_a_copy_of_its_form(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let (cookie, token, _) = submit_page(&app).await;
    let sent = |fields: Vec<(&'static str, String)>, weights: (&'static str, Vec<u8>)| {
        let app = &app;
        let (cookie, token) = (cookie.clone(), token.clone());
        async move {
            let mut all = vec![("csrf", token)];
            all.extend(fields);
            let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            submit(app, &cookie, &all, (weights.0, &weights.1)).await
        }
    };
    let form_of = |html: &str| -> Vec<(&'static str, String)> {
        ["spec", "analysis", "settings", "key", "strip_prefix"]
            .into_iter()
            .map(|name| (name, field(html, name)))
            .collect()
    };

    // A run made of weights, analysed on 64 test examples.
    let original = sent(
        vec![
            ("spec", RUN_SPEC.to_string()),
            ("analysis", "final".into()),
            ("settings", "max_examples = 64\nsplits = [\"test\"]".into()),
            ("key", "state_dict".into()),
        ],
        ("r8.safetensors", safetensors_bytes()),
    )
    .await;
    let id = created_at(&original, "/runs/");
    let run_page = page(&app, &format!("/runs/{id}"), Some(&cookie))
        .await
        .text();
    assert!(run_page.contains(&format!(r#"<a href="/submit?run={id}" id="copy">"#)));
    let copy = page(&app, &format!("/submit?run={id}"), Some(&cookie)).await;
    assert_html(&copy, StatusCode::OK);
    let html = copy.text();
    assert!(html.contains(r#"id="copy-of""#) && html.contains("<code>r8.safetensors</code>"));
    let form = form_of(&html);
    assert_eq!(form[1], ("analysis", "final".to_string()));
    assert_eq!(form[3], ("key", "state_dict".to_string()));
    // Sent as it is, without the file: the same spec and plan, trained.
    let again = sent(form, ("", vec![])).await;
    let copied = created_at(&again, "/runs/");
    assert_ne!(copied, id);
    let (was, is) = (
        app.get(&format!("/v1/runs/{id}")).await.json(),
        app.get(&format!("/v1/runs/{copied}")).await.json(),
    );
    assert_eq!(
        (&is["spec"], &is["analysis"]),
        (&was["spec"], &was["analysis"])
    );
    assert_eq!(is["analysis"]["spec"]["splits"], json!(["test"]));
    assert_eq!(is["weights"], Value::Null);

    // An experiment, likewise.
    let experiment = sent(vec![("spec", EXPERIMENT_SPEC.to_string())], ("", vec![])).await;
    let id = created_at(&experiment, "/experiments/");
    let experiment_page = page(&app, &format!("/experiments/{id}"), Some(&cookie)).await;
    let link = format!(r#"<a href="/submit?experiment={id}" id="copy">"#);
    assert!(experiment_page.text().contains(&link));
    let copy = page(&app, &format!("/submit?experiment={id}"), Some(&cookie)).await;
    let again = sent(form_of(&copy.text()), ("", vec![])).await;
    let copied = created_at(&again, "/experiments/");
    let (was, is) = (
        app.get(&format!("/v1/experiments/{id}")).await.json(),
        app.get(&format!("/v1/experiments/{copied}")).await.json(),
    );
    assert_eq!(is["spec"], was["spec"]);

    // Only one at a time, and only what exists.
    let both = format!("/submit?run={id}&experiment={id}");
    assert_html(
        &page(&app, &both, Some(&cookie)).await,
        StatusCode::BAD_REQUEST,
    );
    let missing = format!("/submit?run={}", uuid::Uuid::now_v7());
    assert_html(
        &page(&app, &missing, Some(&cookie)).await,
        StatusCode::NOT_FOUND,
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn runs_picked_in_the_table_are_drawn_together(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let first = finished_run(&app, "first").await;
    let second = finished_run(&app, "second").await;
    let front = page(&app, "/", None).await;
    let (cookie, _) = session_cookie(&front).unwrap();
    let html = front.text();
    assert!(html.contains(r#"<form method="get" action="/compare" class="compare">"#));
    for id in [&first, &second] {
        let pick = format!(r#"<input type="checkbox" name="runs" value="{id}""#);
        assert!(html.contains(&pick), "{html}");
    }
    // As the form sends the picks: one parameter per run.
    let compared = page(
        &app,
        &format!("/compare?runs={first}&runs={second}"),
        Some(&cookie),
    )
    .await;
    assert_html(&compared, StatusCode::OK);
    let html = compared.text();
    // The same seed twice is no pair of seeds: each run is drawn under its own name.
    for (id, label) in [(&first, "first"), (&second, "second")] {
        let row = format!(r#"<a href="/runs/{id}">{label}</a>"#);
        assert!(html.contains(&row), "{html}");
        assert!(html.contains(&format!("<td>{label}</td>")), "{html}");
    }
    assert!(html.contains(r#"data-figure="fig2_cosine""#), "{html}");
    assert!(html.contains(&format!(r#"href="/v1/figures?runs={first},{second}""#)));
    let listed = app
        .get(&format!("/v1/figures?runs={first},{second}"))
        .await
        .json();
    let drawn = html.matches("<figure class=\"chart\"").count();
    assert_eq!(drawn, listed["figures"].as_array().unwrap().len());
    // Their blocks side by side: a table per metric, a column per run (each its own
    // configuration), the cosines unfolded and the values the analyses reported.
    let table = html
        .split(r#"<details class="blocks" data-metric="cosine" open>"#)
        .nth(1)
        .unwrap_or_else(|| panic!("no cosine table: {html}"))
        .split("</details>")
        .next()
        .unwrap();
    assert!(table.contains("test split"), "{table}");
    assert!(
        table.contains(
            r#"<th class="num">first (epoch 1)</th><th class="num">second (epoch 1)</th>"#
        ),
        "{table}"
    );
    assert!(
        table.contains(
            r#"<td><code>s0.b2</code></td><td class="num">-0.3000</td><td class="num">-0.3000</td>"#
        ),
        "{table}"
    );
    assert!(html.contains(r#"data-metric="drop_loss""#), "{html}");
    let csv_link = format!("/compare/blocks.csv?runs={first},{second}");
    assert!(html.contains(&format!(r#"href="{csv_link}""#)), "{html}");
    let csv = page(&app, &csv_link, Some(&cookie)).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("blocks.csv"));
    let csv = csv.text();
    assert!(
        csv.starts_with("configuration,epoch,name,split,block,block_index,kind,runs,mean,sd\n"),
        "{csv}"
    );
    assert!(
        csv.contains("\nsecond,1,l2_ratio,test,s0.b1,1,identity,1,0.25,0.0\n"),
        "{csv}"
    );
    // The API takes the checkboxes' repeated parameter as it takes a list.
    let repeated = app
        .get(&format!("/v1/figures?runs={first}&runs={second}"))
        .await
        .json();
    assert_eq!(repeated, listed);

    for (query, status) in [
        ("", StatusCode::BAD_REQUEST),
        ("?runs=", StatusCode::BAD_REQUEST),
        ("?run=x", StatusCode::BAD_REQUEST),
        ("?runs=not-an-id", StatusCode::BAD_REQUEST),
    ] {
        let reply = page(&app, &format!("/compare{query}"), Some(&cookie)).await;
        assert_html(&reply, status);
    }
    let missing = format!("/compare?runs={}", uuid::Uuid::now_v7());
    assert_html(
        &page(&app, &missing, Some(&cookie)).await,
        StatusCode::NOT_FOUND,
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_checkpoint_is_analysed_from_its_run_s_page(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let run = finished_run(&app, "analysed").await;
    let uri = format!("/runs/{run}/analyses");
    let shown = page(&app, &format!("/runs/{run}"), None).await;
    let (cookie, _) = session_cookie(&shown).unwrap();
    let html = shown.text();
    let token = csrf(&html);
    // Its one epoch checkpoint, and the settings of its plan to start from.
    assert!(
        html.contains(r#"<option value="1" selected>epoch 1</option>"#),
        "{html}"
    );
    assert!(html.contains(">max_examples = 50\n</textarea>"), "{html}");
    let listed = format!("/v1/runs/{run}/analyses");
    let analyses = || async { app.get(&listed).await.json().as_array().unwrap().clone() };
    assert_eq!(analyses().await.len(), 1);

    // Refused with every reason at once, the form as it was written; nothing queued.
    let reasons = |reply: &Reply| {
        let html = reply.text();
        let listed = html
            .split(r#"id="analyse-errors""#)
            .nth(1)
            .unwrap_or_default();
        listed.split("</ul>").next().unwrap().to_string()
    };
    let settings = "max_examples = 20\ngradient = \"sideways\"";
    let refused = form(
        &app,
        &uri,
        &[("csrf", &token), ("epoch", "one"), ("settings", settings)],
        Some(&cookie),
        &[],
    )
    .await;
    assert_html(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    let said = reasons(&refused);
    for reason in [
        "<li>epoch: &#34;one&#34; is not a checkpoint&#39;s epoch</li>",
        "<li>gradient: line 2, column 12: unknown variant `sideways`",
    ] {
        assert!(said.contains(reason), "{reason:?} missing: {said}");
    }
    let html = refused.text();
    assert!(
        html.contains(">max_examples = 20\ngradient = &#34;sideways&#34;</textarea>"),
        "{html}"
    );
    // Settings that read but are out of range: refused as the API refuses them.
    let out_of_range = form(
        &app,
        &uri,
        &[
            ("csrf", &token),
            ("epoch", "1"),
            ("settings", "alphas = [20.0]"),
        ],
        Some(&cookie),
        &[],
    )
    .await;
    assert_html(&out_of_range, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reasons(&out_of_range).contains("alphas: 20 is out of range"),
        "{}",
        reasons(&out_of_range)
    );
    assert!(html.contains(r#"<details class="analyse" open>"#));
    // A checkpoint the run does not have on disk: the store's refusal, on the form.
    let missing = form(
        &app,
        &uri,
        &[("csrf", &token), ("epoch", "7"), ("settings", "")],
        Some(&cookie),
        &[],
    )
    .await;
    assert_html(&missing, StatusCode::CONFLICT);
    assert!(missing
        .text()
        .contains("no checkpoint after epoch 7 on disk"));
    // A forged token changes nothing.
    let forged = form(
        &app,
        &uri,
        &[("csrf", "forged"), ("epoch", "1"), ("settings", "")],
        Some(&cookie),
        &[],
    )
    .await;
    assert_html(&forged, StatusCode::FORBIDDEN);
    assert_eq!(analyses().await.len(), 1);

    // Queued with the settings written, and the page goes to it.
    let accepted = form(
        &app,
        &uri,
        &[
            ("csrf", &token),
            ("epoch", "1"),
            (
                "settings",
                "max_examples = 20\ngradient = \"skip\"\nunroll_bn = \"batch\"",
            ),
        ],
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(
        accepted.status,
        StatusCode::SEE_OTHER,
        "{}",
        accepted.text()
    );
    let after = analyses().await;
    assert_eq!(after.len(), 2);
    let queued = after
        .iter()
        .find(|a| a["status"] == "queued")
        .unwrap_or_else(|| panic!("{after:?}"));
    let queued_id = queued["id"].as_str().unwrap();
    assert_eq!(
        location(&accepted),
        format!("/runs/{run}?analysis={queued_id}#analysis-{queued_id}")
    );
    assert_eq!(
        (
            &queued["epoch"],
            &queued["spec"]["max_examples"],
            &queued["spec"]["gradient"],
            &queued["spec"]["unroll_bn"]
        ),
        (&json!(1), &json!(20), &json!("skip"), &json!("batch"))
    );
    // The run's page lists its two analyses of epoch 1, told apart by their settings, and
    // shows one in full: the one that succeeded, or the one asked for.
    let planned = r#"<code class="settings">max_examples = 50</code>"#;
    let asked = r#"<code class="settings">gradient = &#34;skip&#34;; max_examples = 20; unroll_bn = &#34;batch&#34;</code>"#;
    // As the full section says it (the list's cell has no "settings " before it).
    let full = |settings: &str| format!("settings {settings}");
    let shown = page(&app, &format!("/runs/{run}"), Some(&cookie))
        .await
        .text();
    assert_eq!(shown.matches(r#"<section class="analysis""#).count(), 1);
    for (settings, in_full) in [(planned, true), (asked, false)] {
        assert!(shown.contains(&format!("<td>{settings}</td>")), "{shown}");
        assert_eq!(shown.contains(&full(settings)), in_full, "{shown}");
    }
    let to_queued = page(&app, &location(&accepted), Some(&cookie)).await;
    assert_html(&to_queued, StatusCode::OK);
    let shown = to_queued.text();
    assert!(shown.contains(&format!(
        r#"<section class="analysis" id="analysis-{queued_id}">"#
    )));
    assert!(shown.contains(&full(asked)) && !shown.contains(&full(planned)));
    // An analysis of another run, or no id at all, is refused.
    let other = app.post("/v1/runs", run_body(1, "other")).await.json()["id"].clone();
    let other = other.as_str().unwrap();
    let elsewhere = page(
        &app,
        &format!("/runs/{other}?analysis={queued_id}"),
        Some(&cookie),
    )
    .await;
    assert_html(&elsewhere, StatusCode::NOT_FOUND);
    let garbled = page(&app, &format!("/runs/{run}?analysis=zzz"), Some(&cookie)).await;
    assert_html(&garbled, StatusCode::BAD_REQUEST);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn runs_and_experiments_are_deleted_from_their_pages_after_asking(pool: PgPool) {
    let app = spawn_app(pool, &[]);
    let run = finished_run(&app, "doomed").await;
    let shown = page(&app, &format!("/runs/{run}"), None).await;
    let (cookie, _) = session_cookie(&shown).unwrap();
    let link = format!(r#"<a href="/runs/{run}/delete" id="delete""#);
    assert!(shown.text().contains(&link), "{}", shown.text());
    // The button is behind a page that says what goes.
    let asked = page(&app, &format!("/runs/{run}/delete"), Some(&cookie)).await;
    assert_html(&asked, StatusCode::OK);
    let html = asked.text();
    assert!(
        html.contains("the database: 1 checkpoint file (7 B), 1 analysis, its metrics"),
        "{html}"
    );
    let token = csrf(&html);
    let uri = format!("/runs/{run}/delete");
    let forged = form(&app, &uri, &[("csrf", "forged")], Some(&cookie), &[]).await;
    assert_html(&forged, StatusCode::FORBIDDEN);
    let run_dir = app.checkpoints.path().join(format!("runs/{run}"));
    assert!(run_dir.exists());
    let deleted = form(&app, &uri, &[("csrf", &token)], Some(&cookie), &[]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.text());
    assert_eq!(location(&deleted), "/");
    assert_eq!(
        app.get(&format!("/v1/runs/{run}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(!run_dir.exists());

    // A run training has no delete link, and the button is refused with the reason.
    let busy = app.post("/v1/runs", run_body(3, "busy")).await.json();
    let busy = busy["id"].as_str().unwrap();
    app.claim("train", "w").await;
    assert!(!page(&app, &format!("/runs/{busy}"), Some(&cookie))
        .await
        .text()
        .contains(r#"id="delete""#));
    let uri = format!("/runs/{busy}/delete");
    let refused = form(&app, &uri, &[("csrf", &token)], Some(&cookie), &[]).await;
    assert_html(&refused, StatusCode::CONFLICT);
    assert_eq!(
        app.get(&format!("/v1/runs/{busy}")).await.json()["status"],
        "running"
    );

    // An experiment, once none of its runs is queued or running.
    let experiment = app.submit_experiment("gone", &[0]).await;
    let its_page = format!("/experiments/{experiment}");
    assert!(!page(&app, &its_page, Some(&cookie))
        .await
        .text()
        .contains(r#"id="delete""#));
    let cancelled = app
        .call(
            Method::POST,
            &format!("/v1/experiments/{experiment}/cancel"),
            None,
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    assert!(page(&app, &its_page, Some(&cookie))
        .await
        .text()
        .contains(&format!(r#"<a href="{its_page}/delete" id="delete""#)));
    let asked = page(&app, &format!("{its_page}/delete"), Some(&cookie)).await;
    assert!(
        asked
            .text()
            .contains("the database: its runs (1) with their"),
        "{}",
        asked.text()
    );
    let deleted = form(
        &app,
        &format!("{its_page}/delete"),
        &[("csrf", &token)],
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.text());
    assert_eq!(
        app.get(&format!("/v1/experiments/{experiment}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}
