//! Progress of the long commands (`replay`, `verify`, `dlq reprocess`,
//! `bench`, `produce`) on stderr.
//!
//! Why it exists: those commands run for minutes on a real backlog, and a
//! person needs to see they move; but the libraries doing the work must not
//! know about terminals, so they report [`Progress`] in plain types
//! (`ecom_core::progress`) and this module alone decides how it looks:
//!
//! - stderr is a terminal: an indicatif bar (position of total, rate, ETA);
//! - otherwise (CI, systemd, `kubectl logs`): a plain line at most every
//!   [`LINE_EVERY`], e.g. `replay: 120000/500000 entries read (24%), 8100/s`,
//!   which a log collector keeps readable.
//!
//! Either way, a phase that ends (a new `what` arrives, or the command
//! finishes) leaves one closing line with its count, duration and rate, so
//! the last line on stderr sums up the run. Nothing here writes to stdout:
//! stdout carries the commands' results, which scripts and tests parse.

use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ecom_core::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// The plain renderer prints at most one periodic line this often.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// Shows one command's progress on stderr; call [`Reporter::finish`] when
/// the command succeeded (dropped without it, it clears its bar and says
/// nothing more: the error that follows is the last word).
pub struct Reporter {
    inner: Mutex<Inner>,
}

struct Inner {
    lines: Lines,
    /// `Some` when stderr is a terminal: drawn instead of periodic lines.
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// A reporter for `command`, drawing a bar if stderr is a terminal.
    pub fn new(command: &'static str) -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            ProgressBar::new(0)
                .with_prefix(command)
                .with_style(bar_style(true))
        });
        Reporter {
            inner: Mutex::new(Inner {
                lines: Lines::new(command, LINE_EVERY, Instant::now()),
                bar,
            }),
        }
    }

    /// Takes one report from the work (a [`ecom_core::ProgressFn`]: pass
    /// `&|p| reporter.update(p)`).
    pub fn update(&self, p: Progress<'_>) {
        let mut inner = self.lock();
        let Inner { lines, bar } = &mut *inner;
        let new_phase = lines.phase.as_ref().is_none_or(|ph| ph.what != p.what);
        let out = lines.update(p, Instant::now());
        match bar {
            Some(bar) => {
                if let Some(line) = out.closed {
                    bar.println(line);
                }
                if new_phase {
                    bar.reset();
                    bar.set_style(bar_style(p.total.is_some()));
                    bar.set_message(p.what.to_string());
                    match p.total {
                        Some(total) => bar.set_length(total),
                        None => bar.unset_length(),
                    }
                }
                bar.set_position(p.done);
            }
            None => {
                for line in [out.closed, out.periodic].into_iter().flatten() {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// Prints a line of its own (above the bar, if there is one).
    pub fn println(&self, line: &str) {
        match &self.lock().bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// The command succeeded: clear the bar and print the closing line.
    pub fn finish(self) {
        let mut inner = self.lock();
        if let Some(bar) = inner.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!("{}", inner.lines.finish(Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(bar) = self.lock().bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn bar_style(known_total: bool) -> ProgressStyle {
    let template = if known_total {
        "{prefix}: [{bar:30}] {pos}/{len} {msg} ({percent}%), {per_sec:0}, ETA {eta}"
    } else {
        "{prefix}: {spinner} {pos} {msg}, {per_sec:0}"
    };
    ProgressStyle::with_template(template)
        .expect("the templates are valid")
        .progress_chars("=> ")
}

/// The plain-text renderer, without I/O or a clock of its own (the caller
/// passes `now`), so its rate limit is testable.
#[derive(Debug)]
pub struct Lines {
    command: &'static str,
    every: Duration,
    started: Instant,
    /// When the last periodic line was printed (the start, at first).
    last_line: Instant,
    phase: Option<Phase>,
}

#[derive(Debug)]
struct Phase {
    what: String,
    done: u64,
    total: Option<u64>,
    started: Instant,
    /// When `done` was reported.
    at: Instant,
}

/// What one report makes the plain renderer print.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LinesOut {
    /// The closing line of the phase this report ended.
    pub closed: Option<String>,
    /// A periodic line, if the last was [`Lines::every`] ago.
    pub periodic: Option<String>,
}

impl Lines {
    pub fn new(command: &'static str, every: Duration, now: Instant) -> Lines {
        Lines {
            command,
            every,
            started: now,
            last_line: now,
            phase: None,
        }
    }

    /// Takes a report arriving at `now`.
    pub fn update(&mut self, p: Progress<'_>, now: Instant) -> LinesOut {
        let mut out = LinesOut::default();
        match &mut self.phase {
            Some(ph) if ph.what == p.what => {
                ph.done = p.done;
                ph.total = p.total;
                ph.at = now;
            }
            previous => {
                // The new phase's work began when the previous one's ended.
                let started = match previous {
                    Some(ph) => {
                        out.closed = Some(closing(self.command, ph));
                        ph.at
                    }
                    None => self.started,
                };
                self.phase = Some(Phase {
                    what: p.what.to_string(),
                    done: p.done,
                    total: p.total,
                    started,
                    at: now,
                });
            }
        }
        if now.saturating_duration_since(self.last_line) >= self.every {
            self.last_line = now;
            let ph = self.phase.as_ref().expect("set above");
            out.periodic = Some(format!(
                "{}: {}, {}/s",
                self.command,
                count(ph),
                rate(ph.done, ph.at.saturating_duration_since(ph.started))
            ));
        }
        out
    }

    /// The closing line: the last phase's count, duration and rate (or only
    /// the duration, if nothing was reported).
    pub fn finish(&mut self, now: Instant) -> String {
        match &self.phase {
            Some(ph) => closing(self.command, ph),
            None => format!(
                "{}: done in {:.1}s",
                self.command,
                now.saturating_duration_since(self.started).as_secs_f64()
            ),
        }
    }
}

/// `replay: 8000/8000 entries read (100%) in 2.0s, 4000/s`: a phase's
/// count, how long it took, and its rate.
fn closing(command: &str, ph: &Phase) -> String {
    let took = ph.at.saturating_duration_since(ph.started);
    format!(
        "{command}: {} in {:.1}s, {}/s",
        count(ph),
        took.as_secs_f64(),
        rate(ph.done, took)
    )
}

/// `120000/500000 entries read (24%)`, or `120000 entries read` without a
/// total.
fn count(ph: &Phase) -> String {
    match ph.total {
        Some(total) => {
            let percent = (ph.done.min(total) * 100).checked_div(total).unwrap_or(100);
            format!("{}/{} {} ({percent}%)", ph.done, total, ph.what)
        }
        None => format!("{} {}", ph.done, ph.what),
    }
}

/// Units per second, whole; 0 over no time at all.
fn rate(done: u64, took: Duration) -> u64 {
    let s = took.as_secs_f64();
    if s > 0.0 {
        (done as f64 / s).round() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(what: &str, done: u64, total: Option<u64>) -> Progress<'_> {
        Progress { what, done, total }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn periodic_lines_come_at_most_every_interval_with_count_percent_and_rate() {
        let t0 = Instant::now();
        let mut l = Lines::new("replay", secs(5.0), t0);
        let total = Some(500_000);
        assert_eq!(
            l.update(p("entries read", 40_000, total), t0 + secs(1.0)),
            LinesOut::default(),
            "nothing before the first interval"
        );
        assert_eq!(
            l.update(p("entries read", 120_000, total), t0 + secs(4.9))
                .periodic,
            None
        );
        assert_eq!(
            l.update(p("entries read", 125_000, total), t0 + secs(5.0))
                .periodic
                .as_deref(),
            Some("replay: 125000/500000 entries read (25%), 25000/s")
        );
        // The interval counts from the last line, not from the start.
        assert_eq!(
            l.update(p("entries read", 200_000, total), t0 + secs(9.0))
                .periodic,
            None
        );
        assert_eq!(
            l.update(p("entries read", 250_000, total), t0 + secs(10.0))
                .periodic
                .as_deref(),
            Some("replay: 250000/500000 entries read (50%), 25000/s")
        );
    }

    #[test]
    fn a_new_phase_closes_the_last_one_and_counts_its_rate_from_there() {
        let t0 = Instant::now();
        let mut l = Lines::new("replay", secs(5.0), t0);
        l.update(p("entries read", 4096, Some(8000)), t0 + secs(0.5));
        l.update(p("entries read", 8000, Some(8000)), t0 + secs(2.0));
        let out = l.update(p("order states written", 300, Some(1000)), t0 + secs(3.0));
        assert_eq!(
            out.closed.as_deref(),
            Some("replay: 8000/8000 entries read (100%) in 2.0s, 4000/s")
        );
        assert_eq!(out.periodic, None);
        l.update(p("order states written", 1000, Some(1000)), t0 + secs(4.0));
        assert_eq!(
            l.finish(t0 + secs(4.5)),
            "replay: 1000/1000 order states written (100%) in 2.0s, 500/s",
            "the final line is the last phase's, timed from the previous phase's end"
        );
    }

    #[test]
    fn the_final_line_without_reports_or_totals_still_says_what_happened() {
        let t0 = Instant::now();
        let mut l = Lines::new("produce", secs(5.0), t0);
        assert_eq!(l.finish(t0 + secs(0.3)), "produce: done in 0.3s");

        let mut l = Lines::new("bench", secs(5.0), t0);
        l.update(p("stages run", 3, None), t0 + secs(3.0));
        assert_eq!(l.finish(t0 + secs(3.0)), "bench: 3 stages run in 3.0s, 1/s");

        // An empty total is complete, and an instant phase has no rate.
        let mut l = Lines::new("dlq reprocess", secs(5.0), t0);
        l.update(p("parked payments checked", 0, Some(0)), t0);
        assert_eq!(
            l.finish(t0),
            "dlq reprocess: 0/0 parked payments checked (100%) in 0.0s, 0/s"
        );
    }
}
