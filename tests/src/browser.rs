//! A real headless Chromium (Debian's `chromium`) for the web tests, driven through
//! `tests/web/browser.mjs` (playwright-core over the DevTools protocol, one JSON command per
//! line). Missing pieces fail with the package to install, never a skip.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::escpos::{repo_root, require_tool};

/// A running headless browser with one page.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    page: String,
}

impl Browser {
    /// Starts Chromium; fails naming the Debian package or the npm step when something is
    /// missing.
    pub fn start() -> anyhow::Result<Browser> {
        require_tool("node", "nodejs")?;
        if !Path::new("/usr/bin/chromium").is_file() {
            bail!(
                "/usr/bin/chromium not found: install the Debian package chromium (bash tests/run installs it)"
            );
        }
        let dir = repo_root().join("tests/web");
        if !dir.join("node_modules/playwright-core").is_dir() {
            bail!(
                "tests/web/node_modules is missing: run `npm ci --prefix tests/web` (bash tests/run does)"
            );
        }
        let mut child = Command::new("node")
            .arg(dir.join("browser.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting node tests/web/browser.mjs")?;
        let stdin = child.stdin.take().context("browser stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("browser stdout")?);
        Ok(Browser {
            child,
            stdin,
            stdout,
            page: "main".to_string(),
        })
    }

    /// Sends one command and returns its answer; an error when the browser says so.
    pub fn command(&mut self, mut command: Value) -> anyhow::Result<Value> {
        if let Some(object) = command.as_object_mut() {
            object
                .entry("page")
                .or_insert_with(|| Value::String(self.page.clone()));
        }
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the browser ended while running {command}");
        }
        let answer: Value = serde_json::from_str(&line)
            .with_context(|| format!("browser answered {line:?} to {command}"))?;
        if answer["ok"] != json!(true) {
            bail!("browser: {command} failed: {}", answer["error"]);
        }
        Ok(answer)
    }

    /// Makes `name` the page the following commands act on (pages are opened by name with
    /// [`Self::open`]; the first one is `main`). Each page has its own cookies.
    pub fn use_page(&mut self, name: &str) {
        self.page = name.to_string();
    }

    /// Clicks the element `selector` (waiting until it is visible and enabled).
    pub fn click(&mut self, selector: &str) -> anyhow::Result<()> {
        self.command(json!({"cmd": "click", "selector": selector}))?;
        Ok(())
    }

    /// Types `value` into the input `selector`.
    pub fn fill(&mut self, selector: &str, value: &str) -> anyhow::Result<()> {
        self.command(json!({"cmd": "fill", "selector": selector, "value": value}))?;
        Ok(())
    }

    /// Opens `url` in a fresh page of `width` x `height` (replacing the current page).
    pub fn open(&mut self, url: &str, width: u32, height: u32) -> anyhow::Result<()> {
        self.command(json!({"cmd": "open", "url": url, "width": width, "height": height}))?;
        Ok(())
    }

    /// [`Self::open`] with the browser set to the time zone `zone` (`UTC`, `America/New_York`).
    pub fn open_in_zone(
        &mut self,
        url: &str,
        width: u32,
        height: u32,
        zone: &str,
    ) -> anyhow::Result<()> {
        self.command(json!({
            "cmd": "open", "url": url, "width": width, "height": height, "timezone": zone
        }))?;
        Ok(())
    }

    /// Waits until the text of `selector` contains `text`; returns how long it took (ms).
    pub fn wait_text(
        &mut self,
        selector: &str,
        text: &str,
        timeout_ms: u64,
    ) -> anyhow::Result<u64> {
        let answer = self.command(json!({
            "cmd": "wait_text", "selector": selector, "text": text, "timeout_ms": timeout_ms
        }))?;
        answer["ms"].as_u64().context("no time in the answer")
    }

    /// The text content of `selector` (None when absent).
    pub fn text(&mut self, selector: &str) -> anyhow::Result<Option<String>> {
        let answer = self.command(json!({"cmd": "text", "selector": selector}))?;
        Ok(answer["text"].as_str().map(str::to_string))
    }

    /// The inner HTML of `selector` (None when absent).
    pub fn html(&mut self, selector: &str) -> anyhow::Result<Option<String>> {
        let answer = self.command(json!({"cmd": "html", "selector": selector}))?;
        Ok(answer["html"].as_str().map(str::to_string))
    }

    /// Evaluates a JavaScript expression in the page.
    pub fn eval(&mut self, js: &str) -> anyhow::Result<Value> {
        Ok(self.command(json!({"cmd": "eval", "js": js}))?["value"].clone())
    }

    /// Saves a screenshot of the viewport as PNG.
    pub fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        self.command(json!({"cmd": "screenshot", "path": path}))?;
        Ok(())
    }

    /// Renders the page for `media` (`print` shows what a printout holds; `screen` is back).
    pub fn emulate_media(&mut self, media: &str) -> anyhow::Result<()> {
        self.command(json!({"cmd": "media", "media": media}))?;
        Ok(())
    }

    /// Prints the page to a PDF file (what the admin's printer would get).
    pub fn pdf(&mut self, path: &Path) -> anyhow::Result<()> {
        self.command(json!({"cmd": "pdf", "path": path}))?;
        Ok(())
    }

    /// JS heap in use after a forced garbage collection, in bytes.
    pub fn heap_after_gc(&mut self) -> anyhow::Result<u64> {
        self.command(json!({"cmd": "heap"}))?["used"]
            .as_u64()
            .context("no heap size in the answer")
    }

    /// Dialogs (alert, confirm, prompt) the page opened, and its uncaught errors.
    pub fn dialogs_and_errors(&mut self) -> anyhow::Result<(u64, Vec<String>)> {
        let answer = self.command(json!({"cmd": "dialogs"}))?;
        let errors = answer["page_errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok((answer["count"].as_u64().unwrap_or(0), errors))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "close"}));
        let _ = self.stdin.flush();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
