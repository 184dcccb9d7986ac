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
    "llama3-8b": ("LlamaConfig", "LlamaForCausalLM", dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0,
        max_position_embeddings=8192, rms_norm_eps=1e-5)),
}


def bytes_to_unicode():
    """GPT-2's byte -> printable character table."""
    bs = (list(range(ord("!"), ord("~") + 1)) +
          list(range(ord("\xa1"), ord("\xac") + 1)) +
          list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tokenizer(path, vocab_size):
    """A byte-level BPE tokenizer.json: the 256 bytes, then filler ids."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    for i in range(256, vocab_size):
        vocab["<f%d>" % i] = i
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                          "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                    "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    with open(path, "w") as f:
        json.dump(tj, f)


def make_model(name, out, seed, init_range):
    cfg_cls, model_cls, kw = SHAPES[name]
    cfg = getattr(transformers, cfg_cls)(**kw)
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


@torch.no_grad()
def reference(model, d, n_prompt, steps, seed):
    g = torch.Generator().manual_seed(seed + 1)
    vocab = model.config.vocab_size
    prompt = torch.randint(256, vocab, (n_prompt,), generator=g)
    m32 = model.float()
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--archs", default="smollm2,qwen2,qwen3")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--init-range", type=float, default=0.02)
    ap.add_argument("--no-ref", action="store_true")
    a = ap.parse_args()
    print("torch %s, transformers %s" % (torch.__version__,
                                         transformers.__version__))
    dirs = []
    for name in a.archs.split(","):
        t0 = time.time()
        model, d = make_model(name, a.out, a.seed, a.init_range)
        if not a.no_ref:
            reference(model, d, a.prompt, a.steps, a.seed)
        print("%s: %.1f s" % (d, time.time() - t0), flush=True)
        del model
        torch.cuda.empty_cache()
        dirs.append(d)
    print("dirs: " + ":".join(dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
