//! Several sequences in one forward call over a shared pool of KV blocks: each sequence's logits
//! must be exactly those of running it alone, forks must share blocks until they write, and a
//! full pool must be a clean error.

use gguf::GgufFile;
use model::testing::{tiny_llama_gguf, TinySpec};
use model::{KvPool, KvType, Llama, Logits, ModelError, SeqTokens, KV_BLOCK};

fn load(threads: usize) -> Llama {
    let spec = TinySpec { seed: 7, ..TinySpec::default() };
    Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(&spec)).unwrap(), threads).unwrap()
}

/// The model of `load`, 128 wide (heads of 32) and storing its caches as `kv_type`.
fn load_kv(threads: usize, kv_type: KvType) -> Llama {
    let spec = TinySpec { seed: 7, n_embd: 128, ..TinySpec::default() };
    let mut model = Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(&spec)).unwrap(), threads).unwrap();
    model.set_kv_type(kv_type).unwrap();
    model
}

fn prompt(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) % 250 + 3).collect()
}

/// Logits rows of running `prompt` then each of `steps` alone, one token per step.
fn alone(model: &Llama, prompt: &[u32], steps: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache(128).unwrap();
    let mut scratch = model.new_scratch(16, 128).unwrap();
    let mut rows = vec![model.forward(prompt, &mut cache, &mut scratch, Logits::Last).unwrap().to_vec()];
    for &t in steps {
        rows.push(model.forward(&[t], &mut cache, &mut scratch, Logits::Last).unwrap().to_vec());
    }
    rows
}

#[test]
fn a_sequence_in_a_batch_gets_the_bits_it_gets_alone() {
    let models = [1, 2].map(|threads| (threads, load(threads)));
    let q8 = [1, 2].map(|threads| (threads, load_kv(threads, KvType::Q8_0)));
    for (threads, model) in models.into_iter().chain(q8) {
        let v = model.config.n_vocab;
        // Prompts of different lengths, across block boundaries; longer than the batch of 16 too.
        let prompts = [prompt(5, 1), prompt(33, 2), prompt(1, 3), prompt(20, 4)];
        let steps: Vec<Vec<u32>> = (0..4).map(|i| prompt(6, 10 + i)).collect();
        let want: Vec<Vec<Vec<f32>>> = prompts.iter().zip(&steps).map(|(p, s)| alone(&model, p, s)).collect();

        let mut pool = model.new_pool(4, 128).unwrap();
        let mut scratch = model.new_scratch(16, 128).unwrap();
        let mut seqs: Vec<_> = (0..4).map(|_| pool.sequence()).collect();
        // Prompt 0 alone; then prompt 1 (chunked by the scratch) alone.
        for (i, seq) in seqs.iter_mut().enumerate().take(2) {
            let p = &prompts[i];
            let mut done = 0;
            for chunk in p.chunks(16) {
                done += chunk.len();
                let logits = if done == p.len() { Logits::Last } else { Logits::Skip };
                let out = model.forward_seqs(&mut [SeqTokens { seq, tokens: chunk, logits }], &mut pool, &mut scratch).unwrap();
                if done == p.len() {
                    assert_eq!(out, &want[i][0][..], "prompt {i}");
                } else {
                    assert!(out.is_empty());
                }
            }
        }
        // A mixed call: prompts 2 and 3 prefill while sequences 0 and 1 decode their first step.
        {
            let [s0, s1, s2, s3] = &mut seqs[..] else { unreachable!() };
            let mut batch = [
                SeqTokens { seq: s0, tokens: &steps[0][..1], logits: Logits::Last },
                SeqTokens { seq: s2, tokens: &prompts[2], logits: Logits::Last },
                SeqTokens { seq: s1, tokens: &steps[1][..1], logits: Logits::Last },
                SeqTokens { seq: s3, tokens: &prompts[3][..12], logits: Logits::Skip },
            ];
            let out = model.forward_seqs(&mut batch, &mut pool, &mut scratch).unwrap();
            assert_eq!(out.len(), 3 * v);
            assert_eq!(&out[..v], &want[0][1][..]);
            assert_eq!(&out[v..2 * v], &want[2][0][..]);
            assert_eq!(&out[2 * v..], &want[1][1][..]);
            let out =
                model.forward_seqs(&mut [SeqTokens { seq: s3, tokens: &prompts[3][12..], logits: Logits::Last }], &mut pool, &mut scratch).unwrap();
            assert_eq!(out, &want[3][0][..]);
        }
        // Decode steps with every sequence in one call; sequence k is `done` steps in.
        let mut done = [1usize, 1, 0, 0];
        for round in 0..6 {
            let mut batch = Vec::new();
            let mut who = Vec::new();
            for (k, seq) in seqs.iter_mut().enumerate() {
                // Sequence 2 sits out round 3: a smaller batch must not change anyone.
                if done[k] < 6 && !(k == 2 && round == 3) {
                    who.push(k);
                    batch.push(SeqTokens { seq, tokens: &steps[k][done[k]..done[k] + 1], logits: Logits::Last });
                }
            }
            if batch.is_empty() {
                break;
            }
            let out = model.forward_seqs(&mut batch, &mut pool, &mut scratch).unwrap();
            for (row, &k) in who.iter().enumerate() {
                done[k] += 1;
                assert_eq!(&out[row * v..(row + 1) * v], &want[k][done[k]][..], "threads {threads} seq {k} step {}", done[k]);
            }
        }
        for seq in &mut seqs {
            pool.release(seq);
        }
        assert_eq!(pool.free_blocks(), pool.n_blocks());
    }
}

#[test]
fn forks_share_blocks_and_copy_one_on_first_write() {
    for model in [load(2), load_kv(2, KvType::Q8_0)] {
        forks_case(&model);
    }
}

