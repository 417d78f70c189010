//! The HTTP control plane: an axum [`Router`] over a [`Gateway`](crate::Gateway). No media code lives
//! here and no multi-step logic: handlers translate HTTP into gateway calls, and statuses back to JSON.
//!
//! # Routes
//!
//! | route | does |
//! |---|---|
//! | `POST /play_camera` (form or JSON `id`, `ip`) | start a camera, answer `{"code":200,"message","flv_data"}` |
//! | `POST /stop_camera` (`id`) | stop one camera |
//! | `POST /stop_all_camera` | stop every camera |
//! | `GET /api/v1/cameras` | every camera with state and live stats |
//! | `GET /api/v1/cameras/{id}` | one camera |
//! | `PUT /api/v1/cameras/{id}` (JSON [`CameraConfig`](crate::gateway::config::CameraConfig)) | start, or replace |
//! | `DELETE /api/v1/cameras/{id}` | stop one camera |
//! | `DELETE /api/v1/cameras` | stop every camera |
//! | `GET /api/v1/cameras/{id}/snapshot.jpg` | a JPEG of the latest picture |
//! | `GET /api/v1/cameras/{id}/viewer_url?ttl=` | signed, expiring viewer URLs of a camera |
//! | `GET /api/v1/gateway` | version, and warnings about an unsafe configuration |
//! | `GET /api/v1/cluster` | the cluster's nodes, their load and cameras (see docs/CLUSTER.md) |
//! | `POST`/`DELETE /api/v1/cluster/nodes/{node}/drain` | hand a node's cameras over / take cameras again |
//! | `GET /api/v1/cluster/local/cameras` | the cameras this node runs itself |
//! | `GET /api/v1/on_demand` | cameras registered on demand, with their viewers |
//! | `POST /api/v1/srs/on_play`, `on_stop`, `on_publish`, `on_unpublish` | SRS `http_hooks` (see `srs`) |
//! | `GET /api/v1/events` | server-sent events of state changes and stats |
//! | `GET /live/{id}.flv` | the built-in preview: HTTP-FLV from the latest keyframe |
//! | `GET /healthz`, `GET /readyz` | probes |
//! | `GET /metrics` | Prometheus text |
//! | `GET /openapi.json` | OpenAPI document |
//! | `GET /`, `GET /ui/{file}` | the web dashboard (files from `web_dir`) |
//!
//! Every failure answers `{"code","error","message","field","limit"}` ([`ApiError`]). When tokens are
//! configured, every route but the probes, `/metrics` (each configurable), `/openapi.json` and the dashboard's
//! files needs an operator's `Authorization: Bearer …`; the watch routes (`/live/{id}.flv`, snapshots) also take
//! a viewer token or a signed viewer URL. CORS applies to every route, answers included.
//!
//! # Layout
//!
//! - `state`: [`AppState`], what handlers share; `error`: [`ApiError`]; `body`: form/JSON body extractors.
//! - `legacy`: the old service's routes; `cameras`: REST; `cluster`: the cluster's routes; `preview`: HTTP-FLV and snapshots; `events`: SSE;
//!   `health`, `metrics`, `openapi`; `dashboard`: the web page and its files.
//! - `auth`: roles (operator and viewer tokens, signed viewer URLs) and the browser-origin check; `throttle`:
//!   failed authentications per client address; `viewers`: signed viewer URLs.

mod auth;
mod body;
pub mod cameras;
pub mod cluster;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod health;
pub mod legacy;
pub mod metrics;
pub mod openapi;
pub mod preview;
pub mod srs;
pub mod state;
mod throttle;
pub mod viewers;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::gateway::config::CorsConfig;

pub use error::ApiError;
pub use state::{ApiSettings, AppState};

/// The whole API, ready for `axum::serve`.
pub fn router(state: AppState) -> Router {
    let settings = state.settings.clone();
    let operator = || from_fn_with_state(state.clone(), auth::require_operator);
    let control = Router::new()
        .route("/play_camera", post(legacy::play_camera))
        .route("/stop_camera", post(legacy::stop_camera))
        .route("/stop_all_camera", post(legacy::stop_all_camera))
        .route("/api/v1/cameras", get(cameras::list).delete(cameras::delete_all))
        .route("/api/v1/cameras/{id}", get(cameras::get).put(cameras::put).delete(cameras::delete))
        .route("/api/v1/cameras/{id}/viewer_url", get(viewers::viewer_url))
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/on_demand", get(cameras::list_on_demand))
        .route("/api/v1/gateway", get(health::gateway))
        .route("/api/v1/cluster", get(cluster::overview))
        .route("/api/v1/cluster/nodes/{node}/drain", post(cluster::drain).delete(cluster::undrain))
        .route("/api/v1/cluster/local/cameras", get(cluster::local_cameras))
        .route_layer(operator());
    // Watching: any token, or a signed viewer URL of that camera; each handler decides (it knows the camera).
    let watch = Router::new()
        .route("/live/{stream}", get(preview::live_flv))
        .route("/api/v1/cameras/{id}/snapshot.jpg", get(preview::snapshot));
    // SRS cannot send a bearer header: the hooks check `?token=` themselves.
    let hooks = Router::new()
        .route("/api/v1/srs/on_play", post(srs::on_play))
        .route("/api/v1/srs/on_stop", post(srs::on_stop))
        .route("/api/v1/srs/on_publish", post(srs::on_publish))
        .route("/api/v1/srs/on_unpublish", post(srs::on_unpublish));
    let mut health = Router::new().route("/healthz", get(health::healthz)).route("/readyz", get(health::readyz));
    if settings.protect_health {
        health = health.route_layer(operator());
    }
    let mut metrics = Router::new().route("/metrics", get(metrics::metrics));
    if settings.protect_metrics {
        metrics = metrics.route_layer(operator());
    }
    // The document describes the API, not the cameras: public, so tools can fetch it.
    let docs = Router::new().route("/openapi.json", get(openapi::openapi_json));
    // The page holds no data and must load before it can ask for a token; its calls carry one.
    let dashboard = Router::new().route("/", get(dashboard::page)).route("/ui/{file}", get(dashboard::file));

    Router::new()
        .merge(control)
        .merge(watch)
        .merge(hooks)
        .merge(health)
        .merge(metrics)
        .merge(docs)
        .merge(dashboard)
        .fallback(|| async { ApiError::route_not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(from_fn_with_state(state.clone(), metrics::count_requests))
        .layer(from_fn_with_state(state.clone(), auth::check_origin))
        .layer(from_fn_with_state(state.clone(), throttle::throttle))
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(
            TraceLayer::new_for_http()
                // Method and path only: queries carry hook tokens (`?token=`) and viewer signatures.
                .make_span_with(|request: &axum::http::Request<_>| {
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        // Outermost, so preflights are answered before authentication and every answer carries the headers.
        .layer(cors(&settings.cors))
        .with_state(state)
}

fn cors(config: &CorsConfig) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .max_age(Duration::from_secs(600));
    if config.allowed_origins.iter().any(|o| o == "*") {
        // As open as the old service (aiohttp-cors allowing everything), minus credentials.
        return layer.allow_origin(Any).allow_headers(Any);
    }
    let origins: Vec<HeaderValue> = config.allowed_origins.iter().filter_map(|o| o.parse().ok()).collect();
    layer
        .allow_origin(origins)
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .allow_credentials(config.allow_credentials)
}
