//! Exact search: the similarity matrix is computed tile by tile (a block of query rows against a
//! block of indexed rows), filtered against the threshold and dropped, so memory stays at a few
//! tiles whatever N is. On the CPU the tiles are `gemm` products spread over rayon; on CUDA or
//! Metal they are candle matmuls, and only tiles holding a hit are copied back.

use candle_core::{DType, Device, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::merge::SortedBatches;
use super::topk::{self, Neighbours, TopK};
use super::{sort_dedup, Matrix, NeighbourIndex, Pair};
use crate::error::Result;
use crate::linalg::matmul_wt;
use crate::progress::Progress;

/// Query rows per CPU tile.
const CPU_ROWS: usize = 256;
/// Indexed rows per CPU tile (a tile is CPU_ROWS × CPU_COLS f32: 2 MiB).
const CPU_COLS: usize = 2048;
/// Rows and columns of a device tile (4096 × 16384 f32: 256 MiB of device memory).
const DEV_ROWS: usize = 4096;
const DEV_COLS: usize = 16384;

/// Exact neighbour search over borrowed vectors.
pub struct ExactIndex<'a> {
    data: &'a Matrix,
    device: Device,
}

impl<'a> ExactIndex<'a> {
    pub fn new(data: &'a Matrix, device: Device) -> Self {
        Self { data, device }
    }
}

/// Scans one tile of similarities (`rows × cols`, row-major), pushing hits.
#[allow(clippy::too_many_arguments)]
fn scan_tile(
    tile: &[f32],
    rows: usize,
    cols: usize,
    row0: usize,
    col0: usize,
    threshold: f32,
    upper_only: bool,
    out: &mut Vec<Pair>,
) {
    for r in 0..rows {
        let a = row0 + r;
        let line = &tile[r * cols..(r + 1) * cols];
        for (c, &s) in line.iter().enumerate() {
            if s >= threshold {
                let b = col0 + c;
                if !upper_only || b > a {
                    out.push(Pair { a: a as u32, b: b as u32, sim: s });
                }
            }
        }
    }
}

/// CPU search of `queries` against `data`; with `self_join` only pairs a < b (queries == data).
fn cpu_search(queries: &Matrix, data: &Matrix, threshold: f32, self_join: bool) -> Vec<Pair> {
    let mut all = Vec::new();
    cpu_search_each(queries, data, threshold, self_join, &mut |b| {
        all.extend(b);
        Ok(())
    })
    .expect("collecting cannot fail");
    all
}

/// One block of a CPU search: the query rows `q` (rows `row0..` of the search) against the rows of
/// `data` from `first_col` on, in tiles of at most `CPU_ROWS × CPU_COLS`, sorted by `(a, b)`. A
/// search cut into blocks elsewhere gets the same similarities only with the same tiles, so every
/// CPU search goes through here.
#[allow(clippy::too_many_arguments)]
fn cpu_block(
    q: &[f32],
    data: &Matrix,
    row0: usize,
    first_col: usize,
    threshold: f32,
    self_join: bool,
    tile: &mut [f32],
) -> Vec<Pair> {
    let d = data.dim();
    let (m, nd) = (q.len() / d, data.rows());
    let mut out = Vec::new();
    let mut c0 = first_col;
    while c0 < nd {
        let c1 = (c0 + CPU_COLS).min(nd);
        let n = c1 - c0;
        matmul_wt(tile, q, data.block(c0, c1), m, n, d, false, Parallelism::None);
        scan_tile(&tile[..m * n], m, n, row0, c0, threshold, self_join, &mut out);
        c0 = c1;
    }
    out.sort_unstable_by_key(|p| (p.a, p.b));
    out
}

/// A CPU tile's buffer.
fn cpu_tile() -> Vec<f32> {
    vec![0f32; CPU_ROWS * CPU_COLS]
}

/// [`cpu_search`] handing each block of query rows' pairs to `f` in row order, searching one
/// block per thread at a time, so only those blocks' pairs are held (at most
/// `CPU_ROWS × data rows` each, however many pairs the whole search finds).
fn cpu_search_each(
    queries: &Matrix,
    data: &Matrix,
    threshold: f32,
    self_join: bool,
    f: &mut dyn FnMut(Vec<Pair>) -> Result<()>,
) -> Result<()> {
    let nq = queries.rows();
    let blocks: Vec<usize> = (0..nq).step_by(CPU_ROWS).collect();
    let progress = Progress::new(blocks.len() as u64, "exact search", "blocks");
    for wave in blocks.chunks(rayon::current_num_threads().max(1)) {
        let per_block: Vec<Vec<Pair>> = wave
            .par_iter()
            .map_init(cpu_tile, |tile, &r0| {
                let r1 = (r0 + CPU_ROWS).min(nq);
                let first_col = if self_join { r0 } else { 0 };
                let out = cpu_block(queries.block(r0, r1), data, r0, first_col, threshold, self_join, tile);
                progress.inc(1);
                out
            })
            .collect();
        for block in per_block {
            f(block)?;
        }
    }
    Ok(())
}

