//! Matrix products of weights (any [`Format`]) with activations.
//!
//! Quantized weights multiply activations that were quantized to 8 bits per block of 32
//! ([`BlockQ8`]) and accumulate integer products per block, exactly as the peers do: this is both
//! the fast path and what makes token-exact agreement with them reachable. Float weights multiply
//! the f32 activations directly.
//!
//! Each dot product here is the scalar reference, in both summation orders ([`SumOrder`]). The
//! fast kernels, chosen at run time ([`Level`]), read the weights repacked at load time into
//! groups of interleaved rows ([`crate::groups`]): 8 rows per instruction with AVX2 (`avx2.rs`),
//! 16 with AVX-512 VNNI (`vnni.rs`). Integer sums are exact in any order and the float
//! operations keep the reference's order, so every level gives bit-identical results (tested in
//! `matmul/tests.rs`). Rows past the last whole group, and weights left unpacked, run on
//! per-row AVX2 kernels (`x86.rs`, llama.cpp's order) or the reference compiled for AVX2.

use crate::pool::{split_range, SharedMut, ThreadPool};
use crate::quant::{read_f16, BlockQ8, Format, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK};
use half::{bf16, f16};

/// The instruction-set level kernels are compiled for, chosen once at run time. Levels are
/// ordered: each can run everything the one below it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable code (the reference).
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 (F, BW, VL, DQ) and VNNI: 16 weight rows per instruction.
    Avx512Vnni,
}

/// The environment variables the kernels read and the values they know. [`Level::detect`] and
/// [`SumOrder::from_env`] take anything else for the default; [`check_env`] tells a caller (the
/// command line does) to reject it instead.
pub const ENV_SETTINGS: [(&str, &[&str]); 2] = [("FERROLM_KERNELS", &["scalar", "avx2"]), ("FERROLM_SUM_ORDER", &["llama-cpp", "blocks"])];

/// Checks the variables of [`ENV_SETTINGS`], so that a caller can reject a misspelt value instead
/// of running on the silent default: the message names the variable and the known values.
pub fn check_env() -> Result<(), String> {
    for (name, known) in ENV_SETTINGS {
        if let Ok(value) = std::env::var(name) {
            if !value.is_empty() && !known.contains(&value.as_str()) {
                return Err(format!("{name}={value:?} is not a known setting; use one of: {} (or leave it unset)", known.join(", ")));
            }
        }
    }
    Ok(())
}

impl Level {
    /// The best level this machine supports. `FERROLM_KERNELS=scalar` (or `avx2`) caps it.
    pub fn detect() -> Level {
        let best = Level::best_available();
        match std::env::var("FERROLM_KERNELS").as_deref() {
            Ok("scalar") => Level::Scalar,
            Ok("avx2") if best != Level::Scalar => Level::Avx2,
            _ => best,
        }
    }

    /// The level of the kernels that are not handed one (norms, RoPE, f16 conversions, the
    /// activation quantizer, argmax): [`Level::detect`], read once per process, so that
    /// `FERROLM_KERNELS` caps them as it caps the products and attention.
    pub fn current() -> Level {
        static CURRENT: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        *CURRENT.get_or_init(Level::detect)
    }

    /// The best level the CPU supports, ignoring the environment.
    pub fn best_available() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            if crate::vnni::available() {
                return Level::Avx512Vnni;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                return Level::Avx2;
            }
        }
        Level::Scalar
    }

    /// Every level this machine can run (for tests that compare them).
    pub fn all_available() -> Vec<Level> {
        match Level::best_available() {
            Level::Scalar => vec![Level::Scalar],
            Level::Avx2 => vec![Level::Scalar, Level::Avx2],
            Level::Avx512Vnni => vec![Level::Scalar, Level::Avx2, Level::Avx512Vnni],
        }
    }

    /// Whether block-format weights should be repacked into row groups ([`pack_for`]) at load
    /// time.
    pub fn wants_row_groups(self) -> bool {
        matches!(self, Level::Avx512Vnni | Level::Avx2)
    }
}

/// The load-time repacking of a weight matrix for `level`, if that level has one for its format:
/// w (N, K) -> packed bytes for [`MatRef::packed`].
pub fn pack_for(level: Level, format: Format, data: &[u8], rows: usize, cols: usize) -> Option<Vec<u8>> {
    #[cfg(target_arch = "x86_64")]
    {
        if let (Some(kind), true) = (group_kind(format), cols.is_multiple_of(QK)) {
            match level {
                Level::Avx512Vnni if rows >= crate::vnni::GROUP_ROWS => return Some(crate::vnni::pack(kind, data, rows, cols / QK)),
                Level::Avx2 if rows >= crate::avx2::GROUP_ROWS => return Some(crate::avx2::pack(kind, data, rows, cols / QK)),
                _ => {}
            }
        }
    }
    let _ = (level, format, data, rows, cols);
    None
}

