//! Camera identifiers: the one name a camera has in the API, in thread names, in RTMP stream names and in
//! metric labels, so its alphabet is narrow enough to mean the same thing in all of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::SpecError;

/// A camera's identifier: 1–64 characters of `A–Z a–z 0–9 _ -`.
///
/// Ids become part of RTMP paths and thread names; the narrow alphabet keeps them from changing meaning there
/// (SRS, for one, cuts a stream name at `?`).
///
/// ```
/// use camgate::CameraId;
/// assert!("front-door_1".parse::<CameraId>().is_ok());
/// assert!("a?b".parse::<CameraId>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, ToSchema, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CameraId(String);

impl CameraId {
    /// Longest accepted id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CameraId {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(SpecError::new("id", format!("must be 1 to {} characters long", Self::MAX_LEN)));
        }
        if let Some(bad) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(SpecError::new(
                "id",
                format!("character {bad:?} is not allowed (use A-Z, a-z, 0-9, '_' and '-')"),
            ));
        }
        Ok(CameraId(s.to_owned()))
    }
}

impl TryFrom<String> for CameraId {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

impl From<CameraId> for String {
    fn from(id: CameraId) -> String {
        id.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_ids() {
        for ok in ["a", "A-1_b", &"x".repeat(64)] {
            assert!(ok.parse::<CameraId>().is_ok(), "{ok}");
        }
        for bad in ["", "a?b", "a/b", "a b", "é", "a.b", &"x".repeat(65), "../x", "a\0b", "a\r\nb", "a%3Fb"] {
            assert_eq!(bad.parse::<CameraId>().expect_err(bad).field(), "id", "{bad:?}");
        }
    }
}
