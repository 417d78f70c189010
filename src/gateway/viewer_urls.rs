//! Signed viewer URLs: per-camera links that expire, so watching can be handed out without handing out a token.
//!
//! With a `viewer_secret` configured, every viewer URL camgate gives out (`flv_data`,
//! `GET /api/v1/cameras/{id}/viewer_url`, the dashboard's player) carries `expires` (Unix seconds) and
//! `signature`: HMAC-SHA256, keyed with the secret, over the camera id and the expiry. The built-in preview and
//! snapshots accept such a URL in place of a token, and the RTMP server's `on_play` hook checks the same query
//! (SRS passes it as `param`), so players of SRS's HTTP-FLV, HLS and WebRTC need a valid URL too.
//!
//! A signature for one camera is worthless for another; an altered expiry breaks it; an expired one is refused
//! once [`CLOCK_SKEW`] has passed after its expiry (the node that checks may run a little behind the one that
//! signed). Signatures are compared in constant time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::CameraId;

/// How long after its expiry a signature is still accepted, for clocks that differ between the node that
/// signed it and the one that checks it.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// The longest validity a signed URL may be given.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Why a viewer URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `expires`/`signature` in the URL.
    #[error("the URL carries no signature")]
    Missing,
    /// The expiry is not a number, or the signature not 64 hex digits.
    #[error("the URL's signature is malformed")]
    Malformed,
    /// The expiry has passed (beyond the clock-skew tolerance).
    #[error("the URL expired")]
    Expired,
    /// The signature does not match: tampered, for another camera, or made with another secret.
    #[error("the URL's signature is not valid for this camera")]
    Invalid,
}

/// Signs and checks viewer URLs with the configured secret.
#[derive(Clone)]
pub struct ViewerSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for ViewerSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.write_str("ViewerSigner(***)")
    }
}

impl ViewerSigner {
    /// A signer with `secret` ([`MIN_SECRET_LEN`] bytes at least; the configuration checks).
    pub fn new(secret: &str) -> ViewerSigner {
        ViewerSigner { secret: secret.as_bytes().to_vec() }
    }

    fn mac(&self, camera: &CameraId, expires: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(b"camgate-viewer-v1\n");
        mac.update(camera.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The query (`expires=…&signature=…`) that lets `camera` be watched until `expires` (Unix seconds).
    pub fn sign(&self, camera: &CameraId, expires: u64) -> String {
        let signature = self.mac(camera, expires).finalize().into_bytes();
        let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
        format!("expires={expires}&signature={hex}")
    }

    /// Checks the `expires` and `signature` parameters of `query` (with or without a leading `?`, other
    /// parameters ignored) for `camera` at time `now`.
    pub fn verify(&self, camera: &CameraId, query: &str, now: SystemTime) -> Result<(), SignatureError> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let param = |name: &str| {
            query.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
        };
        let (Some(expires), Some(signature)) = (param("expires"), param("signature")) else {
            return Err(SignatureError::Missing);
        };
        let expires: u64 = expires.parse().map_err(|_| SignatureError::Malformed)?;
        let bytes = decode_hex(signature).ok_or(SignatureError::Malformed)?;
        // Checked before the expiry, so an attacker learns nothing about signatures from timing or answers.
        self.mac(camera, expires).verify_slice(&bytes).map_err(|_| SignatureError::Invalid)?;
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now > expires.saturating_add(CLOCK_SKEW.as_secs()) {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// `url` with `query` appended (`?` or `&`).
pub fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') { format!("{url}&{query}") } else { format!("{url}?{query}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_signed_url_opens_its_camera_until_it_expires() {
        let signer = ViewerSigner::new(SECRET);
        let door: CameraId = "door".parse().unwrap();
        let query = signer.sign(&door, 1_000);
        assert!(query.starts_with("expires=1000&signature=") && query.len() == "expires=1000&signature=".len() + 64);
        assert_eq!(signer.verify(&door, &query, at(999)), Ok(()));
        assert_eq!(signer.verify(&door, &format!("?token=x&{query}&other=1"), at(1_000)), Ok(()));
        assert_eq!(signer.verify(&door, &query, at(1_000 + CLOCK_SKEW.as_secs())), Ok(()), "within the skew");
        assert_eq!(signer.verify(&door, &query, at(1_001 + CLOCK_SKEW.as_secs())), Err(SignatureError::Expired));
    }

    #[test]
    fn tampered_foreign_and_malformed_signatures_are_refused() {
        let signer = ViewerSigner::new(SECRET);
        let (door, gate): (CameraId, CameraId) = ("door".parse().unwrap(), "gate".parse().unwrap());
        let query = signer.sign(&door, 5_000);
        assert_eq!(signer.verify(&gate, &query, at(0)), Err(SignatureError::Invalid), "another camera");
        let later = query.replace("expires=5000", "expires=9000");
        assert_eq!(signer.verify(&door, &later, at(0)), Err(SignatureError::Invalid), "a pushed-back expiry");
        let other_secret = ViewerSigner::new("another-secret-of-enough-length-000");
        assert_eq!(other_secret.verify(&door, &query, at(0)), Err(SignatureError::Invalid));
        let flipped = {
            let (head, sig) = query.split_at(query.len() - 1);
            format!("{head}{}", if sig == "0" { "1" } else { "0" })
        };
        assert_eq!(signer.verify(&door, &flipped, at(0)), Err(SignatureError::Invalid));
        assert_eq!(signer.verify(&door, "", at(0)), Err(SignatureError::Missing));
        assert_eq!(signer.verify(&door, "expires=5000&signature=zz", at(0)), Err(SignatureError::Malformed));
        assert_eq!(signer.verify(&door, "expires=x&signature=00", at(0)), Err(SignatureError::Malformed));
        assert_eq!(format!("{signer:?}"), "ViewerSigner(***)");
    }
}
