//! Every way a child can misbehave, with our fixture server. Each test checks what the API says,
//! how long it took, that no process of the child's group survives, and that lit-mux's open
//! descriptors return exactly to their baseline. One module per kind of misbehaviour; this one
//! holds the helper they share, the `detail` of an error body.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod calls_and_bad_requests;
mod deaths_and_broken_pipes;
mod escaped_descendants;
mod startup;
mod stopping;
mod unruly_output;

use serde_json::Value;

pub(super) fn detail(body: &Value) -> &str {
    // A 422's detail is FastAPI's list of validation errors: the first one's `msg`.
    body["detail"]
        .as_str()
        .or_else(|| body["detail"][0]["msg"].as_str())
        .unwrap_or_else(|| panic!("no detail in {body}"))
}
