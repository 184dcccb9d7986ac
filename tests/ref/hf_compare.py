#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""hf_compare.py - Hugging Face reference for the CUDA executor.

Creates randomly initialised models with transformers (no download: the
configurations are written here), saves each as a Hugging Face directory
(config.json, model.safetensors in bf16, a byte-level BPE tokenizer.json),
and records what transformers computes on it in hf_ref.bin:

    int32 n_prompt, n_steps, vocab
    int32 prompt[n_prompt]
    int32 greedy[n_steps]          transformers' greedy tokens
    float32 logits[n_steps][vocab] the logits each greedy token came from

The reference runs in fp32 on the bf16 weights as saved (so it is the
exact model; our bf16 path differs only by its own rounding). The C side,
tests/check_forward_gpu.c (tcase "hf", KVMM_HF_DIRS=dir1:dir2...), runs our
CUDA executor on the same directories and compares.

    hf_compare.py --out DIR [--archs smollm2,qwen2,qwen3] [--steps 32]
    hf_compare.py --out DIR --archs llama3-8b --no-ref   (weights only)

Prints the directories written, one per line, last line "dirs: a:b:c".
"""
import argparse
import json
import os
import struct
import sys
import time

import torch
import transformers

# the byte-level tokenizer of the random models (same directory)
from random_llama import L3, write_tokenizer


SHAPES = {
    # SmolLM2-135M
    "smollm2": ("LlamaConfig", "LlamaForCausalLM", dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64,
        vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
        max_position_embeddings=8192, rms_norm_eps=1e-5)),
    # Qwen2.5-0.5B (QKV bias)
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2,
        vocab_size=151936, tie_word_embeddings=True, rope_theta=1000000.0,
        max_position_embeddings=32768, rms_norm_eps=1e-6)),
    # Qwen3-0.6B (q/k RMSNorm)
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        vocab_size=151936, tie_word_embeddings=True, rope_theta=1000000.0,
        max_position_embeddings=40960, rms_norm_eps=1e-6)),
    # Llama-3-8B
    "llama3-8b": ("LlamaConfig", "LlamaForCausalLM", dict(L3)),
}


def make_model(name, out, seed, init_range):
    cfg_cls, model_cls, kw = SHAPES[name]
    cfg = getattr(transformers, cfg_cls)(**kw)
    # transformers 5 keeps theta in rope_parameters and may not take the
    # rope_theta argument: set it wherever this version reads it
    cfg.rope_theta = kw["rope_theta"]
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict):
        rp["rope_theta"] = kw["rope_theta"]
    cfg.initializer_range = init_range
    cfg.bos_token_id = None
    cfg.eos_token_id = None
    cfg.pad_token_id = None
    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = getattr(transformers, model_cls)(cfg).to(torch.bfloat16)
    model.eval()
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    # our loader reads rope_theta at the top level; transformers 5 may
    # keep it under rope_parameters only
    cp = os.path.join(d, "config.json")
    with open(cp) as f:
        cj = json.load(f)
    if "rope_theta" not in cj:
        cj["rope_theta"] = kw["rope_theta"]
    with open(cp, "w") as f:
        json.dump(cj, f, indent=1)
    write_tokenizer(os.path.join(d, "tokenizer.json"), kw["vocab_size"])
    return model, d


def rope_fix(m32, kw):
    """
    The rotary frequencies of the fp32 reference: the buffer inv_freq was
    cast to bf16 with the model (.to(torch.bfloat16)), 0.4 % off, and
    .float() does not undo that; recompute it in fp32 as transformers does
    at init (default rope type: no scaling in these shapes), then check.
    """
    hd = kw.get("head_dim", kw["hidden_size"] // kw["num_attention_heads"])
    want = 1.0 / (kw["rope_theta"] **
                  (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    n = 0
    for mod in m32.modules():
        inv = getattr(mod, "inv_freq", None)
        if isinstance(inv, torch.Tensor):
            err = float(((inv.float().cpu() - want).abs() / want).max())
            print("rope check: theta %g, head_dim %d: inv_freq as loaded "
                  "off by %.2g (relative)" % (kw["rope_theta"], hd, err),
                  flush=True)
            if err > 1e-2:
                raise SystemExit("transformers does not use rope_theta %g"
                                 % kw["rope_theta"])
            inv.copy_(want.to(inv.device))
            if isinstance(getattr(mod, "original_inv_freq", None),
                          torch.Tensor):
                mod.original_inv_freq = inv.clone()
            n += 1
    if not n:
        raise SystemExit("no rotary embedding found")


class Rounding:
    """
    Forward hooks that round what our executor rounds, to measure how far
    that alone moves transformers: "prefill" rounds every Linear's input to
    bf16 during the prompt (our cuBLAS path), "kv" rounds keys, values,
    queries and the attention output to fp16 (our KV cache and decode
    attention), at every step.
    """

    def __init__(self, model, prefill, kv):
        self.prefill, self.kv, self.phase = prefill, kv, "prefill"
        self.hooks = []
        for name, mod in model.named_modules():
            if not isinstance(mod, torch.nn.Linear):
                continue
            self.hooks.append(mod.register_forward_pre_hook(self.pre))
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("q_proj", "k_proj", "v_proj"):
                self.hooks.append(mod.register_forward_hook(self.post))
            if leaf == "o_proj":
                self.hooks.append(
                    mod.register_forward_pre_hook(self.pre_o))

    def pre(self, mod, args):
        if self.prefill and self.phase == "prefill":
            return (args[0].to(torch.bfloat16).float(),) + args[1:]
        return None

    def pre_o(self, mod, args):
        if self.kv and self.phase == "decode":
            return (args[0].half().float(),) + args[1:]
        return None

    def post(self, mod, args, out):
        return out.half().float() if self.kv else None

    def remove(self):
        for h in self.hooks:
            h.remove()


def name_of(d):
    return os.path.basename(os.path.normpath(d))


@torch.no_grad()
def run(m32, prompt, steps, forced=None, rounding=None):
    """Greedy (or @forced) decoding: the tokens and the logits of each."""
    if rounding:
        rounding.phase = "prefill"
    out = m32(input_ids=prompt[None].cuda(), use_cache=True)
    past = out.past_key_values
    toks, logits = [], []
    for s in range(steps):
        z = out.logits[0, -1].float()
        tok = int(torch.argmax(z))
        toks.append(tok)
        logits.append(z.cpu())
        if rounding:
            rounding.phase = "decode"
        nxt = forced[s] if forced is not None else tok
        out = m32(input_ids=torch.tensor([[nxt]], device="cuda"),
                  past_key_values=past, use_cache=True)
        past = out.past_key_values
    return toks, torch.stack(logits)


def noise(m32, prompt, greedy, z, name):
    """How far our roundings alone move transformers (see Rounding)."""
    gap = torch.topk(z, 2, dim=1).values
    gap = gap[:, 0] - gap[:, 1]
    for label, pf, kv in (("bf16 prefill + fp16 KV", True, True),
                          ("fp16 KV only", False, True)):
        r = Rounding(m32, pf, kv)
        free, _ = run(m32, prompt, len(greedy), rounding=r)
        tf, zt = run(m32, prompt, len(greedy), forced=greedy, rounding=r)
        r.remove()
        same = 0
        while same < len(greedy) and free[same] == greedy[same]:
            same += 1
        rel = ((zt - z).norm(dim=1) / z.norm(dim=1))
        err = (zt - z).abs().max(dim=1).values
        flips = [i for i in range(len(greedy)) if tf[i] != greedy[i]]
        print("%s noise, %s: free-running greedy identical for %d of %d; "
              "teacher-forced: argmax differs at steps %s (their top-2 "
              "gaps %s), logits rel L2 max %.3g mean %.3g, max |dz| %.3g"
              % (name, label, same, len(greedy), flips,
                 ["%.3g" % float(gap[i]) for i in flips],
                 float(rel.max()), float(rel.mean()), float(err.max())),
              flush=True)


@torch.no_grad()
def reference(model, d, n_prompt, steps, seed, with_noise=False):
    g = torch.Generator().manual_seed(seed + 1)
    vocab = model.config.vocab_size
    prompt = torch.randint(256, vocab, (n_prompt,), generator=g)
    m32 = model.float()
    rope_fix(m32, SHAPES[name_of(d)][2])
    ids = prompt[None].cuda()
    out = m32(input_ids=ids, use_cache=True)
    past = out.past_key_values
    greedy, logits = [], []
    for _ in range(steps):
        z = out.logits[0, -1].float()
        tok = int(torch.argmax(z))
        greedy.append(tok)
        logits.append(z.cpu())
        out = m32(input_ids=torch.tensor([[tok]], device="cuda"),
                  past_key_values=past, use_cache=True)
        past = out.past_key_values
    z = torch.stack(logits)
    top = torch.topk(z, 2, dim=1).values
    gap = (top[:, 0] - top[:, 1])
    with open(os.path.join(d, "hf_ref.bin"), "wb") as f:
        f.write(struct.pack("<3i", n_prompt, steps, vocab))
        f.write(prompt.to(torch.int32).numpy().tobytes())
        f.write(torch.tensor(greedy, dtype=torch.int32).numpy().tobytes())
        f.write(z.numpy().astype("<f4").tobytes())
    print("%s: prompt %d, greedy %s; top-2 gap min %.4g median %.4g, "
          "logit std %.4g" % (d, n_prompt, greedy[:8], float(gap.min()),
                              float(gap.median()), float(z.std())),
          flush=True)
    print("%s: top-2 gaps per step %s" % (
        d, " ".join("%.3g" % float(g) for g in gap)), flush=True)
    if with_noise:
        noise(m32, prompt, greedy, z, os.path.basename(d))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--archs", default="smollm2,qwen2,qwen3")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--init-range", type=float, default=0.02)
    ap.add_argument("--no-ref", action="store_true")
    ap.add_argument("--noise", action="store_true",
                    help="also measure how far our roundings alone move "
                    "transformers")
    a = ap.parse_args()
    print("torch %s, transformers %s" % (torch.__version__,
                                         transformers.__version__))
    dirs = []
    for name in a.archs.split(","):
        t0 = time.time()
        model, d = make_model(name, a.out, a.seed, a.init_range)
        if not a.no_ref:
            reference(model, d, a.prompt, a.steps, a.seed, a.noise)
        print("%s: %.1f s" % (d, time.time() - t0), flush=True)
        del model
        torch.cuda.empty_cache()
        dirs.append(d)
    print("dirs: " + ":".join(dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
