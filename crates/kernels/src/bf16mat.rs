//! bf16 matrix products on Intel AMX, for the linear layers of float encoders (BERT) where a
//! few bits of precision buy several times the speed:
//! y (T, N) = bf16(x) (T, K) . bf16(w) (N, K)^T + b (N), products summed in f32.
//!
//! AMX (Advanced Matrix Extensions: Intel Xeon Sapphire Rapids and later) adds eight tile
//! registers of 16 rows x 64 bytes and `tdpbf16ps`, which adds to a 16 x 16 f32 tile C the
//! product of a 16 x 32 bf16 tile A with a 32 x 16 bf16 tile B: 8192 multiply-adds in one
//! instruction (an AVX-512 FMA does 16), one every 16 cycles or so. The kernel keeps four C tiles (32 tokens x 32
//! outputs) and streams two A tiles (activations) and two B tiles (weights) per 32 depths.
//!
//! Layout:
//! - the weights are rounded to bf16 once at load ([`PackedBf16::pack`]) and stored as B tiles:
//!   panel p (outputs 16p..16p+16), chunk j (depths 32j..32j+32) is one 1 KB tile whose row r
//!   holds, for each of the 16 outputs, the pair w[n][32j+2r], w[n][32j+2r+1] (the pair layout
//!   `tdpbf16ps` reads); K is padded with zeros to a multiple of 32, N to a multiple of 16;
//! - the activations are rounded to bf16 per call into a caller's scratch buffer (T rounded up to
//!   32 rows, K padded as the weights), read as A tiles;
//! - each C tile starts as the bias (a tile load with row stride 0) and is stored into y.
//!
//! Rounding: f32 -> bf16 is round-to-nearest-even ([`to_bf16`]). `tdpbf16ps` sums each 32-deep
//! product in f32 with its own internal order (measured on a Xeon: within 5.5 f32 ulps of the
//! exact sum of the 32 terms' magnitudes, and not equal to any plain order of f32 additions), so
//! the scalar reference [`matmul_bf16_reference`] is the exact sum of the same bf16 products
//! (in f64) and the tests bound the distance. What holds bit for bit: every token row is computed
//! by the same instructions whatever its place in a tile, the other rows of the batch or the
//! thread count, so a batch gives each sequence the bits it gets alone.

use crate::pool::{split_range, SharedMut, ThreadPool};

/// Rows of a tile, and outputs per packed panel.
pub const TILE: usize = 16;
/// Depths of one tile product: 32 bf16 = 64 bytes per tile row.
pub const KT: usize = 32;
/// Tokens per block of the kernel: two A tiles.
const TB: usize = 2 * TILE;
/// Bytes of weights a thread keeps in L2 while every token block passes over them (a quarter of
/// a 2 MB L2, beside the activations).
const GROUP_BYTES: usize = 512 * 1024;

/// 64 bytes of bf16 values on a 64-byte boundary: every tile row (64 bytes) the kernel loads is
/// one cache line. (Unaligned rows span two lines each and made the kernel three times slower.)
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Line([u16; 32]);

/// `lines` as the bf16 values they hold.
fn values(lines: &[Line]) -> &[u16] {
    // SAFETY: Line is 32 u16 with no padding (size 64 = its alignment), so n lines are 32n u16.
    unsafe { std::slice::from_raw_parts(lines.as_ptr() as *const u16, lines.len() * 32) }
}

/// `lines` as the bf16 values they hold, writable.
fn values_mut(lines: &mut [Line]) -> &mut [u16] {
    // SAFETY: as in `values`; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr() as *mut u16, lines.len() * 32) }
}

/// Rows of activations rounded to bf16, 64-byte aligned, as the kernel reads them: T rounded up to
/// 32 rows of K rounded up to 32 values ([`round_rows`] fills it; [`matmul_bf16`] uses it as its
/// work space). Grows when asked ([`Bf16Rows::ensure`]), never shrinks.
#[derive(Clone, Debug, Default)]
pub struct Bf16Rows {
    lines: Vec<Line>,
}

impl Bf16Rows {
    /// An empty buffer.
    pub fn new() -> Bf16Rows {
        Bf16Rows::default()
    }

