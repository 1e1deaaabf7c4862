//! The rate of the AMX bf16 product (`kernels::bf16mat::matmul_bf16`), rounding of the inputs
//! included, on random-looking data:
//!
//! ```text
//! cargo run --release -p kernels --example bf16_bench -- T N K THREADS
//! cargo run --release -p kernels --example bf16_bench -- 1024 1536 576 2    # SmolLM2's up map, a training batch
//! ```
//!
//! Prints milliseconds per product and GFLOP/s (2 T N K per product), the median of 20 after a
//! warm-up. Needs a CPU with AMX (Intel Xeon Sapphire Rapids and later).

use kernels::bf16mat::{amx_available, matmul_bf16, Bf16Rows, PackedBf16};
use kernels::ThreadPool;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let [t, n, k, threads] = args[..] else {
        eprintln!("usage: bf16_bench T N K THREADS");
        std::process::exit(2);
    };
    if !amx_available() {
        eprintln!("this CPU or OS has no AMX bf16 products");
        std::process::exit(1);
    }
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let x: Vec<f32> = (0..t * k).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
    let packed = PackedBf16::pack(&w, n, k);
    let pool = ThreadPool::new(threads);
    let mut y = vec![0f32; t * n];
    let mut scratch = Bf16Rows::new();
    scratch.ensure(t, k);
    matmul_bf16(&pool, &packed, None, &x, t, &mut y, &mut scratch);
    let mut times: Vec<f64> = (0..20)
        .map(|_| {
            let start = std::time::Instant::now();
            matmul_bf16(&pool, &packed, None, &x, t, &mut y, &mut scratch);
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("T={t} N={n} K={k} threads={threads}: {:.3} ms, {:.0} GFLOP/s", median * 1e3, 2.0 * (t * n * k) as f64 / median / 1e9);
}