/// A weight matrix viewed in place: `rows` (N) rows of `cols` (K) elements in `format`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// Storage format of the elements.
    pub format: Format,
    /// Row-major bytes, `rows * format.row_bytes(cols)` long.
    pub data: &'a [u8],
    /// N, the number of output features.
    pub rows: usize,
    /// K, the number of input features.
    pub cols: usize,
    /// The same weights repacked for the machine's kernels ([`pack_for`]), if they were.
    pub packed: Option<&'a [u8]>,
    /// How products of block formats add up their blocks.
    pub order: SumOrder,
}

/// How a quantized dot product adds up its blocks. Both orders sum each block's integer products
/// exactly; they differ in where the float roundings fall, so logits differ in their last bits
/// (30 layers later, by up to ~0.05), and greedy choices can differ at near-ties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SumOrder {
    /// One integer sum per block, converted once and fused-multiply-added with the block scale
    /// into a single accumulator per row (the default; the order of llama.cpp's repacked and
    /// ARM kernels). A batch of tokens is bound by this float work, and it is 8 times smaller
    /// than in llama.cpp's x86 order: batched decoding and prompt processing run faster.
    #[default]
    Blocks,
    /// llama.cpp's x86 order: per block, 8 lanes of 4 consecutive products, each lane converted
    /// to f32 and fused-multiply-added with the block scale into its own accumulator; the 8
    /// lanes are reduced at the end of the row (see [`LANES`]). Logits are bit-identical to
    /// llama.cpp's x86 build and greedy output token-exact with it. Chosen with
    /// `FERROLM_SUM_ORDER=llama-cpp` or `--sum-order llama-cpp`; the golden tests pin it.
    LlamaCpp,
}

impl SumOrder {
    /// The order `FERROLM_SUM_ORDER` asks for (`blocks` or `llama-cpp`), else the default.
    pub fn from_env() -> SumOrder {
        match std::env::var("FERROLM_SUM_ORDER").as_deref() {
            Ok("llama-cpp") => SumOrder::LlamaCpp,
            _ => SumOrder::Blocks,
        }
    }
}

impl<'a> MatRef<'a> {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.format.row_bytes(self.cols).unwrap_or(0)
    }

    /// The bytes of row `r`.
    #[inline(always)]
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// Lanes of the per-row accumulator: each block's 32 integer products are summed in 8 groups of
/// 4 consecutive elements, and group i is added into lane i with a fused multiply-add by the
/// block's scale. The lanes are reduced at the end of the row in a fixed tree order.
///
/// This is the exact order of the peers' x86 kernels (an 8-wide float accumulator). Float
/// rounding after 30 layers moves logits by ~0.05 between two correct summation orders, enough to
/// flip greedy choices at near-ties; keeping the same order keeps us token-exact with them.
const LANES: usize = 8;

