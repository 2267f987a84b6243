//! Every outgoing HTTP client lit-mux builds (the model backends' and the CLI's client of lit-mux)
//! starts from [`client_builder`]: TLS through [`crate::tls`], and redirects followed only within
//! the origin (scheme, host and port) of the request, at most [`MAX_REDIRECTS`] times.
//!
//! Why: these clients carry keys in headers reqwest does not know are secret (`x-api-key`,
//! `X-API-Key`) and, after a 307 or 308, the request's body again (a whole conversation); a
//! redirect to another origin would hand both to a server nobody configured. A redirect that is
//! not followed is a [`RedirectRefused`] among the request error's sources, naming its `Location`.

use reqwest::redirect::{Action, Attempt, Policy};

/// Most redirects one request follows, all within its origin.
pub const MAX_REDIRECTS: usize = 5;

/// A client builder with lit-mux's TLS provider and redirect rule; callers add their timeouts.
pub fn client_builder() -> reqwest::ClientBuilder {
    crate::tls::install_provider();
    reqwest::Client::builder().redirect(Policy::custom(same_origin_only))
}

/// A redirect that was not followed, and where it pointed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectRefused {
    /// The redirect's status (301, 302, 303, 307, 308).
    pub status: u16,
    /// Where it pointed, resolved against the request's URL.
    pub location: String,
    pub reason: RefusalReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The `Location` is on another scheme, host or port.
    OtherOrigin,
    /// More than [`MAX_REDIRECTS`] in a row.
    TooMany,
}

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            RefusalReason::OtherOrigin => write!(
                f,
                "a redirect to another origin is not followed (Location: {})",
                self.location
            ),
            RefusalReason::TooMany => write!(
                f,
                "more than {MAX_REDIRECTS} redirects are not followed (the last Location: {})",
                self.location
            ),
        }
    }
}

impl std::error::Error for RedirectRefused {}

impl RedirectRefused {
    /// The refusal among `err`'s sources, if a redirect was refused.
    pub fn in_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a RedirectRefused> {
        let mut source = Some(err);
        while let Some(current) = source {
            if let Some(refused) = current.downcast_ref::<RedirectRefused>() {
                return Some(refused);
            }
            source = current.source();
        }
        None
    }
}

fn same_origin_only(attempt: Attempt) -> Action {
    // `previous` holds the request's first URL and every one redirected from since.
    let refusal = match attempt.previous().first() {
        Some(first) if !same_origin(first, attempt.url()) => Some(RefusalReason::OtherOrigin),
        _ if attempt.previous().len() > MAX_REDIRECTS => Some(RefusalReason::TooMany),
        _ => None,
    };
    match refusal {
        None => attempt.follow(),
        Some(reason) => {
            let refused = RedirectRefused {
                status: attempt.status().as_u16(),
                location: attempt.url().to_string(),
                reason,
            };
            attempt.error(refused)
        }
    }
}

fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_scheme_host_and_port() {
        let url = |text: &str| reqwest::Url::parse(text).unwrap();
        assert!(same_origin(&url("http://a:80/x"), &url("http://a/y?z")));
        assert!(same_origin(&url("https://a/x"), &url("https://a:443/")));
        assert!(!same_origin(&url("http://a/x"), &url("https://a/x")));
        assert!(!same_origin(&url("http://a:8080/"), &url("http://a:8081/")));
        assert!(!same_origin(&url("http://a/"), &url("http://a.evil/")));
    }
}
