//! Hiding camera credentials: every URL that reaches a log line, an error or a status goes through here.
//!
//! Cameras are usually addressed as `rtsp://admin:secret@10.0.0.5/stream1`. The password must never leave the
//! process except towards the camera itself, so anything that formats a URL for people uses [`redact_url`].

/// Query parameters that carry secrets on some cameras (`?usr=admin&pwd=…`) or RTMP servers (`?token=…`).
const SECRET_PARAMS: [&str; 10] =
    ["password", "passwd", "pass", "pwd", "token", "secret", "key", "auth", "sign", "signature"];

/// Returns `url` with the password (and the user name, which is often the same word) replaced by `***`, and the
/// values of query parameters such as `pwd`, `password` or `token` too.
///
/// Works on strings that do not parse as URLs too (it only looks at the part between `://` and the first
/// `/`, and at `key=value` pairs after `?`), so a malformed URL in an error message cannot leak a password
/// either.
///
/// ```
/// assert_eq!(camgate::redact_url("rtsp://admin:secret@cam.local:554/s1"), "rtsp://***:***@cam.local:554/s1");
/// assert_eq!(camgate::redact_url("rtsp://cam.local/s1?usr=admin&pwd=secret"), "rtsp://cam.local/s1?usr=admin&pwd=***");
/// assert_eq!(camgate::redact_url("rtsp://cam.local/s1"), "rtsp://cam.local/s1");
/// ```
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_param(key) => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// Whether a query parameter of this name carries a secret (its value is hidden when shown).
pub fn is_secret_param(key: &str) -> bool {
    SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s))
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    // The last '@' ends the user info: passwords may themselves contain an unescaped '@'.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let masked = if userinfo.contains(':') { "***:***" } else { "***" };
    format!("{}{}{}", &url[..authority_start], masked, &url[authority_start + at..])
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn hides_user_and_password() {
        assert_eq!(redact_url("rtsp://u:p@h/x"), "rtsp://***:***@h/x");
        assert_eq!(redact_url("rtsps://u:p@h:322"), "rtsps://***:***@h:322");
    }

    #[test]
    fn hides_a_lone_user_name() {
        assert_eq!(redact_url("rtsp://admin@h/x"), "rtsp://***@h/x");
    }

    #[test]
    fn password_with_at_sign_is_hidden_whole() {
        assert_eq!(redact_url("rtsp://u:p@ss@h/x"), "rtsp://***:***@h/x");
    }

    #[test]
    fn at_sign_in_path_is_not_user_info() {
        assert_eq!(redact_url("rtsp://h/x@y"), "rtsp://h/x@y");
        assert_eq!(redact_url("rtsp://h?channel=a@b"), "rtsp://h?channel=a@b");
    }

    #[test]
    fn hides_secret_query_values() {
        assert_eq!(redact_url("rtsp://h/s?user=a&password=b&channel=1"), "rtsp://h/s?user=a&password=***&channel=1");
        assert_eq!(redact_url("rtmp://h/live/x?Token=abc"), "rtmp://h/live/x?Token=***");
        assert_eq!(redact_url("rtsp://u:p@h/s?pwd=x"), "rtsp://***:***@h/s?pwd=***");
    }

    #[test]
    fn leaves_plain_strings_alone() {
        assert_eq!(redact_url("/tmp/out.flv"), "/tmp/out.flv");
        assert_eq!(redact_url(""), "");
    }
}
