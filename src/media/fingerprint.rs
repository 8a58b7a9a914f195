//! The perceptual fingerprint `sieve dedup --kinds perceptual` compares: a DCT pHash of the
//! picture with its uniform borders trimmed, the same hash of its mirror image, and the
//! low-frequency DCT coefficients the hash is made from, kept to confirm candidate pairs.
//!
//! - **Hash** (pHash as imagededup's `PHash` and the pHash library define it): a 32 × 32 grey
//!   copy, its 2-D DCT-II, the top-left 8 × 8 (lowest) frequencies, one bit per coefficient set
//!   when it is at least the median of the 63 that are not the DC term.
//! - **Borders**: before hashing, rows and columns of one uniform colour are peeled off each
//!   side (up to three rounds, so a black frame around a picture on white goes too), so a
//!   framed or padded copy hashes like its source.
//! - **Mirror**: mirroring a picture left–right multiplies the DCT coefficient of horizontal
//!   frequency `v` by `(−1)^v`, so the mirror image's hash costs one more median, not a second
//!   picture; mirrored copies are found by comparing one item's hash with the other's mirror.
//! - **Confirmation**: two hashes within the Hamming distance are only a candidate. The 63 AC
//!   coefficients are stored (quantised to `i8`, see [`Fingerprint::coeffs`]); their cosine is
//!   the correlation of the two pictures' low-pass 32 × 32 grey copies (Parseval), which is
//!   blind to brightness, contrast and gamma-like changes but not to a different picture whose
//!   few hash bits happened to agree. The colour layout must agree too: the chromaticity of each
//!   quarter of the trimmed picture within [`COLOUR_TOLERANCE`], so a red ball and a blue one of
//!   the same shape stay apart. Flat pictures (no structure to correlate) are confirmed only
//!   against flat pictures of the same mean grey.
//!
//! Everything is computed from the ≤ 128-px area-averaged thumbnail the CPU stage already makes
//! ([`super::thumbnail::thumbnail`]), so it costs a few microseconds per image.

use image::RgbImage;

/// Side of the grey copy the DCT is taken of.
const N: usize = 32;
/// Side of the low-frequency block kept.
const K: usize = 8;
/// Greatest per-channel difference from the border colour for a pixel to count as border.
const BORDER_TOLERANCE: i32 = 24;
/// Rounds of border peeling.
const BORDER_ROUNDS: usize = 3;
/// Bytes of [`Fingerprint::coeffs`].
pub const BYTES: usize = 72;
/// Largest [`colour_distance`] of a confirmed pair: on the real-picture benchmark 20 took the
/// holdout's wrong removals from 17 to 7 (same-shaped clip art of other colours: balls, fruit,
/// planets) and cost 0.4 points of recall on calib.
pub const COLOUR_TOLERANCE: u8 = 20;
/// Default least correlation that confirms a candidate pair (`--perceptual-correlation`),
/// chosen on the real-picture benchmark (`scripts/bench_dedup.py`, docs/dedup.md).
pub const DEFAULT_MIN_CORRELATION: f32 = 0.8;
/// Grey standard deviation (0–255) under which a picture counts as flat.
pub const FLAT_STD: f32 = 2.0;

/// A picture's perceptual fingerprint (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// DCT pHash of the border-trimmed picture.
    pub hash: u64,
    /// The same hash of its left–right mirror image.
    pub mirror: u64,
    /// Byte 0: mean grey (0–255); byte 1: grey standard deviation (0–255, rounded, saturated);
    /// bytes 2..64: the AC coefficients of the 8 × 8 block in row-major order without the DC
    /// term and the highest (7, 7) one, orthonormally scaled, as `i8` scaled so the largest
    /// magnitude is 127; bytes 64..72: the colour layout (see [`colour_distance`] and `grey_and_colour`).
    pub coeffs: [u8; BYTES],
}

impl Fingerprint {
    /// Mean grey of the trimmed picture, 0–255.
    pub fn mean(&self) -> u8 {
        self.coeffs[0]
    }

