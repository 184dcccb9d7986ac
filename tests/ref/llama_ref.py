#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""llama_ref.py - reference logits and greedy tokens for tests/check_forward.c.

An independent LLaMA forward pass in numpy (float64), reading the weights of
the same GGUF file with the `gguf` package. It shares no code or layout
decision with model/exec/forward_cpu.c: it keeps the Q/K rows in the file's
order and applies llama.cpp's pairwise ("normal") RoPE to them, where the C
executor restores Hugging Face's row order and rotates halves. Prompts are
tokenised with a Hugging Face `tokenizers` BPE built from the GGUF
vocabulary, as tests/ref/tokenizer_ref.py does.

    pip install numpy gguf tokenizers
    python3 tests/ref/llama_ref.py [MODEL.gguf] > tests/ref/smollm2_ref.h

Printed, as a C header: for each prompt its token ids, the L2 norm, the sum
and the argmax of the logits after its last token, and REF_NSAMP sampled
logits (the 64 largest, then every 51st index from 7); for the greedy
prompt, the 64 greedy tokens (EOS not treated specially) and the same
statistics for the logits of the last decode step. CI needs no Python.

    python3 tests/ref/llama_ref.py MODEL --dump DIR

also writes every full logits vector as float32 to DIR/<name>.f32 for a
full-vector comparison by hand.

    python3 tests/ref/llama_ref.py --tiny > tests/ref/tiny_ref.h

