//! `sieve_curate._sieve`: the Rust half of the Python package (the Python half, python/sieve_curate,
//! holds the conveniences). Two ways into the library, both in process:
//!
//! - [`Model`]: a loaded encoder ([`sieve::api::Embedder`]) embedding bytes and strings;
//! - [`run_command`]: a `sieve` command line (argv built from keyword arguments in Python), parsed
//!   and run by the binary's own modules, compiled in from src/cli, returning the `--json`
//!   summary instead of printing it.
//!
//! Work runs on a worker thread with the GIL released; the calling thread wakes every 100 ms to
//! pass progress to the Python callback and to look for signals. On Ctrl-C it asks sieve to stop
//! ([`sieve::progress::request_cancel`]: between batches while embedding, between stages of a
//! run), waits for the worker, then raises `KeyboardInterrupt`. Errors become `SieveError`
//! subclasses with the message the command line prints; a panic becomes a `SieveError` too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../src/cli/mod.rs"]
mod cli;

pyo3::create_exception!(_sieve, SieveError, PyException, "An error from sieve, with its message.");
pyo3::create_exception!(
    _sieve,
    InvalidArgumentError,
    SieveError,
    "An invalid option or input (the CLI's exit code 2)."
);
pyo3::create_exception!(_sieve, ModelError, SieveError, "A model that cannot be found, loaded or used.");
pyo3::create_exception!(_sieve, DeviceError, SieveError, "A device this build or machine does not have.");
pyo3::create_exception!(_sieve, RunError, SieveError, "A run directory or one of its files cannot be used.");

/// One sieve call at a time per process: progress, cancellation and the `--quiet` setting are
/// process-wide in the library.
static BUSY: Mutex<()> = Mutex::new(());

