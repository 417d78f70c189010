//! The API's one error type and the JSON shape every failure answers with:
//! `{"code":400,"error":"…","message":"…","field":"id"}`.
//!
//! `error` is for people and programs; `message` repeats it because the front ends of the service we replace
//! read `message`; `field` names the offending input when there is one. Handlers return
//! `Result<_, ApiError>` and use `?` on supervisor calls; extractor rejections are turned into the same shape
//! so a malformed body never answers with axum's plain-text defaults. Internal detail (OS errors, thread
//! spawn failures) is logged here and replaced by a generic text in the response.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::gateway::GatewayError;
use crate::gateway::OnDemandError;
use crate::model::{SpecError, SupervisorError};
use crate::preview::{SnapshotError, SubscribeError};

/// A failed request: the status to answer with, the text, and the field at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<String>,
    limit: Option<String>,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status, repeated for clients that only look at the body.
    pub code: u16,
    /// What went wrong.
    pub error: String,
    /// The same text, under the name the old service's front ends read.
    pub message: String,
    /// The request field at fault (`id`, `ip`, `input`, `output`, `video.encoding.preset` …), if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The configuration setting whose limit refused the request (`limits.preview_viewers`, `max_cameras` …),
    /// if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

impl ApiError {
    /// An error with a status and text.
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError { status, error: error.into(), field: None, limit: None }
    }

    /// A 400 about one field.
    pub fn bad_field(field: impl Into<String>, error: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, error: error.into(), field: Some(field.into()), limit: None }
    }

    /// Names the limit that refused the request.
    pub fn with_limit(mut self, setting: impl Into<String>) -> ApiError {
        self.limit = Some(setting.into());
        self
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    /// A 400 for a spec error, its field renamed through `rename` (the legacy routes call the input `ip`).
    pub fn from_spec(error: &SpecError, rename: &[(&str, &str)]) -> ApiError {
        let field = rename.iter().find(|(from, _)| *from == error.field()).map_or(error.field(), |(_, to)| to);
        ApiError::bad_field(field, format!("{field}: {}", error.reason()))
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A 404 for anything the router does not know.
    pub fn route_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "no such route")
    }

    /// A 405 for a known route called with the wrong method.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
    }

    /// A 401 for a missing or wrong token.
    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token").with_field("authorization")
    }

    pub(crate) fn internal(detail: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the gateway's log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.status.as_u16(),
            message: self.error.clone(),
            error: self.error,
            field: self.field,
            limit: self.limit,
        };
        let signature_refused = self.status == StatusCode::FORBIDDEN && body.field.as_deref() == Some("signature");
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if signature_refused {
            // Tells the throttle this 403 was a failed authentication (a bad or expired signature).
            response.headers_mut().insert(super::throttle::SIGNATURE_REFUSED, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<SpecError> for ApiError {
    fn from(error: SpecError) -> ApiError {
        ApiError::from_spec(&error, &[])
    }
}

impl From<SupervisorError> for ApiError {
    fn from(error: SupervisorError) -> ApiError {
        match &error {
            SupervisorError::InvalidSpec(spec) => ApiError::from(spec.clone()),
            SupervisorError::LimitReached { .. } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string())
                .with_field("id")
                .with_limit("max_cameras"),
            SupervisorError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, error.to_string()).with_field("id"),
            SupervisorError::Stopping(_) => ApiError::new(StatusCode::CONFLICT, error.to_string()).with_field("id"),
            // The camera's thread is stuck in a blocking call; the gateway (this) timed out waiting for it.
            SupervisorError::StopTimeout { .. } => ApiError::new(StatusCode::GATEWAY_TIMEOUT, error.to_string()),
            SupervisorError::ShutDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the gateway is shutting down"),
            SupervisorError::Spawn { .. } => ApiError::internal(&error),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> ApiError {
        match error {
            GatewayError::Spec(spec) => ApiError::from(spec),
            GatewayError::Camera(camera) => ApiError::from(camera),
            GatewayError::OnDemand(on_demand) => ApiError::from(on_demand),
            GatewayError::NotSaved { .. } => ApiError::internal(&error),
            GatewayError::Limit { setting, .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string()).with_limit(setting)
            }
            GatewayError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, error.to_string()).with_field("id"),
            GatewayError::OverBudget { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string()).with_limit("cpu_budget")
            }
            GatewayError::Snapshot(SnapshotError::NoPicture) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no picture yet: the camera has not sent a keyframe")
            }
            GatewayError::Snapshot(snapshot) => ApiError::internal(&snapshot),
            GatewayError::Preview(preview) => ApiError::from(preview),
            GatewayError::ShutDown => ApiError::from(SupervisorError::ShutDown),
            // etcd or another node did not answer: retrying later may work.
            GatewayError::Cluster(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        }
    }
}

impl From<OnDemandError> for ApiError {
    fn from(error: OnDemandError) -> ApiError {
        match &error {
            OnDemandError::UnknownStream(_) => ApiError::new(StatusCode::NOT_FOUND, error.to_string()),
            OnDemandError::NoRtmpOutput(_) => ApiError::bad_field("output", error.to_string()),
            OnDemandError::StreamTaken { .. } => ApiError::bad_field("output", error.to_string()),
            OnDemandError::TooManyViewers { .. } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string())
                .with_limit("limits.on_demand_viewers_per_camera"),
        }
    }
}

impl From<SubscribeError> for ApiError {
    fn from(error: SubscribeError) -> ApiError {
        match &error {
            SubscribeError::Unknown(_) | SubscribeError::Disabled(_) => {
                ApiError::new(StatusCode::NOT_FOUND, error.to_string()).with_field("id")
            }
            SubscribeError::CameraFull { .. } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string())
                .with_limit("limits.preview_viewers_per_camera"),
            SubscribeError::Full { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string()).with_limit("limits.preview_viewers")
            }
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        let status = rejection.status();
        let text = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is too large".to_owned()
        } else {
            format!("cannot read the request body: {}", rejection.body_text())
        };
        ApiError::new(status, text).with_field("body")
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::bad_field("id", rejection.body_text())
    }
}
