//! Pairs that arrive in any order, handed back sorted by `(a, b)` without holding them all: the
//! searches that cannot produce their pairs in order (HNSW finds each pair from either end;
//! `dedup-partition` files hold each cluster's pairs) sort them here, an external merge sort.
//!
//! A [`PairSorter`] keeps pairs in memory up to a budget; beyond it, each full buffer is sorted
//! and written to a run file in a temporary folder (12 bytes a pair, little-endian), and the
//! runs are read back through [`merge_each`], which hands them on in order with repeats dropped
//! as [`sort_dedup`] drops them. Within the budget nothing touches the disk. [`SortedPairs`]
//! can be read any number of times; its folder is removed when it is dropped. A killed process
//! leaves its folder behind, named with its process id; the next dedup of the run removes the
//! folders of processes no longer running ([`remove_stale`]).
//!
//! Written here rather than with a crate: the external-sort crates (`extsort`) hand back a
//! one-shot iterator, while dedup reads a kind's pairs once per pass, and the merge with
//! repeats dropped already exists in [`merge`](super::merge).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::merge::{merge_each, SortedBatches};
use super::{sort_dedup, Pair};
use crate::error::{Error, Result};

pub use crate::store::layout::SPILL_PREFIX;

/// Bytes per pair in a run file.
const PAIR_BYTES: usize = 12;

/// Run files merged at once; more are first merged in groups into longer runs, so the files
/// open at a time stay bounded.
const FAN_IN: usize = 64;

/// Pairs read from a run file per pull and unit of work.
const READ_PAIRS: usize = 1 << 14;

/// Collects pairs in any order; [`PairSorter::finish`] gives them back sorted.
pub struct PairSorter {
    parent: PathBuf,
    budget: usize,
    buf: Vec<Pair>,
    dir: Option<tempfile::TempDir>,
    runs: Vec<PathBuf>,
    written: usize,
}

impl PairSorter {
    /// A sorter that holds up to `budget` pairs (at least one) in memory and writes the rest to a
    /// temporary folder inside `parent`.
    pub fn new(parent: &Path, budget: usize) -> Self {
        Self {
            parent: parent.to_path_buf(),
            budget: budget.max(1),
            buf: Vec::new(),
            dir: None,
            runs: Vec::new(),
            written: 0,
        }
    }

