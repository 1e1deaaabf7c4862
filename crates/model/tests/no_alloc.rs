//! The per-token path allocates nothing: a counting global allocator watches decode steps and a
//! prefill after the model, cache and scratch exist.

use gguf::GgufFile;
use model::testing::{tiny_llama_gguf, TinySpec};
use model::{Llama, Logits};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is global and counts every thread, the test harness's too (it allocates when it
/// reports a finished test): so this file holds one test, which runs both checks in turn.
#[test]
fn per_token_paths_allocate_nothing() {
    decode_and_prefill_allocate_nothing();
    long_decode_steps_split_over_threads_allocate_nothing();
}

fn decode_and_prefill_allocate_nothing() {
    // Two threads, so the pool's job hand-off is part of what is measured.
    let model = Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(&TinySpec::default())).unwrap(), 2).unwrap();
    let mut cache = model.new_cache(64).unwrap();
    let mut scratch = model.new_scratch(16, 64).unwrap();
    let prompt: Vec<u32> = (5..21).collect();
    // Warm-up: first use of everything.
    model.forward(&prompt, &mut cache, &mut scratch, Logits::Last).unwrap();
    cache.clear();

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    model.forward(&prompt, &mut cache, &mut scratch, Logits::All).unwrap();
    let mut next = 7u32;
    for _ in 0..20 {
        let logits = model.forward(&[next], &mut cache, &mut scratch, Logits::Last).unwrap();
        next = kernels::ops::argmax(logits) as u32;
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "{} allocations during 1 prefill and 20 decode steps", after - before);
    // The counter does count: one box is one allocation.
    drop(std::hint::black_box(Box::new(1u64)));
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), after + 1);
}

fn long_decode_steps_split_over_threads_allocate_nothing() {
    // Past 256 positions a decode step's attention spreads each token's chunks over the threads;
    // their partials live in buffers that grow once and are reused.
    let model = Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(&TinySpec::default())).unwrap(), 2).unwrap();
    let mut cache = model.new_cache(640).unwrap();
    let mut scratch = model.new_scratch(64, 640).unwrap();
    let prompt: Vec<u32> = (0..560).map(|i| 3 + i % 200).collect();
    for part in prompt.chunks(64) {
        model.forward(part, &mut cache, &mut scratch, Logits::Last).unwrap();
    }
    // Warm-up: the first long decode step grows the buffers.
    model.forward(&[7], &mut cache, &mut scratch, Logits::Last).unwrap();

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut next = 7u32;
    for _ in 0..40 {
        let logits = model.forward(&[next], &mut cache, &mut scratch, Logits::Last).unwrap();
        next = kernels::ops::argmax(logits) as u32;
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "{} allocations during 40 decode steps at 561..600", after - before);
}