thread_local! {
    /// This thread is inside a sieve call (its progress callback is running): a nested call
    /// would wait for [`BUSY`] forever.
    static IN_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Sets [`IN_CALL`] for its lifetime.
struct InCall;

impl InCall {
    fn enter() -> Self {
        IN_CALL.with(|c| c.set(true));
        InCall
    }
}

impl Drop for InCall {
    fn drop(&mut self) {
        IN_CALL.with(|c| c.set(false));
    }
}

/// Progress `(what, done, total)`, written by sieve's threads, read by the caller's every 100 ms:
/// the latest update, and the last update of each phase that ended since the caller last read,
/// so that a phase shorter than the polling interval still reaches the callback.
#[derive(Default)]
struct Progress {
    ended: Vec<(String, u64, u64)>,
    current: Option<(String, u64, u64)>,
}

type Latest = Arc<Mutex<Progress>>;

/// The Python exception for a sieve error: its class from the library's variant, its message
/// as the CLI prints it (`error: …` without the prefix).
fn to_py(err: anyhow::Error) -> PyErr {
    let msg = format!("{err:#}");
    use sieve::Error as E;
    match err.downcast_ref::<E>() {
        Some(E::InvalidArg { .. }) => InvalidArgumentError::new_err(msg),
        Some(E::ModelUnavailable { .. } | E::ModelFile { .. } | E::Model { .. } | E::Tokenizer(_)) => {
            ModelError::new_err(msg)
        }
        Some(E::Device { .. }) => DeviceError::new_err(msg),
        Some(E::RunDir { .. } | E::Json { .. } | E::Parquet { .. } | E::Io { .. }) => RunError::new_err(msg),
        _ => SieveError::new_err(msg),
    }
}

/// Runs `work` on a worker thread with the GIL released, passing progress to `callback`
/// (`callback(what, done, total)`) and turning Ctrl-C into a cancel request and
/// `KeyboardInterrupt` once the worker has stopped.
fn interruptible<T: Send + 'static>(
    py: Python<'_>,
    callback: Option<PyObject>,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> PyResult<T> {
    if IN_CALL.with(|c| c.get()) {
        return Err(SieveError::new_err(
            "a sieve call is already running on this thread (called from a progress callback?); call sieve after it returns",
        ));
    }
    let _busy = loop {
        match BUSY.try_lock() {
            Ok(guard) => break guard,
            Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                py.allow_threads(|| std::thread::sleep(Duration::from_millis(10)))
            }
        }
    };
    let _in_call = InCall::enter();
    sieve::progress::clear_cancel();
    let latest: Latest = Arc::new(Mutex::new(Progress::default()));
    if callback.is_some() {
        let latest = latest.clone();
        sieve::progress::set_observer(Some(Arc::new(move |what: &str, done, total| {
            let mut p = latest.lock().unwrap_or_else(|e| e.into_inner());
            let next = Some((what.to_string(), done, total));
            if let Some(prev) = std::mem::replace(&mut p.current, next) {
                if prev.0 != what {
                    p.ended.push(prev);
                }
            }
        })));
    }
    let worker = std::thread::Builder::new()
        .name("sieve".into())
        .spawn(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)))
        .map_err(|e| SieveError::new_err(format!("cannot start a thread: {e}")))?;
    let mut shown = None;
    let mut stop: Option<PyErr> = None;
    loop {
        let finished = py.allow_threads(|| {
            for _ in 0..10 {
                if worker.is_finished() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            worker.is_finished()
        });
        if let Some(cb) = &callback {
            let (ended, now) = {
                let mut p = latest.lock().unwrap_or_else(|e| e.into_inner());
                (std::mem::take(&mut p.ended), p.current.clone())
            };
            for update in ended.into_iter().map(Some).chain([now]) {
                let Some((what, done, total)) = update.clone() else { continue };
                if stop.is_some() || update == shown {
                    continue;
                }
                shown = update;
                if let Err(e) = cb.call1(py, (what, done, total)) {
                    stop = Some(e);
                }
            }
        }
        if stop.is_none() {
            stop = py.check_signals().err();
        }
        if finished || stop.is_some() {
            break;
        }
    }
    if stop.is_some() {
        sieve::progress::request_cancel();
    }
    let outcome = py.allow_threads(|| worker.join());
    sieve::progress::set_observer(None);
    sieve::progress::clear_cancel();
    if let Some(e) = stop {
        return Err(e);
    }
    match outcome {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(err))) => Err(to_py(err)),
        Ok(Err(panic)) | Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(SieveError::new_err(format!("internal error (a bug in sieve, please report it): {what}")))
        }
    }
}

/// Runs the `sieve` command line `argv` (without the program name) in process; returns the
/// `--json` summaries it printed (pass `--json` to get one), one string per line.
#[pyfunction]
#[pyo3(signature = (argv, progress=None))]
fn run_command(py: Python<'_>, argv: Vec<String>, progress: Option<PyObject>) -> PyResult<Vec<String>> {
    let args = std::iter::once("sieve".to_string()).chain(argv);
    let mut cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let msg = e.render().to_string();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Err(InvalidArgumentError::new_err(msg))
                }
                _ => Err(InvalidArgumentError::new_err(msg.trim_start_matches("error: ").trim_end().to_string())),
            };
        }
    };
    // The callback shows progress: no terminal bar as well.
    cli.quiet |= progress.is_some();
    interruptible(py, progress, move || {
        let (result, json) = cli::run_capturing_json(cli);
        result.map(|()| json)
    })
}

/// An encoder loaded once, embedding images and captions in memory.
#[pyclass(module = "sieve_curate._sieve", frozen)]
struct Model {
    inner: Arc<sieve::api::Embedder>,
}

