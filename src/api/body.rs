//! Reading request bodies into typed values, with every failure (too large, malformed, wrong field type)
//! answered in the API's JSON error shape.
//!
//! The legacy routes take form-encoded bodies (what the old front ends send) or JSON, chosen by
//! `Content-Type`; the REST routes take JSON.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A body parsed from JSON when `Content-Type` says so, else from `application/x-www-form-urlencoded`.
pub struct JsonOrForm<T>(pub T);

/// A body parsed from JSON, whatever `Content-Type` says (curl users often forget it).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
        let bytes = Bytes::from_request(request, state).await?;
        if is_json { parse_json(&bytes).map(JsonOrForm) } else { parse_form(&bytes).map(JsonOrForm) }
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    deserialize_json(deserializer)
}

/// Deserializes, naming the field at fault from serde's message where it says which (`unknown field `x``,
/// `missing field `x``, or a value error raised by a field's own parser, which starts with the field name).
fn deserialize_json<'de, D, T>(deserializer: D) -> Result<T, ApiError>
where
    D: serde::Deserializer<'de, Error = serde_json::Error>,
    T: DeserializeOwned,
{
    T::deserialize(deserializer).map_err(|e| {
        let text = e.to_string();
        ApiError::bad_field(field_in(&text).unwrap_or("body"), format!("invalid JSON body: {text}"))
    })
}

fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(bytes).map_err(|e| {
        let text = e.to_string();
        ApiError::bad_field(field_in(&text).unwrap_or("body"), format!("invalid form body: {text}"))
    })
}

/// The field a serde error message is about, if it says.
fn field_in(message: &str) -> Option<&str> {
    for marker in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = message.split_once(marker).map(|(_, rest)| rest) {
            return rest.split_once('`').map(|(field, _)| field);
        }
    }
    // The spec types' own parsers fail with "field: reason" (see `SpecError`'s Display).
    let (field, _) = message.split_once(": ")?;
    (!field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')).then_some(field)
}

#[cfg(test)]
mod tests {
    use super::field_in;

    #[test]
    fn fields_from_serde_messages() {
        assert_eq!(field_in("unknown field `ipp`, expected `id` or `ip`"), Some("ipp"));
        assert_eq!(field_in("missing field `input` at line 1 column 2"), Some("input"));
        assert_eq!(field_in("input: scheme \"file\" is not allowed at line 1"), Some("input"));
        assert_eq!(field_in("expected value at line 1 column 1"), None);
    }
}
