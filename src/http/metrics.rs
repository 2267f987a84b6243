//! `GET /metrics`: everything lit-mux counts, in the Prometheus text format.
//!
//! The counters live where the events happen — the MCP hub's statistics (also behind
//! `/mcp/health`), the backend registry's per-call counters, the HTTP counters here — and are
//! registered here once; values that are states rather than events (children by state, open
//! descriptors, memory) are read when scraped.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::backends::BackendRegistry;
use crate::mcp::hub::{McpHub, ServerState};
use crate::telemetry::{LatencyFamily, latency_family};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The route pattern (`/sessions/{id}`) a response came from, left by [`tag_route`].
#[derive(Debug, Clone)]
struct RoutePattern(String);

struct Inner {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: LatencyFamily<RouteLabels>,
    mcp_children: Family<StateLabels, Gauge>,
    open_fds: Gauge,
    max_fds: Gauge,
    rss_bytes: Gauge,
    child_processes: Gauge,
    dropped_log_lines: Gauge,
    hub: McpHub,
}

/// The metrics registry. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Metrics {
    pub fn new(hub: &McpHub, backends: &BackendRegistry) -> Self {
        let mut registry = Registry::with_prefix("lit_mux");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            http_requests.clone(),
        );
        let http_latency = latency_family();
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (for a stream: to its headers)",
            http_latency.clone(),
        );
        backends.metrics().register(&mut registry);
        hub.statistics_handles().register(&mut registry);
        let mcp_children = Family::<StateLabels, Gauge>::default();
        registry.register(
            "mcp_servers_by_state",
            "MCP servers by state",
            mcp_children.clone(),
        );
        let (open_fds, max_fds, rss_bytes, child_processes) = (
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
        );
        registry.register(
            "open_fds",
            "File descriptors open in lit-mux",
            open_fds.clone(),
        );
        registry.register(
            "max_fds",
            "Soft limit on open file descriptors",
            max_fds.clone(),
        );
        registry.register(
            "resident_memory_bytes",
            "Resident memory of lit-mux",
            rss_bytes.clone(),
        );
        registry.register(
            "child_processes",
            "Processes whose parent is lit-mux (zombies included)",
            child_processes.clone(),
        );
        let dropped_log_lines = Gauge::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped since the start because stderr did not keep up",
            dropped_log_lines.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                http_requests,
                http_latency,
                mcp_children,
                open_fds,
                max_fds,
                rss_bytes,
                child_processes,
                dropped_log_lines,
                hub: hub.clone(),
            }),
        }
    }

    /// The text exposition, with the states read now.
    pub fn render(&self) -> String {
        let inner = &self.inner;
        let resources = crate::http::resources::current();
        let set = |gauge: &Gauge, value: Option<u64>| {
            gauge.set(value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)));
        };
        set(&inner.open_fds, resources.open_fds);
        set(&inner.max_fds, resources.max_fds);
        set(&inner.rss_bytes, resources.rss_bytes);
        set(&inner.child_processes, resources.children);
        set(
            &inner.dropped_log_lines,
            Some(crate::logging::dropped_log_lines()),
        );
        let servers = inner.hub.list();
        for state in ServerState::ALL {
            let count = servers.iter().filter(|s| s.state == state).count();
            inner
                .mcp_children
                .get_or_create(&StateLabels {
                    state: state.to_string(),
                })
                .set(count as i64);
        }
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &inner.registry) {
            tracing::error!(%err, "cannot encode the metrics");
        }
        text
    }

    fn record(&self, route: String, method: String, status: u16, started: Instant) {
        let inner = &self.inner;
        inner
            .http_latency
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method: method.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        inner
            .http_requests
            .get_or_create(&HttpLabels {
                route,
                method,
                status,
            })
            .inc();
    }
}

/// Innermost: leaves the matched route pattern on the response for [`record_http`].
pub async fn tag_route(request: Request, next: Next) -> Response {
    let pattern = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(pattern) = pattern {
        response.extensions_mut().insert(RoutePattern(pattern));
    }
    response
}

/// Outermost: counts every request, refused ones (401, 413...) included. Requests that reached
/// no route — an unknown path, or refused by the access checks before routing — are counted
/// under the route `none` and method `other`, so that scanners cannot create label values.
pub async fn record_http(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RoutePattern>()
        .map_or_else(|| "none".to_owned(), |pattern| pattern.0.clone());
    // Only standard methods become label values.
    let method = match method.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" if route != "none" => {
            method
        }
        _ => "other".to_owned(),
    };
    metrics.record(route, method, response.status().as_u16(), started);
    response
}
