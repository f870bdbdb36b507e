//! A minimal W3C WebDriver client for the page tests: starts `chromedriver` on a free
//! port, opens one headless Chromium session with a fresh profile, and speaks the
//! protocol's JSON over HTTP (ureq). Only what the tests use: navigate, find by CSS,
//! click, type, text, attributes, scripts, window size, screenshots, and
//! [`Browser::wait_until`], which polls the page until a condition holds.
//!
//! Dropping the [`Browser`] deletes the session (Chromium exits) and kills chromedriver
//! by its PID.

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::TempDir;

/// The key of an element reference in W3C WebDriver.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long chromedriver may take to answer its status, and Chromium to start.
const START: Duration = Duration::from_secs(30);

/// How often [`Browser::wait_until`] looks again.
const POLL: Duration = Duration::from_millis(100);

/// What went wrong talking to the browser.
#[derive(Debug, Clone)]
pub(crate) struct Error(pub(crate) String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub(crate) type Result<T> = std::result::Result<T, Error>;

/// An element of the page, by its WebDriver reference.
#[derive(Debug, Clone)]
pub(crate) struct Element(String);

/// chromedriver with one headless Chromium session.
pub(crate) struct Browser {
    agent: ureq::Agent,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
    driver_log: PathBuf,
    /// The browser's profile and chromedriver's log; removed on drop.
    _dir: TempDir,
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("session", &self.session)
            .field("driver", &self.driver.id())
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts `driver` (chromedriver) and a headless session of `chromium`.
    pub(crate) fn start(chromium: &Path, driver: &Path) -> Result<Browser> {
        let dir = TempDir::new("webdriver").map_err(|e| Error(format!("temp dir: {e}")))?;
        let profile = dir.path().join("profile");
        let driver_log = dir.path().join("chromedriver.log");
        let port = free_port()?;
        let log = std::fs::File::create(&driver_log)
            .map_err(|e| Error(format!("{}: {e}", driver_log.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error(format!("{}: {e}", driver_log.display())))?;
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error(format!("cannot start {}: {e}", driver.display())))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .proxy(None)
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        // From here on, dropping `browser` kills chromedriver.
        let mut browser = Browser {
            agent,
            session: String::new(),
            driver: child,
            driver_log,
            _dir: dir,
        };
        let deadline = Instant::now() + START;
        loop {
            let ready = browser
                .call("GET", &format!("{base}/status"), None)
                .is_ok_and(|v| v["ready"].as_bool() == Some(true));
            if ready {
                break;
            }
            if let Ok(Some(status)) = browser.driver.try_wait() {
                return Err(browser.failed(&format!("chromedriver exited ({status})")));
            }
            if Instant::now() > deadline {
                return Err(browser.failed("chromedriver did not become ready"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            "--window-size=1280,1000".to_owned(),
        ];
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        "args": args,
                    },
                },
            },
        });
        let created = browser
            .call("POST", &format!("{base}/session"), Some(&capabilities))
            .map_err(|e| browser.failed(&format!("new session: {e}")))?;
        let id = created["sessionId"]
            .as_str()
            .ok_or_else(|| browser.failed(&format!("new session: no sessionId in {created}")))?;
        browser.session = format!("{base}/session/{id}");
        Ok(browser)
    }

    /// An error with chromedriver's log appended.
    fn failed(&self, what: &str) -> Error {
        let log = std::fs::read_to_string(&self.driver_log).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        Error(format!("{what}\nchromedriver's log:\n{tail}"))
    }

    /// One WebDriver command: its `value`, or the error it answered.
    fn call(&self, method: &str, url: &str, body: Option<&Value>) -> Result<Value> {
        let sent = match (method, body) {
            ("GET", _) => self.agent.get(url).call(),
            ("DELETE", _) => self.agent.delete(url).call(),
            (_, body) => self
                .agent
                .post(url)
                .header("content-type", "application/json; charset=utf-8")
                .send(body.unwrap_or(&json!({})).to_string()),
        };
        let mut response = sent.map_err(|e| Error(format!("{method} {url}: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|e| Error(format!("{method} {url}: reading the answer: {e}")))?;
        let answer: Value = serde_json::from_str(&text)
            .map_err(|e| Error(format!("{method} {url}: {status}, not JSON ({e}): {text}")))?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if !(200..300).contains(&status) || value.get("error").is_some() {
            return Err(Error(format!(
                "{method} {url}: {status} {}: {}",
                value["error"].as_str().unwrap_or("error"),
                value["message"].as_str().unwrap_or(&text)
            )));
        }
        Ok(value)
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.call(method, &format!("{}{path}", self.session), body.as_ref())
    }

    /// Opens `url` and waits for it to load.
    pub(crate) fn goto(&self, url: &str) -> Result<()> {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// The first element matching `css`.
    pub(crate) fn find(&self, css: &str) -> Result<Element> {
        let found = self.command(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        element(&found).ok_or_else(|| Error(format!("{css}: not an element: {found}")))
    }

    /// Every element matching `css`.
    pub(crate) fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let found = self.command(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        Ok(found
            .as_array()
            .map(|all| all.iter().filter_map(element).collect())
            .unwrap_or_default())
    }

    /// Clicks `element`, scrolled to the middle of the window first as a user would (so
    /// that the page's sticky header does not cover it).
    pub(crate) fn click(&self, element: &Element) -> Result<()> {
        self.execute(
            "arguments[0].scrollIntoView({ block: 'center', inline: 'nearest' });",
            &[json!({ ELEMENT: element.0 })],
        )?;
        self.command(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .map(drop)
    }

    /// Clicks the first element matching `css`.
    pub(crate) fn click_css(&self, css: &str) -> Result<()> {
        self.click(&self.find(css)?)
    }

    /// Types `text` into `element`.
    pub(crate) fn type_text(&self, element: &Element, text: &str) -> Result<()> {
        self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .map(drop)
    }

    /// Empties an input.
    pub(crate) fn clear(&self, element: &Element) -> Result<()> {
        self.command(
            "POST",
            &format!("/element/{}/clear", element.0),
            Some(json!({})),
        )
        .map(drop)
    }

    /// The element's rendered text.
    pub(crate) fn text(&self, element: &Element) -> Result<String> {
        let text = self.command("GET", &format!("/element/{}/text", element.0), None)?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// An attribute of the element, if it has it.
    pub(crate) fn attribute(&self, element: &Element, name: &str) -> Result<Option<String>> {
        let value = self.command(
            "GET",
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its
    /// return value.
    pub(crate) fn execute(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Whether `script` returns `true`.
    pub(crate) fn check(&self, script: &str) -> Result<bool> {
        Ok(self.execute(script, &[])?.as_bool() == Some(true))
    }

    /// Resizes the window (the viewport follows).
    pub(crate) fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.command(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .map(drop)
    }

    /// A PNG of the viewport, written to `path`.
    pub(crate) fn screenshot(&self, path: &Path) -> Result<()> {
        let shot = self.command("GET", "/screenshot", None)?;
        let png = decode_base64(shot.as_str().unwrap_or_default())
            .ok_or_else(|| Error("the screenshot is not base64".to_owned()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error(format!("{}: {e}", dir.display())))?;
        }
        std::fs::write(path, png).map_err(|e| Error(format!("{}: {e}", path.display())))
    }

    /// A PNG of the whole page (the window made as tall as the page for the shot, up
    /// to a limit), written to `path`.
    pub(crate) fn screenshot_page(&self, path: &Path, width: u32) -> Result<()> {
        let height = self
            .execute(
                "return Math.ceil(document.documentElement.scrollHeight + (window.outerHeight - window.innerHeight));",
                &[],
            )?
            .as_u64()
            .unwrap_or(1000);
        let height = u32::try_from(height).unwrap_or(1000).clamp(600, 4000);
        self.set_window_size(width, height)?;
        // The resize is synchronous for the window; a frame settles the layout.
        self.execute_async_frame()?;
        self.screenshot(path)
    }

    /// Waits for the page to render the next frame.
    fn execute_async_frame(&self) -> Result<()> {
        self.command(
            "POST",
            "/execute/async",
            Some(json!({
                "script": "const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                "args": [],
            })),
        )
        .map(drop)
    }

    /// What the page shows, in short: its title and visible text (for failures).
    pub(crate) fn visible_state(&self) -> String {
        match self.execute(
            "return document.title + '\\n' + (document.body ? document.body.innerText : '');",
            &[],
        ) {
            Ok(text) => {
                let text = text.as_str().unwrap_or_default();
                let mut short: String = text.chars().take(6000).collect();
                if short.len() < text.len() {
                    short.push_str("\n[...]");
                }
                short
            }
            Err(e) => format!("(cannot read the page: {e})"),
        }
    }

    /// Polls `condition` until it holds; panics after `timeout` with `what`, the last
    /// error and the page's visible state (and saves a screenshot beside the others).
    pub(crate) fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut() -> Result<bool>,
    ) {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            match condition() {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => last_error = Some(e),
            }
            if Instant::now() > deadline {
                let shot = failure_shot_path(what);
                let saved = match self.screenshot(&shot) {
                    Ok(()) => format!("screenshot: {}", shot.display()),
                    Err(e) => format!("no screenshot: {e}"),
                };
                panic!(
                    "timed out after {timeout:?} waiting until {what}\nlast error: {}\n{saved}\nthe page shows:\n{}",
                    last_error.map_or_else(|| "none".to_owned(), |e| e.to_string()),
                    self.visible_state()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until `script` returns `true`.
    pub(crate) fn wait_for_script(&self, what: &str, timeout: Duration, script: &str) {
        self.wait_until(what, timeout, || self.check(script));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Chromium exits with its session.
            let _ = self.call("DELETE", &self.session.clone(), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where a failed wait's screenshot goes.
fn failure_shot_path(what: &str) -> PathBuf {
    let name: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(60)
        .collect();
    screenshots_dir().join(format!("failed-{name}.png"))
}

/// `target/screenshots` of the workspace (or of `CARGO_TARGET_DIR`).
pub(crate) fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                crate::support::tools::root().join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| crate::support::tools::root().join("target"));
    target.join("screenshots")
}

fn element(value: &Value) -> Option<Element> {
    value[ELEMENT].as_str().map(|id| Element(id.to_owned()))
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(|e| Error(format!("no free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error(format!("no free port: {e}")))
}

/// Standard base64 (with or without padding) to bytes.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let data = clean
        .iter()
        .rposition(|&b| b != b'=')
        .map_or(&clean[..0], |last| &clean[..=last]);
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= sextet(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

#[test]
fn base64_decodes() {
    assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
    assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
    assert_eq!(decode_base64("YWJj").unwrap(), b"abc");
    assert_eq!(decode_base64("").unwrap(), b"");
    assert!(decode_base64("a$==").is_none());
}
