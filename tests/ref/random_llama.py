#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""random_llama.py - a randomly initialised SmolLM2-135M-shaped model, numpy only.

Writes a Hugging Face directory (config.json, model.safetensors in fp16, a
byte-level BPE tokenizer.json of 256 bytes and filler ids) with
transformers' Llama layout and initialisation: every linear and the
embedding drawn from N(0, init^2), norms 1, the output tied to the
embedding. The same --seed and --init give the same bytes on every
machine, so the policy check of the GPU suite (tools/gpu-suite.d/policy.sh)
and a CPU-only measurement of its noise floor see one model. The default
--init is SmolLM2-135M's own initializer_range (1/24, from its
config.json), so that the model is what transformers' from_config() would
draw for the default model's configuration.

    random_llama.py --out DIR [--init 0.041666666666666664] [--seed 1234]

--shape llama3-8b writes a Llama-3-8B-shaped bf16 model (16 GB) for speed
measurements instead, in seconds rather than the minutes transformers
takes to initialise one: each tensor is a window, at a random offset, of
one pool of 2^25 N(0, init^2) draws (weights do not matter for speed, and
the values keep a real model's scale). Tensors are streamed to the file,
so the host needs no more memory than the pool.

    random_llama.py --out DIR --shape llama3-8b [--init 0.02] [--seed 1234]
                    [--layers 32]
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

# SmolLM2-135M, and its config.json's initializer_range
D, F, L, H, KV, HD, V = 576, 1536, 30, 9, 3, 64, 49152
INIT = 0.041666666666666664


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


def tensors(init, seed):
    rng = np.random.default_rng(seed)
    t = {}

    def lin(name, rows, cols):
        w = rng.standard_normal((rows, cols), dtype=np.float32) * init
        t[name] = w.astype(np.float16)

    lin("model.embed_tokens.weight", V, D)
    for i in range(L):
        p = "model.layers.%d." % i
        t[p + "input_layernorm.weight"] = np.ones(D, np.float16)
        t[p + "post_attention_layernorm.weight"] = np.ones(D, np.float16)
        lin(p + "self_attn.q_proj.weight", H * HD, D)
        lin(p + "self_attn.k_proj.weight", KV * HD, D)
        lin(p + "self_attn.v_proj.weight", KV * HD, D)
        lin(p + "self_attn.o_proj.weight", D, H * HD)
        lin(p + "mlp.gate_proj.weight", F, D)
        lin(p + "mlp.up_proj.weight", F, D)
        lin(p + "mlp.down_proj.weight", D, F)
    t["model.norm.weight"] = np.ones(D, np.float16)
    return t


def write_safetensors(path, t):
    hdr, off = {}, 0
    for k, a in t.items():
        hdr[k] = {"dtype": "F16", "shape": list(a.shape),
                  "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    hdr["__metadata__"] = {"format": "pt"}
    hj = json.dumps(hdr).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for a in t.values():
            f.write(a.tobytes())


# Llama-3-8B: the shape the decode and serving benchmarks use (hf_compare.py
# takes it from here)
L3 = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
          num_attention_heads=32, num_key_value_heads=8, head_dim=128,
          vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0,
          max_position_embeddings=8192, rms_norm_eps=1e-5)


def l3_shapes(layers):
    d, f, kv = L3["hidden_size"], L3["intermediate_size"], \
        L3["num_key_value_heads"] * L3["head_dim"]
    q = L3["num_attention_heads"] * L3["head_dim"]
    s = [("model.embed_tokens.weight", (L3["vocab_size"], d))]
    for i in range(layers):
        p = "model.layers.%d." % i
        s += [(p + "input_layernorm.weight", (d,)),
              (p + "post_attention_layernorm.weight", (d,)),
              (p + "self_attn.q_proj.weight", (q, d)),
              (p + "self_attn.k_proj.weight", (kv, d)),
              (p + "self_attn.v_proj.weight", (kv, d)),
              (p + "self_attn.o_proj.weight", (d, q)),
              (p + "mlp.gate_proj.weight", (f, d)),
              (p + "mlp.up_proj.weight", (f, d)),
              (p + "mlp.down_proj.weight", (d, f))]
    s += [("model.norm.weight", (d,)), ("lm_head.weight", (L3["vocab_size"], d))]
    return s


def write_l3(out, init, seed, layers):
    """Stream a bf16 Llama-3-8B-shaped safetensors file (see the top)."""
    rng = np.random.default_rng(seed)
    pool = (rng.standard_normal(1 << 25, dtype=np.float32) * init)
    pool = (pool.view(np.uint32) >> 16).astype(np.uint16)
    one = np.uint16(0x3F80)		# bf16 1.0, the norms
    shapes = l3_shapes(layers)
    hdr, off = {}, 0
    for k, sh in shapes:
        n = int(np.prod(sh)) * 2
        hdr[k] = {"dtype": "BF16", "shape": list(sh),
                  "data_offsets": [off, off + n]}
        off += n
    hdr["__metadata__"] = {"format": "pt"}
    hj = json.dumps(hdr).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for k, sh in shapes:
            n = int(np.prod(sh))
            if len(sh) == 1:
                f.write(np.full(n, one, np.uint16).tobytes())
                continue
            while n > 0:
                o = int(rng.integers(0, pool.size // 2))
                m = min(n, pool.size - o)
                f.write(pool[o:o + m].tobytes())
                n -= m
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama",
               initializer_range=init, hidden_act="silu",
               torch_dtype="bfloat16", bos_token_id=None, eos_token_id=None,
               **dict(L3, num_hidden_layers=layers))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    write_tokenizer(os.path.join(out, "tokenizer.json"), L3["vocab_size"])


def write_tokenizer(path, vocab_size):
    """A byte-level BPE tokenizer.json: the 256 bytes, then filler ids."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    for i in range(256, vocab_size):
        vocab["<f%d>" % i] = i
    bl = {"type": "ByteLevel", "add_prefix_space": False,
          "trim_offsets": True, "use_regex": True}
    tj = {"version": "1.0", "truncation": None, "padding": None,
          "added_tokens": [], "normalizer": None, "pre_tokenizer": bl,
          "post_processor": None,
          "decoder": dict(bl, add_prefix_space=True),
          "model": {"type": "BPE", "dropout": None, "unk_token": None,
                    "continuing_subword_prefix": None,
                    "end_of_word_suffix": None, "fuse_unk": False,
                    "byte_fallback": False, "ignore_merges": False,
                    "vocab": vocab, "merges": []}}
    with open(path, "w") as f:
        json.dump(tj, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--init", type=float, default=None)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--chat", action="store_true",
                    help="also a tokenizer_config.json with a ChatML "
                    "chat template (for the server's chat tests)")
    ap.add_argument("--layers", type=int, default=None,
                    help="llama3-8b only: fewer layers (a quick load test)")
    ap.add_argument("--shape", choices=["smollm2", "llama3-8b"],
                    default="smollm2")
    a = ap.parse_args()
    if a.init is not None and not a.init > 0:
        print("random_llama.py: --init must be positive", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    if a.shape == "llama3-8b":
        write_l3(a.out, a.init or 0.02, a.seed, a.layers or 32)
        print(a.out)
        return 0
    a.init = a.init or INIT
    write_safetensors(os.path.join(a.out, "model.safetensors"),
                      tensors(a.init, a.seed))
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama",
               hidden_size=D, intermediate_size=F, num_hidden_layers=L,
               num_attention_heads=H, num_key_value_heads=KV, head_dim=HD,
               vocab_size=V, tie_word_embeddings=True, rope_theta=100000.0,
               initializer_range=a.init,
               max_position_embeddings=8192, rms_norm_eps=1e-5,
               hidden_act="silu", torch_dtype="float16", bos_token_id=None,
               eos_token_id=None)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    write_tokenizer(os.path.join(a.out, "tokenizer.json"), V)
    if a.chat:
        # SmolLM2's template family (ChatML); the markers are byte tokens
        # of the random vocabulary, which is all a test of the server needs
        tmpl = ("{% for message in messages %}<|im_start|>{{ message['role']"
                " }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}")
        with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
            json.dump({"chat_template": tmpl}, f, indent=1)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