/// Rows as `(bytes of float32, rows, dim)`, turned into a NumPy array in Python.
fn packed(py: Python<'_>, rows: Vec<Vec<f32>>, dim: usize) -> (Py<PyBytes>, usize, usize) {
    let mut data = Vec::with_capacity(rows.len() * dim * 4);
    for v in rows.iter().flatten() {
        data.extend_from_slice(&v.to_ne_bytes());
    }
    (PyBytes::new(py, &data).unbind(), rows.len(), dim)
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (name_or_path, device="auto", revision=None, batch_size="auto", quantize=None))]
    fn new(
        py: Python<'_>,
        name_or_path: String,
        device: &str,
        revision: Option<String>,
        batch_size: &str,
        quantize: Option<&str>,
    ) -> PyResult<Self> {
        let device: sieve::device::DeviceSpec = device.parse().map_err(|e| to_py(anyhow::Error::new(e)))?;
        let batch: sieve::device::BatchSize = batch_size.parse().map_err(|e| to_py(anyhow::Error::new(e)))?;
        let quantize = match quantize {
            None | Some("none") => sieve::model::Quantize::None,
            Some("int8") => sieve::model::Quantize::Int8,
            Some("bf16") => sieve::model::Quantize::Bf16,
            Some(other) => {
                return Err(to_py(anyhow::Error::new(sieve::error::Error::InvalidArg {
                    what: "quantize",
                    reason: format!("{other:?}: expected None, \"none\", \"int8\" or \"bf16\""),
                })))
            }
        };
        let spec = sieve::model::ModelSpec::new(name_or_path, revision);
        let inner =
            interruptible(py, None, move || Ok(sieve::api::Embedder::load_quantized(&spec, device, batch, quantize)?))?;
        Ok(Self { inner: Arc::new(inner) })
    }

    /// `(bytes, rows, dim)` of the embeddings of encoded images.
    #[pyo3(signature = (images, progress=None))]
    fn embed_image_bytes(
        &self,
        py: Python<'_>,
        images: Vec<Bound<'_, PyBytes>>,
        progress: Option<PyObject>,
    ) -> PyResult<(Py<PyBytes>, usize, usize)> {
        // Copied as slices: extracting `Vec<u8>` would convert every byte as a Python int
        // (seconds for a few hundred megabytes, with the GIL held).
        let images: Vec<Vec<u8>> = images.iter().map(|b| b.as_bytes().to_vec()).collect();
        let inner = self.inner.clone();
        let dim = inner.encoder().embed_dim();
        let rows = interruptible(py, progress, move || Ok(inner.embed_images(&images)?))?;
        Ok(packed(py, rows, dim))
    }

    /// `(bytes, rows, dim)` of the embeddings of captions.
    #[pyo3(signature = (texts, progress=None))]
    fn embed_text_list(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        progress: Option<PyObject>,
    ) -> PyResult<(Py<PyBytes>, usize, usize)> {
        let inner = self.inner.clone();
        let dim = inner.encoder().embed_dim();
        let rows = interruptible(py, progress, move || Ok(inner.embed_texts(&texts)?))?;
        Ok(packed(py, rows, dim))
    }

    /// The model's record as run.json stores it (JSON).
    #[getter]
    fn info_json(&self) -> PyResult<String> {
        serde_json::to_string(self.inner.encoder().info()).map_err(|e| SieveError::new_err(e.to_string()))
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.encoder().embed_dim()
    }

    #[getter]
    fn device(&self) -> String {
        self.inner.device()
    }

    #[getter]
    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }

    #[getter]
    fn has_text(&self) -> bool {
        self.inner.encoder().tokenizer().is_some()
    }
}

/// The version and build features, as `sieve --version` prints them.
#[pyfunction]
fn version() -> String {
    <cli::Cli as clap::CommandFactory>::command().render_version().trim().to_string()
}

#[pymodule]
fn _sieve(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Warnings from sieve's log lines go to stderr, as in the CLI (RUST_LOG to change).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    m.add("SieveError", py.get_type::<SieveError>())?;
    m.add("InvalidArgumentError", py.get_type::<InvalidArgumentError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add("RunError", py.get_type::<RunError>())?;
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(run_command, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