/// Device search with candle tiles.
fn device_search(
    queries: &Matrix,
    data: &Matrix,
    threshold: f32,
    self_join: bool,
    device: &Device,
) -> Result<Vec<Pair>> {
    let mut out = Vec::new();
    device_search_each(queries, data, threshold, self_join, device, &mut |b| {
        out.extend(b);
        Ok(())
    })?;
    Ok(out)
}

/// One block of a device search: query rows `q` (rows `row0..` of the search) against the rows of
/// `db` from `first_col` on, in tiles of `DEV_COLS` columns, sorted by `(a, b)`.
fn device_block(
    q: &Tensor,
    db: &Tensor,
    row0: usize,
    first_col: usize,
    threshold: f32,
    self_join: bool,
) -> Result<Vec<Pair>> {
    let (m, nd) = (q.dims()[0], db.dims()[0]);
    let mut out = Vec::new();
    let mut c0 = first_col;
    while c0 < nd {
        let c1 = (c0 + DEV_COLS).min(nd);
        let sims = q.matmul(&db.narrow(0, c0, c1 - c0)?.t()?)?;
        let hits = sims.ge(threshold as f64)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()?;
        if hits > 0 {
            let tile = sims.flatten_all()?.to_vec1::<f32>()?;
            scan_tile(&tile, m, c1 - c0, row0, c0, threshold, self_join, &mut out);
        }
        c0 = c1;
    }
    // Rows of one block only: sorting each block sorts the whole stream.
    sort_dedup(&mut out);
    Ok(out)
}

/// [`device_search`] handing each block of query rows' pairs to `f` in row order.
fn device_search_each(
    queries: &Matrix,
    data: &Matrix,
    threshold: f32,
    self_join: bool,
    device: &Device,
    f: &mut dyn FnMut(Vec<Pair>) -> Result<()>,
) -> Result<()> {
    let d = data.dim();
    let (nq, nd) = (queries.rows(), data.rows());
    let db = Tensor::from_slice(data.as_slice(), (nd, d), device)?;
    let qs = if self_join { db.clone() } else { Tensor::from_slice(queries.as_slice(), (nq, d), device)? };
    let progress = Progress::new(nq.div_ceil(DEV_ROWS) as u64, "exact search", "blocks");
    for r0 in (0..nq).step_by(DEV_ROWS) {
        progress.inc(1);
        let r1 = (r0 + DEV_ROWS).min(nq);
        let q = qs.narrow(0, r0, r1 - r0)?;
        f(device_block(&q, &db, r0, if self_join { r0 } else { 0 }, threshold, self_join)?)?;
    }
    Ok(())
}

/// Query rows per block of a search on `device`.
pub(crate) fn block_rows(device: &Device) -> usize {
    if device.is_cpu() {
        CPU_ROWS
    } else {
        DEV_ROWS
    }
}

/// Query rows `r0..r1` of `queries` against `data` (only `b > a` when `self_join`, `queries`
/// then being `data`), as blocks of the whole search compute them: the same tiles, so the same
/// similarities, as [`ExactIndex::self_pairs`] and [`ExactIndex::range_search`] give.
pub(crate) fn search_rows(
    queries: &Matrix,
    data: &Matrix,
    r0: usize,
    r1: usize,
    threshold: f32,
    self_join: bool,
    device: &Device,
) -> Result<Vec<Pair>> {
    if device.is_cpu() {
        let mut tile = cpu_tile();
        let mut out = Vec::new();
        for b0 in (r0..r1).step_by(CPU_ROWS) {
            let b1 = (b0 + CPU_ROWS).min(r1);
            let first = if self_join { b0 } else { 0 };
            out.extend(cpu_block(queries.block(b0, b1), data, b0, first, threshold, self_join, &mut tile));
        }
        return Ok(out);
    }
    let d = data.dim();
    // Only the rows a self-join block reads (from its first row on), uploaded for this block.
    let (from, db) = if self_join {
        (r0, Tensor::from_slice(data.block(r0, data.rows()), (data.rows() - r0, d), device)?)
    } else {
        (0, Tensor::from_slice(data.as_slice(), (data.rows(), d), device)?)
    };
    let mut out = Vec::new();
    for b0 in (r0..r1).step_by(DEV_ROWS) {
        let b1 = (b0 + DEV_ROWS).min(r1);
        let q = if self_join {
            db.narrow(0, b0 - from, b1 - b0)?
        } else {
            Tensor::from_slice(queries.block(b0, b1), (b1 - b0, d), device)?
        };
        let mut part = device_block(&q, &db, b0 - from, if self_join { b0 - from } else { 0 }, threshold, self_join)?;
        for p in &mut part {
            p.a += from as u32;
            p.b += from as u32;
        }
        out.extend(part);
    }
    Ok(out)
}

