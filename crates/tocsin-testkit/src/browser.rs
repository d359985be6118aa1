//! A small W3C WebDriver client for browser tests: Debian's headless Chromium, driven through
//! a private `chromedriver` on a loopback port, spoken to as plain JSON over HTTP.
//!
//! Tests need a dozen WebDriver commands and full control over Chromium's flags (this machine
//! has no internet, and Chromium's background traffic would otherwise flood refused
//! connections), so a thin client over reqwest serves better than a general WebDriver crate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::instrument;

use driver::{Driver, Profile, find_program};

mod driver;

/// What to run when the browser or its driver is missing: a test never skips silently.
const NOT_INSTALLED: &str = "chromium-driver is not installed; run as root: apt-get install -y \
     --no-install-recommends chromium chromium-driver (cargo xtask test installs them)";

/// The key under which WebDriver returns a web element's id (W3C WebDriver, "Elements").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long [`Browser::find`] polls for its element: long enough for a navigation that a
/// click started to finish, short enough that a wrong selector fails the test promptly.
const FIND_TIMEOUT: Duration = Duration::from_secs(5);

/// A WebDriver command the driver answered with an error.
#[derive(Debug, thiserror::Error)]
#[error("WebDriver command `{command}` failed: {error}: {message}")]
pub struct WebDriverError {
    /// The command, as `name (METHOD /path)`.
    pub command: String,
    /// The W3C error code, such as `no such element` or `invalid argument`.
    pub error: String,
    /// The driver's explanation.
    pub message: String,
}

/// A headless Chromium session behind a private `chromedriver`.
///
/// Dropping it ends the session (a blocking, best-effort `DELETE`, so Chromium does not
/// outlive a failed test), kills chromedriver and removes the temporary profile; [`quit`]
/// does the same and reports whether the session ended cleanly. Killing chromedriver alone
/// would not do: Chromium keeps running without it, so when the session cannot be ended
/// its processes are killed one by one.
///
/// [`quit`]: Browser::quit
#[derive(Debug)]
pub struct Browser {
    session: Arc<Session>,
    /// Declared before `_profile`: fields drop in order, and the profile directory should go
    /// only after the processes that write to it.
    driver: Driver,
    _profile: Profile,
    /// Set by `quit`, which ends the session itself.
    ended: bool,
}

