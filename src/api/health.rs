//! Liveness and readiness probes: `GET /healthz` (the process answers) and `GET /readyz` (it takes camera
//! requests: the supervisor is up and no shutdown has begun).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::state::AppState;

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or why not.
    pub status: &'static str,
    /// Cameras whose worker is alive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cameras: Option<usize>,
    /// Why the saved cameras (`<data_dir>/cameras.json`) found at start were not used, if they were not: the
    /// gateway runs on with what the configuration says, and the operator should look.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<String>,
}

/// What `GET /api/v1/gateway` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayInfo {
    /// camgate's version.
    pub version: &'static str,
    /// Things about this gateway's configuration an operator should fix (an open API reachable beyond this
    /// machine, …); the dashboard shows them.
    pub warnings: Vec<String>,
    /// Whether viewer URLs are signed (a viewer secret is configured).
    pub signed_viewer_urls: bool,
}

/// The gateway's version and the warnings about its configuration.
#[utoipa::path(get, path = "/api/v1/gateway", tag = "health", responses((status = 200, body = GatewayInfo)))]
pub async fn gateway(State(state): State<AppState>) -> Json<GatewayInfo> {
    Json(GatewayInfo {
        version: env!("CARGO_PKG_VERSION"),
        warnings: state.settings.warnings.clone(),
        signed_viewer_urls: state.gateway.signs_viewer_urls(),
    })
}

/// Liveness: answers while the HTTP server runs.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", cameras: None, state_file: None })
}

/// Readiness: 503 once shutdown has begun, so load balancers stop sending requests.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health))
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    if state.gateway.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health { status: "shutting down", cameras: None, state_file: None }),
        );
    }
    if let Some(cluster) = state.gateway.cluster()
        && !cluster.holds_lease()
    {
        // Without a lease the node runs nothing and its writes to etcd may fail: send requests elsewhere.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health { status: "no cluster lease", cameras: None, state_file: None }),
        );
    }
    let cameras = state.gateway.statuses().iter().filter(|c| c.state.is_live()).count();
    let state_file = state.gateway.state_file_problem();
    (StatusCode::OK, Json(Health { status: "ok", cameras: Some(cameras), state_file }))
}