/// An exact search as a [`SortedBatches`] piece: blocks of query rows, computed when pulled.
pub(crate) struct ExactBlocks<'a> {
    queries: &'a Matrix,
    data: &'a Matrix,
    threshold: f32,
    self_join: bool,
    device: Device,
    next: usize,
}

impl<'a> ExactBlocks<'a> {
    pub(crate) fn new(queries: &'a Matrix, data: &'a Matrix, threshold: f32, self_join: bool, device: Device) -> Self {
        Self { queries, data, threshold, self_join, device, next: 0 }
    }
}

impl SortedBatches for ExactBlocks<'_> {
    fn next_a(&self) -> Option<u32> {
        (self.next < self.queries.rows() && self.data.rows() > 0).then_some(self.next as u32)
    }

    fn pull(&mut self, blocks: usize) -> Result<Vec<Pair>> {
        let rows = block_rows(&self.device);
        let nq = self.queries.rows();
        let starts: Vec<usize> = (self.next..nq).step_by(rows).take(blocks.max(1)).collect();
        self.next = (self.next + rows * starts.len()).min(nq);
        let parts: Vec<Vec<Pair>> = starts
            .par_iter()
            .map(|&r0| {
                let r1 = (r0 + rows).min(nq);
                search_rows(self.queries, self.data, r0, r1, self.threshold, self.self_join, &self.device)
            })
            .collect::<Result<_>>()?;
        Ok(parts.concat())
    }
}

/// Device k-NN with candle tiles copied back and scanned on the CPU.
fn device_knn(
    queries: &Matrix,
    data: &Matrix,
    k: usize,
    skip: Option<&[u32]>,
    device: &Device,
) -> Result<Vec<Neighbours>> {
    let d = data.dim();
    let (nq, nd) = (queries.rows(), data.rows());
    let db = Tensor::from_slice(data.as_slice(), (nd, d), device)?;
    let qs = Tensor::from_slice(queries.as_slice(), (nq, d), device)?;
    let mut out = Vec::with_capacity(nq);
    let progress = Progress::new(nq.div_ceil(DEV_ROWS) as u64, "exact k-NN", "blocks");
    for r0 in (0..nq).step_by(DEV_ROWS) {
        progress.inc(1);
        let r1 = (r0 + DEV_ROWS).min(nq);
        let q = qs.narrow(0, r0, r1 - r0)?;
        let mut tops: Vec<TopK> = (r0..r1).map(|_| TopK::new(k)).collect();
        for c0 in (0..nd).step_by(DEV_COLS) {
            let c1 = (c0 + DEV_COLS).min(nd);
            let tile = q.matmul(&db.narrow(0, c0, c1 - c0)?.t()?)?.flatten_all()?.to_vec1::<f32>()?;
            topk::scan_tile(&tile, c1 - c0, r0, c0, skip, &mut tops);
        }
        out.extend(tops.into_iter().map(TopK::into_vec));
    }
    Ok(out)
}

impl NeighbourIndex for ExactIndex<'_> {
    fn name(&self) -> String {
        format!("exact({})", crate::device::describe(&self.device))
    }

    fn len(&self) -> usize {
        self.data.rows()
    }

    fn self_pairs(&self, threshold: f32) -> Result<Vec<Pair>> {
        if self.device.is_cpu() {
            Ok(cpu_search(self.data, self.data, threshold, true))
        } else {
            device_search(self.data, self.data, threshold, true, &self.device)
        }
    }

    fn self_pairs_each(&self, threshold: f32, f: &mut dyn FnMut(Vec<Pair>) -> Result<()>) -> Result<()> {
        if self.device.is_cpu() {
            cpu_search_each(self.data, self.data, threshold, true, f)
        } else {
            device_search_each(self.data, self.data, threshold, true, &self.device, f)
        }
    }

    fn range_search(&self, queries: &Matrix, threshold: f32) -> Result<Vec<Pair>> {
        if queries.dim() != self.data.dim() {
            return Err(crate::Error::DimMismatch { expected: self.data.dim(), found: queries.dim() });
        }
        if self.device.is_cpu() {
            Ok(cpu_search(queries, self.data, threshold, false))
        } else {
            device_search(queries, self.data, threshold, false, &self.device)
        }
    }

    fn knn(&self, queries: &Matrix, k: usize, skip: Option<&[u32]>) -> Result<Vec<Neighbours>> {
        if queries.dim() != self.data.dim() {
            return Err(crate::Error::DimMismatch { expected: self.data.dim(), found: queries.dim() });
        }
        if self.device.is_cpu() {
            Ok(topk::exact_knn_cpu(queries, self.data, k, skip))
        } else {
            device_knn(queries, self.data, k, skip, &self.device)
        }
    }
}

/// The candle tile path, run on any device (tests use it on the CPU to check it against the gemm
/// path).
pub fn self_pairs_via_candle(data: &Matrix, threshold: f32, device: &Device) -> Result<Vec<Pair>> {
    device_search(data, data, threshold, true, device)
}