writes tiny llama, qwen2 (QKV bias, separate output) and qwen3 (q/k norm,
head_dim != dim / heads, 4:1 GQA) models whose weights follow a formula
(tiny_value(); tests/check_forward.c builds the same files in memory), and
prints their logits after a prompt and after greedy decode steps.
"""
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

MODEL = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1][0] != "-" else \
    "models/SmolLM2-135M-Instruct.Q4_1.gguf"
DUMP = sys.argv[sys.argv.index("--dump") + 1] if "--dump" in sys.argv \
    else None

CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
        "trained by Hugging Face<|im_end|>\n<|im_start|>user\n%s"
        "<|im_end|>\n<|im_start|>assistant\n")

# (name, text); must match the order of tests/check_forward.c's use
PROMPTS = [
    ("plain", "The capital of France is"),
    ("long", "Once upon a time, in a small village at the edge of a great "
     "forest, there lived an old clockmaker named Elias. Every morning he "
     "opened his shop, wound the hundred clocks that hung on its walls, "
     "and listened to them tick in perfect agreement. One winter night, "
     "a stranger knocked on his door carrying a clock that ran backwards."),
    ("chat", CHAT % "What is the capital of France?"),
]
GREEDY = ("greedy", CHAT % "Explain in a few sentences why the sky is blue.")
GREEDY_STEPS = 64
NTOP = 64
STRIDE_N, STRIDE, STRIDE0 = 960, 51, 7


class Gguf:
    def __init__(self, path):
        self.r = GGUFReader(path)
        self.t = {t.name: t for t in self.r.tensors}

    def field(self, key, default=None):
        f = self.r.fields.get(key)
        if f is None:
            return default
        return f.contents()

    def mat(self, name):
        """[rows][ne0] float64: rows are output features"""
        t = self.t[name]
        w = dequantize(t.data, t.tensor_type).astype(np.float64)
        return w.reshape(-1, int(t.shape[0]))

    def vec(self, name):
        return self.mat(name).reshape(-1)


def tokenizer(g):
    tokens = g.field("tokenizer.ggml.tokens")
    merges = g.field("tokenizer.ggml.merges")
    ttype = g.field("tokenizer.ggml.token_type")
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                               merges=[tuple(m.split(" ", 1))
                                       for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, ttype) if ty == 3])
    return tok


class Llama:
    """llama, mistral (pairwise RoPE on the file's Q/K rows), qwen2 (QKV
    bias), qwen3 (q/k RMSNorm); both use rotate-half RoPE"""

    def __init__(self, g):
        a = g.field("general.architecture")
        assert a in ("llama", "mistral", "qwen2", "qwen3"), a
        self.arch = a
        self.n_layers = int(g.field(a + ".block_count"))
        self.dim = int(g.field(a + ".embedding_length"))
        self.nh = int(g.field(a + ".attention.head_count"))
        self.nkv = int(g.field(a + ".attention.head_count_kv", self.nh))
        self.hd = int(g.field(a + ".attention.key_length",
                              self.dim // self.nh))
        self.eps = float(g.field(a + ".attention.layer_norm_rms_epsilon"))
        theta = float(g.field(a + ".rope.freq_base", 10000.0))
        # HF: inv_freq in fp32, angle = pos * inv_freq in fp32
        i = np.arange(0, self.hd, 2, dtype=np.float64)
        self.inv_freq = (theta ** (-i / self.hd)).astype(np.float32)
        self.embd = g.mat("token_embd.weight")
        self.out = g.mat("output.weight") if "output.weight" in g.t \
            else self.embd
        self.out_norm = g.vec("output_norm.weight")
        names = ["attn_norm.weight", "attn_q.weight", "attn_k.weight",
                 "attn_v.weight", "attn_output.weight", "ffn_norm.weight",
                 "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"]
        if a == "qwen2":
            names += ["attn_q.bias", "attn_k.bias", "attn_v.bias"]
        if a == "qwen3":
            names += ["attn_q_norm.weight", "attn_k_norm.weight"]
        self.L = []
        for l in range(self.n_layers):
            p = "blk.%d." % l
            self.L.append({k.rsplit(".", 1)[0] +
                           ("_b" if k.endswith("bias") else ""):
                           (g.mat(p + k) if len(g.t[p + k].shape) == 2
                            else g.vec(p + k)) for k in names})
        self.reset()

    def reset(self):
        self.k = [np.zeros((0, self.nkv, self.hd)) for _ in self.L]
        self.v = [np.zeros((0, self.nkv, self.hd)) for _ in self.L]

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) +
                           self.eps) * w

    def angles(self, pos):
        ang = (pos.astype(np.float32)[:, None] *
               self.inv_freq[None, :]).astype(np.float64)
        return np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(self, x, pos):
        c, s = self.angles(pos)
        out = np.empty_like(x)
        if self.arch in ("llama", "mistral"):
            # llama.cpp's normal RoPE: element 2i pairs with 2i + 1
            x0, x1 = x[..., 0::2], x[..., 1::2]
            out[..., 0::2] = x0 * c - x1 * s
            out[..., 1::2] = x0 * s + x1 * c
        else:
            # NeoX: element i pairs with i + hd/2
            h = self.hd // 2
            x0, x1 = x[..., :h], x[..., h:]
            out[..., :h] = x0 * c - x1 * s
            out[..., h:] = x0 * s + x1 * c
        return out

    def forward(self, ids):
        """logits after each of the new tokens @ids, [n][vocab]"""
        n = len(ids)
        p0 = self.k[0].shape[0]
        pos = np.arange(p0, p0 + n)
        x = self.embd[np.array(ids)]
        grp = self.nh // self.nkv
        for l, W in enumerate(self.L):
            h = self.rms(x, W["attn_norm"])
            q, k, v = (h @ W["attn_q"].T, h @ W["attn_k"].T,
                       h @ W["attn_v"].T)
            if "attn_q_b" in W:
                q, k, v = q + W["attn_q_b"], k + W["attn_k_b"], \
                    v + W["attn_v_b"]
            q = q.reshape(n, self.nh, self.hd)
            k = k.reshape(n, self.nkv, self.hd)
            v = v.reshape(n, self.nkv, self.hd)
            if "attn_q_norm" in W:
                q, k = self.rms(q, W["attn_q_norm"]), \
                    self.rms(k, W["attn_k_norm"])
            q, k = self.rope(q, pos), self.rope(k, pos)
            self.k[l] = np.concatenate([self.k[l], k])
            self.v[l] = np.concatenate([self.v[l], v])
            K = np.repeat(self.k[l], grp, axis=1)  # [T][nh][hd]
            V = np.repeat(self.v[l], grp, axis=1)
            s = np.einsum("qhd,khd->hqk", q, K) / np.sqrt(self.hd)
            T = K.shape[0]
            mask = np.arange(T)[None, :] > pos[:, None]
            s = np.where(mask[None], -np.inf, s)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", s, V).reshape(n, -1)
            x = x + o @ W["attn_output"].T
            h = self.rms(x, W["ffn_norm"])
            gt, up = h @ W["ffn_gate"].T, h @ W["ffn_up"].T
            x = x + (gt / (1.0 + np.exp(-gt)) * up) @ W["ffn_down"].T
        return self.rms(x, self.out_norm) @ self.out.T


def samples(z):
    top = np.argsort(-z, kind="stable")[:NTOP]
    idx = list(top) + [STRIDE0 + STRIDE * i for i in range(STRIDE_N)]
    return [int(i) for i in idx]


def emit_logits(name, z):
    if DUMP:
        z.astype(np.float32).tofile("%s/%s.f32" % (DUMP, name))
    idx = samples(z)
    srt = np.sort(z)[::-1]
    print("\t\t.norm = %.17g, .sum = %.17g, .argmax = %d, "
          "/* margin %.3g */" % (np.linalg.norm(z), z.sum(),
                                 int(np.argmax(z)), srt[0] - srt[1]))
    print("\t\t.idx = { %s }," % ", ".join(map(str, idx)))
    print("\t\t.val = { %s }," % ", ".join("%.9g" % z[i] for i in idx))


STRUCT = """
/* one prompt: its ids and the statistics of the logits after it */
struct fwd_ref {
	const char *name;
	const char *text; /* NULL: the logits of the last greedy step */
	int n_ids;
	int32_t ids[REF_MAX_IDS];
	double norm, sum; /* of the whole logits vector */
	int32_t argmax;
	int32_t idx[REF_NSAMP]; /* the 64 largest, then every 51st */
	float val[REF_NSAMP];
	int32_t greedy[REF_GREEDY_STEPS]; /* greedy prompt only */
};
"""


def c_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') \
        .replace("\n", "\\n") + '"'


# ---- tiny synthetic models: every architecture, weights by formula ----

TINY = [  # arch, dim, heads, kv heads, head_dim, ffn, vocab, layers, tied
    ("llama", 32, 4, 2, 8, 48, 64, 2, True),
    ("qwen2", 32, 4, 2, 8, 48, 64, 2, False),
    ("qwen3", 32, 4, 1, 16, 48, 64, 2, True),
]
TINY_PROMPT = [1, 5, 9, 13, 2, 40, 63, 7, 22, 31]
TINY_STEPS = 6


def tiny_value(name, ne0, n):
    """the weights of tensor @name, flat in file order: tiny_value() in
    tests/check_forward.c computes the same numbers"""
    k = sum((j + 1) * ord(c) for j, c in enumerate(name)) % 997
    s = np.sin(0.37 * np.arange(n, dtype=np.float64) + 1.1 * k + 0.5)
    if name.endswith("norm.weight"):
        s = 1.0 + 0.2 * s
    elif name.endswith(".bias"):
        s = 0.1 * s
    elif name != "token_embd.weight":
        s = s * (1.5 / np.sqrt(ne0))
    return s.astype(np.float32)


def tiny_write(path, cfg):
    from gguf import GGUFWriter
    a, dim, nh, nkv, hd, ffn, vocab, layers, tied = cfg
    w = GGUFWriter(path, a)
    w.add_uint32(a + ".context_length", 64)
    w.add_uint32(a + ".embedding_length", dim)
    w.add_uint32(a + ".block_count", layers)
    w.add_uint32(a + ".feed_forward_length", ffn)
    w.add_uint32(a + ".attention.head_count", nh)
    w.add_uint32(a + ".attention.head_count_kv", nkv)
    w.add_uint32(a + ".attention.key_length", hd)
    w.add_uint32(a + ".vocab_size", vocab)
    w.add_float32(a + ".rope.freq_base", 10000.0)
    w.add_float32(a + ".attention.layer_norm_rms_epsilon", 1e-5)
    for name, ne0, ne1 in tiny_tensors(cfg):
        v = tiny_value(name, ne0, ne0 * ne1)
        w.add_tensor(name, v.reshape(ne1, ne0) if ne1 > 1 else v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tiny_tensors(cfg):
    """(name, ne0, ne1) in the order tests/check_forward.c writes them"""
    a, dim, nh, nkv, hd, ffn, vocab, layers, tied = cfg
    t = [("token_embd.weight", dim, vocab), ("output_norm.weight", dim, 1)]
    if not tied:
        t.append(("output.weight", dim, vocab))
    for l in range(layers):
        p = "blk.%d." % l
        t += [(p + "attn_norm.weight", dim, 1),
              (p + "attn_q.weight", dim, nh * hd),
              (p + "attn_k.weight", dim, nkv * hd),
              (p + "attn_v.weight", dim, nkv * hd),
              (p + "attn_output.weight", nh * hd, dim),
              (p + "ffn_norm.weight", dim, 1),
              (p + "ffn_gate.weight", dim, ffn),
              (p + "ffn_up.weight", dim, ffn),
              (p + "ffn_down.weight", ffn, dim)]
        if a == "qwen2":
            t += [(p + "attn_q.bias", nh * hd, 1),
                  (p + "attn_k.bias", nkv * hd, 1),
                  (p + "attn_v.bias", nkv * hd, 1)]
        if a == "qwen3":
            t += [(p + "attn_q_norm.weight", hd, 1),
                  (p + "attn_k_norm.weight", hd, 1)]
    return t


def tiny_main():
    import os
    import tempfile
    print("/* SPDX-License-Identifier: MIT */")
    print("/* generated by tests/ref/llama_ref.py --tiny; do not edit */")
    print("#define TINY_NPROMPT %d" % len(TINY_PROMPT))
    print("#define TINY_STEPS %d" % TINY_STEPS)
    print("#define TINY_VOCAB %d" % TINY[0][6])
    print("static const int32_t tiny_prompt[TINY_NPROMPT] = { %s };" %
          ", ".join(map(str, TINY_PROMPT)))
    print("""