/// Sums the 8 lanes as `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
#[inline(always)]
fn reduce_lanes(acc: &[f32; LANES]) -> f32 {
    let r = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// w block values (32, element order) times activation block, accumulated into the lanes.
#[inline(always)]
fn accumulate_block(acc: &mut [f32; LANES], scale: f32, w: &[i32; QK], a: &[i8; QK]) {
    for (lane, acc) in acc.iter_mut().enumerate() {
        let mut sum = 0i32;
        for e in 4 * lane..4 * lane + 4 {
            sum += w[e] * a[e] as i32;
        }
        *acc = scale.mul_add(sum as f32, *acc);
    }
}

/// Unpacks 16 bytes of nibbles into 32 values in element order (low nibbles first), minus `offset`.
#[inline(always)]
fn unpack_nibbles(qs: &[u8], offset: i32) -> [i32; QK] {
    let mut w = [0i32; QK];
    for j in 0..QK / 2 {
        w[j] = (qs[j] & 0x0F) as i32 - offset;
        w[j + QK / 2] = (qs[j] >> 4) as i32 - offset;
    }
    w
}

/// w row (K) q4_0, x (K/32) q8 blocks -> dot product.
#[inline(always)]
pub fn dot_q4_0_q8(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = [0f32; LANES];
    for (b, a) in w.chunks_exact(Q4_0_BYTES).zip(x) {
        accumulate_block(&mut acc, read_f16(b, 0) * a.d, &unpack_nibbles(&b[2..Q4_0_BYTES], 8), &a.qs);
    }
    reduce_lanes(&acc)
}

/// w row (K) q4_1, x (K/32) q8 blocks -> dot product. The weight minimum `m` meets the block sum
/// `s` of the activations: sum_j (d q_j + m) a_j = d * sum_j q_j a_j + m * s; the `m * s` terms
/// are summed separately and added last.
#[inline(always)]
pub fn dot_q4_1_q8(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut mins = 0.0f32;
    for (b, a) in w.chunks_exact(Q4_1_BYTES).zip(x) {
        mins += read_f16(b, 2) * a.s;
        accumulate_block(&mut acc, read_f16(b, 0) * a.d, &unpack_nibbles(&b[4..Q4_1_BYTES], 0), &a.qs);
    }
    reduce_lanes(&acc) + mins
}

/// w row (K) q8_0, x (K/32) q8 blocks -> dot product.
#[inline(always)]
pub fn dot_q8_0_q8(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = [0f32; LANES];
    for (b, a) in w.chunks_exact(Q8_0_BYTES).zip(x) {
        let mut q = [0i32; QK];
        for (q, &v) in q.iter_mut().zip(&b[2..Q8_0_BYTES]) {
            *q = v as i8 as i32;
        }
        accumulate_block(&mut acc, read_f16(b, 0) * a.d, &q, &a.qs);
    }
    reduce_lanes(&acc)
}

/// w row (K) in a block format, x (K/32) q8 blocks -> dot product in the [`SumOrder::Blocks`]
/// order: acc = fma(d_w * d_x, sum of the block's integer products, acc), block after block;
/// for Q4_1 the minimum's terms `m * s` are summed separately and added last, as in
/// [`dot_q4_1_q8`].
#[inline(always)]
pub fn dot_blocks_q8(format: Format, w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = 0.0f32;
    let mut mins = 0.0f32;
    for (b, a) in w.chunks_exact(format.block_bytes()).zip(x) {
        let dot = |values: &[i32; QK]| values.iter().zip(&a.qs).map(|(&v, &q)| v * q as i32).sum::<i32>();
        let sum = match format {
            Format::Q4_0 => dot(&unpack_nibbles(&b[2..Q4_0_BYTES], 8)),
            Format::Q4_1 => {
                mins += read_f16(b, 2) * a.s;
                dot(&unpack_nibbles(&b[4..Q4_1_BYTES], 0))
            }
            _ => b[2..Q8_0_BYTES].iter().zip(&a.qs).map(|(&v, &q)| v as i8 as i32 * q as i32).sum(),
        };
        acc = (read_f16(b, 0) * a.d).mul_add(sum as f32, acc);
    }
    if format == Format::Q4_1 {
        acc + mins
    } else {
        acc
    }
}

/// w row (K) f32/f16/bf16 bytes, x (K) f32 -> dot product, accumulated in f32 in order.
#[inline(always)]
pub fn dot_float(format: Format, w: &[u8], x: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    match format {
        Format::F32 => {
            for (b, v) in w.chunks_exact(4).zip(x) {
                sum += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * v;
            }
        }
        Format::F16 => {
            for (b, v) in w.chunks_exact(2).zip(x) {
                sum += f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32() * v;
            }
        }
        Format::Bf16 => {
            for (b, v) in w.chunks_exact(2).zip(x) {
                sum += bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32() * v;
            }
        }
        Format::Q4_0 | Format::Q4_1 | Format::Q8_0 => unreachable!("dot_float called with a block format"),
    }
    sum
}

/// Where a product's results go: stored, or added to what is there (a residual stream).
#[derive(Clone, Copy)]
struct Out {
    ptr: SharedMut<f32>,
    add: bool,
}

impl Out {
    /// Writes (or adds) `v` at `index`.
    ///
    /// # Safety
    /// As [`SharedMut::write`]: in bounds, and no other thread touches `index` during the job.
    #[inline(always)]
    unsafe fn put(self, index: usize, v: f32) {
        unsafe {
            if self.add {
                let cell = self.ptr.slice(index, 1);
                cell[0] += v;
            } else {
                self.ptr.write(index, v);
            }
        }
    }
}

/// Rows `rows` of a block-format `w` against all T quantized activation rows, writing y (T, N):
/// `dot4` takes four tokens at a time (each weight row is read once per four tokens), `dot` the
/// rest.
#[inline(always)]
fn quantized_rows(
    w: &MatRef,
    xq: &[BlockQ8],
    t: usize,
    rows: std::ops::Range<usize>,
    y: Out,
    dot: impl Fn(&[u8], &[BlockQ8]) -> f32,
    dot4: impl Fn(&[u8], [&[BlockQ8]; 4]) -> [f32; 4],
) {
    let (n, kb) = (w.rows, w.cols / QK);
    let act = |ti: usize| &xq[ti * kb..(ti + 1) * kb];
    // Tokens in tiles whose activations stay in L1 (64 tokens x 18 blocks x 48 B = 55 KB for
    // D = 576 is too much; 32 tokens is 27 KB) while the thread's weight rows stream through.
    let tile = (L1_ACTIVATION_BYTES / (kb * std::mem::size_of::<BlockQ8>()).max(1)).clamp(4, 256) / 4 * 4;
    for t0 in (0..t).step_by(tile) {
        let t1 = (t0 + tile).min(t);
        for r in rows.clone() {
            let row = w.row(r);
            let mut ti = t0;
            while ti + 4 <= t1 {
                let v = dot4(row, [act(ti), act(ti + 1), act(ti + 2), act(ti + 3)]);
                for (j, v) in v.into_iter().enumerate() {
                    // SAFETY: each thread owns a disjoint set of rows r; (ti + j) * n + r < t * n = y.len().
                    unsafe { y.put((ti + j) * n + r, v) };
                }
                ti += 4;
            }
            for ti in ti..t1 {
                // SAFETY: as above.
                unsafe { y.put(ti * n + r, dot(row, act(ti))) };
            }
        }
    }
}

/// Bytes of quantized activations a token tile of the prefill loop may occupy (most of a 32 KB L1).
const L1_ACTIVATION_BYTES: usize = 24 << 10;

/// Four single dot products: the reference for `dot4`.
#[inline(always)]
fn four(dot: impl Fn(&[u8], &[BlockQ8]) -> f32) -> impl Fn(&[u8], [&[BlockQ8]; 4]) -> [f32; 4] {
    move |row, xs| xs.map(|x| dot(row, x))
}

/// Rows `rows` of w against all T activation rows, writing y (T, N): the reference.
#[inline(always)]
fn matmul_rows(w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, rows: std::ops::Range<usize>, y: Out) {
    if w.order == SumOrder::Blocks && w.format.uses_q8_activations() {
        let dot = |r: &[u8], a: &[BlockQ8]| dot_blocks_q8(w.format, r, a);
        return quantized_rows(w, xq, t, rows, y, dot, four(dot));
    }
    match w.format {
        Format::Q4_0 => quantized_rows(w, xq, t, rows, y, dot_q4_0_q8, four(dot_q4_0_q8)),
        Format::Q4_1 => quantized_rows(w, xq, t, rows, y, dot_q4_1_q8, four(dot_q4_1_q8)),
        Format::Q8_0 => quantized_rows(w, xq, t, rows, y, dot_q8_0_q8, four(dot_q8_0_q8)),
        f => {
            let (n, k) = (w.rows, w.cols);
            for r in rows {
                for ti in 0..t {
                    // SAFETY: as above.
                    unsafe { y.put(ti * n + r, dot_float(f, w.row(r), &x[ti * k..(ti + 1) * k])) };
                }
            }
        }
    }
}

/// The same rows with the hand-written AVX2 dot products (float formats: the reference code,
/// compiled for AVX2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matmul_rows_avx2(w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, rows: std::ops::Range<usize>, y: Out) {
    use crate::x86;
    if w.order == SumOrder::Blocks {
        // The reference, compiled for AVX2 (its integer block sums vectorize).
        return matmul_rows(w, x, xq, t, rows, y);
    }
    // SAFETY (all three): this function only runs on CPUs with AVX2, FMA and F16C, and row and
    // activation lengths match by construction of MatRef and the checks in `matmul`.
    match w.format {
        Format::Q4_0 => quantized_rows(w, xq, t, rows, y, |r, a| unsafe { x86::dot_q4_0_q8(r, a) }, |r, a| unsafe { x86::dot4_q4_0_q8(r, a) }),
        Format::Q4_1 => quantized_rows(w, xq, t, rows, y, |r, a| unsafe { x86::dot_q4_1_q8(r, a) }, |r, a| unsafe { x86::dot4_q4_1_q8(r, a) }),
        Format::Q8_0 => quantized_rows(w, xq, t, rows, y, |r, a| unsafe { x86::dot_q8_0_q8(r, a) }, |r, a| unsafe { x86::dot4_q8_0_q8(r, a) }),
        _ => matmul_rows(w, x, xq, t, rows, y),
    }
}

