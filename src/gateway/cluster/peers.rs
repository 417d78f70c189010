//! Calls to other nodes' APIs: their cameras' statuses, and requests that belong to the node that runs a
//! camera (SRS hooks, the old `stop_camera` of an on-demand camera). Authenticated with this node's first
//! operator token (every node of a cluster accepts the same tokens); bounded by a short timeout, so a node
//! that hangs slows a read by that much, never more.

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};

use crate::runtime::CameraStatus;

/// How long a call to another node may take.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP client to other nodes.
#[derive(Debug, Clone)]
pub struct Peers {
    http: Client,
    /// This node's name, sent as [`FORWARDED_FROM`](super::FORWARDED_FROM).
    node: String,
    token: Option<String>,
}

impl Peers {
    /// A client that authenticates with `token`, if tokens are configured.
    pub fn new(node: String, token: Option<String>) -> Peers {
        // No redirects: a node answers for itself.
        let http = Client::builder()
            .timeout(PEER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain HTTP client builds");
        Peers { http, node, token }
    }

    /// The cameras node `url` runs itself, with their live status.
    pub async fn statuses(&self, url: &str) -> Result<Vec<CameraStatus>, String> {
        let (status, body) = self.call(Method::GET, url, "/api/v1/cluster/local/cameras", None).await?;
        if status != StatusCode::OK {
            return Err(format!("{url} answered {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: unreadable answer: {e}"))
    }

    /// Sends a request to node `url` and returns its answer (status and body), for forwarding.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        path_and_query: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let mut request =
            self.http.request(method, format!("{url}{path_and_query}")).header(super::FORWARDED_FROM, &self.node);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(json) = json {
            request = request.json(json);
        }
        let response = request.send().await.map_err(|e| format!("{url}: {}", without_url(&e)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("{url}: {}", without_url(&e)))?;
        Ok((status, body.to_vec()))
    }
}

/// reqwest's error text without the URL (which may carry a hook's `?token=`).
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    kind.to_owned()
}
