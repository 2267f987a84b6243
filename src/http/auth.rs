//! Who may talk to lit-mux: the API key, and the browser guards that keep a web page from
//! driving an unauthenticated local server (cross-site requests and DNS rebinding).
//!
//! Invariant: with `server.api_key` set, no request but `GET /health`, the API description
//! (`/openapi.json`, `/docs`: route shapes, no data) and CORS preflights (which carry no
//! credentials and change nothing) reaches a handler without the key.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::config::{ServerConfig, host_is_loopback};
use crate::http::error::ApiError;

/// Paths anyone may call without a key.
const OPEN_PATHS: &[&str] = &["/health", "/openapi.json", "/docs"];

/// Whether anyone may call `path`: the open paths, and the docs page's assets.
pub fn is_open_path(path: &str) -> bool {
    OPEN_PATHS.contains(&path) || path.starts_with("/docs/")
}

/// What the access checks need, fixed at startup.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    api_key: Option<Arc<str>>,
    cors_any: bool,
    cors_origins: Arc<[String]>,
    /// Set when no key protects a loopback listener: only loopback `Host` headers are served.
    loopback_hosts_only: bool,
}

impl AccessPolicy {
    pub fn new(server: &ServerConfig) -> Self {
        Self {
            api_key: server.api_key.as_deref().map(Arc::from),
            cors_any: server.cors_origins.iter().any(|o| o == "*"),
            cors_origins: server.cors_origins.clone().into(),
            loopback_hosts_only: server.api_key.is_none() && server.is_loopback(),
        }
    }

    fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.loopback_hosts_only {
            check_loopback_host(headers)?;
        }
        if !is_safe_method(method) {
            self.check_origin(headers)?;
        }
        if *method == Method::OPTIONS || is_open_path(path) {
            return Ok(());
        }
        match &self.api_key {
            Some(expected) => check_key(expected, headers),
            None => Ok(()),
        }
    }

    /// A browser names the page that sent a request in `Origin`; scripts and CLIs send none.
    /// A state-changing request from a page that is neither ours nor allowed is refused.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or_default();
        if self.cors_any || self.cors_origins.iter().any(|allowed| allowed == origin) {
            return Ok(());
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let origin_authority = origin.split_once("://").map(|(_, rest)| rest);
        if !host.is_empty() && origin_authority == Some(host) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "Cross-origin request from {origin} is not allowed; add it to server.cors_origins"
        )))
    }
}

fn is_safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Without a key, a page on another site could rebind its own name to 127.0.0.1 and read our
/// answers as same-origin; such requests carry that site's name in `Host`.
fn check_loopback_host(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(host) = headers.get(header::HOST) else {
        return Ok(());
    };
    let host = host.to_str().unwrap_or_default();
    let name = match host.rsplit_once(':') {
        // `[::1]:8000` or `localhost:8000`; a bare IPv6 address has more colons than a port.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    if host_is_loopback(name) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "Host \"{host}\" is not a loopback name; without server.api_key only local clients are served"
        )))
    }
}

fn check_key(expected: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| bearer_token(headers));
    match presented {
        None => Err(ApiError::Unauthorized(
            "Missing API key: send X-API-Key: KEY or Authorization: Bearer KEY".to_owned(),
        )),
        Some(key) if bool::from(key.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized("Invalid API key".to_owned())),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware applying [`AccessPolicy`] to every request.
pub async fn enforce(State(policy): State<AccessPolicy>, request: Request, next: Next) -> Response {
    match policy.check(request.method(), request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                map.insert(*name, value);
            }
        }
        map
    }

    fn status(
        policy: &AccessPolicy,
        method: Method,
        path: &str,
        pairs: &[(&'static str, &str)],
    ) -> u16 {
        match policy.check(&method, path, &headers(pairs)) {
            Ok(()) => 200,
            Err(err) => err.status().as_u16(),
        }
    }

    fn policy(api_key: Option<&str>, origins: &[&str]) -> AccessPolicy {
        AccessPolicy::new(&ServerConfig {
            api_key: api_key.map(str::to_owned),
            cors_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            ..ServerConfig::default()
        })
    }

    #[test]
    fn keys_in_either_header_form() {
        let p = policy(Some("s3cret"), &[]);
        assert_eq!(status(&p, Method::GET, "/x", &[]), 401);
        assert_eq!(
            status(&p, Method::GET, "/x", &[("x-api-key", "s3cret")]),
            200
        );
        assert_eq!(
            status(
                &p,
                Method::GET,
                "/x",
                &[("authorization", "bearer  s3cret ")]
            ),
            200
        );
        assert_eq!(
            status(&p, Method::GET, "/x", &[("authorization", "Basic s3cret")]),
            401
        );
        assert_eq!(
            status(&p, Method::GET, "/x", &[("x-api-key", "s3cre")]),
            401
        );
        assert_eq!(status(&p, Method::GET, "/health", &[]), 200);
    }

    #[test]
    fn foreign_pages_cannot_post() {
        let p = policy(None, &["http://app.test"]);
        let host = ("host", "127.0.0.1:8000");
        assert_eq!(
            status(
                &p,
                Method::POST,
                "/x",
                &[host, ("origin", "http://evil.test")]
            ),
            403
        );
        assert_eq!(
            status(
                &p,
                Method::POST,
                "/x",
                &[host, ("origin", "http://app.test")]
            ),
            200
        );
        assert_eq!(
            status(
                &p,
                Method::POST,
                "/x",
                &[host, ("origin", "http://127.0.0.1:8000")]
            ),
            200
        );
        assert_eq!(status(&p, Method::POST, "/x", &[host]), 200);
    }

    #[test]
    fn unauthenticated_loopback_serves_only_loopback_host_names() {
        let p = policy(None, &[]);
        for host in ["127.0.0.1:8000", "localhost", "[::1]:80", "LOCALHOST:1"] {
            assert_eq!(
                status(&p, Method::GET, "/x", &[("host", host)]),
                200,
                "{host}"
            );
        }
        assert_eq!(
            status(&p, Method::GET, "/x", &[("host", "rebound.evil.test:8000")]),
            403
        );
        let keyed = policy(Some("k"), &[]);
        assert_eq!(
            status(&keyed, Method::GET, "/health", &[("host", "lit-mux.lan")]),
            200
        );
    }
}
