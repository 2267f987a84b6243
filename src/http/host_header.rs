//! The `Host` header rule of RFC 9112 §3.2: a request with more than one `Host` line, or one
//! whose value is not a valid `host[:port]`, and an HTTP/1.1 request without `Host`, is answered
//! 400 before anything else looks at it (the access checks read `Host`, so an ambiguous one must
//! never reach them). HTTP/1.0 requests may omit it; HTTP/2 names the authority in its own
//! pseudo-header and usually sends no `Host`.

use axum::extract::Request;
use axum::http::{HeaderMap, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

/// Answers 400 to a request whose `Host` breaks the rule, and passes the rest on.
pub async fn require_valid_host(request: Request, next: Next) -> Response {
    match check(request.version(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(problem) => ApiError::BadRequest(problem.to_owned()).into_response(),
    }
}

fn check(version: Version, headers: &HeaderMap) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => {
            Err("an HTTP/1.1 request must carry a Host header")
        }
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err("more than one Host header"),
        (Some(host), None) => match host.to_str() {
            Ok(host) if is_valid_host(host) => Ok(()),
            _ => Err("the Host header is not a valid host[:port]"),
        },
    }
}

/// `uri-host [":" port]` (RFC 3986): a registered name or IPv4 address, or an IPv6 address in
/// brackets, then optionally a decimal port. An empty name is refused: no `http` URI has one.
fn is_valid_host(value: &str) -> bool {
    let (host, port) = match value.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((address, rest)) => {
                if address.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match rest {
                    "" => return true,
                    _ => match rest.strip_prefix(':') {
                        Some(port) => (None, port),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match value.rsplit_once(':') {
            Some((host, port)) => (Some(host), port),
            None => (Some(value), ""),
        },
    };
    let port_ok = port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let host_ok = host.is_none_or(|name| !name.is_empty() && is_reg_name(name));
    port_ok && host_ok
}

/// Unreserved characters, sub-delimiters and percent-escapes only.
fn is_reg_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if byte == b'%' {
            let escaped = bytes.get(at + 1..at + 3);
            if !escaped.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            at += 3;
            continue;
        }
        if !(byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&byte)) {
            return false;
        }
        at += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values() {
        for good in [
            "localhost",
            "localhost:8000",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:8000",
            "api.example.com",
            "xn--bcher-kva.example",
            "host:",
        ] {
            assert!(is_valid_host(good), "{good}");
        }
        for bad in [
            "",
            ":80",
            "a b",
            "user@host",
            "host:port",
            "host:123456",
            "[::1",
            "[nope]:80",
            "[::1]80",
            "a/b",
            "h%zz",
            "a:b:c",
        ] {
            assert!(!is_valid_host(bad), "{bad}");
        }
    }
}
