//! Talking to the daemon's local API: one HTTP client, the daemon's token
//! on every request, and answers turned into values or clear errors.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use serde_json::Value;

/// The daemon's API as the commands use it.
pub struct Api {
    base: String,
    port: u16,
    http: reqwest::Client,
    token: Option<String>,
    token_error: Option<String>,
}

impl Api {
    /// The API at `addr`, with the daemon's token when it can be found
    /// (see `orb_node::local_api::find_token`).
    pub fn new(addr: SocketAddr) -> anyhow::Result<Api> {
        let (token, token_error) = match orb_node::local_api::find_token(addr.port()) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e)),
        };
        Ok(Api {
            base: format!("http://{addr}"),
            port: addr.port(),
            http: reqwest::Client::builder()
                .no_proxy()
                // A function's redirect is its answer (invoke), not
                // something to follow here.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("building the HTTP client")?,
            token,
            token_error,
        })
    }

    /// A request to `path` (starting with `/`), with the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// A GET of `path`.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    /// A POST to `path`.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    /// Send `req`; a daemon that cannot be reached is a clear error.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        req.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the orb-client daemon's API ({e}); is `orb-client daemon` running, and is --api right?"
            )
        })
    }

    /// GET `path` as JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.send(self.get(path)).await?;
        self.json(resp).await
    }

    /// The JSON of a successful answer, or its error text.
    pub async fn json(&self, resp: reqwest::Response) -> anyhow::Result<Value> {
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the answer")?;
        if !status.is_success() {
            bail!("{}", self.error_text(status, &bytes));
        }
        serde_json::from_slice(&bytes).context("the daemon answered with invalid JSON")
    }

    /// An error answer as a message; a refusal for want of the token says
    /// why the token was not found.
    pub fn error_text(&self, status: reqwest::StatusCode, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body).trim_end().to_string();
        match (&self.token_error, status) {
            (Some(why), reqwest::StatusCode::UNAUTHORIZED) => {
                format!("{text} ({status})\n{why} (API port {})", self.port)
            }
            _ => format!("{text} ({status})"),
        }
    }
}