    /// Grey standard deviation of the trimmed picture, 0–255.
    pub fn std(&self) -> u8 {
        self.coeffs[1]
    }

    /// No structure to compare.
    pub fn is_flat(&self) -> bool {
        (self.coeffs[1] as f32) < FLAT_STD
    }
}

/// The `(u, v)` position of stored coefficient `i` (0..62): row-major over the 8 × 8 block,
/// skipping (0, 0) and (7, 7).
fn position(i: usize) -> (usize, usize) {
    let p = i + 1;
    (p / K, p % K)
}

/// Number of differing bits between two hashes.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// Cosine of two stored coefficient vectors, with `b` mirrored when `mirror`: the correlation
/// of the two pictures' low-pass grey copies, −1 to 1.
pub fn correlation(a: &Fingerprint, b: &Fingerprint, mirror: bool) -> f32 {
    let (mut ab, mut aa, mut bb) = (0i32, 0i32, 0i32);
    for i in 0..62 {
        let x = a.coeffs[2 + i] as i8 as i32;
        let mut y = b.coeffs[2 + i] as i8 as i32;
        if mirror && position(i).1 % 2 == 1 {
            y = -y;
        }
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0 || bb == 0 {
        return 0.0;
    }
    ab as f32 / ((aa as f32).sqrt() * (bb as f32).sqrt())
}

/// How alike two fingerprints are: the smaller Hamming distance of `a`'s hash to `b`'s hash or
/// to `b`'s mirror hash, whether the mirror was the closer, and the correlation in that
/// orientation (see [`correlation`]).
pub fn compare(a: &Fingerprint, b: &Fingerprint) -> (u32, bool, f32) {
    let direct = (a.hash ^ b.hash).count_ones();
    let mirrored = (a.hash ^ b.mirror).count_ones();
    let mirror = mirrored < direct;
    (direct.min(mirrored), mirror, correlation(a, b, mirror))
}

/// Whether a candidate pair within the hash distance is confirmed: correlation at least
/// `min_correlation` and colour layouts within [`COLOUR_TOLERANCE`], or, for flat pictures,
/// both flat with mean greys within 8 levels.
pub fn confirmed(a: &Fingerprint, b: &Fingerprint, corr: f32, min_correlation: f32) -> bool {
    match (a.is_flat(), b.is_flat()) {
        (true, true) => a.mean().abs_diff(b.mean()) <= 8,
        (false, false) => corr >= min_correlation && colour_distance(a, b, mirror_of(a, b)) <= COLOUR_TOLERANCE,
        _ => false,
    }
}

fn mirror_of(a: &Fingerprint, b: &Fingerprint) -> bool {
    (a.hash ^ b.mirror).count_ones() < (a.hash ^ b.hash).count_ones()
}

/// The fingerprint of the picture whose CPU-stage thumbnail is `thumb`.
pub fn fingerprint(thumb: &RgbImage) -> Fingerprint {
    let (x0, y0, x1, y1) = trim_borders(thumb);
    let (grey, colour) = grey_and_colour(thumb, (x0, y0, x1, y1));
    let grey = area_resize(&grey, (x0, y0, x1, y1));
    let (mean, std) = mean_std(&grey);
    let dct = dct_low(&grey);
    let hash = hash_bits(&dct);
    let mut mirrored = dct;
    for (p, c) in mirrored.iter_mut().enumerate() {
        if (p % K) % 2 == 1 {
            *c = -*c;
        }
    }
    let mirror = hash_bits(&mirrored);
    // Orthonormal scaling (row 0 and column 0 by 1/√2) so the cosine is the images' correlation.
    let ortho = |p: usize| {
        let (u, v) = (p / K, p % K);
        dct[p]
            * if u == 0 { std::f32::consts::FRAC_1_SQRT_2 } else { 1.0 }
            * if v == 0 { std::f32::consts::FRAC_1_SQRT_2 } else { 1.0 }
    };
    let ac: Vec<f32> = (0..62).map(|i| ortho(i + 1)).collect();
    let max = ac.iter().fold(0f32, |m, &c| m.max(c.abs()));
    let mut coeffs = [0u8; BYTES];
    coeffs[0] = mean.round().clamp(0.0, 255.0) as u8;
    coeffs[1] = std.round().clamp(0.0, 255.0) as u8;
    if max > 0.0 {
        for (dst, &c) in coeffs[2..].iter_mut().zip(&ac) {
            *dst = ((c / max * 127.0).round().clamp(-127.0, 127.0) as i8) as u8;
        }
    }
    coeffs[64..].copy_from_slice(&colour);
    Fingerprint { hash, mirror, coeffs }
}

// Bytes 64..72 of a fingerprint, the colour layout: the chromaticity `(r, g) = (R, G) /
// (R + G + B)`, × 255, of the mean colour of each quarter of the trimmed box (top left, top
// right, bottom left, bottom right), made by [`grey_and_colour`]. Grey is (85, 85) whatever its
// brightness.

/// The largest difference of chromaticity (either coordinate, 0–255) between corresponding
/// quarters of two fingerprints, `b` mirrored (its left and right quarters swapped) when
/// `mirror`.
pub fn colour_distance(a: &Fingerprint, b: &Fingerprint, mirror: bool) -> u8 {
    (0..4)
        .map(|cell| {
            let other = if mirror { cell ^ 1 } else { cell };
            (0..2).map(|k| a.coeffs[64 + 2 * cell + k].abs_diff(b.coeffs[64 + 2 * other + k])).max().unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// Bits of the 8 × 8 block (row-major, first coefficient in the highest bit): set where the
/// coefficient is at least the median of the 63 AC coefficients (imagededup's `PHash`).
fn hash_bits(dct: &[f32; K * K]) -> u64 {
    let mut ac = [0f32; K * K - 1];
    ac.copy_from_slice(&dct[1..]);
    // numpy's median of 63 values: the middle one in sorted order (found without sorting).
    let median = *ac.select_nth_unstable_by((K * K - 1) / 2, f32::total_cmp).1;
    dct.iter().fold(0u64, |h, &c| (h << 1) | (c >= median) as u64)
}

/// The grey copy (ITU-R 601 luma, as Pillow's `L` conversion that imagededup hashes) of the box
/// of `img`, row by row, and the colour layout of the box (bytes 64..72 of a fingerprint), in one
/// pass over its bytes.
fn grey_and_colour(img: &RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> (Vec<f32>, [u8; 8]) {
    let w = img.width() as usize;
    let (x0, y0, x1, y1) = (x0 as usize, y0 as usize, x1 as usize, y1 as usize);
    let (xm, ym) = ((x0 + x1).div_ceil(2), (y0 + y1).div_ceil(2));
    let raw = img.as_raw();
    let mut grey = Vec::with_capacity((x1 - x0) * (y1 - y0));
    let mut sums = [[0u64; 3]; 4];
    for y in y0..y1 {
        let bottom = (y >= ym) as usize * 2;
        let row = &raw[(y * w + x0) * 3..(y * w + x1) * 3];
        // Exact in f32 (at most 255 000), so the same value as summing the products in f32.
        grey.extend(
            row.chunks_exact(3).map(|p| (p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114) as f32 / 1000.0),
        );
        let (left, right) = row.split_at((xm - x0) * 3);
        for (half, part) in [left, right].into_iter().enumerate() {
            let mut s = [0u32; 3];
            for p in part.chunks_exact(3) {
                s[0] += p[0] as u32;
                s[1] += p[1] as u32;
                s[2] += p[2] as u32;
            }
            for c in 0..3 {
                sums[bottom + half][c] += s[c] as u64;
            }
        }
    }
    let mut colour = [85u8; 8];
    for (cell, s) in sums.iter().enumerate() {
        let total = s[0] + s[1] + s[2];
        if total > 0 {
            colour[2 * cell] = (255 * s[0]).div_euclid(total).min(255) as u8;
            colour[2 * cell + 1] = (255 * s[1]).div_euclid(total).min(255) as u8;
        }
    }
    (grey, colour)
}

/// The box `(x0, y0, x1, y1)` (exclusive ends) left after peeling uniform borders: each round
/// takes the colour the four corners agree on (three of four within the tolerance), then drops
/// edge rows and columns whose every pixel is within the tolerance of it. Nothing is trimmed
/// when that would leave less than 4 px or 1/16 of a side.
fn trim_borders(img: &RgbImage) -> (u32, u32, u32, u32) {
    let (w, h) = img.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (0u32, 0u32, w, h);
    let near = |p: &[u8], c: [i32; 3]| (0..3).all(|k| (p[k] as i32 - c[k]).abs() <= BORDER_TOLERANCE);
    for _ in 0..BORDER_ROUNDS {
        if x1 - x0 < 3 || y1 - y0 < 3 {
            break;
        }
        let corners = [
            img.get_pixel(x0, y0).0,
            img.get_pixel(x1 - 1, y0).0,
            img.get_pixel(x0, y1 - 1).0,
            img.get_pixel(x1 - 1, y1 - 1).0,
        ];
        // The corner colour at least three corners are near.
        let Some(c) = corners.iter().find_map(|c| {
            let c = [c[0] as i32, c[1] as i32, c[2] as i32];
            (corners.iter().filter(|o| near(&o[..], c)).count() >= 3).then_some(c)
        }) else {
            break;
        };
        let row_is = |y: u32, a: u32, b: u32| (a..b).all(|x| near(&img.get_pixel(x, y).0, c));
        let col_is = |x: u32, a: u32, b: u32| (a..b).all(|y| near(&img.get_pixel(x, y).0, c));
        let before = (x0, y0, x1, y1);
        let (mut nx0, mut ny0, mut nx1, mut ny1) = (x0, y0, x1, y1);
        while ny0 < ny1 && row_is(ny0, x0, x1) {
            ny0 += 1;
        }
        while ny1 > ny0 && row_is(ny1 - 1, x0, x1) {
            ny1 -= 1;
        }
        while nx0 < nx1 && col_is(nx0, ny0, ny1) {
            nx0 += 1;
        }
        while nx1 > nx0 && col_is(nx1 - 1, ny0, ny1) {
            nx1 -= 1;
        }
        let min_w = (w / 16).max(4);
        let min_h = (h / 16).max(4);
        if nx1 - nx0 < min_w.min(w) || ny1 - ny0 < min_h.min(h) {
            break; // all border: a flat or nearly flat picture; hash it whole
        }
        (x0, y0, x1, y1) = (nx0, ny0, nx1, ny1);
        if (x0, y0, x1, y1) == before {
            break;
        }
    }
    (x0, y0, x1, y1)
}

/// The grey copy of the box of `img`, area-averaged (each output pixel the mean of the source
/// area it covers, fractional pixels weighted) to `N × N`.
fn area_resize(grey: &[f32], (x0, y0, x1, y1): (u32, u32, u32, u32)) -> Vec<f32> {
    let (bw, bh) = ((x1 - x0) as usize, (y1 - y0) as usize);
    // Weights of source index `i` in output cell `o` for a side of `n` source pixels.
    let weights = |n: usize| -> Vec<Vec<(usize, f32)>> {
        let scale = n as f64 / N as f64;
        (0..N)
            .map(|o| {
                let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
                let mut ws = Vec::new();
                let mut i = a.floor() as usize;
                while (i as f64) < b && i < n {
                    let cover = (b.min(i as f64 + 1.0) - a.max(i as f64)).max(0.0);
                    if cover > 0.0 {
                        ws.push((i, (cover / scale) as f32));
                    }
                    i += 1;
                }
                ws
            })
            .collect()
    };
    let (wx, wy) = (weights(bw), weights(bh));
    let mut rows = vec![0f32; N * bw];
    for (dst, ws) in rows.chunks_exact_mut(bw).zip(&wy) {
        for &(i, k) in ws {
            for (d, &g) in dst.iter_mut().zip(&grey[i * bw..(i + 1) * bw]) {
                *d += g * k;
            }
        }
    }
    let mut out = vec![0f32; N * N];
    for y in 0..N {
        for (o, ws) in wx.iter().enumerate() {
            out[y * N + o] = ws.iter().map(|&(i, k)| rows[y * bw + i] * k).sum();
        }
    }
    out
}

fn mean_std(v: &[f32]) -> (f32, f32) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, var.sqrt() as f32)
}

/// The top-left `K × K` block of the 2-D DCT-II of the `N × N` grey copy, unnormalised as
/// scipy's `dct` (`2 Σ x cos(π k (2n + 1) / 2N)` along each axis), row `u` the vertical
/// frequency and column `v` the horizontal one.
fn dct_low(grey: &[f32]) -> [f32; K * K] {
    thread_local! {
        static COS: Vec<f32> = (0..K * N)
            .map(|i| {
                let (k, n) = (i / N, i % N);
                (2.0 * (std::f64::consts::PI * k as f64 * (2 * n + 1) as f64 / (2 * N) as f64).cos()) as f32
            })
            .collect();
    }
    COS.with(|cos| {
        // Along rows (horizontal frequency v), then columns (vertical frequency u).
        let mut t = [0f32; N * K];
        for y in 0..N {
            let row = &grey[y * N..(y + 1) * N];
            for v in 0..K {
                let c = &cos[v * N..(v + 1) * N];
                t[y * K + v] = row.iter().zip(c).map(|(a, b)| a * b).sum();
            }
        }
        let mut out = [0f32; K * K];
        for u in 0..K {
            let c = &cos[u * N..(u + 1) * N];
            for v in 0..K {
                out[u * K + v] = (0..N).map(|y| t[y * K + v] * c[y]).sum();
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{imageops, Rgb};

    fn scene(w: u32, h: u32, seed: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let s = seed as f32;
            let v = 128.0
                + 60.0 * (fx * (3.0 + s) * 3.1 + fy * 2.0).sin()
                + 50.0 * (fy * (2.0 + s * 0.7) * 3.1 - fx).cos()
                + if (fx - 0.3 - 0.05 * s).abs() < 0.15 && (fy - 0.6).abs() < 0.2 { 40.0 } else { 0.0 };
            let v = v.clamp(0.0, 255.0) as u8;
            Rgb([v, v / 2 + 40, 255 - v])
        })
    }

    fn brute_dct(grey: &[f32]) -> [f32; K * K] {
        let mut out = [0f32; K * K];
        for u in 0..K {
            for v in 0..K {
                let mut s = 0f64;
                for y in 0..N {
                    for x in 0..N {
                        s += grey[y * N + x] as f64
                            * (std::f64::consts::PI * u as f64 * (2 * y + 1) as f64 / (2 * N) as f64).cos()
                            * (std::f64::consts::PI * v as f64 * (2 * x + 1) as f64 / (2 * N) as f64).cos();
                    }
                }
                out[u * K + v] = (4.0 * s) as f32;
            }
        }
        out
    }

    #[test]
    fn dct_matches_the_definition() {
        let grey: Vec<f32> = (0..N * N).map(|i| ((i * 37 + i / N * 11) % 256) as f32).collect();
        let (fast, slow) = (dct_low(&grey), brute_dct(&grey));
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(100.0), "{a} vs {b}");
        }
    }

    #[test]
    fn mirror_hash_is_the_hash_of_the_mirrored_picture() {
        for seed in 0..4 {
            let img = scene(200, 150, seed);
            let (a, m) = (fingerprint(&img), fingerprint(&imageops::flip_horizontal(&img)));
            assert!((a.mirror ^ m.hash).count_ones() <= 2, "seed {seed}: {}", (a.mirror ^ m.hash).count_ones());
            let (d, mirrored, corr) = compare(&a, &m);
            assert!(mirrored && d <= 2 && corr > 0.98, "seed {seed}: {d} {mirrored} {corr}");
        }
    }

    #[test]
    fn borders_and_padding_are_trimmed() {
        let img = scene(120, 90, 1);
        let mut framed = RgbImage::from_pixel(140, 110, Rgb([0, 0, 0]));
        imageops::replace(&mut framed, &img, 10, 10);
        let mut padded = RgbImage::from_pixel(120, 120, Rgb([255, 255, 255]));
        imageops::replace(&mut padded, &img, 0, 15);
        let a = fingerprint(&img);
        for (what, copy) in [("framed", framed), ("padded", padded)] {
            let (d, _, corr) = compare(&a, &fingerprint(&copy));
            assert!(d <= 2 && corr > 0.98, "{what}: distance {d}, correlation {corr}");
        }
        assert_eq!(trim_borders(&img), (0, 0, 120, 90), "nothing to trim in a scene");
    }

    #[test]
    fn distinct_pictures_differ_and_flat_ones_only_match_flat_ones() {
        let (a, b) = (fingerprint(&scene(160, 120, 0)), fingerprint(&scene(160, 120, 3)));
        let (d, _, corr) = compare(&a, &b);
        assert!(d > 10 || corr < 0.5, "distinct scenes: distance {d}, correlation {corr}");
        let black = fingerprint(&RgbImage::from_pixel(64, 64, Rgb([3, 3, 3])));
        let dark = fingerprint(&RgbImage::from_pixel(80, 50, Rgb([6, 5, 4])));
        assert!(black.is_flat() && dark.is_flat());
        assert!(confirmed(&black, &dark, compare(&black, &dark).2, 0.9));
        assert!(!confirmed(&black, &a, compare(&black, &a).2, 0.0), "flat vs structured never confirms");
    }

    #[test]
    fn a_recoloured_shape_is_not_a_copy_but_a_brightened_one_is() {
        let disc = |c: [u8; 3]| {
            RgbImage::from_fn(120, 120, |x, y| {
                let (dx, dy) = (x as f32 - 60.0, y as f32 - 60.0);
                let r = (dx * dx + dy * dy).sqrt();
                if r < 40.0 {
                    let shade = 1.0 - r / 120.0 + if dx > 10.0 && dy < -5.0 { 0.2 } else { 0.0 };
                    Rgb(c.map(|v| (v as f32 * shade).min(255.0) as u8))
                } else {
                    Rgb([255, 255, 255])
                }
            })
        };
        let red = fingerprint(&disc([220, 40, 30]));
        let blue = fingerprint(&disc([30, 50, 220]));
        let brighter = fingerprint(&disc([250, 48, 36]));
        let (_, _, corr) = compare(&red, &blue);
        assert!(corr > 0.9, "same shape: {corr}");
        assert!(!confirmed(&red, &blue, corr, 0.8), "colour {}", colour_distance(&red, &blue, false));
        let (_, _, corr) = compare(&red, &brighter);
        assert!(confirmed(&red, &brighter, corr, 0.8), "colour {}", colour_distance(&red, &brighter, false));
    }

    #[test]
    fn brightened_resized_and_gamma_copies_stay_close() {
        let img = scene(256, 192, 2);
        let a = fingerprint(&img);
        let bright = RgbImage::from_fn(256, 192, |x, y| {
            let p = img.get_pixel(x, y).0;
            Rgb(p.map(|c| (c as f32 * 1.25).min(255.0) as u8))
        });
        let gamma = RgbImage::from_fn(256, 192, |x, y| {
            let p = img.get_pixel(x, y).0;
            Rgb(p.map(|c| (255.0 * (c as f32 / 255.0).powf(0.7)) as u8))
        });
        let small = imageops::resize(&img, 128, 96, imageops::FilterType::Triangle);
        for (what, copy) in [("bright", bright), ("gamma", gamma), ("small", small)] {
            let (d, mirror, corr) = compare(&a, &fingerprint(&copy));
            // Within the default distance (12) and well above the default correlation (0.8).
            assert!(d <= 12 && !mirror && corr > 0.95, "{what}: {d} {mirror} {corr}");
        }
    }
}
