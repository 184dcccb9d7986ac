#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""hf_serve_peer.py - the serving experiment's peer: Hugging Face
transformers on the same model and the same requests as `kvmm bench serve`.

transformers has no continuous batching in `generate()`: the requests run
in static batches of --batch (by default as many as fit --kv-budget with
every sequence at its batch's longest prompt plus longest output, bf16 KV,
as transformers' dynamic cache holds it), prompts left-padded, greedy,
EOS ignored (min_new_tokens = max_new_tokens = the batch's longest output).
Only the tokens each request asked for count as generated: a short request
in a long batch costs the batch its padding, as it does in a static-batch
server. The wall time runs from the first batch's start to the last one's
end, as bench serve's does. With --time-limit S no batch starts after S
seconds: the throughput is that of the batches that ran (a sample of the
trace in its order; "partial": true), for workloads a device call cannot
finish under transformers.

Both sides read one trace, so the workload is identical:
  python3 tools/hf_serve_peer.py --make-trace T.jsonl --requests 256 \\
      --prompt-len 512-1024 --output-len 1024-3072 --seed 1
  build/kvmm bench serve --model DIR --device cuda --trace T.jsonl ...
  python3 tools/hf_serve_peer.py --model DIR --trace T.jsonl --kv-budget 16GiB

Prints one JSON line with the keys bench serve --json prints where they
apply (policy "hf-transformers", requests, completed, peak_concurrency,
gen_tok_s, req_s, wall_s, preemptions 0). Needs torch, transformers and a
GPU for a run; --make-trace needs neither.
"""
import argparse
import json
import random
import sys
import time

UNITS = {"": 1, "K": 1e3, "KIB": 1024, "M": 1e6, "MIB": 1024 ** 2,
         "G": 1e9, "GIB": 1024 ** 3}


def parse_range(opt, s):
    """'A' or 'A-B' into (A, B), 1 <= A <= B"""
    try:
        a, _, b = s.partition("-")
        lo, hi = int(a), int(b or a)
    except ValueError:
        raise SystemExit("%s: %r: want A or A-B" % (opt, s))
    if lo < 1 or hi < lo:
        raise SystemExit("%s: %r: want 1 <= A <= B" % (opt, s))
    return lo, hi


def parse_bytes(s):
    """'16GiB' into bytes"""
    num = s.rstrip("KkMmGgIiBb")
    unit = s[len(num):].upper().rstrip("B") if s[len(num):] else ""
    if unit.endswith("I"):
        unit += "B"
    try:
        v = float(num) * UNITS[unit]
    except (ValueError, KeyError):
        raise SystemExit("--kv-budget: %r: want a number with K/KiB/M/MiB/"
                         "G/GiB" % s)
    if v <= 0:
        raise SystemExit("--kv-budget: %r: must be positive" % s)
    return int(v)


def make_trace(path, n, plen, olen, seed):
    """n requests, lengths uniform in the ranges, one JSON object a line"""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps({"prompt_len": rng.randint(*plen),
                                "output_len": rng.randint(*olen)}) + "\n")


def read_trace(path):
    reqs = []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                p, o = int(d["prompt_len"]), int(d["output_len"])
            except (ValueError, KeyError, TypeError) as e:
                raise SystemExit("%s: line %d: want {\"prompt_len\", "
                                 "\"output_len\"}: %s" % (path, k, e))
            if p < 1 or o < 1:
                raise SystemExit("%s: line %d: lengths must be >= 1" %
                                 (path, k))
            reqs.append((p, o))
    if not reqs:
        raise SystemExit("%s: no requests" % path)
    return reqs


def kv_bytes_per_token(cfg):
    """bf16 K and V of every layer for one token"""
    heads = getattr(cfg, "num_key_value_heads", None) or \
        cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or \
        cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * heads * hd * 2


def batches_of(reqs, batch):
    """requests in arrival order, @batch at a time"""
    return [reqs[i:i + batch] for i in range(0, len(reqs), batch)]


def fit_batch(reqs, per_tok, budget):
    """the largest static batch whose KV fits @budget for every batch"""
    best = 1
    for b in range(1, len(reqs) + 1):
        need = max(len(g) * (max(p for p, _ in g) + max(o for _, o in g))
                   for g in batches_of(reqs, b)) * per_tok
        if need > budget:
            break
        best = b
    return best


def run(args):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    reqs = read_trace(args.trace)
    cfg = AutoConfig.from_pretrained(args.model)
    per_tok = kv_bytes_per_token(cfg)
    batch = args.batch or fit_batch(reqs, per_tok, parse_bytes(args.kv_budget))
    model = AutoModelForCausalLM.from_pretrained(
        args.model, torch_dtype=torch.bfloat16).to("cuda").eval()
    gen = torch.Generator().manual_seed(args.seed)
    vocab = cfg.vocab_size
    groups = batches_of(reqs, batch)
    done = generated = 0
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    partial = False
    for k, g in enumerate(groups):
        if args.time_limit and k and \
                time.perf_counter() - t0 > args.time_limit:
            partial = True	# the batches run so far are the sample
            break
        plen = max(p for p, _ in g)
        olen = max(o for _, o in g)
        ids = torch.zeros((len(g), plen), dtype=torch.long)
        mask = torch.zeros((len(g), plen), dtype=torch.long)
        for i, (p, _) in enumerate(g):	# left padding
            ids[i, plen - p:] = torch.randint(1, vocab, (p,), generator=gen)
            mask[i, plen - p:] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids.cuda(),
                                 attention_mask=mask.cuda(),
                                 max_new_tokens=olen, min_new_tokens=olen,
                                 do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        if out.shape[1] - plen != olen:
            raise SystemExit("batch %d: %d tokens generated, want %d" %
                             (k, out.shape[1] - plen, olen))
        done += len(g)
        generated += sum(o for _, o in g)
        if sys.stderr.isatty():
            el = time.perf_counter() - t0
            sys.stderr.write("\rhf peer: batch %d/%d, %d tokens, %.0f tok/s"
                             % (k + 1, len(groups), generated,
                                generated / el))
    wall = time.perf_counter() - t0
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print(json.dumps({
        "mode": "offline", "device": "cuda", "policy": "hf-transformers",
        "requests": len(reqs), "completed": done, "failed": 0,
        "partial": partial, "batches": k + 1 - partial,
        "peak_concurrency": batch, "mean_concurrency": batch,
        "gen_tok_s": round(generated / wall, 1),
        "req_s": round(done / wall, 3), "wall_s": round(wall, 2),
        "preemptions": 0, "generated": generated,
        "kv_gb_per_batch": round(max(
            len(g) * (max(p for p, _ in g) + max(o for _, o in g))
            for g in groups) * per_tok / 1e9, 3),
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__}))


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-trace", metavar="FILE",
                    help="write a trace of --requests requests and exit")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--prompt-len", default="128-256")
    ap.add_argument("--output-len", default="64-128")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", help="Hugging Face model directory")
    ap.add_argument("--trace", help="JSONL {prompt_len, output_len}")
    ap.add_argument("--kv-budget", default="16GiB",
                    help="KV bytes a static batch may take (16GiB)")
    ap.add_argument("--batch", type=int, default=0,
                    help="static batch size (0: the most --kv-budget fits)")
    ap.add_argument("--time-limit", type=float, default=0,
                    help="start no batch after S seconds (0: run all); "
                    "the JSON says \"partial\" and counts the batches "
                    "that ran")
    args = ap.parse_args(argv)
    if args.make_trace:
        if args.requests < 1:
            ap.error("--requests: must be >= 1")
        make_trace(args.make_trace, args.requests,
                   parse_range("--prompt-len", args.prompt_len),
                   parse_range("--output-len", args.output_len), args.seed)
        return 0
    if not args.model or not args.trace:
        ap.error("--model and --trace are needed (or --make-trace)")
    if args.batch < 0:
        ap.error("--batch: must be >= 0")
    if args.time_limit < 0:
        ap.error("--time-limit: must be >= 0")
    parse_bytes(args.kv_budget)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
