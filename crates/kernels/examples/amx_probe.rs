use kernels::bf16mat::*;
use kernels::ThreadPool;
fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (t, n, k, threads) = (args[0], args[1], args[2], args[3]);
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let x: Vec<f32> = (0..t * k).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
    let p = PackedBf16::pack(&w, n, k);
    let pool = ThreadPool::new(threads);
    let mut y = vec![0f32; t * n];
    let mut s = Bf16Rows::new();
    s.ensure(t, k);
    matmul_bf16(&pool, &p, None, &x, t, &mut y, &mut s);
    let reps = 20;
    let st = std::time::Instant::now();
    for _ in 0..reps {
        matmul_bf16(&pool, &p, None, &x, t, &mut y, &mut s);
    }
    let sec = st.elapsed().as_secs_f64() / reps as f64;
    println!("T={t} N={n} K={k} threads={threads}: {:.3} ms, {:.0} GFLOP/s", sec * 1e3, 2.0 * (t * n * k) as f64 / sec / 1e9);
}
#[allow(dead_code)]
fn unused() {}
