"""Golden cases for ferrolm's beam-search state machine (crates/generate/src/beam.rs) from Hugging Face
transformers' `generate(num_beams=...)` over a fake model: its logits are a splitmix64 hash of the
generated tokens, bit-exact in f32 and reproduced by `hash_model` in beam_tests.rs, with the EOS
logits raised by a bias so that hypotheses end both ways.

  /work/peers/hf/bin/python make_beam_logic_fixtures.py N SEED > cases.json   # N random cases
  /work/peers/hf/bin/python make_beam_logic_fixtures.py N SEED --rust 0,5,12  # Rust table rows

The 16 rows of HF_CASES in beam_tests.rs: N=500 SEED=1 --rust
0,142,231,48,53,148,194,5,12,8,163,246,26,11,6,58 (cases 0..246 were picked because mutants of beam.rs
fail them; the last four add length_penalty / early_stopping combinations).
"""
import json, random, sys
import numpy as np, torch, transformers
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

M = (1 << 64) - 1
def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)

def hash_logits(seed, tokens, vocab, eos, bias):
    state = seed
    for t in tokens:
        state = splitmix64(state ^ ((t * 0x9E3779B9) & M))
    out = np.empty(vocab, dtype=np.float32)
    for i in range(vocab):
        state = splitmix64(state)
        out[i] = np.float32((state >> 40) / float(1 << 24) * 8.0 - 4.0)
    for e in eos:
        out[e] = np.float32(out[e] + np.float32(bias))
    return out

PROMPT = 1
class Fake(LlamaForCausalLM):
    def forward(self, input_ids=None, **kw):
        rows = [hash_logits(self.case["seed"], input_ids[r, PROMPT:].tolist(), self.config.vocab_size,
                            self.case["eos"], self.case["bias"]) for r in range(input_ids.shape[0])]
        logits = torch.from_numpy(np.stack(rows))[:, None, :]
        return CausalLMOutputWithPast(logits=logits)

rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
cases = []
for n in range(int(sys.argv[1])):
    num_beams = rng.randint(2, 4)
    vocab = rng.randint(12, 30)
    eos = rng.sample(range(vocab), rng.randint(1, 2))
    case = dict(seed=rng.randrange(1 << 32), vocab=vocab, num_beams=num_beams, eos=eos,
                bias=rng.choice([0.0, 1.0, 2.0, 3.0]),
                length_penalty=rng.choice([0.0, 0.5, 1.0, 2.0, -1.0]),
                early_stopping=rng.choice([True, False, "never"]),
                num_return_sequences=rng.randint(1, num_beams), max_new_tokens=rng.randint(1, 8))
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                      num_key_value_heads=1, intermediate_size=8)
    model = Fake(cfg).eval()
    model.case = case
    pad = vocab - 1 if (vocab - 1) not in eos else vocab - 2
    with torch.no_grad():
        out = model.generate(torch.tensor([[PROMPT]]), do_sample=False, num_beams=num_beams,
                             max_new_tokens=case["max_new_tokens"], length_penalty=case["length_penalty"],
                             early_stopping=case["early_stopping"],
                             num_return_sequences=case["num_return_sequences"], eos_token_id=eos,
                             pad_token_id=pad, use_cache=False, output_scores=True,
                             return_dict_in_generate=True)
    lens = (out.beam_indices >= 0).sum(dim=1).tolist()
    case["expected"] = [dict(tokens=out.sequences[i, 1:1 + lens[i]].tolist(), score=float(out.sequences_scores[i]))
                        for i in range(len(lens))]
    cases.append(case)
if "--rust" in sys.argv:
    es = {True: "True", False: "False", "never": "Never"}
    for i in map(int, sys.argv[sys.argv.index("--rust") + 1].split(",")):
        c = cases[i]
        exp = ", ".join("(&%s, %r)" % (str(e["tokens"]).replace(" ", ""), e["score"]) for e in c["expected"])
        print("    HfCase { seed: %d, vocab: %d, eos: &%s, eos_bias: %.1f, num_beams: %d, length_penalty: %.1f, "
              "early_stopping: EarlyStopping::%s, num_return_sequences: %d, max_new_tokens: %d, expected: &[%s] },"
              % (c["seed"], c["vocab"], str(c["eos"]).replace(" ", ""), c["bias"], c["num_beams"],
                 c["length_penalty"], es[c["early_stopping"]], c["num_return_sequences"], c["max_new_tokens"], exp))
    sys.exit(0)
json.dump(dict(transformers=transformers.__version__, torch=torch.__version__, cases=cases), sys.stdout)
