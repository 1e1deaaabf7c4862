//! Which kernels run: the instruction-set [`Level`] (from the CPU, capped by `FERROLM_KERNELS`) and
//! the [`SumOrder`] of quantized products (`FERROLM_SUM_ORDER`), and [`check_env`] to reject
//! values of those variables that are not known.

/// The instruction-set level kernels are compiled for, chosen once at run time. Levels are
/// ordered: each can run everything the one below it runs (AVX-512 VNNI machines without AVX-VNNI,
/// such as Zen 4, exist: the kernels of [`Level::Avx512Vnni`] use only AVX-512 and AVX2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable code (the reference).
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// AVX2 with AVX-VNNI (the 256-bit `vpdpbusd` of Intel Alder Lake and later and of AMD Zen 5):
    /// the AVX2 kernels with one instruction per four products; everything else as [`Level::Avx2`].
    AvxVnni,
    /// x86-64 with AVX-512 (F, BW, VL, DQ) and VNNI: 16 weight rows per instruction.
    Avx512Vnni,
}

/// The environment variables the kernels read and the values they know; an empty value counts as
/// unset. Any other value:
/// - stops the `ferrolm` command line before it loads a model, with the message of [`check_env`]
///   (the variable, its value and the known values);
/// - is read as unset by [`Level::detect`] and [`SumOrder::from_env`] themselves, which do not
///   check: a program using this library directly calls [`check_env`] first to reject it too.
pub const ENV_SETTINGS: [(&str, &[&str]); 2] = [("FERROLM_KERNELS", &["scalar", "avx2", "avxvnni"]), ("FERROLM_SUM_ORDER", &["llama-cpp", "blocks"])];

/// Checks the variables of [`ENV_SETTINGS`], so that a caller can reject a misspelt value instead
/// of running on the default: the error, one line, names the first variable set to an unknown
/// value, the value and the known ones. The command line calls it before loading a model; the
/// readers ([`Level::detect`], [`SumOrder::from_env`]) do not.
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
    /// The best level this machine supports, capped by `FERROLM_KERNELS`: `scalar` gives the
    /// scalar reference, `avx2` at most AVX2 (the scalar reference on a CPU without it), `avxvnni`
    /// at most AVX-VNNI (AVX2 on a CPU with AVX-512 VNNI but no AVX-VNNI, such as Zen 4). Unset,
    /// empty or unknown values give the best level: unknown values are rejected by [`check_env`],
    /// not here.
    pub fn detect() -> Level {
        let best = Level::best_available();
        match std::env::var("FERROLM_KERNELS").as_deref() {
            Ok("scalar") => Level::Scalar,
            Ok("avx2") => best.min(Level::Avx2),
            Ok("avxvnni") if Level::avx_vnni_available() => Level::AvxVnni,
            Ok("avxvnni") => best.min(Level::Avx2),
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
            if Level::avx_vnni_available() {
                return Level::AvxVnni;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                return Level::Avx2;
            }
        }
        Level::Scalar
    }

    /// Whether the CPU has AVX2, FMA, F16C and AVX-VNNI ([`Level::AvxVnni`]).
    fn avx_vnni_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        return crate::avx2::vnni_available();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Every level this machine can run (for tests that compare them), lowest first.
    pub fn all_available() -> Vec<Level> {
        let best = Level::best_available();
        let mut levels = vec![Level::Scalar];
        if best >= Level::Avx2 {
            levels.push(Level::Avx2);
        }
        if Level::avx_vnni_available() {
            levels.push(Level::AvxVnni);
        }
        if best == Level::Avx512Vnni {
            levels.push(Level::Avx512Vnni);
        }
        levels
    }

    /// Whether block-format weights should be repacked into row groups ([`pack_for`](super::pack_for)) at load
    /// time.
    pub fn wants_row_groups(self) -> bool {
        self >= Level::Avx2
    }
}

/// How a quantized dot product adds up its blocks. Both orders sum each block's integer products
/// exactly; they differ in where the float roundings fall. Each product rounds its activations
/// to int8, where a one-ulp change can flip a rounding, so 30 layers later the logits of the two
/// orders differ by about 0.17 on average (up to 1.5; measured on 480 positions of the default
/// model), greedy choices can differ at near-ties, and perplexity moves by a few tenths of a
/// percent on a short text: as much as llama.cpp's own AVX2 and AVX-512 builds differ.
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
    /// lanes are reduced at the end of the row (see `LANES` in `reference.rs`). Logits are
    /// bit-identical to llama.cpp's x86 build and greedy output token-exact with it. Chosen with
    /// `FERROLM_SUM_ORDER=llama-cpp` or `--sum-order llama-cpp`; the golden tests pin it.
    LlamaCpp,
}

impl SumOrder {
    /// The order `FERROLM_SUM_ORDER` asks for: `llama-cpp` gives [`SumOrder::LlamaCpp`]; `blocks`,
    /// unset, empty or unknown values the default, [`SumOrder::Blocks`] (unknown values are
    /// rejected by [`check_env`], not here).
    pub fn from_env() -> SumOrder {
        match std::env::var("FERROLM_SUM_ORDER").as_deref() {
            Ok("llama-cpp") => SumOrder::LlamaCpp,
            _ => SumOrder::Blocks,
        }
    }
}
