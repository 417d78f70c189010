//! The web dashboard: `GET /` answers the page and `GET /ui/{file}` its script, style sheet and the video
//! player, all read from the configured web folder (`web_dir`) at each request.
//!
//! The files stay on disk rather than inside the binary because the player, mpegts.js, comes from the npm
//! registry (`npm ci` in `web/` installs it under `node_modules/`) and is not ours to vendor; reading at each
//! request also lets the page be edited without a rebuild. Only the files listed here are served, so nothing
//! else in the folder (`package.json`, the rest of `node_modules/`) is reachable. None of them is secret, and
//! the page must load before it can ask for a token, so these routes never need one; everything the page
//! then does goes through the token-checked API.

use std::io::ErrorKind;
use std::path::Path;

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;

/// One file the dashboard serves.
struct WebFile {
    /// The name after `/ui/` (empty for the page itself, served at `/`).
    name: &'static str,
    /// Where it is, relative to the web folder.
    path: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// What to tell the operator when it is missing: the fix differs between our own files and the player.
    missing: &'static str,
}

const NOT_INSTALLED: &str = "the dashboard is not installed: the web folder has no such file; point web_dir \
                             (--web-dir, CAMGATE_WEB_DIR) at camgate's web/ folder";

const PAGE: WebFile =
    WebFile { name: "", path: "index.html", content_type: "text/html; charset=utf-8", missing: NOT_INSTALLED };

const FILES: [WebFile; 3] = [
    WebFile {
        name: "dashboard.js",
        path: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        missing: NOT_INSTALLED,
    },
    WebFile {
        name: "dashboard.css",
        path: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        missing: NOT_INSTALLED,
    },
    WebFile {
        name: "mpegts.js",
        path: "node_modules/mpegts.js/dist/mpegts.js",
        content_type: "text/javascript; charset=utf-8",
        missing: "the video player is not installed: run `npm ci` in camgate's web/ folder (it installs mpegts.js \
                  under node_modules/)",
    },
];

/// The page may only load its own files and talk to its own origin; video arrives through Media Source
/// Extensions as `blob:` URLs. It may not be framed, so no other site can overlay its stop buttons.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; media-src 'self' blob:; img-src 'self' blob: data:; \
                                       object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// `GET /`: the dashboard page.
pub async fn page(State(state): State<AppState>) -> Result<Response, ApiError> {
    serve(&state.settings.web_dir, &PAGE).await
}

/// `GET /ui/{file}`: the page's script and style sheet, and the player.
pub async fn file(State(state): State<AppState>, UrlPath(name): UrlPath<String>) -> Result<Response, ApiError> {
    let file = FILES.iter().find(|f| f.name == name).ok_or_else(ApiError::route_not_found)?;
    serve(&state.settings.web_dir, file).await
}

async fn serve(web_dir: &Path, file: &WebFile) -> Result<Response, ApiError> {
    let path = web_dir.join(file.path);
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok((
            [
                (header::CONTENT_TYPE, file.content_type),
                // Served from disk and small: always revalidate, so an updated page or player is picked up.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            ],
            bytes,
        )
            .into_response()),
        Err(error) if error.kind() == ErrorKind::NotFound => {
            // The full path is for the operator's log; the answer names only the fix.
            tracing::error!(path = %path.display(), "dashboard file missing");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, file.missing))
        }
        Err(error) => Err(ApiError::internal(&format!("cannot read {}: {error}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_distinct_name_under_the_web_folder() {
        let mut names: Vec<&str> = FILES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FILES.len());
        for file in FILES.iter().chain([&PAGE]) {
            assert!(!file.path.starts_with('/') && !file.path.contains(".."), "{}", file.path);
        }
    }
}