/// The row-group layout of a block format, if it has one.
#[cfg(target_arch = "x86_64")]
fn group_kind(format: Format) -> Option<crate::groups::Kind> {
    match format {
        Format::Q4_1 => Some(crate::groups::Kind::Q4_1),
        Format::Q4_0 => Some(crate::groups::Kind::Q4_0),
        Format::Q8_0 => Some(crate::groups::Kind::Q8_0),
        _ => None,
    }
}

/// The grouped kernels a product runs on: AVX-512 VNNI (16 rows) or AVX2 (8 rows), both orders.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grouped {
    Vnni,
    Avx2,
}

#[cfg(target_arch = "x86_64")]
impl Grouped {
    /// Rows per group of its layout.
    const fn rows(self) -> usize {
        match self {
            Grouped::Vnni => crate::vnni::GROUP_ROWS,
            Grouped::Avx2 => crate::avx2::GROUP_ROWS,
        }
    }

    /// How far ahead its kernels prefetch when a row group is read once.
    const fn prefetch_bytes(self) -> usize {
        match self {
            Grouped::Vnni => crate::vnni::PREFETCH_BYTES,
            Grouped::Avx2 => crate::avx2::PREFETCH_BYTES,
        }
    }
}

/// Row groups `groups` of a packed `w` against all T tokens with the grouped kernels of
/// `kernels`, several tokens per call (the weight registers of a block stay live across them), in
/// L1-sized token tiles as [`quantized_rows`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn matmul_groups(kernels: Grouped, w: &MatRef, kind: crate::groups::Kind, xq: &[BlockQ8], t: usize, groups: std::ops::Range<usize>, y: Out) {
    let kb = w.cols / QK;
    let rows = kernels.rows();
    let group_bytes = kb * kind.group_bytes(rows);
    // Tokens per kernel call. VNNI in llama.cpp's order needs 8 accumulators per token (two
    // tokens fit in the 32 registers), in the block order 4 (four tokens fit); AVX2 keeps one
    // accumulator and one integer sum per token in its 16 registers in the block order, and
    // takes a call's tokens one after another in llama.cpp's order (8 accumulators each).
    const STEP: usize = 4;
    // AVX2 in the block order keeps an integer sum per token and the two unpacked weight
    // registers; 8 tokens per pass (measured: 4 -> 8 made the gate product 14% faster per token).
    const AVX2_STEP: usize = 8;
    let step = match (kernels, w.order) {
        (Grouped::Vnni, SumOrder::LlamaCpp) => 2,
        // Q8_0 needs two more registers per element group (the weights' magnitudes and signs):
        // 8 tokens spill (measured on the output head: 0.6 -> 0.75 ms per token).
        (Grouped::Avx2, SumOrder::Blocks) if kind != crate::groups::Kind::Q8_0 => AVX2_STEP,
        _ => 4,
    };
    let tile = (L1_ACTIVATION_BYTES / (kb * std::mem::size_of::<BlockQ8>()).max(1)).clamp(STEP, 256) / STEP * STEP;
    // One row group against G tokens starting at `ti`; writes the rows x G outputs.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn call<const G: usize>(
        kernels: Grouped,
        w: &MatRef,
        kind: crate::groups::Kind,
        group_bytes: usize,
        g: usize,
        ti: usize,
        ahead: usize,
        xq: &[BlockQ8],
        y: Out,
    ) {
        let kb = w.cols / QK;
        let xs: [&[BlockQ8]; G] = std::array::from_fn(|j| &xq[(ti + j) * kb..(ti + j + 1) * kb]);
        let packed = &w.packed.unwrap_or(&[])[g * group_bytes..(g + 1) * group_bytes];
        // SAFETY: the caller checked the CPU features; shapes match by construction.
        unsafe {
            match kernels {
                Grouped::Vnni => put_group(crate::vnni::group::<G>(kind, w.order == SumOrder::Blocks, packed, ahead, xs), w, g, ti, y),
                Grouped::Avx2 => put_group(crate::avx2::group::<G>(kind, w.order == SumOrder::Blocks, packed, ahead, xs), w, g, ti, y),
            }
        }
    }
    for t0 in (0..t).step_by(tile) {
        let t1 = (t0 + tile).min(t);
        // Prefetch distance of pass k (1-based) over a row group. One pass streams the group a
        // short way ahead. With P passes only the first would read memory, which then sits idle
        // while the others run from L1; so pass k asks for the bytes k/P of a row group ahead:
        // by the last pass the next group has been requested, spread evenly over the passes
        // (measured on batched decoding of 8 sequences, one thread, VNNI: +6% in llama.cpp's
        // order, 4 passes; +9% in the block order, 2 passes).
        let passes = (t1 - t0).div_ceil(step);
        let ahead = |k: usize| if passes == 1 { kernels.prefetch_bytes() } else { group_bytes * k / passes };
        for g in groups.clone() {
            let (mut ti, mut k) = (t0, 1);
            while ti + step <= t1 {
                match step {
                    8 => call::<8>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
                    4 => call::<4>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
                    _ => call::<2>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
                }
                ti += step;
                k += 1;
            }
            if t1 - ti >= 4 {
                call::<4>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y);
                ti += 4;
            }
            match t1 - ti {
                0 => {}
                1 => call::<1>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
                2 => call::<2>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
                _ => call::<3>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
            }
        }
    }
}

