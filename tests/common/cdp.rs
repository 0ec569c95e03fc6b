//! Driving headless Chromium through the DevTools protocol, for tests that
//! click through a page (choose a file, fill a form, press a button) and
//! read what it shows. A minimal WebSocket client (text frames, the client
//! side of RFC 6455) is enough for the protocol's JSON messages.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Flags for a quiet headless Chromium in a test (no sandbox: tests run as
/// root in CI).
pub const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser`
/// on PATH.
pub fn chromium() -> Option<String> {
    if let Ok(c) = std::env::var("CHROMIUM") {
        return Some(c);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_string)
}

/// A headless Chromium with one page under our control.
pub struct Browser {
    _child: tokio::process::Child,
    page: Page,
}

/// One page's DevTools connection.
pub struct Page {
    stream: TcpStream,
    next: u64,
}

impl Browser {
    /// Start `chromium` with its profile in `profile` and connect to its
    /// first page.
    pub async fn start(chromium: &str, profile: &Path) -> Result<Browser> {
        let child = tokio::process::Command::new(chromium)
            .args(HEADLESS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {chromium}"))?;
        // Chromium writes its DevTools port into the profile.
        let port_file = profile.join("DevToolsActivePort");
        let port: u16 = crate::common::wait_for(
            "Chromium's DevTools port",
            Duration::from_secs(60),
            || async {
                Ok(std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|t| t.lines().next()?.trim().parse().ok()))
            },
        )
        .await?;
        let ws = crate::common::wait_for("a page target", Duration::from_secs(30), || async {
            let list =
                crate::common::get_json(&format!("http://127.0.0.1:{port}/json/list")).await?;
            Ok(list
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string)))
        })
        .await?;
        Ok(Browser {
            _child: child,
            page: Page::connect(&ws).await?,
        })
    }

    /// The page.
    pub fn page(&mut self) -> &mut Page {
        &mut self.page
    }
}

impl Page {
    async fn connect(url: &str) -> Result<Page> {
        let rest = url.strip_prefix("ws://").context("ws:// URL")?;
        let (host, path) = rest.split_once('/').context("URL path")?;
        let mut stream = TcpStream::connect(host).await?;
        let req = format!(
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut b).await?;
            head.push(b[0]);
            ensure!(head.len() < 16 * 1024, "endless handshake answer");
        }
        ensure!(
            head.starts_with(b"HTTP/1.1 101"),
            "WebSocket handshake refused: {}",
            String::from_utf8_lossy(&head)
        );
        Ok(Page { stream, next: 1 })
    }

    async fn send(&mut self, text: &str) -> Result<()> {
        let payload = text.as_bytes();
        let mask = [0x3a, 0x91, 0x5c, 0x07];
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend((n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend((n as u64).to_be_bytes());
            }
        }
        frame.extend(mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        Ok(self.stream.write_all(&frame).await?)
    }

    async fn receive(&mut self) -> Result<String> {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.stream.read_exact(&mut h).await?;
            let (fin, op) = (h[0] & 0x80 != 0, h[0] & 0x0f);
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).await?;
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).await?;
                len = u64::from_be_bytes(b);
            }
            ensure!(len < 64 << 20, "a {len}-byte DevTools message");
            let mut mask = None;
            if h[1] & 0x80 != 0 {
                let mut m = [0u8; 4];
                self.stream.read_exact(&mut m).await?;
                mask = Some(m);
            }
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).await?;
            if let Some(m) = mask {
                payload
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b ^= m[i % 4]);
            }
            match op {
                0x8 => bail!("DevTools closed the connection"),
                0x9 | 0xA => continue,
                _ => message.extend(payload),
            }
            if fin {
                return Ok(String::from_utf8(message)?);
            }
        }
    }

    /// Call a DevTools method; its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"id": id, "method": method, "params": params}).to_string())
            .await?;
        let answer = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let v: Value = serde_json::from_str(&self.receive().await?)?;
                if v["id"] == id {
                    return Ok::<Value, anyhow::Error>(v);
                }
            }
        })
        .await
        .with_context(|| format!("{method} did not answer"))??;
        if let Some(e) = answer.get("error") {
            bail!("{method}: {e}");
        }
        Ok(answer["result"].clone())
    }

    /// Evaluate JavaScript in the page; its value.
    pub async fn eval(&mut self, expression: &str) -> Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Poll `expression` until it gives a string for which `done` holds.
    pub async fn wait_text(
        &mut self,
        expression: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.eval(expression).await?;
            let text = v.as_str().unwrap_or_default().to_string();
            if done(&text) {
                return Ok(text);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{expression} stayed {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Put `file` into the file input matched by `selector`.
    pub async fn set_file(&mut self, selector: &str, file: &Path) -> Result<()> {
        let doc = self.call("DOM.getDocument", json!({})).await?;
        let node = self
            .call(
                "DOM.querySelector",
                json!({"nodeId": doc["root"]["nodeId"], "selector": selector}),
            )
            .await?;
        ensure!(node["nodeId"].as_u64().unwrap_or(0) != 0, "no {selector}");
        self.call(
            "DOM.setFileInputFiles",
            json!({"nodeId": node["nodeId"], "files": [file.display().to_string()]}),
        )
        .await?;
        Ok(())
    }
}