    /// Room for T rows of depth K.
    pub fn ensure(&mut self, t: usize, k: usize) {
        let need = bf16_scratch_len(t, k) / 32;
        if self.lines.len() < need {
            self.lines.resize(need, Line::default());
        }
    }

    /// The values (rows of K rounded up to 32).
    pub fn values(&self) -> &[u16] {
        values(&self.lines)
    }
}

/// f32 -> bf16, round to nearest even (NaN stays NaN, quiet).
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if x.is_nan() {
        return ((u >> 16) | 0x40) as u16;
    }
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// bf16 -> f32 (exact).
#[inline]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// A weight matrix w (N, K) rounded to bf16 and packed as AMX B tiles: (ceil(N/16), ceil(K/32),
/// 16, 16, 2), zeros in the padding.
#[derive(Clone, Debug)]
pub struct PackedBf16 {
    data: Vec<Line>,
    rows: usize,
    cols: usize,
}

impl PackedBf16 {
    /// w (N, K) row-major ([out, in], as a PyTorch linear layer stores it) -> the packed tiles.
    ///
    /// # Panics
    /// If `w.len() != rows * cols` (a caller's shape check belongs before this, at load time).
    pub fn pack(w: &[f32], rows: usize, cols: usize) -> PackedBf16 {
        assert_eq!(w.len(), rows * cols, "pack: w has {} values, expected N*K = {rows}*{cols}", w.len());
        let (panels, chunks) = (rows.div_ceil(TILE), cols.div_ceil(KT));
        let mut data = vec![Line::default(); panels * chunks * TILE * KT / 32];
        let values = values_mut(&mut data);
        for n in 0..rows {
            let (p, lane) = (n / TILE, n % TILE);
            for k in 0..cols {
                let (j, r, half) = (k / KT, (k % KT) / 2, k % 2);
                values[((p * chunks + j) * TILE + r) * KT + lane * 2 + half] = to_bf16(w[n * cols + k]);
            }
        }
        PackedBf16 { data, rows, cols }
    }

    /// N, the number of outputs.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// K, the number of inputs.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn panels(&self) -> usize {
        self.rows.div_ceil(TILE)
    }

    fn chunks(&self) -> usize {
        self.cols.div_ceil(KT)
    }

    /// The weight w[n][k] as stored (bf16 -> f32).
    pub fn weight(&self, n: usize, k: usize) -> f32 {
        let (p, lane, j, r, half) = (n / TILE, n % TILE, k / KT, (k % KT) / 2, k % 2);
        from_bf16(values(&self.data)[((p * self.chunks() + j) * TILE + r) * KT + lane * 2 + half])
    }
}

/// The scratch [`matmul_bf16`] needs for T tokens of depth K: T rounded up to 32 rows of K
/// rounded up to 32 bf16 values.
pub fn bf16_scratch_len(t: usize, k: usize) -> usize {
    t.div_ceil(TB) * TB * k.div_ceil(KT) * KT
}