/// Writes a row group's results for G tokens from `ti`: v (G, R) into y (T, N).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn put_group<const R: usize, const G: usize>(v: [[f32; R]; G], w: &MatRef, g: usize, ti: usize, y: Out) {
    for (j, rows) in v.iter().enumerate() {
        for (r, &value) in rows.iter().enumerate() {
            // SAFETY: each thread owns whole row groups; indices are inside y (T, N).
            unsafe { y.put((ti + j) * w.rows + g * R + r, value) };
        }
    }
}

/// [`matmul_groups`] with the VNNI kernels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
unsafe fn matmul_groups_vnni(w: &MatRef, kind: crate::groups::Kind, xq: &[BlockQ8], t: usize, groups: std::ops::Range<usize>, y: Out) {
    unsafe { matmul_groups(Grouped::Vnni, w, kind, xq, t, groups, y) }
}

/// [`matmul_groups`] with the AVX2 kernels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matmul_groups_avx2(w: &MatRef, kind: crate::groups::Kind, xq: &[BlockQ8], t: usize, groups: std::ops::Range<usize>, y: Out) {
    unsafe { matmul_groups(Grouped::Avx2, w, kind, xq, t, groups, y) }
}

fn check_shapes(w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, y: &[f32]) {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(y.len(), t * n, "matmul: y has {} values, expected T*N = {t}*{n}", y.len());
    assert_eq!(w.data.len(), n * w.row_bytes(), "matmul: weight bytes do not match its shape");
    if w.format.uses_q8_activations() {
        assert_eq!(xq.len(), t * k / QK, "matmul: quantized activations have the wrong length");
    } else {
        assert_eq!(x.len(), t * k, "matmul: activations have the wrong length");
    }
}

