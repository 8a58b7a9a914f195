//! `sieve dedup` holds O(n) state however many pairs the data has: 4,000 copies of one picture
//! have 8M image pairs and 8M perceptual pairs (96 MB each at 12 bytes a pair, more again as
//! neighbour lists), which dedup must stream rather than hold. A counting allocator measures the heap's peak during the run;
//! the assertion fails if a structure quadratic in the items (every pair, an adjacency of
//! them) comes back. Its own test binary, so no other test allocates meanwhile.

#[allow(dead_code)]
mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sieve::analyze::dedup::{dedup, DedupOptions};
use sieve::analyze::groups::Grouping;
use sieve::index::IndexChoice;
use util::{planted_run, Planted};

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = NOW.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            NOW.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N: usize = 4000;
const DIM: usize = 32;

#[test]
fn dedup_of_near_identical_items_holds_memory_linear_in_the_items() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // One base vector plus tiny noise, one perceptual hash: every pair is a duplicate.
    let items: Vec<Planted> = (0..N)
        .map(|i| {
            let mut v = vec![1.0f32; DIM];
            v[i % DIM] += 0.01 * ((i / DIM) % 7) as f32;
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            Planted { image: v, caption: None, size: (10, 10), sha: None, phash: Some(0x0f0f_5a5a_3c3c_9696) }
        })
        .collect();
    planted_run(&run, &items, "w");
    // One search thread, so the blocks of pairs in flight do not depend on the machine.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    // Exact search (what `auto` picks for 4,000 items on the CPU) and clustered search (what it
    // picks above 20,000): every cluster's pairs are merged in order, a block per cluster held.
    let cases = [
        (Grouping::Star, IndexChoice::Exact),
        (Grouping::Components, IndexChoice::Exact),
        (Grouping::Star, IndexChoice::Clusters),
        (Grouping::Star, IndexChoice::Hnsw),
    ];
    for (grouping, index) in cases {
        let opts = DedupOptions { grouping, index, ..DedupOptions::new(&run) };
        let before = NOW.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let summary = pool.install(|| dedup(&opts)).unwrap();
        let peak = PEAK.load(Ordering::Relaxed) - before;
        eprintln!("{grouping:?} {index:?}: heap peak {:.1} MB ({})", peak as f64 / 1e6, summary.index);
        assert_eq!(summary.removed, N - 1, "{grouping:?}: one copy kept");
        let want = match index {
            IndexChoice::Clusters => "clusters(k=4,",
            IndexChoice::Hnsw => "hnsw(",
            _ => "exact(",
        };
        assert!(summary.index.starts_with(want), "{}", summary.index);
        assert_eq!(summary.kinds["image"].largest_group, N);
        assert_eq!(summary.kinds["perceptual"].largest_group, N);
        // Holding every pair takes 12 B × N²/2 = 96 MB; the stream holds a block of 256 query
        // rows' pairs (12 MB, twice while its vector grows) and per-item state. Clustered search
        // (4 clusters, every item on a border so in two: about 2,000 members each) held its
        // 4 × 2,000²/2 = 8M pairs (96 MB, more while sorted); streamed, a block of 256 query
        // rows waits per cluster (4 × 256 × 2,000 pairs: 25 MB) besides the batch handed on.
        // HNSW finds each pair from both ends (16M finds); held, that is 192 MB and more while
        // sorted. Its finds go a block of 256 query rows at a time (12 MB) into the spill sorter,
        // which keeps 64 pairs per item (3 MB) in memory and writes sorted runs to disk.
        let limit = if index == IndexChoice::Clusters { 20_000 * N } else { 10_000 * N };
        assert!(
            peak < limit,
            "{grouping:?} {index:?}: heap peak {peak} B over {limit} B: a structure quadratic in the items?"
        );
    }
}
