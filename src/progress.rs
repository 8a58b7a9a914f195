//! Progress bars for the long stages (indicatif, on stderr).
//!
//! A bar is drawn only when stderr is a terminal (indicatif hides it otherwise) and `--quiet` was
//! not given, and only one at a time: a loop that runs inside another one's bar (the exact
//! search inside each cluster of a clustered search, say) draws nothing, so the outer bar stays
//! readable.
//!
//! For callers in the same process (the Python package): an observer told what each outermost
//! loop has done ([`set_observer`]), and a cancel flag that embedding and `sieve run` check
//! between batches and stages ([`request_cancel`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Turns every progress bar off (`--quiet`), for the whole process.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Told `(what, done, total)` each time a drawn-or-not outermost bar advances (see
/// [`set_observer`]).
pub type Observer = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

static OBSERVER: Mutex<Option<Observer>> = Mutex::new(None);
/// Whether [`OBSERVER`] is set: the bars' hot path (the CLI, with none) never takes the lock.
static OBSERVED: AtomicBool = AtomicBool::new(false);
static CANCEL: AtomicBool = AtomicBool::new(false);

/// Sets (or with `None` removes) the one observer of progress for the whole process, for a
/// caller that shows progress its own way (the Python package's callback). It sees the same
/// loops as the bars, outermost only, whether or not a bar is drawn.
pub fn set_observer(observer: Option<Observer>) {
    let mut slot = OBSERVER.lock().unwrap_or_else(|e| e.into_inner());
    OBSERVED.store(observer.is_some(), Ordering::SeqCst);
    *slot = observer;
}

fn observer() -> Option<Observer> {
    if !OBSERVED.load(Ordering::Relaxed) {
        return None;
    }
    OBSERVER.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Asks the embedding loop and `sieve::run::run` to stop at the next batch or stage (for a
/// caller without signals to kill it, such as the Python package on Ctrl-C). What is written
/// stays consistent: rerunning the same command resumes, as after a killed process.
pub fn request_cancel() {
    CANCEL.store(true, Ordering::SeqCst);
}

/// Clears a [`request_cancel`] (before the next command).
pub fn clear_cancel() {
    CANCEL.store(false, Ordering::SeqCst);
}

/// Whether [`request_cancel`] was called and not cleared.
pub fn cancel_requested() -> bool {
    CANCEL.load(Ordering::SeqCst)
}

/// An error when [`request_cancel`] was called: the points where long work may stop call this.
pub fn check_cancel() -> crate::Result<()> {
    if cancel_requested() {
        return Err(crate::Error::Pipeline("interrupted".into()));
    }
    Ok(())
}

/// Warnings of one kind shown before the rest are only counted.
pub const WARNING_EXAMPLES: usize = 3;

static WARNINGS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

/// Logs a per-record warning of kind `kind` (e.g. a skip reason) for the first
/// [`WARNING_EXAMPLES`] records of that kind, then one line saying the rest are not shown: a
/// million broken files make three lines each, not a million. Every record stays in the run's
/// metadata with its reason, and the end summary counts them.
pub fn warn_record(kind: &str, message: impl FnOnce() -> String) {
    let seen = {
        let mut guard = WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
        let n = guard.get_or_insert_with(HashMap::new).entry(kind.to_string()).or_insert(0);
        *n += 1;
        *n
    };
    if seen <= WARNING_EXAMPLES {
        tracing::warn!("{}", message());
    } else if seen == WARNING_EXAMPLES + 1 {
        tracing::warn!(
            "more records with `{kind}` are not shown one by one; the run's metadata lists each (the summary counts them)"
        );
    }
}

/// Starts the per-kind counts of [`warn_record`] afresh (at the start of each embed).
pub fn reset_record_warnings() {
    *WARNINGS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// A progress bar with a rate and an ETA; hidden when `--quiet`, when stderr is not a terminal,
/// or when another bar is already showing. Cleared when dropped.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    /// What the observer is told: the label, the steps done and their total; `None` when nested.
    observed: Option<(String, AtomicU64, u64)>,
}

impl Progress {
    /// A bar for `len` steps of `unit` (e.g. "images", "blocks"), labelled `what`.
    pub fn new(len: u64, what: &str, unit: &str) -> Self {
        Self::with(len, what, unit, true)
    }

    /// As [`Progress::new`], and hidden whenever `show` is false (e.g. a caller's own option).
    pub fn with(len: u64, what: &str, unit: &str, show: bool) -> Self {
        let first = ACTIVE.fetch_add(1, Ordering::SeqCst) == 0;
        let observed = first.then(|| (what.to_string(), AtomicU64::new(0), len));
        if let (Some(f), Some((what, _, len))) = (observer(), &observed) {
            f(what, 0, *len);
        }
        if !show || !first || quiet() {
            return Self { bar: ProgressBar::hidden(), observed };
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let template = format!("{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}");
        bar.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
        Self { bar, observed }
    }

    /// Advances the bar by `n` steps.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        if let Some((what, done, len)) = &self.observed {
            let done = done.fetch_add(n, Ordering::Relaxed) + n;
            if let Some(f) = observer() {
                f(what, done, *len);
            }
        }
    }

    /// The underlying bar (e.g. for `println` above it).
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// Whether this bar is drawn (stderr a terminal, not quiet, not nested).
    pub fn is_drawn(&self) -> bool {
        !self.bar.is_hidden()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}