    /// Adds pairs, writing a sorted run to disk whenever the buffer reaches the budget.
    pub fn push(&mut self, pairs: &[Pair]) -> Result<()> {
        let mut rest = pairs;
        while !rest.is_empty() {
            let take = (self.budget - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() >= self.budget {
                self.spill()?;
            }
        }
        Ok(())
    }

    fn folder(&mut self) -> Result<&Path> {
        if self.dir.is_none() {
            let dir = tempfile::Builder::new()
                .prefix(&format!("{SPILL_PREFIX}{}-", std::process::id()))
                .tempdir_in(&self.parent)
                .map_err(|e| Error::io("creating a folder for sorting pairs in", &self.parent, e))?;
            self.dir = Some(dir);
        }
        Ok(self.dir.as_ref().expect("created above").path())
    }

    fn next_run_path(&mut self) -> Result<PathBuf> {
        let n = self.written;
        self.written += 1;
        Ok(self.folder()?.join(format!("run-{n:06}.bin")))
    }

    fn spill(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        sort_dedup(&mut buf);
        let path = self.next_run_path()?;
        write_run(&path, &buf)?;
        self.runs.push(path);
        if self.runs.len() >= 2 * FAN_IN {
            self.compact()?;
        }
        Ok(())
    }

    /// Merges the first `FAN_IN` runs into one, keeping the open files bounded.
    fn compact(&mut self) -> Result<()> {
        let group: Vec<PathBuf> = self.runs.drain(..FAN_IN).collect();
        let path = self.next_run_path()?;
        let file = File::create(&path).map_err(|e| Error::io("writing", &path, e))?;
        let mut w = BufWriter::new(file);
        let pieces = group.iter().map(|p| RunReader::open(p).map(|r| Box::new(r) as _)).collect::<Result<_>>()?;
        merge_each(pieces, &mut |batch| write_pairs(&mut w, &batch).map_err(|e| Error::io("writing", &path, e)))?;
        w.flush().map_err(|e| Error::io("writing", &path, e))?;
        for p in group {
            std::fs::remove_file(&p).map_err(|e| Error::io("removing", &p, e))?;
        }
        self.runs.insert(0, path);
        Ok(())
    }

    /// Every pair pushed, sorted by `(a, b)`, repeats dropped keeping the lowest similarity.
    pub fn finish(mut self) -> Result<SortedPairs> {
        if self.runs.is_empty() {
            let mut pairs = std::mem::take(&mut self.buf);
            sort_dedup(&mut pairs);
            return Ok(SortedPairs::Memory(pairs));
        }
        self.spill()?;
        while self.runs.len() > FAN_IN {
            self.compact()?;
        }
        let dir = self.dir.take().expect("runs were written into the folder");
        Ok(SortedPairs::Disk { _dir: dir, runs: std::mem::take(&mut self.runs) })
    }
}

/// Pairs sorted by `(a, b)`, in memory or in run files merged on each read.
pub enum SortedPairs {
    Memory(Vec<Pair>),
    Disk {
        /// Removed, with the runs, when dropped.
        _dir: tempfile::TempDir,
        runs: Vec<PathBuf>,
    },
}

impl SortedPairs {
    /// The pairs as sorted pieces of a merge ([`merge_each`]): the slice in memory, or one
    /// piece per run file.
    pub fn pieces(&self) -> Result<Vec<Box<dyn SortedBatches + '_>>> {
        Ok(match self {
            SortedPairs::Memory(pairs) => vec![Box::new(Slice { pairs, at: 0 })],
            SortedPairs::Disk { runs, .. } => {
                runs.iter().map(|p| RunReader::open(p).map(|r| Box::new(r) as _)).collect::<Result<_>>()?
            }
        })
    }

    /// Hands every pair to `f`, in batches sorted by `(a, b)`.
    pub fn each(&self, f: &mut dyn FnMut(Vec<Pair>) -> Result<()>) -> Result<()> {
        merge_each(self.pieces()?, f)
    }

    /// Whether the pairs went to disk.
    pub fn spilled(&self) -> bool {
        matches!(self, SortedPairs::Disk { .. })
    }
}

/// Removes the temporary folders that processes no longer running left in `parent` (killed
/// while sorting). Folders of live processes, such as another dedup of the same run, stay.
pub fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(SPILL_PREFIX).and_then(|r| r.split('-').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if !process_alive(pid) && e.path().is_dir() {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!("could not remove {}: {err}", e.path().display());
            }
        }
    }
}

/// Whether process `pid` is running (on other systems than Unix: assumed so, nothing removed).
fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return true };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

fn write_pairs(w: &mut impl Write, pairs: &[Pair]) -> std::io::Result<()> {
    for p in pairs {
        let mut b = [0u8; PAIR_BYTES];
        b[..4].copy_from_slice(&p.a.to_le_bytes());
        b[4..8].copy_from_slice(&p.b.to_le_bytes());
        b[8..].copy_from_slice(&p.sim.to_le_bytes());
        w.write_all(&b)?;
    }
    Ok(())
}

fn write_run(path: &Path, pairs: &[Pair]) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io("writing", path, e))?;
    let mut w = BufWriter::new(file);
    write_pairs(&mut w, pairs).and_then(|()| w.flush()).map_err(|e| Error::io("writing", path, e))
}

/// A sorted slice handed on in pieces.
struct Slice<'a> {
    pairs: &'a [Pair],
    at: usize,
}

impl SortedBatches for Slice<'_> {
    fn next_a(&self) -> Option<u32> {
        self.pairs.get(self.at).map(|p| p.a)
    }

    fn pull(&mut self, blocks: usize) -> Result<Vec<Pair>> {
        let end = (self.at + blocks.max(1) * READ_PAIRS).min(self.pairs.len());
        let out = self.pairs[self.at..end].to_vec();
        self.at = end;
        Ok(out)
    }
}

/// One run file read in order.
struct RunReader {
    path: PathBuf,
    r: BufReader<File>,
    next: Option<Pair>,
}