/// The grouped kernels and row-group layout `w` runs on at `level`, if any (its weights were
/// packed for it).
#[cfg(target_arch = "x86_64")]
fn groups_of(level: Level, w: &MatRef) -> Option<(Grouped, crate::groups::Kind)> {
    let kernels = match level {
        Level::Avx512Vnni => Grouped::Vnni,
        Level::Avx2 => Grouped::Avx2,
        _ => return None,
    };
    if w.packed.is_some() {
        group_kind(w.format).map(|kind| (kernels, kind))
    } else {
        None
    }
}

/// Rows per unit of work at `level`: a row group on the grouped kernels, else one row.
fn row_unit(level: Level, w: &MatRef) -> usize {
    #[cfg(target_arch = "x86_64")]
    if let Some((kernels, _)) = groups_of(level, w) {
        return kernels.rows();
    }
    let _ = (level, w);
    1
}

/// The rows of `w` thread i of nt computes at `level`: whole row groups on the grouped kernels
/// (the rows after the last whole group go to the last thread, as the second range), else an
/// even split.
fn owned_rows(level: Level, w: &MatRef, i: usize, nt: usize) -> [std::ops::Range<usize>; 2] {
    let unit = row_unit(level, w);
    let units = split_range(w.rows / unit, i, nt);
    let rest = if i + 1 == nt { w.rows / unit * unit..w.rows } else { 0..0 };
    [unit * units.start..unit * units.end, rest]
}

/// Thread i's share of `w` against the activations, written into `y`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_share(level: Level, w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, y: Out, i: usize, nt: usize) {
    let [main, rest] = owned_rows(level, w, i, nt);
    #[cfg(target_arch = "x86_64")]
    if let Some((kernels, kind)) = groups_of(level, w) {
        let g = kernels.rows();
        // SAFETY: Level::Avx512Vnni is only chosen when the CPU has the features of `vnni` (and
        // so AVX2, FMA and F16C), Level::Avx2 when it has AVX2, FMA and F16C.
        unsafe {
            match kernels {
                Grouped::Vnni => matmul_groups_vnni(w, kind, xq, t, main.start / g..main.end / g, y),
                Grouped::Avx2 => matmul_groups_avx2(w, kind, xq, t, main.start / g..main.end / g, y),
            }
            matmul_rows_avx2(w, x, xq, t, rest, y);
        }
        return;
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both levels are only chosen when the CPU has AVX2, FMA and F16C.
        Level::Avx2 | Level::Avx512Vnni => unsafe { matmul_rows_avx2(w, x, xq, t, main, y) },
        _ => matmul_rows(w, x, xq, t, main, y),
    }
}

