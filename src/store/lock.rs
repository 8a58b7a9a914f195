//! One writer per run directory: an advisory `flock(2)` on `RUN/.sieve.lock`, held until the
//! process ends (the kernel releases it however the process ends, so a killed run never leaves
//! a stale lock). `sieve embed`, `merge` and `run`, which write the run itself, take it
//! exclusively and remove the file when done; the later stages, which only add their own
//! outputs, share it, so they may run side by side but never while the run is being written.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = super::layout::LOCK;

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct RunLock {
    file: Option<File>,
    pub path: PathBuf,
    mode: Mode,
    /// The run directory did not exist before: removed again if nothing was written to it.
    created: Option<PathBuf>,
}

/// Whether the lock is taken alone (a writer of the run) or shared (a later stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exclusive,
    Shared,
}

impl RunLock {
    /// Takes the lock of `dir` (created for [`Mode::Exclusive`]) for `what` (e.g. `sieve embed`),
    /// without waiting: if another process holds it, an error names that process.
    /// `Ok(None)`: `dir` does not exist and `mode` is shared (the stage fails on its own).
    pub fn acquire(dir: &Path, mode: Mode, what: &str) -> Result<Option<Self>> {
        if mode == Mode::Shared && !dir.is_dir() {
            return Ok(None);
        }
        let created = (!dir.exists()).then(|| dir.to_path_buf());
        fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let path = dir.join(LOCK_FILE);
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io("opening the lock", &path, e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                use std::os::unix::io::AsRawFd;
                let op = match mode {
                    Mode::Exclusive => libc::LOCK_EX,
                    Mode::Shared => libc::LOCK_SH,
                };
                // SAFETY: flock on a descriptor this function owns; no memory is involved.
                if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } != 0 {
                    let err = std::io::Error::last_os_error();
                    if err.kind() != std::io::ErrorKind::WouldBlock {
                        return Err(Error::io("locking", &path, err));
                    }
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    let holder = holder.trim();
                    return Err(Error::RunDir {
                        path: dir.into(),
                        reason: format!(
                            "is in use by another sieve process ({}); wait for it to finish or choose another folder",
                            if holder.is_empty() { "a later stage" } else { holder }
                        ),
                    });
                }
                // A writer that finished removes the file: if ours was removed between opening
                // and locking it, the lock is on a file nobody else will open; take it again.
                let same = match (file.metadata(), fs::metadata(&path)) {
                    (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                    _ => false,
                };
                if !same {
                    continue;
                }
            }
            if mode == Mode::Exclusive {
                // Who holds it, for the message another process prints.
                let _ = file.set_len(0).and_then(|_| write!(file, "{what}, pid {}", std::process::id()));
            }
            return Ok(Some(Self { file: Some(file), path, mode, created }));
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Only a writer removes the file: it holds the lock alone, so nobody else is using it
        // (anyone who opened it meanwhile sees it gone and opens a new one). Stages share the
        // lock, so one of them cannot tell whether another still holds it.
        if self.mode == Mode::Exclusive {
            let _ = fs::remove_file(&self.path);
            // A command that failed before writing anything leaves no empty --out behind
            // (remove_dir fails, harmlessly, on a folder that holds anything).
            if let Some(dir) = &self.created {
                let _ = fs::remove_dir(dir);
            }
        }
        drop(self.file.take());
    }
}