impl RunReader {
    fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io("reading", path, e))?;
        let mut r = Self { path: path.to_path_buf(), r: BufReader::with_capacity(1 << 16, f), next: None };
        r.next = r.read_one()?;
        Ok(r)
    }

    fn read_one(&mut self) -> Result<Option<Pair>> {
        let mut b = [0u8; PAIR_BYTES];
        let mut got = 0;
        while got < PAIR_BYTES {
            match self.r.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading", &self.path, e)),
            }
        }
        match got {
            0 => Ok(None),
            PAIR_BYTES => {
                let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
                Ok(Some(Pair {
                    a: u32::from_le_bytes(word(0)),
                    b: u32::from_le_bytes(word(4)),
                    sim: f32::from_le_bytes(word(8)),
                }))
            }
            _ => Err(Error::io(
                "reading",
                &self.path,
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "a pair cut short (changed while dedup ran?)"),
            )),
        }
    }
}

impl SortedBatches for RunReader {
    fn next_a(&self) -> Option<u32> {
        self.next.map(|p| p.a)
    }

    fn pull(&mut self, blocks: usize) -> Result<Vec<Pair>> {
        let want = blocks.max(1) * READ_PAIRS;
        let mut out = Vec::with_capacity(want.min(1 << 16));
        while out.len() < want {
            let Some(p) = self.next else { break };
            out.push(p);
            self.next = self.read_one()?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Pairs with repeats (the same `(a, b)` at different similarities), in random order.
    fn shuffled(n: usize, seed: u64) -> Vec<Pair> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| Pair {
                a: rng.random_range(0..50),
                b: rng.random_range(0..50),
                sim: rng.random_range(0..4) as f32,
            })
            .collect()
    }

    fn sorted(sorter: PairSorter) -> (Vec<Pair>, bool) {
        let got = sorter.finish().unwrap();
        let mut all = Vec::new();
        got.each(&mut |b| {
            all.extend(b);
            Ok(())
        })
        .unwrap();
        (all, got.spilled())
    }

    #[test]
    fn gives_what_sort_dedup_gives_in_memory_on_disk_and_after_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = shuffled(3_000, 7);
        let mut want = pairs.clone();
        sort_dedup(&mut want);
        // Within the budget, on disk in 30 runs, and in 300 runs (merged in groups of FAN_IN).
        for (budget, chunk, disk) in [(10_000, 64, false), (100, 7, true), (10, 1, true)] {
            let mut s = PairSorter::new(dir.path(), budget);
            for c in pairs.chunks(chunk) {
                s.push(c).unwrap();
            }
            let (got, spilled) = sorted(s);
            assert_eq!(spilled, disk, "budget {budget}");
            assert_eq!(got, want, "budget {budget}");
        }
        // Every temporary folder went with its sorter.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn stale_folders_are_removed_and_a_cut_run_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PairSorter::new(dir.path(), 4);
        s.push(&shuffled(40, 1)).unwrap();
        let got = s.finish().unwrap();
        let SortedPairs::Disk { runs, .. } = &got else { panic!("spilled") };
        // A run file cut mid-pair is an error naming it, not a panic or a short read.
        let len = std::fs::metadata(&runs[0]).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&runs[0]).unwrap().set_len(len - 5).unwrap();
        let e = got.each(&mut |_| Ok(())).unwrap_err();
        let e = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
        assert!(e.contains("run-000000.bin") && e.contains("cut short"), "{e}");
        // A folder left by a process no longer running goes; a live process's folder (this one's)
        // and other files stay. (Process ids stay below 2^22 on Linux.)
        let stale = dir.path().join(format!("{SPILL_PREFIX}{}-abc", i32::MAX - 7));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("run-000000.bin"), b"x").unwrap();
        std::fs::write(dir.path().join("keep.txt"), b"x").unwrap();
        remove_stale(dir.path());
        assert!(!stale.exists());
        assert!(dir.path().join("keep.txt").exists());
        let SortedPairs::Disk { _dir: live, .. } = &got else { unreachable!() };
        assert!(live.path().exists(), "a live process's folder stays");
    }
}