fn forks_case(model: &Llama) {
    let p = prompt(40, 9); // one full block and 8 positions of a second
    let mut pool = model.new_pool(3, 128).unwrap();
    let mut scratch = model.new_scratch(64, 128).unwrap();
    let mut a = pool.sequence();
    model.forward_seqs(&mut [SeqTokens { seq: &mut a, tokens: &p, logits: Logits::Skip }], &mut pool, &mut scratch).unwrap();
    let used = pool.n_blocks() - pool.free_blocks();
    assert_eq!(used, 2);
    let mut b = pool.fork(&a);
    assert_eq!(pool.n_blocks() - pool.free_blocks(), 2, "a fork takes no blocks");
    assert_eq!(b.blocks(), a.blocks());
    let (ta, tb) = (prompt(3, 20), prompt(3, 21));
    let mut got = (Vec::new(), Vec::new());
    for i in 0..3 {
        let mut batch = [
            SeqTokens { seq: &mut a, tokens: &ta[i..i + 1], logits: Logits::Last },
            SeqTokens { seq: &mut b, tokens: &tb[i..i + 1], logits: Logits::Last },
        ];
        let out = model.forward_seqs(&mut batch, &mut pool, &mut scratch).unwrap();
        let v = model.config.n_vocab;
        got.0.push(out[..v].to_vec());
        got.1.push(out[v..].to_vec());
    }
    // The shared partial block was copied once; the full first block is still shared.
    assert_eq!(pool.n_blocks() - pool.free_blocks(), 3);
    assert_eq!(a.blocks()[0], b.blocks()[0]);
    assert_ne!(a.blocks()[1], b.blocks()[1]);
    assert_eq!(got.0, alone(model, &p, &ta)[1..].to_vec());
    assert_eq!(got.1, alone(model, &p, &tb)[1..].to_vec());
    // Truncating back into the shared prefix and writing again copies nothing that is shared.
    pool.truncate(&mut b, KV_BLOCK - 1);
    assert_eq!(pool.n_blocks() - pool.free_blocks(), 2);
    model.forward_seqs(&mut [SeqTokens { seq: &mut b, tokens: &tb[..1], logits: Logits::Skip }], &mut pool, &mut scratch).unwrap();
    assert_ne!(a.blocks()[0], b.blocks()[0], "writing into a shared block copies it");
    pool.release(&mut a);
    pool.release(&mut b);
    assert_eq!(pool.free_blocks(), pool.n_blocks());
}

#[test]
fn a_full_pool_is_an_error_that_names_it() {
    let model = load(1);
    let mut pool = KvPool::new(model.config.n_layer, model.config.n_head_kv, model.config.head_dim, 2, 128, model::KvType::F16).unwrap();
    let mut scratch = model.new_scratch(128, 128).unwrap();
    let mut a = pool.sequence();
    let err =
        model.forward_seqs(&mut [SeqTokens { seq: &mut a, tokens: &prompt(80, 1), logits: Logits::Last }], &mut pool, &mut scratch).unwrap_err();
    assert!(matches!(err, ModelError::OutOfKvBlocks { blocks: 2, .. }), "{err}");
    assert!(err.to_string().contains("out of blocks"), "{err}");
    assert_eq!(a.len(), 0, "a failed call adds no positions");
    // Past the sequence limit: the context error.
    let err =
        model.forward_seqs(&mut [SeqTokens { seq: &mut a, tokens: &prompt(129, 1), logits: Logits::Last }], &mut pool, &mut scratch).unwrap_err();
    assert!(matches!(err, ModelError::BatchTooLarge { .. } | ModelError::ContextFull { .. }), "{err}");
    // An empty segment or batch is refused.
    assert!(matches!(model.forward_seqs(&mut [], &mut pool, &mut scratch), Err(ModelError::EmptyBatch)));
    pool.release(&mut a);
    let ok = model.forward_seqs(&mut [SeqTokens { seq: &mut a, tokens: &prompt(60, 1), logits: Logits::Last }], &mut pool, &mut scratch);
    assert!(ok.is_ok(), "the pool is usable after the error");
}

/// The server cuts prompts into chunks that depend on what else is running, and reuses cached
/// prefix blocks another request computed: a position's keys, values and logits must not depend
/// on how the tokens before it were cut into forward calls (in the block order, the default, at
/// every kernel level).
#[test]
fn prefill_chunking_never_changes_the_bits() {
    let p = prompt(75, 31);
    for level in kernels::matmul::Level::all_available() {
        let mut model = load(2);
        model.set_level(level);
        model.set_sum_order(kernels::SumOrder::Blocks);
        let v = model.config.n_vocab;
        let mut want: Option<Vec<f32>> = None;
        for chunk in [75, 1, 7, 32, 40] {
            let mut pool = model.new_pool(1, 128).unwrap();
            let mut scratch = model.new_scratch(75, 128).unwrap();
            let mut seq = pool.sequence();
            let mut rows = Vec::new();
            for c in p.chunks(chunk) {
                let out = model.forward_seqs(&mut [SeqTokens { seq: &mut seq, tokens: c, logits: Logits::All }], &mut pool, &mut scratch).unwrap();
                rows.extend_from_slice(out);
            }
            // And one decode step after the prompt.
            let out = model.forward_seqs(&mut [SeqTokens { seq: &mut seq, tokens: &[5], logits: Logits::Last }], &mut pool, &mut scratch).unwrap();
            rows.extend_from_slice(out);
            assert_eq!(rows.len(), 76 * v);
            match &want {
                None => want = Some(rows),
                Some(w) => assert!(w == &rows, "{level:?}: chunks of {chunk} changed the logits"),
            }
        }
    }
}
