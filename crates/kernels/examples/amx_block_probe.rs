use kernels::bf16mat::*;
fn main() {
    let k: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let w: Vec<f32> = (0..32 * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let x: Vec<f32> = (0..32 * k).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
    let p = PackedBf16::pack(&w, 32, k);
    let mut xb = Bf16Rows::new();
    round_rows(&x, k, &mut xb);
    let mut tiles = AmxTiles::open().unwrap();
    let mut out = [[0f32; 256]; 4];
    let reps = 200000;
    let st = std::time::Instant::now();
    for _ in 0..reps {
        tiles.block(&p, 0, &xb, 0, &mut out);
    }
    let sec = st.elapsed().as_secs_f64() / reps as f64;
    println!(
        "K={k}: {:.1} ns per 32x32 block, {:.0} GFLOP/s, {:.1} ns per tdp",
        sec * 1e9,
        2.0 * (32 * 32 * k) as f64 / sec / 1e9,
        sec * 1e9 / (4 * k / 32) as f64
    );
}
