#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""gguf_ref.py - reference values for tests/check_gguf.c (test_real_model).

Reads the default model with the `gguf` package (pip install gguf numpy) and
prints, for a few tensors, the type, shape and the first values and the sum
of row 0 and of the last row after dequantisation. The expected values in
check_gguf.c were produced by this script:

    python3 tests/ref/gguf_ref.py [models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

path = sys.argv[1] if len(sys.argv) > 1 else \
    "models/SmolLM2-135M-Instruct.Q4_1.gguf"
r = GGUFReader(path)
print("tensors", len(r.tensors), "kv", len(r.fields) - 3)
for name in ("token_embd.weight", "blk.0.attn_q.weight",
             "blk.0.attn_norm.weight", "blk.29.ffn_down.weight",
             "output_norm.weight"):
    t = next(x for x in r.tensors if x.name == name)
    w = dequantize(t.data, t.tensor_type).astype(np.float32)
    ne0 = int(t.shape[0])
    w = w.reshape(-1, ne0)
    print(f'{{ "{name}", {t.tensor_type.value}, {ne0}, {w.shape[0]}, '
          f'{{ {w[0, 0]:.9g}f, {w[0, 1]:.9g}f, {w[0, 2]:.9g}f, '
          f'{w[0, 3]:.9g}f }}, {w[0].astype(np.float64).sum():.9g}, '
          f'{w[-1].astype(np.float64).sum():.9g} }},')