/* one tiny model: its shape, then logits after the prompt and after the
 * last of TINY_STEPS greedy decode steps, and the greedy tokens */
struct tiny_ref {
	const char *arch;
	uint32_t dim, n_heads, n_kv_heads, head_dim, ffn, vocab, layers;
	bool tied;
	float prefill[TINY_VOCAB];
	float last[TINY_VOCAB];
	int32_t greedy[TINY_STEPS];
};
""")
    print("static const struct tiny_ref tiny_refs[] = {")
    with tempfile.TemporaryDirectory() as d:
        for cfg in TINY:
            path = os.path.join(d, cfg[0] + ".gguf")
            tiny_write(path, cfg)
            m = Llama(Gguf(path))
            z = m.forward(TINY_PROMPT)[-1]
            pre = z
            out = []
            for step in range(TINY_STEPS):
                out.append(int(np.argmax(z)))
                if step + 1 < TINY_STEPS:
                    z = m.forward([out[-1]])[-1]
            print("\t{ \"%s\", %d, %d, %d, %d, %d, %d, %d, %s," %
                  (cfg[0], *cfg[1:8], "true" if cfg[8] else "false"))
            print("\t  { %s }," % ", ".join("%.9g" % v for v in pre))
            print("\t  { %s }," % ", ".join("%.9g" % v for v in z))
            print("\t  { %s } }," % ", ".join(map(str, out)))
    print("};")


def main():
    if "--tiny" in sys.argv:
        tiny_main()
        return
    g = Gguf(MODEL)
    tok = tokenizer(g)
    m = Llama(g)
    print("/* SPDX-License-Identifier: MIT */")
    print("/* generated by tests/ref/llama_ref.py from %s; do not edit */"
          % MODEL.split("/")[-1])
    print("#define REF_NSAMP %d" % (NTOP + STRIDE_N))
    print("#define REF_GREEDY_STEPS %d" % GREEDY_STEPS)
    enc = [(name, text, tok.encode(text, add_special_tokens=False).ids)
           for name, text in PROMPTS + [GREEDY]]
    print("#define REF_MAX_IDS %d" % max(len(e[2]) for e in enc))
    print(STRUCT)
    print("static const struct fwd_ref ref_prompts[] = {")
    for name, text, ids in enc:
        m.reset()
        z = m.forward(ids)[-1]
        print("\t{ .name = %s, .text = %s," % (c_str(name), c_str(text)))
        print("\t\t.n_ids = %d, .ids = { %s }," %
              (len(ids), ", ".join(map(str, ids))))
        emit_logits(name, z)
        if name == GREEDY[0]:
            out = []
            margins = []
            for step in range(GREEDY_STEPS):
                srt = np.sort(z)[::-1]
                margins.append(srt[0] - srt[1])
                out.append(int(np.argmax(z)))
                if step + 1 < GREEDY_STEPS:
                    z = m.forward([out[-1]])[-1]
            print("\t\t.greedy = { %s }, /* min margin %.3g */" %
                  (", ".join(map(str, out)), min(margins)))
            print("\t},")
            print("\t/* logits of the last greedy decode step */")
            print("\t{ .name = \"greedy-last\", .text = NULL, .n_ids = 0,")
            emit_logits("greedy-last", z)
        print("\t},")
    print("};")


main()
