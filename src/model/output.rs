//! Where a camera's FLV goes: an RTMP server, or a local `.flv` file (operator configuration only).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::SpecError;
use super::id::CameraId;
use super::redact::redact_url;
use super::url;

/// Where a camera's FLV goes: an RTMP server (production) or a local `.flv` file (recording, tests).
///
/// RTMP URLs are checked and kept in canonical form like camera URLs (see [`super::url`]). When shown, their
/// stream name is hidden unless it contains the camera's id: names made by the output template
/// (`livestream7`) are public, while a stream name given by hand may be a platform's stream key.
///
/// ```
/// use camgate::OutputTarget;
/// let out: OutputTarget = "rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl".parse().unwrap();
/// assert_eq!(out.to_string(), "rtmp://a.rtmp.youtube.com/live2/***");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum OutputTarget {
    /// `rtmp://host[:port]/app/stream` or `rtmps://…`, canonical.
    Rtmp(String),
    /// A path ending in `.flv`.
    File(PathBuf),
}

impl OutputTarget {
    /// RTMP schemes an output may use.
    pub const SCHEMES: [&'static str; 2] = ["rtmp", "rtmps"];

    /// The URL or path handed to FFmpeg.
    pub fn expose(&self) -> String {
        match self {
            OutputTarget::Rtmp(url) => url.clone(),
            OutputTarget::File(path) => path.display().to_string(),
        }
    }

    /// `app/stream` of an RTMP output, without query: what SRS names in its hooks.
    pub fn stream(&self) -> Option<String> {
        let OutputTarget::Rtmp(url) = self else { return None };
        let url = ::url::Url::parse(url).ok()?;
        let path = url.path().trim_matches('/');
        (path.contains('/') && !path.is_empty()).then(|| path.to_owned())
    }

    /// The target with credentials, secret query values and the stream name hidden.
    pub fn redacted(&self) -> String {
        self.redact(None)
    }

    /// Like [`redacted`](Self::redacted), but a stream name containing `id` is shown.
    pub fn redacted_for(&self, id: &CameraId) -> String {
        self.redact(Some(id))
    }

    fn redact(&self, id: Option<&CameraId>) -> String {
        let shown = redact_url(&self.expose());
        let OutputTarget::Rtmp(_) = self else { return shown };
        let (base, query) = match shown.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (shown.as_str(), None),
        };
        let Some((prefix, name)) = base.rsplit_once('/') else { return shown };
        // The last segment after the host and app: `rtmp://host/app/name`.
        if prefix.matches('/').count() < 3 || name.is_empty() || id.is_some_and(|id| name.contains(id.as_str())) {
            return shown;
        }
        match query {
            Some(query) => format!("{prefix}/***?{query}"),
            None => format!("{prefix}/***"),
        }
    }
}

impl FromStr for OutputTarget {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        if s.contains("://") {
            return Ok(OutputTarget::Rtmp(url::check("output", s, &Self::SCHEMES)?.canonical));
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(SpecError::new("output", format!("character {c:?} is not allowed in a path")));
        }
        // A bare `name:` prefix would be read by FFmpeg as a protocol (`pipe:`, `concat:` …).
        if s.is_empty() || s.split('/').next().is_some_and(|first| first.contains(':')) {
            return Err(SpecError::new("output", "must be an rtmp:// URL or a path ending in .flv"));
        }
        if !s.ends_with(".flv") {
            return Err(SpecError::new("output", "a file output must end in .flv"));
        }
        Ok(OutputTarget::File(PathBuf::from(s)))
    }
}

impl TryFrom<String> for OutputTarget {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

impl From<OutputTarget> for String {
    fn from(target: OutputTarget) -> String {
        target.expose()
    }
}

impl fmt::Display for OutputTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for OutputTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutputTarget({:?})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_targets() {
        assert!(matches!("rtmp://127.0.0.1:1935/live/a".parse(), Ok(OutputTarget::Rtmp(_))));
        assert!(matches!("out/cam.flv".parse(), Ok(OutputTarget::File(_))));
        for bad in ["pipe:1", "file:x.flv", "out.mp4", "http://x/y.flv", "", "tcp://x:1", "rtmp://h/live/a\r\nb"] {
            assert_eq!(bad.parse::<OutputTarget>().expect_err(bad).field(), "output", "{bad:?}");
        }
    }

    #[test]
    fn stream_keys_are_hidden_unless_they_name_the_camera() {
        let id: CameraId = "7".parse().unwrap();
        let template: OutputTarget = "rtmp://srs:1935/live/livestream7?token=abc".parse().unwrap();
        assert_eq!(template.redacted_for(&id), "rtmp://srs:1935/live/livestream7?token=***");
        assert_eq!(template.redacted(), "rtmp://srs:1935/live/***?token=***");
        let key: OutputTarget = "rtmp://u:p@a.rtmp.youtube.com/live2/abcd-efgh".parse().unwrap();
        assert_eq!(key.redacted_for(&id), "rtmp://***:***@a.rtmp.youtube.com/live2/***");
        assert_eq!(key.stream().as_deref(), Some("live2/abcd-efgh"));
        let file: OutputTarget = "rec/x.flv".parse().unwrap();
        assert_eq!(file.redacted(), "rec/x.flv");
        assert_eq!(file.stream(), None);
    }
}
