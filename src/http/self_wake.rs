//! [`PollAgainOnSelfWake`]: a future whose wake-ups during its own poll are served by polling it
//! again at once, instead of by rescheduling its task. The server wraps every HTTP connection in
//! it.
//!
//! Why: hyper hands a request's body from the connection's read side to the handler through a
//! channel, and axum runs the handler inside the connection's future, so both hand-overs (the
//! data, then its end) wake the very task that is running. Tokio takes a task woken during its
//! own poll for a task that yields: it queues it and wakes a parked worker thread to take it.
//! That cost every POST two more context switches and 20–40 µs of CPU on this project's machine
//! (2.9 switches per request against 1.0 for a GET; a tool call 3.9 against 2.0 now). Running
//! each handler in a task of its own was tried and is worse: the chain connection → handler →
//! connection → handler passes tokio's limit of three polls in a row from its LIFO slot, after
//! which every wake queues a task and wakes the other thread as well.
//!
//! Invariant: no wake-up is lost. A wake-up that arrives while the future is being polled (from
//! any thread) makes the poll run it again; one that arrives at any other time wakes the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Polls of the inner future in one poll of the task, at most. Past that (or once tokio's
/// cooperative budget for the task is spent), a self-wake is a yield again: hyper yields on
/// purpose after 16 rounds of its own loop, and the connection must still not starve the other
/// tasks of its thread.
const MAX_POLLS: usize = 8;

pub struct PollAgainOnSelfWake<F> {
    inner: Pin<Box<F>>,
    wakes: Arc<WakeRecorder>,
    /// `wakes` as a waker, made once.
    waker: Waker,
}

impl<F: Future> PollAgainOnSelfWake<F> {
    pub fn new(inner: F) -> Self {
        let wakes = Arc::new(WakeRecorder {
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        Self {
            inner: Box::pin(inner),
            waker: Waker::from(Arc::clone(&wakes)),
            wakes,
        }
    }
}

impl<F: Future> Future for PollAgainOnSelfWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.wakes.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..MAX_POLLS {
            this.wakes.polling.store(true, Ordering::SeqCst);
            let polled = this.inner.as_mut().poll(&mut inner_cx);
            this.wakes.polling.store(false, Ordering::SeqCst);
            if polled.is_ready() {
                return polled;
            }
            if !this.wakes.woken.swap(false, Ordering::SeqCst) {
                return Poll::Pending;
            }
            // Out of tokio's budget, the inner future's resources wake it only to make it yield:
            // polling again would only get the same answer.
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The waker the inner future sees.
struct WakeRecorder {
    /// True while the inner future is being polled.
    polling: AtomicBool,
    /// A wake-up arrived while `polling`: poll again.
    woken: AtomicBool,
    /// The task's own waker, for wake-ups at any other time.
    task: AtomicWaker,
}

impl Wake for WakeRecorder {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::SeqCst) {
            self.woken.store(true, Ordering::SeqCst);
            // Still polling after the store: the poll is bound to see `woken` once it ends.
            // Otherwise it may have looked already; wake the task so nothing is lost.
            if self.polling.load(Ordering::SeqCst) {
                return;
            }
        }
        self.task.wake();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wake-ups of the task polling it.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `future` once as a task would: what it returned, and the task's wake-up counter.
    fn poll_as_task<F: Future>(
        future: &mut PollAgainOnSelfWake<F>,
    ) -> (Poll<F::Output>, Arc<CountingWaker>) {
        let task = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&task));
        let polled = Pin::new(future).poll(&mut Context::from_waker(&waker));
        (polled, task)
    }

    #[test]
    fn a_self_wake_polls_again_without_waking_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&polls);
        let mut future = PollAgainOnSelfWake::new(std::future::poll_fn(move |cx| {
            // Wakes itself on its first two polls, as hyper's body hand-over does.
            if counted.fetch_add(1, Ordering::SeqCst) < 2 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }));
        let (polled, task) = poll_as_task(&mut future);
        assert!(polled.is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_later_wake_wakes_the_task() {
        let stored: Arc<std::sync::Mutex<Option<Waker>>> = Arc::default();
        let keep = Arc::clone(&stored);
        let mut future = PollAgainOnSelfWake::new(std::future::poll_fn(move |cx| {
            *keep.lock().unwrap() = Some(cx.waker().clone());
            Poll::<()>::Pending
        }));
        let (polled, task) = poll_as_task(&mut future);
        assert!(polled.is_pending());
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
        let inner_waker = stored.lock().unwrap().take().unwrap();
        std::thread::spawn(move || inner_waker.wake())
            .join()
            .unwrap();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_future_that_always_wakes_itself_still_yields() {
        let mut future = PollAgainOnSelfWake::new(std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        }));
        let (polled, task) = poll_as_task(&mut future);
        assert!(polled.is_pending());
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
    }
}