/// w (N, K), x (T, K) f32 with xq (T, K/32) its 8-bit blocks -> y (T, N).
///
/// `xq` is read for block formats and `x` for float formats; the other may be empty. Rows of `w`
/// are split statically over the pool's threads; each thread reads its weight rows once and
/// reuses them for all T tokens.
pub fn matmul(pool: &ThreadPool, level: Level, w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, y: &mut [f32]) {
    matmul_group(pool, level, [(*w, y)], x, xq, t);
}

/// y (T, N) += w (N, K) . x: the output projections add into the residual stream directly, with
/// no buffer and no separate pass (the same single rounding as computing the product and then
/// adding it).
pub fn matmul_add(pool: &ThreadPool, level: Level, w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, y: &mut [f32]) {
    check_shapes(w, x, xq, t, y);
    let out = Out { ptr: SharedMut::new(y), add: true };
    pool.run(&|i, nt| rows_share(level, w, x, xq, t, out, i, nt));
}

/// The output head for greedy decoding: y (N) = w (N, K) . x for one token, and the index of the
/// largest value (the first on ties; NaN never wins), found by each thread over the rows it just
/// computed, so the logits are not read again in a separate pass. `best` holds one slot per
/// thread of the pool; only the threads the job ran on write theirs.
#[allow(clippy::too_many_arguments)]
pub fn matmul_argmax(pool: &ThreadPool, level: Level, w: &MatRef, x: &[f32], xq: &[BlockQ8], y: &mut [f32], best: &mut [(f32, u32)]) -> u32 {
    check_shapes(w, x, xq, 1, y);
    assert!(best.len() >= pool.n_threads(), "matmul_argmax: one slot per thread needed");
    let out = Out { ptr: SharedMut::new(y), add: false };
    let slots = SharedMut::new(best);
    let n_ran = pool.run(&|i, nt| {
        rows_share(level, w, x, xq, 1, out, i, nt);
        let mut top = (f32::NEG_INFINITY, u32::MAX);
        for rows in owned_rows(level, w, i, nt) {
            // SAFETY: these rows were written by this thread in this job.
            let ys = unsafe { out.ptr.slice(rows.start, rows.len()) };
            for (r, &v) in rows.zip(ys.iter()) {
                if v > top.0 || (top.1 == u32::MAX && !v.is_nan()) {
                    top = (v, r as u32);
                }
            }
        }
        // SAFETY: slot i belongs to thread i.
        unsafe { slots.write(i, top) };
    });
    // Threads own increasing rows, so a strict comparison keeps the first of equal maxima.
    let mut top = (f32::NEG_INFINITY, u32::MAX);
    for &(v, r) in &best[..n_ran] {
        if r != u32::MAX && (v > top.0 || top.1 == u32::MAX) {
            top = (v, r);
        }
    }
    if top.1 == u32::MAX {
        0
    } else {
        top.1
    }
}

/// Several matrices against the same activations in one pass of the pool (one barrier instead of
/// one per matrix): `(w_j (N_j, K), y_j (T, N_j))` for each j, as [`matmul`].
pub fn matmul_group<const N: usize>(pool: &ThreadPool, level: Level, outputs: [(MatRef, &mut [f32]); N], x: &[f32], xq: &[BlockQ8], t: usize) {
    for (w, y) in outputs.iter() {
        check_shapes(w, x, xq, t, y);
    }
    let jobs = outputs.map(|(w, y)| (w, Out { ptr: SharedMut::new(y), add: false }));
    let jobs = &jobs;
    pool.run(&|i, nt| {
        for (w, y) in jobs {
            rows_share(level, w, x, xq, t, *y, i, nt);
        }
    });
}

/// The feed-forward input pair with SwiGLU fused: gate = silu(w_gate . x) * (w_up . x), (T, F).
///
/// Each thread computes its rows of both products and applies SwiGLU to them in place, so the
/// activation is done before the pool's one barrier (when gate and up split their rows over the
/// threads differently, the activation waits for a second pass); `up` (T, F) is scratch.
#[allow(clippy::too_many_arguments)]
pub fn matmul_swiglu(
    pool: &ThreadPool,
    level: Level,
    w_gate: &MatRef,
    w_up: &MatRef,
    x: &[f32],
    xq: &[BlockQ8],
    t: usize,
    gate: &mut [f32],
    up: &mut [f32],
) {
    swiglu_with(pool, level, w_gate, w_up, x, xq, t, gate, up, None)
}

