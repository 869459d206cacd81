//! A small blocking client of the W3C WebDriver protocol, for driving headless Chromium
//! through `chromedriver` in the dashboard's browser test.
//!
//! Written here rather than taken from fantoccini: that crate's dependencies (the
//! `webdriver` crate's ICU text segmentation) turn on `syn`'s `fold` feature, and since
//! `cargo test --workspace` unifies dev-dependency features, every proc macro and every
//! crate using one (serde, sqlx, candle, …) was compiled a second time for the tests —
//! five minutes of each CI run. The handful of commands a test needs are plain JSON over
//! HTTP (<https://www.w3.org/TR/webdriver2/>).

use base64::Engine;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver` on a free loopback port, killed when dropped.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian: apt-get install chromium chromium-driver; scripts/test installs them)");
        crate::wait_for("chromedriver to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A new headless Chromium session with these command-line arguments.
    pub fn session(&self, chromium: &str, args: &[String]) -> Browser {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("an HTTP client");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}}}});
        let reply = call(http.post(format!("{}/session", self.url)).json(&caps));
        let id = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {reply}"))
            .to_string();
        Browser {
            http,
            base: format!("{}/session/{id}", self.url),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a command; returns its `value`, or WebDriver's error as text.
fn try_call(request: reqwest::blocking::RequestBuilder) -> Result<Value, String> {
    let response = request
        .send()
        .map_err(|e| format!("chromedriver does not answer: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .map_err(|e| format!("not a JSON reply from chromedriver: {e}"))?;
    if !status.is_success() {
        return Err(format!("WebDriver error {status}: {body}"));
    }
    Ok(body["value"].clone())
}

/// Sends a command; returns its `value`, panicking with WebDriver's error otherwise.
fn call(request: reqwest::blocking::RequestBuilder) -> Value {
    try_call(request).unwrap_or_else(|e| panic!("{e}"))
}

/// One browser session; closed when dropped.
pub struct Browser {
    http: reqwest::blocking::Client,
    base: String,
}

/// An element of the current page.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl Browser {
    fn get(&self, path: &str) -> Value {
        call(self.http.get(format!("{}{path}", self.base)))
    }

    /// Like `get`, but `None` for a WebDriver error (e.g. a stale element).
    fn try_get(&self, path: &str) -> Option<Value> {
        try_call(self.http.get(format!("{}{path}", self.base))).ok()
    }

    fn try_post(&self, path: &str, body: Value) -> Result<Value, String> {
        try_call(self.http.post(format!("{}{path}", self.base)).json(&body))
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.try_post(path, body).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    /// The path of the current page's URL.
    pub fn path(&self) -> String {
        let url = self.get("/url");
        let url = url.as_str().unwrap_or_default();
        let after_host = url.splitn(4, '/').nth(3).unwrap_or_default();
        format!(
            "/{}",
            after_host.split(['?', '#']).next().unwrap_or_default()
        )
    }

    pub fn find(&self, css: &str) -> Element<'_> {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element matches {css:?} on {}", self.path()))
    }

    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        let found = self
            .try_post("/element", json!({"using": "css selector", "value": css}))
            .ok()?;
        found[ELEMENT].as_str().map(|id| Element {
            browser: self,
            id: id.to_string(),
        })
    }

    pub fn count(&self, css: &str) -> usize {
        self.post("/elements", json!({"using": "css selector", "value": css}))
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Runs a script in the page; returns what it returns.
    pub fn execute(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
    }

    /// Like `execute`, but `None` for a WebDriver error (e.g. the page is being replaced).
    pub fn try_execute(&self, script: &str) -> Option<Value> {
        self.try_post("/execute/sync", json!({"script": script, "args": []}))
            .ok()
    }

    /// Clicks the form button matching `css` and waits until the page the form posts to has
    /// replaced this one. A click can return before the submission starts, and the next
    /// page may have the same path (a login error, a redirect back), so neither the path nor
    /// the next page's elements tell that it has arrived: the old document's absence does.
    pub fn submit(&self, css: &str) {
        self.execute("window.stepwiseBeforeSubmit = true;");
        self.find(css).click();
        crate::wait_for(
            &format!("the page after submitting {css}"),
            Duration::from_secs(10),
            || {
                self.try_execute("return window.stepwiseBeforeSubmit === undefined;")
                    == Some(json!(true))
            },
        );
    }

    pub fn set_window_size(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height}));
    }

    /// The viewport as PNG.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.get("/screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.base).send();
    }
}

impl Element<'_> {
    fn path(&self, command: &str) -> String {
        format!("/element/{}/{command}", self.id)
    }

    pub fn click(&self) {
        self.browser.post(&self.path("click"), json!({}));
    }

    /// Empties a text field (as a user would, so that a page's script sees the change).
    pub fn clear(&self) {
        self.browser.post(&self.path("clear"), json!({}));
    }

    pub fn send_keys(&self, text: &str) {
        self.browser
            .post(&self.path("value"), json!({ "text": text }));
    }

    /// Its rendered text; `None` once the element left the page (a live part replaced).
    pub fn text(&self) -> Option<String> {
        self.browser
            .try_get(&self.path("text"))
            .and_then(|v| v.as_str().map(String::from))
    }
}
