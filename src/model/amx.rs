//! Intel AMX for the CPU encoder's bf16 and int8 linear layers, through inline assembly (Rust's
//! AMX intrinsics are not stable). Both products have the same shape here: rows of 4-byte
//! groups (a bf16 pair, or four int8 values) times weights packed `[depth][16 channels][4 bytes]`
//! per 16-channel block, which is an AMX weight tile's layout. [`pair_bf16`] and [`pair_int8`]
//! compute a 32-row × 32-channel block of outputs in four accumulator tiles (16 × 16 each),
//! 16 groups deep per instruction; the callers handle tasks, padding and the epilogue.

use std::arch::asm;

/// Whether the CPU has AMX-TILE and AMX-BF16 and Linux grants this process AMX state.
pub(crate) fn available_bf16() -> bool {
    has_cpuid_bit(22) && permitted()
}

/// Whether the CPU has AMX-TILE and AMX-INT8 and Linux grants this process AMX state.
pub(crate) fn available_int8() -> bool {
    has_cpuid_bit(25) && permitted()
}

/// CPUID leaf 7's EDX bit `bit` together with AMX-TILE (bit 24).
fn has_cpuid_bit(bit: u32) -> bool {
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    leaf.edx & (1 << 24) != 0 && leaf.edx & (1 << bit) != 0
}

/// Linux keeps AMX's 8 KB of tile data off until a process asks for it
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); asked once. A kernel or hypervisor
/// that refuses leaves sieve on the AVX-512 kernels, as `SIEVE_NO_AMX=1` does (to compare them,
/// or to step around a machine whose AMX misbehaves).
fn permitted() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        if std::env::var_os("SIEVE_NO_AMX").is_some_and(|v| !v.is_empty() && v != "0") {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain syscall with integer arguments.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    })
}

/// The tile palette: all eight tiles 16 rows of 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

/// Loads the tile configuration on this thread; [`release`] when done.
///
/// # Safety
/// [`available_bf16`] or [`available_int8`] returned true.
pub(crate) unsafe fn configure() {
    let mut cfg = Config([0; 64]);
    cfg.0[0] = 1; // palette 1
    for t in 0..8 {
        cfg.0[16 + 2 * t] = 64; // bytes per row (a little-endian u16)
        cfg.0[48 + t] = 16; // rows
    }
    // SAFETY: a valid palette-1 configuration, 64 bytes, aligned.
    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
}

/// Releases this thread's tiles.
///
/// # Safety
/// As [`configure`]'s.
pub(crate) unsafe fn release() {
    // SAFETY: as this function's.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

macro_rules! pair {
    ($(#[$doc:meta])* $name:ident, $insn:literal) => {
        $(#[$doc])*
        ///
        /// `a`: 32 rows of `depth` 4-byte groups; `b`: two blocks of `depth × 64` bytes; `c`:
        /// 32 × 32 4-byte outputs, rows 128 bytes apart, overwritten. Tiles 0–3 accumulate, 4–5
        /// hold rows, 6–7 weights.
        ///
        /// # Safety
        /// Tiles configured by [`configure`] on this thread; `depth` a multiple of 16; `a`, `b`
        /// and `c` as large as described.
        pub(crate) unsafe fn $name(a: *const u8, depth: usize, b: *const u8, c: *mut u8) {
            let lda = depth * 4;
            // SAFETY: every load stays inside `a` (32 rows of `lda` bytes) or `b` (two blocks of
            // depth × 64 bytes), as the caller promised; the stores write the 4 KB of `c`.
            unsafe {
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                for t in (0..depth).step_by(16) {
                    asm!(
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tileloadd tmm5, [{a1} + {lda}*1]",
                        "tileloadd tmm6, [{b0} + {ldb}*1]",
                        "tileloadd tmm7, [{b1} + {ldb}*1]",
                        concat!($insn, " tmm0, tmm4, tmm6"),
                        concat!($insn, " tmm1, tmm4, tmm7"),
                        concat!($insn, " tmm2, tmm5, tmm6"),
                        concat!($insn, " tmm3, tmm5, tmm7"),
                        a0 = in(reg) a.add(4 * t),
                        a1 = in(reg) a.add(16 * lda + 4 * t),
                        b0 = in(reg) b.add(64 * t),
                        b1 = in(reg) b.add(64 * depth + 64 * t),
                        lda = in(reg) lda,
                        ldb = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                }
                asm!(
                    "tilestored [{c00} + {ldc}*1], tmm0",
                    "tilestored [{c01} + {ldc}*1], tmm1",
                    "tilestored [{c10} + {ldc}*1], tmm2",
                    "tilestored [{c11} + {ldc}*1], tmm3",
                    c00 = in(reg) c,
                    c01 = in(reg) c.add(64),
                    c10 = in(reg) c.add(16 * 128),
                    c11 = in(reg) c.add(16 * 128 + 64),
                    ldc = in(reg) 128usize,
                    options(nostack),
                );
            }
        }
    };
}

pair!(
    /// f32 outputs += bf16 pairs × bf16 pairs (`tdpbf16ps`).
    pair_bf16,
    "tdpbf16ps"
);
pair!(
    /// int32 outputs += unsigned bytes × signed bytes in groups of four (`tdpbusd`), exactly.
    pair_int8,
    "tdpbusd"
);