/// [`matmul_swiglu`] that also writes gate's 8-bit blocks, gate_q (T, F/32), as
/// [`quantize_rows_q8`](crate::quant::quantize_rows_q8) would: the down projection's input is
/// ready at the same barrier when each thread's rows are whole blocks.
#[allow(clippy::too_many_arguments)]
pub fn matmul_swiglu_q8(
    pool: &ThreadPool,
    level: Level,
    w_gate: &MatRef,
    w_up: &MatRef,
    x: &[f32],
    xq: &[BlockQ8],
    t: usize,
    gate: &mut [f32],
    up: &mut [f32],
    gate_q: &mut [BlockQ8],
) {
    assert_eq!(gate_q.len() * QK, gate.len(), "matmul_swiglu_q8: gate_q must hold gate's blocks");
    swiglu_with(pool, level, w_gate, w_up, x, xq, t, gate, up, Some(gate_q))
}

#[allow(clippy::too_many_arguments)]
fn swiglu_with(
    pool: &ThreadPool,
    level: Level,
    w_gate: &MatRef,
    w_up: &MatRef,
    x: &[f32],
    xq: &[BlockQ8],
    t: usize,
    gate: &mut [f32],
    up: &mut [f32],
    gate_q: Option<&mut [BlockQ8]>,
) {
    check_shapes(w_gate, x, xq, t, gate);
    check_shapes(w_up, x, xq, t, up);
    assert_eq!(w_gate.rows, w_up.rows, "matmul_swiglu: gate and up have different widths");
    let f = w_gate.rows;
    let (g, u) = (Out { ptr: SharedMut::new(gate), add: false }, Out { ptr: SharedMut::new(up), add: false });
    // Fused only when each thread computes the same rows of both products (same format and
    // packing); otherwise the activation waits for a barrier. Quantized in the same pass only
    // when every thread's rows are whole blocks. Both depend on the threads the job runs on,
    // which the pool decides (the caller alone while the machine is contended): `(same_rows,
    // fuse_q)` for `nt` threads.
    let whole_blocks = |r: &std::ops::Range<usize>| r.is_empty() || (r.start.is_multiple_of(QK) && r.end.is_multiple_of(QK));
    let fusion = |nt: usize| {
        let same_rows = (0..nt).all(|i| owned_rows(level, w_gate, i, nt) == owned_rows(level, w_up, i, nt));
        (same_rows, same_rows && (0..nt).all(|i| owned_rows(level, w_gate, i, nt).iter().all(whole_blocks)))
    };
    let gq = gate_q.map(SharedMut::new);
    let activate = |rows: [std::ops::Range<usize>; 2], quantize: bool| {
        for rows in rows {
            for ti in 0..t {
                // SAFETY: thread i owns rows `rows` of every token of both buffers (computed by
                // this thread, or by any thread before the barrier), and their blocks.
                let (gs, us) = unsafe { (g.ptr.slice(ti * f + rows.start, rows.len()), u.ptr.slice(ti * f + rows.start, rows.len())) };
                crate::ops::swiglu_inplace(gs, us);
                if let (true, Some(gq)) = (quantize, gq) {
                    let q = unsafe { gq.slice((ti * f + rows.start) / QK, rows.len() / QK) };
                    crate::quant::quantize_row_q8(gs, q);
                }
            }
        }
    };
    let n_ran = pool.run(&|i, nt| {
        rows_share(level, w_gate, x, xq, t, g, i, nt);
        rows_share(level, w_up, x, xq, t, u, i, nt);
        let (same_rows, fuse_q) = fusion(nt);
        if same_rows {
            activate(owned_rows(level, w_gate, i, nt), fuse_q);
        }
    });
    let (same_rows, fuse_q) = fusion(n_ran);
    if !same_rows {
        pool.run(&|i, nt| activate([split_range(f, i, nt), 0..0], false));
    }
    if let (false, Some(gq)) = (fuse_q, gq) {
        // SAFETY: the pool has finished; this is the only user of gate and gate_q now.
        let (gate, gate_q) = unsafe { (g.ptr.slice(0, t * f), gq.slice(0, t * f / QK)) };
        crate::quant::quantize_rows_q8(pool, gate, gate_q, t);
    }
}

#[cfg(test)]
mod tests;