/// An element found in the current page. It stays valid until the page navigates away;
/// after that WebDriver answers `stale element reference`.
#[derive(Debug, Clone)]
pub struct Element {
    session: Arc<Session>,
    id: String,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session with
    /// a fresh profile.
    #[instrument(skip_all)]
    pub async fn start() -> anyhow::Result<Browser> {
        let driver_program = find_program("chromedriver").context(NOT_INSTALLED)?;
        let chromium = find_program("chromium").context(NOT_INSTALLED)?;
        // reqwest is built without a rustls provider of its own and panics without one, even
        // for the plain HTTP spoken here.
        tocsin_runtime::tls::install_crypto_provider();
        // No proxy: a proxy from the environment must never see loopback traffic. The
        // timeout is a backstop above the session's 30 s page-load limit.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the WebDriver HTTP client")?;

        let driver = Driver::spawn(&driver_program, &http).await?;
        let base = driver.base_url();
        let profile = Profile::create()?;
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "implicit": 0, "pageLoad": 30_000, "script": 30_000 },
            "goog:chromeOptions": {
                "binary": chromium,
                "args": chromium_args(profile.path()),
            },
        }}});
        let created = call(
            &http,
            "new session",
            Method::POST,
            &format!("{base}/session"),
            Some(&capabilities),
        )
        .await;
        let created = match created {
            Ok(created) => created,
            Err(error) => {
                // A session that timed out half-way may have left a Chromium behind.
                driver.kill_browser();
                return Err(error.context(format!(
                    "chromedriver could not start {}; its output:\n{}",
                    chromium.display(),
                    driver.output()
                )));
            }
        };
        let id = created["sessionId"]
            .as_str()
            .with_context(|| format!("the new session has no sessionId: {created}"))?
            .to_owned();
        tracing::debug!(session = %id, %base, "browser session started");
        Ok(Browser {
            session: Arc::new(Session { http, base, id }),
            driver,
            _profile: profile,
            ended: false,
        })
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        let body = json!({ "url": url });
        self.session
            .command("navigate to", Method::POST, "/url", Some(&body))
            .await?;
        Ok(())
    }

    /// The URL of the current page.
    pub async fn current_url(&self) -> anyhow::Result<String> {
        let value = self.session.get("get current url", "/url").await?;
        as_string(value, "current url")
    }

    /// The current page's title.
    pub async fn title(&self) -> anyhow::Result<String> {
        let value = self.session.get("get title", "/title").await?;
        as_string(value, "title")
    }

    /// The current page's DOM, serialized as HTML.
    pub async fn page_source(&self) -> anyhow::Result<String> {
        let value = self.session.get("get page source", "/source").await?;
        as_string(value, "page source")
    }

    /// The first element matching the CSS selector `css`, polling for up to 5 s so that a
    /// page still loading (after a click that navigates, say) has time to produce it.
    #[instrument(skip(self))]
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let deadline = Instant::now() + FIND_TIMEOUT;
        loop {
            let error = match self.session.find_element(css).await {
                Ok(element) => return Ok(element),
                Err(error) => error,
            };
            let missing = error
                .downcast_ref::<WebDriverError>()
                .is_some_and(|e| e.error == "no such element");
            if !missing {
                return Err(error.context(format!("finding the CSS selector `{css}`")));
            }
            if Instant::now() >= deadline {
                let url = self
                    .current_url()
                    .await
                    .unwrap_or_else(|e| format!("<current URL unknown: {e:#}>"));
                bail!(
                    "no element matches the CSS selector `{css}` on {url} after {FIND_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every element matching the CSS selector `css` right now, in document order; empty
    /// when none does (no waiting: an empty answer may be the one the test expects).
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let body = json!({ "using": "css selector", "value": css });
        let value = self
            .session
            .command("find elements", Method::POST, "/elements", Some(&body))
            .await?;
        let Value::Array(found) = value else {
            bail!("find elements answered with a non-array: {value}");
        };
        found
            .into_iter()
            .map(|reference| self.session.element(reference))
            .collect()
    }

    /// A PNG screenshot of the viewport.
    pub async fn screenshot_png(&self) -> anyhow::Result<Vec<u8>> {
        let value = self.session.get("take screenshot", "/screenshot").await?;
        let encoded = as_string(value, "screenshot")?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .context("the screenshot is not valid base64")
    }

    /// Ends the session (Chromium exits), then stops chromedriver.
    pub async fn quit(mut self) -> anyhow::Result<()> {
        self.ended = true;
        let ended = self
            .session
            .command("delete session", Method::DELETE, "", None)
            .await;
        if ended.is_err() {
            self.driver.kill_browser();
        }
        self.driver.stop().await;
        ended.map(drop)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.ended {
            self.driver.end_session_blocking(&self.session.id);
        }
    }
}

impl Element {
    /// Clicks the element's centre, as a user would (scrolling it into view first).
    pub async fn click(&self) -> anyhow::Result<()> {
        self.command("element click", Method::POST, "/click", Some(&json!({})))
            .await
            .map(drop)
    }

    /// Types `text` into the element, after whatever it already holds.
    pub async fn send_keys(&self, text: &str) -> anyhow::Result<()> {
        let body = json!({ "text": text });
        self.command("element send keys", Method::POST, "/value", Some(&body))
            .await
            .map(drop)
    }

    /// Empties an editable element.
    pub async fn clear(&self) -> anyhow::Result<()> {
        self.command("element clear", Method::POST, "/clear", Some(&json!({})))
            .await
            .map(drop)
    }

    /// The element's rendered text, as a user sees it.
    pub async fn text(&self) -> anyhow::Result<String> {
        let value = self
            .command("get element text", Method::GET, "/text", None)
            .await?;
        as_string(value, "element text")
    }

    /// The attribute `name`, or `None` when the element does not have it.
    pub async fn attribute(&self, name: &str) -> anyhow::Result<Option<String>> {
        let path = format!("/attribute/{name}");
        match self
            .command("get element attribute", Method::GET, &path, None)
            .await?
        {
            Value::Null => Ok(None),
            Value::String(value) => Ok(Some(value)),
            other => bail!("attribute {name} is neither a string nor null: {other}"),
        }
    }

    /// Whether a checkbox, radio button or option is selected.
    pub async fn is_selected(&self) -> anyhow::Result<bool> {
        let value = self
            .command("is element selected", Method::GET, "/selected", None)
            .await?;
        value
            .as_bool()
            .with_context(|| format!("is element selected answered with a non-boolean: {value}"))
    }

    async fn command(
        &self,
        name: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let path = format!("/element/{}{path}", self.id);
        self.session.command(name, method, &path, body).await
    }
}

/// The connection to one WebDriver session, shared by the browser and its elements.
#[derive(Debug)]
struct Session {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>`.
    base: String,
    id: String,
}

impl Session {
    /// Sends a command to `/session/<id><path>`; POST commands without a body send `{}`.
    async fn command(
        &self,
        name: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.id);
        call(&self.http, name, method, &url, body).await
    }

    async fn get(&self, name: &str, path: &str) -> anyhow::Result<Value> {
        self.command(name, Method::GET, path, None).await
    }

    async fn find_element(self: &Arc<Self>, css: &str) -> anyhow::Result<Element> {
        let body = json!({ "using": "css selector", "value": css });
        let reference = self
            .command("find element", Method::POST, "/element", Some(&body))
            .await?;
        self.element(reference)
    }

    fn element(self: &Arc<Self>, reference: Value) -> anyhow::Result<Element> {
        let id = reference[ELEMENT_KEY]
            .as_str()
            .with_context(|| format!("not a web element reference: {reference}"))?;
        Ok(Element {
            session: Arc::clone(self),
            id: id.to_owned(),
        })
    }
}

/// One WebDriver HTTP exchange: the answer's `value`, or its `error` and `message` as a
/// [`WebDriverError`].
#[instrument(level = "debug", skip(http, body))]
async fn call(
    http: &reqwest::Client,
    name: &str,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(url);
    let command = format!("{name} ({method} {path})");
    let mut request = http.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(body);
    } else if method == Method::POST {
        request = request.json(&json!({}));
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("WebDriver command `{command}`: no answer from chromedriver"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("WebDriver command `{command}`: reading the answer"))?;
    let mut answer: Value = serde_json::from_str(&text).with_context(|| {
        let start: String = text.chars().take(300).collect();
        format!(
            "WebDriver command `{command}`: HTTP {status} with a body that is not JSON: {start}"
        )
    })?;
    let value = answer["value"].take();
    if let Some(error) = value["error"].as_str().filter(|_| !status.is_success()) {
        return Err(WebDriverError {
            command,
            error: error.to_owned(),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        }
        .into());
    }
    if !status.is_success() {
        bail!("WebDriver command `{command}`: HTTP {status}: {text}");
    }
    Ok(value)
}

fn as_string(value: Value, what: &str) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s),
        other => bail!("the {what} is not a string: {other}"),
    }
}

/// Chromium's flags. Background networking, component updates, sync and QUIC are off because
/// this machine has no internet: each would retry refused connections for the whole test.
fn chromium_args(profile: &Path) -> Vec<String> {
    let fixed = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ];
    let mut args: Vec<String> = fixed.iter().map(|&a| a.to_owned()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_browser_says_what_to_run() {
        // Spelled out whole: the constant's line continuation must not eat a space.
        assert_eq!(
            NOT_INSTALLED,
            concat!(
                "chromium-driver is not installed; run as root: ",
                "apt-get install -y --no-install-recommends chromium chromium-driver ",
                "(cargo xtask test installs them)",
            )
        );
    }

    #[test]
    fn webdriver_errors_name_the_command_and_the_message() {
        let error = WebDriverError {
            command: "find element (POST /session/1/element)".into(),
            error: "no such element".into(),
            message: "Unable to locate element".into(),
        };
        assert_eq!(
            error.to_string(),
            "WebDriver command `find element (POST /session/1/element)` failed: no such \
             element: Unable to locate element"
        );
    }
}
