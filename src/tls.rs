//! TLS for every outgoing HTTPS connection (model backends, the CLI's client): rustls with
//! ring's cryptography, installed as the process's provider before the first client is built.
//!
//! Why ring: it is the provider without a C library of its own to compile (aws-lc is the other
//! one, and its build was the longest step of a clean build), and it covers what model APIs
//! speak: TLS 1.2 and 1.3 with the usual suites, certificates checked by the platform verifier.

use std::sync::Once;

/// Makes ring the process's TLS provider; later calls do nothing. `outgoing::client_builder`,
/// where every HTTP client starts, calls it first, so none can be built without a provider.
pub fn install_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Already installed (by an embedding program) is fine: a provider is what is needed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
