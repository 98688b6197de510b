//! A panic while serving a request closes that request's connection, not the broker.
//!
//! Any other panic is a bug that leaves a shard's state unknown, and the process's panic hook ends
//! the broker (`cli::serve`). A request handler, though, works on what one client sent: if a case
//! slipped through the checks, dropping that client is enough. The hook asks `caught_here` whether
//! the panic happened inside such a handler; a shard runs one task at a time, so a flag set around
//! each poll of the handler's future says exactly that.

use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Poll;

thread_local! {
    static IN_REQUEST: Cell<bool> = const { Cell::new(false) };
}

/// True while the current thread polls a request handler under `contain`.
pub fn caught_here() -> bool {
    IN_REQUEST.with(|f| f.get())
}

/// Runs `fut`; `None` if it panicked (the hook has logged the panic).
pub async fn contain<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        IN_REQUEST.with(|f| f.set(true));
        let polled = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx)));
        IN_REQUEST.with(|f| f.set(false));
        match polled {
            Ok(Poll::Ready(out)) => Poll::Ready(Some(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(None),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_is_returned_as_none_and_the_flag_marks_the_handler_only() {
        let out = futures_lite::future::block_on(contain(async {
            assert!(caught_here());
            futures_lite::future::yield_now().await;
            panic!("bad input (this test's panic message is expected)")
        }));
        assert_eq!(out, None::<()>);
        assert!(!caught_here());
        assert_eq!(futures_lite::future::block_on(contain(async { caught_here() })), Some(true));
        assert!(!caught_here());
    }
}
