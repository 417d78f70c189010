//! Answering a camera's `401 Unauthorized`: HTTP Basic and Digest (RFC 2617, MD5, with or without
//! `qop=auth`), the two schemes cameras use, from the credentials in the camera's URL.

use std::fmt;

use base64::Engine;
use md5::{Digest, Md5};

/// The user name and password from the camera's URL, percent-decoded. Never shown: `Debug` hides them.
pub(crate) struct Credentials {
    user: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(…)")
    }
}

impl Credentials {
    /// From a URL's user info as written (percent-encoded); `None` without a user name.
    pub(crate) fn from_url(url: &::url::Url) -> Option<Credentials> {
        if url.username().is_empty() {
            return None;
        }
        let decode = |s: &str| crate::model::percent_decode(s);
        Some(Credentials { user: decode(url.username()), password: decode(url.password().unwrap_or("")) })
    }
}

/// What the camera asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Digest { realm: String, nonce: String, opaque: Option<String>, qop_auth: bool },
}

/// The challenge to answer among a 401's `WWW-Authenticate` values: Digest when offered (it does not send the
/// password), else Basic; `None` when neither is offered in a form camgate can answer.
pub(crate) fn choose<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for value in values {
        let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        } else if scheme.eq_ignore_ascii_case("digest") {
            let params = parameters(params);
            let get = |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
            let md5 = get("algorithm").is_none_or(|a| a.eq_ignore_ascii_case("md5"));
            let qop = get("qop");
            let qop_auth = qop.as_deref().is_some_and(|q| q.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")));
            if let (true, Some(realm), Some(nonce)) = (md5, get("realm"), get("nonce"))
                && (qop.is_none() || qop_auth)
            {
                return Some(Challenge::Digest { realm, nonce, opaque: get("opaque"), qop_auth });
            }
        }
    }
    basic.then_some(Challenge::Basic)
}

/// The `Authorization` header's value for `method` on `uri`; `count` numbers the requests answered with this
/// nonce (`nc`), `cnonce` is the client's nonce for `qop=auth`.
pub(crate) fn authorization(
    credentials: &Credentials,
    challenge: &Challenge,
    method: &str,
    uri: &str,
    count: u32,
    cnonce: &str,
) -> String {
    match challenge {
        Challenge::Basic => {
            let pair = format!("{}:{}", credentials.user, credentials.password);
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        }
        Challenge::Digest { realm, nonce, opaque, qop_auth } => {
            let md5 = |s: String| format!("{:x}", Md5::digest(s.as_bytes()));
            let ha1 = md5(format!("{}:{realm}:{}", credentials.user, credentials.password));
            let ha2 = md5(format!("{method}:{uri}"));
            let nc = format!("{count:08x}");
            let response = if *qop_auth {
                md5(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
            } else {
                md5(format!("{ha1}:{nonce}:{ha2}"))
            };
            let mut value = format!(
                "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=\"MD5\"",
                credentials.user
            );
            if let Some(opaque) = opaque {
                value.push_str(&format!(", opaque=\"{opaque}\""));
            }
            if *qop_auth {
                value.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
            }
            value
        }
    }
}

/// `key=value` and `key="quoted, value"` pairs, comma-separated.
fn parameters(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_owned(), &quoted[end + 1..]),
                None => (quoted.to_owned(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_owned(), &after[end..]),
                None => (after.trim().to_owned(), ""),
            }
        };
        out.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mufasa() -> Credentials {
        Credentials { user: "Mufasa".into(), password: "Circle Of Life".into() }
    }

    #[test]
    fn digest_with_qop_matches_rfc_2617s_example() {
        let challenge = choose(
            [r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#]
                .into_iter(),
        )
        .unwrap();
        let value = authorization(&mufasa(), &challenge, "GET", "/dir/index.html", 1, "0a4f113b");
        assert!(value.contains(r#"response="6629fae49393a05397450978507c4ef1""#), "{value}");
        assert!(value.contains("nc=00000001") && value.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#));
    }

    #[test]
    fn digest_without_qop_and_basic() {
        let challenge = Challenge::Digest { realm: "r".into(), nonce: "n".into(), opaque: None, qop_auth: false };
        let value = authorization(&mufasa(), &challenge, "DESCRIBE", "rtsp://h/x", 1, "c");
        // MD5(MD5("Mufasa:r:Circle Of Life") ":n:" MD5("DESCRIBE:rtsp://h/x")), computed independently.
        let ha1 = format!("{:x}", Md5::digest(b"Mufasa:r:Circle Of Life"));
        let ha2 = format!("{:x}", Md5::digest(b"DESCRIBE:rtsp://h/x"));
        let expected = format!("{:x}", Md5::digest(format!("{ha1}:n:{ha2}").as_bytes()));
        assert!(value.contains(&format!("response=\"{expected}\"")) && !value.contains("qop"), "{value}");
        let basic = authorization(&mufasa(), &Challenge::Basic, "DESCRIBE", "rtsp://h/x", 1, "c");
        assert_eq!(basic, "Basic TXVmYXNhOkNpcmNsZSBPZiBMaWZl");
    }

    #[test]
    fn digest_is_preferred_and_unanswerable_challenges_are_not_chosen() {
        let both = [r#"Basic realm="x""#, r#"Digest realm="x", nonce="y""#];
        assert!(matches!(choose(both.into_iter()), Some(Challenge::Digest { .. })));
        assert_eq!(choose([r#"Basic realm="x""#].into_iter()), Some(Challenge::Basic));
        assert_eq!(choose([r#"Digest realm="x", nonce="y", algorithm=SHA-256"#].into_iter()), None);
        assert_eq!(choose([r#"Digest realm="x", nonce="y", qop="auth-int""#].into_iter()), None);
        assert_eq!(choose([r#"Digest realm="x""#].into_iter()), None);
        assert_eq!(choose(["Bearer"].into_iter()), None);
    }

    #[test]
    fn credentials_never_show() {
        let url = ::url::Url::parse("rtsp://us%40er:p%3Ass@h/x").unwrap();
        let credentials = Credentials::from_url(&url).unwrap();
        assert_eq!((credentials.user.as_str(), credentials.password.as_str()), ("us@er", "p:ss"));
        assert_eq!(format!("{credentials:?}"), "Credentials(…)");
        assert!(Credentials::from_url(&::url::Url::parse("rtsp://h/x").unwrap()).is_none());
    }
}