/// Whether this CPU and OS run AMX bf16 products: the CPU has AMX-TILE and AMX-BF16, the OS saves
/// the tile state (XCR0), and Linux granted this process the tile data (`arch_prctl`, asked once).
pub fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *USABLE.get_or_init(amx::request)
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// w (N, K) packed, b (N) or none, x (T, K) -> y (T, N) = bf16(x) . w^T + b, on AMX.
///
/// `scratch` has room for T rows of depth K ([`Bf16Rows::ensure`]; its contents are overwritten).
/// Panel pairs are split statically over the pool's threads; the bits do not depend on the
/// thread count nor on the other rows of x (see the module doc).
///
/// # Panics
/// If AMX is not available ([`amx_available`]: the caller chooses the f32 kernel instead), or the
/// lengths of `x`, `y`, `bias` or `scratch` do not match the shapes.
pub fn matmul_bf16(pool: &ThreadPool, w: &PackedBf16, bias: Option<&[f32]>, x: &[f32], t: usize, y: &mut [f32], scratch: &mut Bf16Rows) {
    let (n, k) = (w.rows, w.cols);
    assert!(amx_available(), "matmul_bf16: this CPU or OS has no AMX bf16 products (check amx_available first)");
    assert_eq!(x.len(), t * k, "matmul_bf16: x has {} values, expected T*K = {t}*{k}", x.len());
    assert_eq!(y.len(), t * n, "matmul_bf16: y has {} values, expected T*N = {t}*{n}", y.len());
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "matmul_bf16: bias has {} values, expected N = {n}", b.len());
    }
    let need = bf16_scratch_len(t, k);
    assert!(scratch.lines.len() * 32 >= need, "matmul_bf16: scratch holds {} values, T={t} K={k} need {need}", scratch.lines.len() * 32);
    if t == 0 || n == 0 {
        return;
    }
    let kp = k.div_ceil(KT) * KT;
    let rows_padded = t.div_ceil(TB) * TB;
    let xb = &mut values_mut(&mut scratch.lines)[..rows_padded * kp];
    // Round the activations, rows split over the threads; padding rows and depths are zeros.
    let shared = SharedMut::new(xb);
    pool.run(&|i, nt| {
        for r in split_range(rows_padded, i, nt) {
            // SAFETY: thread i alone writes its rows.
            round_padded_row(x, k, t, r, unsafe { shared.slice(r * kp, kp) });
        }
    });
    let xb: &[u16] = xb;
    let out = SharedMut::new(y);
    let pairs = w.panels().div_ceil(2);
    pool.run(&|i, nt| {
        let range = split_range(pairs, i, nt);
        if range.is_empty() {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AMX is available (asserted above); thread i writes only the columns of its own
        // panel pairs, in every row of y; every tile load stays inside xb and w's data (xb has
        // rows_padded rows of kp values, w's chunks cover kp depths).
        unsafe {
            amx::pairs(w, bias, xb, kp, t, out, range)
        };
    });
}

/// x (R, K) f32 -> out (R rounded up to 32, K rounded up to 32) bf16 ([`round_row`]'s rounding),
/// the padding zeros: the row layout [`AmxTiles::block`] reads. `out` grows to fit.
///
/// # Panics
/// If x is not whole rows of K.
pub fn round_rows(x: &[f32], k: usize, out: &mut Bf16Rows) {
    let rows = x.len().checked_div(k).unwrap_or(0);
    let kp = k.div_ceil(KT) * KT;
    let padded = rows.div_ceil(TB) * TB;
    assert!(x.len() == rows * k, "round_rows: {} values are not rows of depth {k}", x.len());
    out.ensure(rows, k);
    let out = values_mut(&mut out.lines);
    for r in 0..padded {
        round_padded_row(x, k, rows, r, &mut out[r * kp..(r + 1) * kp]);
    }
}

/// Row r of the padded bf16 layout of x (rows, k): x's row r rounded then zeros, or all zeros
/// for a padding row.
fn round_padded_row(x: &[f32], k: usize, rows: usize, r: usize, row: &mut [u16]) {
    if r < rows {
        round_row(&x[r * k..(r + 1) * k], &mut row[..k]);
        row[k..].fill(0);
    } else {
        row.fill(0);
    }
}

/// The AMX tiles, configured on the calling thread until dropped: for callers that consume a
/// product block by block (a top-K screen keeps only the best scores of each column).
pub struct AmxTiles {
    /// Tile state belongs to one thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl AmxTiles {
    /// Configures the tiles, or None where AMX does not run ([`amx_available`]).
    pub fn open() -> Option<AmxTiles> {
        if !amx_available() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AMX is available.
        unsafe {
            amx::configure()
        };
        Some(AmxTiles { _not_send: std::marker::PhantomData })
    }

    /// out[2a + b] (16 x 16, row-major) = rows r0 + 16a .. r0 + 16a + 16 of xb times the outputs of
    /// panel 2 * pair + b of w, for a, b in {0, 1}: a 32 x 32 block of x . w^T (no bias). `xb` is
    /// [`round_rows`]'s layout for w's K. A lone last panel is paired with itself (out[1] and
    /// out[3] then repeat out[0] and out[2]).
    ///
    /// # Panics
    /// If `pair` is past w's panels, or xb does not hold rows r0..r0 + 32 of w's padded depth.
    pub fn block(&mut self, w: &PackedBf16, pair: usize, xb: &Bf16Rows, r0: usize, out: &mut [[f32; TILE * TILE]; 4]) {
        let xb = xb.values();
        let kp = w.chunks() * KT;
        assert!(2 * pair < w.panels(), "AmxTiles::block: pair {pair} of {} panels", w.panels());
        assert!(xb.len() >= (r0 + TB) * kp, "AmxTiles::block: rows {r0}..{} of depth {kp} past {} values", r0 + TB, xb.len());
        let (p0, p1) = (2 * pair, (2 * pair + 1).min(w.panels() - 1));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the tiles are configured (an AmxTiles exists on this thread: it is not Send);
        // the rows and panels are in bounds (asserted).
        unsafe {
            amx::accumulate(w, p0, p1, xb.as_ptr().add(r0 * kp), xb.as_ptr().add((r0 + TILE) * kp), kp, &[[0.0; TILE]; 2]);
            amx::store_all(out);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (p0, p1, out);
    }
}

impl Drop for AmxTiles {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AMX is available (open succeeded).
        unsafe {
            amx::release()
        };
    }
}

