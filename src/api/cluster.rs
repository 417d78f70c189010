//! The cluster's routes: `GET /api/v1/cluster` (the nodes, their load and cameras),
//! `POST`/`DELETE /api/v1/cluster/nodes/{node}/drain` (hand a node's cameras over before maintenance, or take
//! cameras again), and `GET /api/v1/cluster/local/cameras` (the cameras this node runs itself, which other
//! nodes read to answer for the whole cluster). All operator-only; the first two answer 404 when the gateway
//! is not in a cluster.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::{ApiError, ErrorBody};
use super::state::AppState;
use crate::gateway::cluster::{ClusterNode, ClusterView};
use crate::runtime::CameraStatus;

fn cluster(state: &AppState) -> Result<std::sync::Arc<ClusterNode>, ApiError> {
    state.gateway.cluster().ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this gateway is not part of a cluster"))
}

/// The cluster as this node sees it: every live node (and every node asked to drain), its capacity, load and
/// cameras, and how many desired cameras no node has taken.
#[utoipa::path(
    get, path = "/api/v1/cluster", tag = "cluster",
    responses(
        (status = 200, description = "The cluster", body = ClusterView),
        (status = 404, description = "Not in a cluster", body = ErrorBody),
    )
)]
pub async fn overview(State(state): State<AppState>) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(cluster(&state)?.overview()))
}

/// Asks a node to hand its cameras over to the others, one at a time, and to take no new ones — before
/// maintenance. The drain ends with `DELETE`, or when the node restarts.
#[utoipa::path(
    post, path = "/api/v1/cluster/nodes/{node}/drain", tag = "cluster",
    params(("node" = String, Path, description = "Node name")),
    responses(
        (status = 202, description = "Draining: the node hands its cameras over", body = ClusterView),
        (status = 400, description = "Invalid node name", body = ErrorBody),
        (status = 404, description = "Not in a cluster, or no such node", body = ErrorBody),
        (status = 503, description = "etcd did not answer", body = ErrorBody),
    )
)]
pub async fn drain(
    State(state): State<AppState>,
    Path(node): Path<String>,
) -> Result<(StatusCode, Json<ClusterView>), ApiError> {
    let cluster = cluster(&state)?;
    let node = check_node(&node)?;
    if !cluster.overview().nodes.iter().any(|n| n.name == node) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no node {node} in the cluster")).with_field("node"));
    }
    cluster.set_draining(node, true).await?;
    Ok((StatusCode::ACCEPTED, Json(cluster.overview())))
}

/// Ends a node's drain: it takes cameras again (nothing moves back by itself).
#[utoipa::path(
    delete, path = "/api/v1/cluster/nodes/{node}/drain", tag = "cluster",
    params(("node" = String, Path, description = "Node name")),
    responses(
        (status = 200, description = "The drain ended", body = ClusterView),
        (status = 400, description = "Invalid node name", body = ErrorBody),
        (status = 404, description = "Not in a cluster", body = ErrorBody),
        (status = 503, description = "etcd did not answer", body = ErrorBody),
    )
)]
pub async fn undrain(State(state): State<AppState>, Path(node): Path<String>) -> Result<Json<ClusterView>, ApiError> {
    let cluster = cluster(&state)?;
    cluster.set_draining(check_node(&node)?, false).await?;
    Ok(Json(cluster.overview()))
}

/// The cameras this node runs itself (in or out of a cluster), with their live status.
#[utoipa::path(
    get, path = "/api/v1/cluster/local/cameras", tag = "cluster",
    responses((status = 200, description = "This node's cameras", body = [CameraStatus]))
)]
pub async fn local_cameras(State(state): State<AppState>) -> Json<Vec<CameraStatus>> {
    Json(match state.gateway.cluster() {
        Some(cluster) => cluster.local_statuses(),
        None => state.gateway.statuses(),
    })
}

/// A node name as the configuration allows it (it becomes part of an etcd key).
fn check_node(node: &str) -> Result<&str, ApiError> {
    let valid =
        !node.is_empty() && node.len() <= 64 && node.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if valid { Ok(node) } else { Err(ApiError::bad_field("node", "must be 1 to 64 characters of A-Z a-z 0-9 . _ -")) }
}
