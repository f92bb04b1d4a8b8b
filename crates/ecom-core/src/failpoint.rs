//! Crashing the process at an exact step, for fault-injection tests.
//!
//! # Why this module exists
//!
//! The crates mark the steps where a crash matters with failpoints of the
//! [`fail`](https://docs.rs/fail/0.5) crate. Its `panic` action is no crash
//! inside tokio: the runtime catches the panic and only that task dies,
//! while the process lives on, keeps its locks and may even finish the step
//! on another task. A test that means "the machine lost power right here"
//! needs the whole process gone, with nothing flushed or answered after the
//! step. So a failpoint armed with `return(crash)` goes through [`fired`],
//! which says which failpoint fired (the line a test looks for, see
//! [`crash_message`]) and calls [`std::process::abort`]: no destructors, no
//! buffered writes, exit by SIGABRT.
//!
//! # Where failpoints exist
//!
//! Only in builds with the `failpoints` cargo feature of the crate that has
//! them (which also turns on `fail/failpoints`); test builds of the
//! `ecom-pipeline` binary enable them through dev-dependencies, release
//! builds never do. Without the feature [`failpoint!`](crate::failpoint!)
//! expands to nothing, so the crate need not even depend on `fail`.
//! Each such crate lists its failpoints in a `FAILPOINTS` constant (empty
//! without the feature), so that the binary can refuse to arm a name that
//! this build does not have instead of running without the fault.

/// The line [`fired`] prints to stderr before it aborts: what a test
/// matches to know the process died at `name`, not somewhere else.
pub fn crash_message(name: &str) -> String {
    format!("failpoint {name} fired: aborting the process")
}

/// Called when failpoint `name` fires with `return(arg)` at a step that
/// can only crash: with `arg` = `crash`, prints [`crash_message`] and
/// aborts the process. Any other argument is a mistake in the test that
/// armed it, and panics saying so.
pub fn fired(name: &str, arg: Option<String>) -> ! {
    crash_if_asked(name, arg.as_deref());
    panic!(
        "failpoint {name} fired with return({}): only return(crash) is supported here",
        arg.unwrap_or_default()
    )
}

/// For failpoints that also have another meaning for `return` (the log's
/// injected I/O errors): aborts the process as [`fired`] does when `arg` is
/// `crash`, else returns and lets the failpoint do its own thing.
pub fn crash_if_asked(name: &str, arg: Option<&str>) {
    if arg == Some("crash") {
        use std::io::Write;
        // stderr is unbuffered; the explicit flush is for readers who wonder.
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", crash_message(name));
        let _ = err.flush();
        std::process::abort();
    }
}

/// A failpoint at a step where a crash matters: `failpoint!("apply::after_x")`.
///
/// Compiles to nothing unless the crate it is used in has the cargo feature
/// `failpoints` (and so depends on `fail` with `fail/failpoints`). Armed
/// with `return(crash)` it aborts the process there ([`fired`]); the `fail`
/// crate's other actions (`sleep`, `pause`, `print`, `off`, counts such as
/// `2*off->return(crash)`) work as usual.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        {
            ::fail::fail_point!($name, |arg| $crate::failpoint::fired($name, arg));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crash_message_names_the_failpoint() {
        assert_eq!(
            crash_message("apply::after_conditional_write"),
            "failpoint apply::after_conditional_write fired: aborting the process"
        );
    }

    #[test]
    fn only_crash_aborts() {
        crash_if_asked("x", None);
        crash_if_asked("x", Some("injected failure"));
    }
}