/// x -> bf16(x), round to nearest even: AVX-512 BF16's `vcvtneps2bf16` where the CPU has it
/// (every AMX CPU does), which also reads subnormal inputs as zero, as `tdpbf16ps` reads bf16
/// subnormals anyway; [`to_bf16`] otherwise.
fn round_row(x: &[f32], out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512bf16") {
        // SAFETY: the CPU has AVX-512 BF16 (and so AVX-512 F).
        unsafe { amx::round_row_avx512(x, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = to_bf16(v);
    }
}

/// The definition, on unpacked weights: w (N, K), b (N) or none, x (T, K) -> y (T, N), each output
/// the bias plus the exact sum (in f64) of the products of bf16-rounded x and w, rounded to f32.
pub fn matmul_bf16_reference(w: &[f32], bias: Option<&[f32]>, x: &[f32], t: usize, n: usize, k: usize, y: &mut [f32]) {
    for ti in 0..t {
        for ni in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[ni]) as f64;
            for ki in 0..k {
                acc += from_bf16(to_bf16(x[ti * k + ki])) as f64 * from_bf16(to_bf16(w[ni * k + ki])) as f64;
            }
            y[ti * n + ni] = acc as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    //! The AMX instructions, through inline assembly (Rust's AMX intrinsics are not stable). The
    //! compiler never uses the tile registers, so the tiles keep their contents between `asm!`
    //! blocks of one thread.

    use std::arch::asm;
    use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};

    use super::{PackedBf16, GROUP_BYTES, KT, TB, TILE};
    use crate::pool::SharedMut;

    /// Linux x86-64: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`.
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;

    /// The CPU has AMX-TILE and AMX-BF16, the OS enabled their state, and the process may use it.
    pub(super) fn request() -> bool {
        // The permission request below is a Linux system call; elsewhere AMX is not used.
        if !cfg!(target_os = "linux") {
            return false;
        }
        let (leaf1, leaf7) = (__cpuid(1), __cpuid_count(7, 0));
        let osxsave = leaf1.ecx >> 27 & 1 == 1;
        let (amx_bf16, amx_tile) = (leaf7.edx >> 22 & 1 == 1, leaf7.edx >> 24 & 1 == 1);
        if !(osxsave && amx_bf16 && amx_tile) {
            return false;
        }
        // SAFETY: OSXSAVE is set, so xgetbv is enabled.
        let xcr0 = unsafe { xgetbv0() };
        if xcr0 >> 17 & 3 != 3 {
            return false;
        }
        // The tile data (8 KB per thread) is opt-in on Linux; any other OS or an old kernel
        // answers an error and the f32 kernel runs instead.
        let ret: i64;
        // SAFETY: a system call with integer arguments; rcx and r11 are clobbered by `syscall`.
        unsafe {
            asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM, in("rsi") XFEATURE_XTILEDATA,
                 lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret == 0
    }

    /// [`super::round_row`] with `vcvtneps2bf16`, 16 values at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_row_avx512(x: &[f32], out: &mut [u16]) {
        use std::arch::x86_64::{__m256bh, __m256i, _mm256_storeu_si256, _mm512_cvtneps_pbh, _mm512_loadu_ps};
        assert_eq!(x.len(), out.len());
        let whole = x.len() / 16 * 16;
        for i in (0..whole).step_by(16) {
            let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(x.as_ptr().add(i)));
            _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(h));
        }
        for i in whole..x.len() {
            out[i] = super::to_bf16(x[i]);
        }
    }

    #[target_feature(enable = "xsave")]
    unsafe fn xgetbv0() -> u64 {
        _xgetbv(0)
    }

    /// The 64-byte tile configuration: palette 1, every one of the 8 tiles 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    /// Tile registers: C00 C01 C10 C11 (tmm0-3) accumulate 32 tokens x 32 outputs, A0 A1 (tmm4-5)
    /// hold 16 tokens each, B0 B1 (tmm6-7) one panel each.
    macro_rules! tileload {
        ($tmm:literal, $ptr:expr, $stride:expr) => {
            asm!(concat!("tileloadd ", $tmm, ", [{p} + {s}*1]"), p = in(reg) $ptr, s = in(reg) $stride, options(nostack, readonly))
        };
    }
    macro_rules! tilestore {
        ($tmm:literal, $ptr:expr, $stride:expr) => {
            asm!(concat!("tilestored [{p} + {s}*1], ", $tmm), p = in(reg) $ptr, s = in(reg) $stride, options(nostack))
        };
    }

    /// Loads the tile configuration on this thread: palette 1, all 8 tiles 16 rows x 64 bytes.
    ///
    /// # Safety
    /// AMX is available.
    pub(super) unsafe fn configure() {
        let mut config = Config { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        for tile in 0..8 {
            config.rows[tile] = TILE as u8;
            config.colsb[tile] = 64;
        }
        asm!("ldtilecfg [{0}]", in(reg) &config as *const Config, options(nostack, readonly));
    }

    /// Releases the tiles (the OS then need not save them at a context switch).
    ///
    /// # Safety
    /// AMX is available.
    pub(super) unsafe fn release() {
        asm!("tilerelease", options(nostack, nomem));
    }

    /// C00 C01 C10 C11 (tmm0-3) = the bias rows, plus A0 (16 rows from `a0`) and A1 (from `a1`),
    /// rows `kp` bf16 values apart, times panels p0 and p1 of w, over all of w's depth chunks.
    ///
    /// # Safety
    /// The tiles are configured ([`configure`]); a0 and a1 point at 16 rows of kp = w's padded K
    /// values each; p0 and p1 are panels of w.
    #[inline(always)]
    pub(super) unsafe fn accumulate(w: &PackedBf16, p0: usize, p1: usize, a0: *const u16, a1: *const u16, kp: usize, bias_rows: &[[f32; TILE]; 2]) {
        let (chunks, tile_u16) = (w.chunks(), TILE * KT);
        let (a_stride, b_stride) = (kp * 2, KT * 2);
        let data = super::values(&w.data);
        let b0 = data.as_ptr().add(p0 * chunks * tile_u16);
        let b1 = data.as_ptr().add(p1 * chunks * tile_u16);
        // Every row of a C tile starts as the bias: a load with row stride 0.
        tileload!("tmm0", bias_rows[0].as_ptr(), 0usize);
        tileload!("tmm1", bias_rows[1].as_ptr(), 0usize);
        tileload!("tmm2", bias_rows[0].as_ptr(), 0usize);
        tileload!("tmm3", bias_rows[1].as_ptr(), 0usize);
        for j in 0..chunks {
            tileload!("tmm4", a0.add(j * KT), a_stride);
            tileload!("tmm5", a1.add(j * KT), a_stride);
            tileload!("tmm6", b0.add(j * tile_u16), b_stride);
            tileload!("tmm7", b1.add(j * tile_u16), b_stride);
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem)
            );
        }
    }

    /// The four C tiles into `out` (16 x 16 f32 each, row-major).
    ///
    /// # Safety
    /// The tiles are configured and hold a result of [`accumulate`].
    #[inline(always)]
    pub(super) unsafe fn store_all(out: &mut [[f32; TILE * TILE]; 4]) {
        tilestore!("tmm0", out[0].as_mut_ptr(), TILE * 4);
        tilestore!("tmm1", out[1].as_mut_ptr(), TILE * 4);
        tilestore!("tmm2", out[2].as_mut_ptr(), TILE * 4);
        tilestore!("tmm3", out[3].as_mut_ptr(), TILE * 4);
    }

    /// y's columns of the panel pairs `pairs` for every token.
    ///
    /// # Safety
    /// AMX is available; no other thread writes these columns; `xb` holds T rounded up to 32 rows
    /// of `kp` bf16 values (kp = w's K padded to 32); `out` is y (T, N).
    pub(super) unsafe fn pairs(
        w: &PackedBf16,
        bias: Option<&[f32]>,
        xb: &[u16],
        kp: usize,
        t: usize,
        out: SharedMut<f32>,
        pairs: std::ops::Range<usize>,
    ) {
        let (n, panels) = (w.rows, w.panels());
        debug_assert!(xb.len() >= t.div_ceil(TB) * TB * kp && w.chunks() * KT == kp);
        configure();
        let y_stride = n * 4;
        let mut spill = [[0f32; TILE * TILE]; 4];
        // Groups of panel pairs whose weights (GROUP_BYTES) stay in L2, then token blocks, then
        // the group's pairs: a token block's activations (32 x K bf16, 96 KB at K = 1536) are
        // read once per group and reused by each of its pairs, and the group's weights are read
        // from L2 by every token block instead of from L3 or memory.
        let group = (GROUP_BYTES / (2 * w.chunks() * TILE * KT * 2)).max(1);
        for first in pairs.clone().step_by(group) {
            for t0 in (0..t).step_by(TB) {
                let a0 = xb.as_ptr().add(t0 * kp);
                let a1 = xb.as_ptr().add((t0 + TILE) * kp);
                for pair in first..(first + group).min(pairs.end) {
                    let p0 = 2 * pair;
                    // A lone last panel is paired with itself; its copy is not stored.
                    let p1 = (p0 + 1).min(panels - 1);
                    let mut bias_rows = [[0f32; TILE]; 2];
                    for (q, p) in [p0, p1].into_iter().enumerate() {
                        let (n0, width) = (p * TILE, TILE.min(n - p * TILE));
                        if let Some(b) = bias {
                            bias_rows[q][..width].copy_from_slice(&b[n0..n0 + width]);
                        }
                    }
                    accumulate(w, p0, p1, a0, a1, kp, &bias_rows);
                    // Full tiles go straight into y; edges (last rows, a short last panel, a lone
                    // panel's copy) through `spill`.
                    let stores = [(0, p0), (1, p1), (2, p0), (3, p1)];
                    for (c, p) in stores {
                        let r0 = t0 + (c / 2) * TILE;
                        let (n0, width) = (p * TILE, TILE.min(n - p * TILE));
                        let lone_copy = c % 2 == 1 && p1 == p0;
                        if lone_copy || r0 >= t {
                            continue;
                        }
                        let rows = TILE.min(t - r0);
                        if rows == TILE && width == TILE {
                            let dst = out.slice(r0 * n + n0, (TILE - 1) * n + TILE).as_mut_ptr();
                            match c {
                                0 => tilestore!("tmm0", dst, y_stride),
                                1 => tilestore!("tmm1", dst, y_stride),
                                2 => tilestore!("tmm2", dst, y_stride),
                                _ => tilestore!("tmm3", dst, y_stride),
                            }
                        } else {
                            let dst = spill[c].as_mut_ptr();
                            match c {
                                0 => tilestore!("tmm0", dst, TILE * 4),
                                1 => tilestore!("tmm1", dst, TILE * 4),
                                2 => tilestore!("tmm2", dst, TILE * 4),
                                _ => tilestore!("tmm3", dst, TILE * 4),
                            }
                            for r in 0..rows {
                                out.slice((r0 + r) * n + n0, width).copy_from_slice(&spill[c][r * TILE..r * TILE + width]);
                            }
                        }
                    }
                }
            }
        }
        release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0 + 1.0 / 65536.0), 0x3f81);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY, "f32::MAX is past bf16's largest finite value");
        // Every bf16 value survives the round trip.
        for h in (0..=u16::MAX).filter(|&h| !from_bf16(h).is_nan()) {
            assert_eq!(to_bf16(from_bf16(h)), h);
        }
    }

    #[test]
    fn packing_keeps_every_weight_at_its_place_rounded() {
        let (n, k) = (37, 70);
        let w = pseudo_random(n * k, 3);
        let packed = PackedBf16::pack(&w, n, k);
        for ni in 0..n {
            for ki in 0..k {
                assert_eq!(packed.weight(ni, ki), from_bf16(to_bf16(w[ni * k + ki])), "w[{ni}][{ki}]");
            }
        }
        assert_eq!(values(&packed.data).len(), 3 * 3 * TILE * KT, "3 panels x 3 chunks of 512 values");
        assert_eq!(bf16_scratch_len(33, 70), 64 * 96);
    }

    /// The distance AMX may keep from the exact sum: `tdpbf16ps` rounds in f32 at least once per
    /// 32-deep chunk (measured within 5.5 ulps of the chunk's magnitude); 8 ulps per chunk.
    fn bound(x: &[f32], w: &[f32], bias: Option<f32>, k: usize) -> f64 {
        let magnitude: f64 = bias.map_or(0.0, |b| b.abs() as f64)
            + x.iter().zip(w).map(|(&a, &b)| (from_bf16(to_bf16(a)) as f64 * from_bf16(to_bf16(b)) as f64).abs()).sum::<f64>();
        8.0 * (k.div_ceil(KT) + 1) as f64 * f32::EPSILON as f64 / 2.0 * magnitude
    }

    #[test]
    fn amx_stays_within_its_bound_of_the_exact_bf16_product() {
        if !amx_available() {
            eprintln!("no AMX on this machine: only the reference and packing are tested here");
            return;
        }
        for (t, n, k, threads) in [(1, 16, 32, 1), (37, 50, 70, 2), (64, 384, 384, 2), (5, 1536, 384, 1), (40, 384, 1536, 3)] {
            let (w, x, b) = (pseudo_random(n * k, 1), pseudo_random(t * k, 2), pseudo_random(n, 4));
            let packed = PackedBf16::pack(&w, n, k);
            let pool = ThreadPool::new(threads);
            let mut scratch = Bf16Rows::new();
            scratch.ensure(t, k);
            let (mut y, mut reference) = (vec![f32::NAN; t * n], vec![0f32; t * n]);
            matmul_bf16(&pool, &packed, Some(&b), &x, t, &mut y, &mut scratch);
            matmul_bf16_reference(&w, Some(&b), &x, t, n, k, &mut reference);
            for ti in 0..t {
                for ni in 0..n {
                    let i = ti * n + ni;
                    let limit = bound(&x[ti * k..(ti + 1) * k], &w[ni * k..(ni + 1) * k], Some(b[ni]), k);
                    assert!(((y[i] - reference[i]) as f64).abs() <= limit, "T={t} N={n} K={k} y[{ti}][{ni}] = {} vs {}", y[i], reference[i]);
                }
            }
        }
    }

    #[test]
    fn amx_gives_a_token_the_same_bits_alone_in_a_batch_and_on_any_thread_count() {
        if !amx_available() {
            eprintln!("no AMX on this machine: nothing of AMX's to compare");
            return;
        }
        let (t, n, k) = (45, 96, 160);
        let (w, x) = (pseudo_random(n * k, 5), pseudo_random(t * k, 6));
        let packed = PackedBf16::pack(&w, n, k);
        let mut scratch = Bf16Rows::new();
        scratch.ensure(t, k);
        let mut batch = vec![0f32; t * n];
        matmul_bf16(&ThreadPool::new(2), &packed, None, &x, t, &mut batch, &mut scratch);
        for threads in [1, 3] {
            let mut again = vec![0f32; t * n];
            matmul_bf16(&ThreadPool::new(threads), &packed, None, &x, t, &mut again, &mut scratch);
            assert_eq!(batch.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), again.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
        let pool = ThreadPool::new(1);
        for ti in [0, 17, 31, 44] {
            let mut alone = vec![0f32; n];
            matmul_bf16(&pool, &packed, None, &x[ti * k..(ti + 1) * k], 1, &mut alone, &mut scratch);
            assert_eq!(
                alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                batch[ti * n..(ti + 1) * n].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "token {ti}"
            );
        }
    }

    #[test]
    fn reference_is_the_bias_plus_the_rounded_products() {
        // 1 + 2^-9 rounds to 1 in bf16: the reference multiplies the rounded values.
        let (w, x) = ([1.0 + 1.0 / 512.0, 2.0], [3.0, 0.5]);
        let mut y = [0f32];
        matmul_bf16_reference(&w, Some(&[0.25]), &x, 1, 1, 2, &mut y);
        assert_eq!(y[0], 0.25 + 3.0 + 1.0);
    }
}
