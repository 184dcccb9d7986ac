#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""gguf_to_hf.py - write a Hugging Face model directory from a llama GGUF.

Dequantises every tensor with the `gguf` package, restores Hugging Face
(rotate-half) row order of the Q and K projections (the convert script
permuted them for llama.cpp's pairwise RoPE), and writes config.json,
generation_config.json, tokenizer_config.json (chat template), tokenizer.json
(a `tokenizers` byte-level BPE, as tokenizer_ref.py builds it) and
model.safetensors, or N shards with model.safetensors.index.json. The
safetensors format is written by hand with numpy (no `safetensors` needed).

    python3 tests/ref/gguf_to_hf.py MODEL.gguf OUTDIR [--dtype F32|F16|BF16]
                                    [--shards N]

Used to check that `kvmm generate --model OUTDIR` gives the tokens of the
GGUF file (Documentation/model/index.rst).
"""
import json
import os
import struct
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


HF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def build_tokenizer(r):
    """SmolLM2's tokenizer, as tests/ref/tokenizer_ref.py builds it"""
    from tokenizers import (Tokenizer, AddedToken, decoders, models,
                            pre_tokenizers, processors)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    ttype = r.fields["tokenizer.ggml.token_type"].contents()
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, ttype) if ty == 3])
    return tok


def field(r, k):
    f = r.fields.get(k)
    return None if f is None else f.contents()


def unpermute(w, n_heads):
    """file row 2i + j of a head -> HF row j * hd/2 + i"""
    out, inn = w.shape
    hd = out // n_heads
    return (w.reshape(n_heads, hd // 2, 2, inn).transpose(0, 2, 1, 3)
            .reshape(out, inn))


def to_bytes(a, dtype):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.tobytes()
    if dtype == "F16":
        return a.astype(np.float16).tobytes()
    u = a.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7fff + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return u.tobytes()


def write_st(path, tensors, dtype):
    hdr, off, blobs = {}, 0, []
    for name, a in tensors:
        b = to_bytes(a, dtype)
        hdr[name] = {"dtype": dtype, "shape": list(a.shape),
                     "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    args = sys.argv[1:]
    dtype, shards = "F32", 1
    if "--dtype" in args:
        i = args.index("--dtype")
        dtype = args[i + 1]
        del args[i:i + 2]
    if "--shards" in args:
        i = args.index("--shards")
        shards = int(args[i + 1])
        del args[i:i + 2]
    src, out = args
    os.makedirs(out, exist_ok=True)
    r = GGUFReader(src)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    assert arch == "llama", arch

    def a(k, d=None):
        v = field(r, arch + "." + k)
        return d if v is None else v

    nh, nkv = int(a("attention.head_count")), int(a("attention.head_count_kv"))
    tokens = field(r, "tokenizer.ggml.tokens")
    names = [t.name for t in r.tensors]
    tied = "output.weight" not in names
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": int(a("embedding_length")),
        "intermediate_size": int(a("feed_forward_length")),
        "num_hidden_layers": int(a("block_count")),
        "num_attention_heads": nh, "num_key_value_heads": nkv,
        "max_position_embeddings": int(a("context_length")),
        "rms_norm_eps": float(a("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(a("rope.freq_base", 10000.0)),
        "vocab_size": len(tokens), "tie_word_embeddings": tied,
        "bos_token_id": int(field(r, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(r, "tokenizer.ggml.eos_token_id")),
        "torch_dtype": {"F32": "float32", "F16": "float16",
                        "BF16": "bfloat16"}[dtype],
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": cfg["bos_token_id"],
                   "eos_token_id": cfg["eos_token_id"]}, f, indent=2)
    tmpl = field(r, "tokenizer.chat_template")
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": tmpl} if tmpl else {}, f, indent=2)

    build_tokenizer(r).save(os.path.join(out, "tokenizer.json"))

    tensors = []
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in reversed(t.shape)] if len(t.shape) > 1 \
            else [int(t.shape[0])]
        w = w.reshape(shape)
        parts = t.name.split(".")
        if parts[0] == "blk":
            suf = ".".join(parts[2:])
            hf = "model.layers.%s.%s" % (parts[1], HF_NAMES[suf])
            if suf == "attn_q.weight":
                w = unpermute(w, nh)
            elif suf == "attn_k.weight":
                w = unpermute(w, nkv)
        else:
            hf = HF_NAMES[t.name]
        tensors.append((hf, w))
    if shards == 1:
        write_st(os.path.join(out, "model.safetensors"), tensors, dtype)
        return
    per = (len(tensors) + shards - 1) // shards
    wm = {}
    for s in range(shards):
        fn = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
        part = tensors[s * per:(s + 1) * per]
        write_st(os.path.join(out, fn), part, dtype)
        for n, _ in part:
            wm[n] = fn
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm}, f, indent=2)


main()
