//! The run directory's file formats: float16 .npy and atomic writes.

use half::f16;
use sieve::store::{npy, write_atomic};

#[test]
fn npy_round_trips_with_an_aligned_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    let data: Vec<f16> = (0..15).map(|i| f16::from_f32(i as f32 * 0.25 - 1.0)).collect();
    write_atomic(&p, |w| npy::write_f16(w, 5, 3, &data)).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "numpy requires the data to start 64-byte aligned");
    let (r, c, v) = npy::read_f16(&p).unwrap();
    assert_eq!((r, c), (5, 3));
    assert_eq!(v, data.iter().map(|x| x.to_f32()).collect::<Vec<_>>());
    // candle (an independent reader) agrees.
    let t = candle_core::Tensor::read_npy(&p).unwrap();
    assert_eq!(t.dims(), &[5, 3]);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "temporary files left behind: {leftovers:?}");
}

#[test]
fn empty_npy_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.npy");
    write_atomic(&p, |w| npy::write_f16(w, 0, 16, &[])).unwrap();
    assert_eq!(npy::read_f16(&p).unwrap(), (0, 16, vec![]));
}

#[test]
fn failed_atomic_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("y.npy");
    let e = write_atomic(&p, |_| Err(std::io::Error::other("disk full"))).unwrap_err();
    assert!(e.to_string().contains("y.npy"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
