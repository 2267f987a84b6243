//! The service each connection runs around the router: it marks the connection busy while a
//! request is under way (for [`connections`](crate::http::connections)), and bounds how long a
//! request's body may take to arrive.
//!
//! Invariants:
//! - A request is under way from the call until its response body has been written or dropped,
//!   so a streamed reply keeps its connection from being counted idle.
//! - A body that has not fully arrived `body_timeout` after its request's head fails the read,
//!   and the request is answered 408 with `Connection: close`, whatever the handler made of the
//!   failed read: a client that declares a body and never sends it holds nothing for longer.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::http::connections::{Connection, RequestUnderWay};
use crate::http::error::ApiError;

type BoxError = Box<dyn Error + Send + Sync>;

/// `inner` (the router) as served on one connection.
#[derive(Clone)]
pub struct ConnectionService<S> {
    inner: S,
    connection: Arc<Connection>,
    body_timeout: Duration,
}

impl<S> ConnectionService<S> {
    pub fn new(inner: S, connection: Arc<Connection>, body_timeout: Duration) -> Self {
        Self {
            inner,
            connection,
            body_timeout,
        }
    }
}

impl<S, B> tower::Service<Request<B>> for ConnectionService<S>
where
    S: tower::Service<Request<TimedBody<B>>, Response = axum::response::Response>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<TrackedBody<axum::body::Body>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let under_way = self.connection.request_started();
        let openai = crate::http::openai::errors::serves(request.uri().path())
            .then(|| (request.method().clone(), request.uri().path().to_owned()));
        let timed_out = Arc::new(AtomicBool::new(false));
        let body_timeout = self.body_timeout;
        let request = request.map(|body| TimedBody {
            inner: body,
            deadline: Instant::now() + body_timeout,
            timer: None,
            timed_out: Arc::clone(&timed_out),
        });
        // The clone that was made ready is the one that serves (tower's contract).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            if timed_out.load(Ordering::Relaxed) {
                response = body_timed_out(body_timeout);
                // Outside the router, whose last layer gives errors their path's shape.
                if let Some((method, path)) = openai {
                    response = crate::http::openai::errors::reshape(response, &method, &path);
                }
            }
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _under_way: under_way,
            }))
        })
    }
}

/// 408 for a body that did not arrive in time; the rest of it is not waited for.
fn body_timed_out(limit: Duration) -> axum::response::Response {
    let mut response = ApiError::RequestTimeout(format!(
        "the request body did not arrive within {} s (server.body_read_timeout_secs)",
        limit.as_secs()
    ))
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    debug_assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    response
}

/// A request body that fails once its deadline has passed before its end.
pub struct TimedBody<B> {
    inner: B,
    deadline: Instant,
    /// Made at the first read that has to wait: bodiless requests never start a timer.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

/// The error a [`TimedBody`] fails with.
#[derive(Debug)]
pub struct BodyTimedOut;

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl Error for BodyTimedOut {}

impl<B> HttpBody for TimedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request under way until it is written or dropped.
pub struct TrackedBody<B> {
    inner: B,
    _under_way: RequestUnderWay,
}

impl<B> HttpBody for TrackedBody<B>
where
    B: HttpBody + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
