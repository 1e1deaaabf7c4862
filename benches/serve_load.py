#!/usr/bin/env python3
"""Load generator for an OpenAI-compatible server (ferrolm serve, llama-server, vLLM ...).

N closed-loop clients (threads, one http.client connection per request) each send streaming
/v1/chat/completions requests (stream=true, stream_options.include_usage, temperature 0,
max_tokens 128) one after another, either a fixed number each or until a fixed duration has
passed. Prompts come from a seeded generator of English sentences: deterministic across runs,
different for every request, and without a long common prefix (the instruction is at the end).

Per request it measures: TTFT (request sent -> first chunk with non-empty delta.content), the
gaps between content chunks (inter-token latency, one chunk is normally one token), e2e,
completion/prompt tokens (usage when the server sends it, else content chunks are counted) and
the HTTP status (refused = any non-200; failed = 200 but an error event, a broken stream or no
content at all; a connection that gets no HTTP answer counts as refused). Prints a summary and, last, one JSON line with the same figures.

--shared-prefix-tokens N: every request starts with the same ~N-token system prompt (sized
with the server's /tokenize when it has one, else at ~4 characters a token). The first request
is sent alone, before the clients start (cold prefix), and its TTFT and
usage.prompt_tokens_details.cached_tokens are reported apart from the later ones'.

Python stdlib only.
  python3 benches/serve_load.py --url http://127.0.0.1:8080 [--clients 16] [--requests-per-client 3]
  python3 benches/serve_load.py --url ... --clients 1 --duration 30
  python3 benches/serve_load.py --url ... --shared-prefix-tokens 1000
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

SUBJECTS = ["the old lighthouse keeper", "a young engineer", "my neighbour's cat", "the river",
            "a group of students", "the museum guard", "an orange balloon", "the night train",
            "our team leader", "a quiet librarian", "the mountain village", "a stray dog",
            "the harbour master", "a curious child", "the baker on the corner", "the storm",
            "a retired pilot", "the garden robot", "the city council", "a travelling musician"]
VERBS = ["carried", "painted", "repaired", "discovered", "forgot", "measured", "followed",
         "described", "borrowed", "watched", "built", "opened", "sold", "explained", "hid",
         "photographed", "counted", "cleaned", "questioned", "delivered"]
ADJECTIVES = ["heavy", "bright", "ancient", "broken", "silver", "tiny", "noisy", "wooden",
              "forgotten", "careful", "green", "strange", "warm", "narrow", "famous", "empty"]
OBJECTS = ["map", "bicycle", "letter", "clock", "bridge", "lantern", "piano", "notebook",
           "window", "boat", "recipe", "telescope", "fence", "umbrella", "radio", "basket"]
PLACES = ["near the station", "before sunrise", "in the rain", "behind the school",
          "during the festival", "at the edge of the forest", "after lunch", "on the hill",
          "in a crowded market", "under the bridge", "last winter", "by the harbour"]
LINKS = ["Later,", "Meanwhile,", "Surprisingly,", "Because of that,", "Without a word,",
         "The next day,", "For a while,", "In the end,", "At first,", "Somehow,"]
ENDINGS = ["and nobody noticed.", "while the bells were ringing.", "and then went home.",
           "which made everyone laugh.", "because it seemed important.", "for the third time.",
           "as the lights went out.", "with great patience.", "without asking anyone.",
           "and wrote about it in a diary."]
INSTRUCTIONS = ["Summarize the story above in a few sentences.",
                "What happens next? Continue the story.",
                "List the characters mentioned above and what each one did.",
                "Explain what the text above is about in simple words.",
                "Write a short title and a one-paragraph summary for the text above."]


def sentence(rng):
    s = "%s %s the %s %s %s %s" % (rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(ADJECTIVES),
                                   rng.choice(OBJECTS), rng.choice(PLACES), rng.choice(ENDINGS))
    s = s[0].upper() + s[1:]
    if rng.random() < 0.4:
        link = rng.choice(LINKS)
        s = link + " " + s[0].lower() + s[1:]
    return s


def make_text(rng, chars):
    out = []
    n = 0
    while n < chars:
        s = sentence(rng)
        if out and n + len(s) / 2 > chars:  # stop at the sentence end nearest to `chars`
            break
        out.append(s)
        n += len(s) + 1
    return " ".join(out)


def make_prompt(seed, chars):
    rng = random.Random(seed)
    instr = rng.choice(INSTRUCTIONS)
    body = make_text(rng, max(0, chars - len(instr) - 2))
    return body + "\n\n" + instr


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Server:
    def __init__(self, url, api_key, timeout):
        u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.base = u.path.rstrip("/")
        if self.base.endswith("/v1"):
            self.base = self.base[:-3]
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = "Bearer " + api_key

    def conn(self):
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def request(self, method, path, body=None):
        c = self.conn()
        try:
            data = None if body is None else json.dumps(body).encode()
            c.request(method, self.base + path, body=data, headers=self.headers)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def model(self):
        status, data = self.request("GET", "/v1/models")
        if status != 200:
            raise SystemExit("GET /v1/models: HTTP %d %s" % (status, data[:200]))
        return json.loads(data)["data"][0]["id"]

    def count_tokens(self, text):
        try:
            status, data = self.request("POST", "/tokenize", {"content": text})
            if status == 200:
                return len(json.loads(data)["tokens"])
        except (OSError, ValueError, KeyError, http.client.HTTPException):
            pass
        return None

    def chat_stream(self, body):
        """One streaming request; returns a dict of its measurements."""
        res = {"status": None, "ok": False, "ttft": None, "gaps": [], "e2e": None,
               "completion_tokens": None, "prompt_tokens": None, "cached_tokens": None,
               "chunks": 0, "error": None}
        data = json.dumps(body).encode()
        c = self.conn()
        t0 = time.perf_counter()
        try:
            c.request("POST", self.base + "/v1/chat/completions", body=data, headers=self.headers)
            r = c.getresponse()
            res["status"] = r.status
            if r.status != 200:
                res["error"] = r.read()[:300].decode("utf-8", "replace")
                res["e2e"] = time.perf_counter() - t0
                return res
            last = None
            done = False
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                now = time.perf_counter()
                ev = json.loads(payload)
                if "error" in ev:
                    res["error"] = json.dumps(ev["error"])[:300]
                    break
                usage = ev.get("usage")
                if usage:
                    res["completion_tokens"] = usage.get("completion_tokens")
                    res["prompt_tokens"] = usage.get("prompt_tokens")
                    details = usage.get("prompt_tokens_details") or {}
                    res["cached_tokens"] = details.get("cached_tokens")
                for ch in ev.get("choices") or []:
                    content = (ch.get("delta") or {}).get("content")
                    if content:
                        res["chunks"] += 1
                        if last is None:
                            res["ttft"] = now - t0
                        else:
                            res["gaps"].append(now - last)
                        last = now
            res["e2e"] = time.perf_counter() - t0
            if res["completion_tokens"] is None:
                res["completion_tokens"] = res["chunks"]
            if res["error"] is None and not done:
                res["error"] = "stream ended without [DONE]"
            res["ok"] = res["error"] is None and res["ttft"] is not None
            if res["error"] is None and res["ttft"] is None:
                res["error"] = "no content"
        except (OSError, ValueError, http.client.HTTPException) as e:
            res["e2e"] = time.perf_counter() - t0
            res["error"] = "%s: %s" % (type(e).__name__, e)
        finally:
            c.close()
        return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests-per-client", type=int, default=3)
    ap.add_argument("--duration", type=float, default=0,
                    help="seconds; when > 0 clients start new requests until then (overrides --requests-per-client)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-chars", type=int, default=600)
    ap.add_argument("--shared-prefix-tokens", type=int, default=0)
    ap.add_argument("--model", default=None, help="default: data[0].id of GET /v1/models")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600, help="socket timeout, seconds")
    ap.add_argument("--label", default="", help="copied into the JSON line")
    args = ap.parse_args()

    srv = Server(args.url, args.api_key, args.timeout)
    model = args.model or srv.model()

    system = None
    system_tokens = None
    if args.shared_prefix_tokens > 0:
        rng = random.Random("system-%d" % args.seed)
        system = ("You are a helpful assistant. Read the background notes below, then answer the "
                  "user. Background notes: ")
        target = args.shared_prefix_tokens
        system += make_text(rng, target * 4)
        n = srv.count_tokens(system)
        if n is not None:  # grow / trim to the target by whole sentences
            while n < target:
                system += " " + make_text(rng, (target - n) * 4)
                n = srv.count_tokens(system)
            while n > target * 1.05 and ". " in system:
                system = system[: system.rstrip(". ").rfind(". ") + 1]
                n = srv.count_tokens(system)
        system_tokens = n

    def body(c, r):
        msgs = []
        if system is not None:
            msgs.append({"role": "system", "content": system})
        msgs.append({"role": "user", "content": make_prompt("%d-%d-%d" % (args.seed, c, r), args.prompt_chars)})
        return {"model": model, "messages": msgs, "stream": True,
                "stream_options": {"include_usage": True}, "temperature": 0,
                "max_tokens": args.max_tokens}

    first = None
    if system is not None:  # the cold-prefix request, alone
        first = srv.chat_stream(body(-1, 0))

    results = []
    lock = threading.Lock()
    barrier = threading.Barrier(args.clients + 1)
    deadline = [None]

    def client(c):
        barrier.wait()
        r = 0
        while True:
            if args.duration > 0:
                if time.perf_counter() >= deadline[0]:
                    break
            elif r >= args.requests_per_client:
                break
            res = srv.chat_stream(body(c, r))
            with lock:
                results.append(res)
            r += 1

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(args.clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    deadline[0] = start + args.duration
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start

    ok = [r for r in results if r["ok"]]
    refused = [r for r in results if r["status"] != 200]
    failed = [r for r in results if r["status"] == 200 and not r["ok"]]
    tokens = sum(r["completion_tokens"] or 0 for r in results if r["status"] == 200)
    ttfts = [r["ttft"] for r in ok]
    gaps = [g for r in ok for g in r["gaps"]]
    e2es = [r["e2e"] for r in ok]
    prompt_tokens = [r["prompt_tokens"] for r in ok if r["prompt_tokens"] is not None]
    cached = [r["cached_tokens"] for r in ok if r["cached_tokens"] is not None]
    statuses = {}
    for r in refused:  # status None: no HTTP answer (connection refused / reset, timeout)
        k = "connection" if r["status"] is None else str(r["status"])
        statuses[k] = statuses.get(k, 0) + 1

    def ms(x):
        return None if x is None else round(x * 1000, 1)

    out = {
        "label": args.label, "url": args.url, "model": model, "clients": args.clients,
        "requests": len(results), "ok": len(ok), "refused": len(refused), "failed": len(failed),
        "refused_status": statuses, "wall_s": round(wall, 3), "completion_tokens": tokens,
        "tok_s": round(tokens / wall, 2) if wall > 0 else None,
        "ttft_p50_ms": ms(pct(ttfts, 50)), "ttft_p99_ms": ms(pct(ttfts, 99)),
        "itl_p50_ms": ms(pct(gaps, 50)), "itl_p99_ms": ms(pct(gaps, 99)),
        "e2e_p50_ms": ms(pct(e2es, 50)),
        "prompt_tokens_mean": round(sum(prompt_tokens) / len(prompt_tokens), 1) if prompt_tokens else None,
        "max_tokens": args.max_tokens, "prompt_chars": args.prompt_chars,
    }
    if system is not None:
        out["shared_prefix_tokens"] = system_tokens
        out["first_ok"] = first["ok"]
        out["first_ttft_ms"] = ms(first["ttft"])
        out["first_cached_tokens"] = first["cached_tokens"]
        out["first_prompt_tokens"] = first["prompt_tokens"]
        out["later_ttft_p50_ms"] = out["ttft_p50_ms"]
        out["later_cached_tokens_mean"] = round(sum(cached) / len(cached), 1) if cached else None

    def f(x, unit=""):
        return "-" if x is None else "%s%s" % (x, unit)

    print("server %s  model %s" % (args.url, model))
    print("clients %d  requests %d: ok %d, refused %d%s, failed %d  (wall %.1f s)" % (
        args.clients, len(results), len(ok), len(refused),
        " " + json.dumps(statuses) if statuses else "", len(failed), wall))
    print("generated %d tokens: %s tok/s aggregate" % (tokens, f(out["tok_s"])))
    print("TTFT p50 %s  p99 %s   inter-token p50 %s  p99 %s   e2e p50 %s   prompt tokens (mean) %s" % (
        f(out["ttft_p50_ms"], " ms"), f(out["ttft_p99_ms"], " ms"), f(out["itl_p50_ms"], " ms"),
        f(out["itl_p99_ms"], " ms"), f(out["e2e_p50_ms"], " ms"), f(out["prompt_tokens_mean"])))
    if system is not None:
        print("shared prefix %s tokens: first request TTFT %s (cached %s of %s prompt tokens); "
              "later TTFT p50 %s, cached tokens mean %s" % (
                  f(system_tokens), f(out["first_ttft_ms"], " ms"), f(first["cached_tokens"]),
                  f(first["prompt_tokens"]), f(out["later_ttft_p50_ms"], " ms"),
                  f(out["later_cached_tokens_mean"])))
    if first is not None and not first["ok"]:
        print("  first request error (HTTP %s): %s" % (first["status"], first["error"]), file=sys.stderr)
    for r in (refused + failed)[:3]:
        print("  error (HTTP %s): %s" % (r["status"], r["error"]), file=sys.stderr)
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
