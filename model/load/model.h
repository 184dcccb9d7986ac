/* SPDX-License-Identifier: MIT */
/*
 * model.h - one entry point that opens a model in any supported format:
 * a GGUF file, or a Hugging Face model directory (config.json,
 * model.safetensors or model.safetensors.index.json with its shards,
 * tokenizer.json, optional generation_config.json).
 *
 * What an executor (CPU or CUDA) gets from an opened model:
 *  - m->cfg: hyperparameters (struct llm_config, config.h);
 *  - m->w: every weight tensor as a struct llm_gguf_tensor (gguf.h): its
 *    dtype in @type (LLM_GGML_F32, F16, BF16, Q8_0, Q4_0, Q4_1; a Hugging
 *    Face directory gives F32, F16 or BF16 only), its shape in @ne (ne[0] is
 *    the row length: a matrix [out][in] row-major has ne = { in, out }),
 *    @nbytes and @data, a pointer into a read-only mapping of the file that
 *    stays valid until llm_model_close();
 *  - m->tok: the tokenizer (tokenizer.h); NULL only for a Hugging Face
 *    directory without tokenizer.json (weights-only checkpoints);
 *  - m->gen: end-of-sequence ids and sampling defaults.
 *
 * RoPE row order. Hugging Face checkpoints keep each head's Q and K rows in
 * "rotate half" order (the forward pass pairs row i with row i + hd/2).
 * GGUF files of the llama and mistral architectures were permuted by the
 * convert script for llama.cpp's pairwise RoPE: file row 2i + j of a head
 * is Hugging Face row j * hd/2 + i. m->cfg.qk_interleaved tells which: when
 * true, Hugging Face row r of wq/wk is file row llm_qk_file_row(cfg, r).
 * Every executor of this project computes rotate-half RoPE (kvk_rope_*), so
 * it must read the rows through llm_qk_file_row().
 *
 * Errors: negative errno and one line in @err, naming the file and the
 * problem (-ENOENT missing file, -EBADMSG truncated or corrupt file or
 * mismatched shapes, -EOPNOTSUPP unknown architecture or dtype, -ENOMEM).
 */
#ifndef LLM_MODEL_H
#define LLM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "gguf.h"
#include "tokenizer.h"

#define LLM_MODEL_MAX_EOS 8

enum llm_model_format {
	LLM_FORMAT_GGUF, /* one .gguf file */
	LLM_FORMAT_HF,	 /* a Hugging Face directory with safetensors */
};

/**
 * struct llm_gen_defaults - from generation_config.json or GGUF metadata
 * @n_eos: ids in @eos (>= 1 when the tokenizer has an eos token)
 * @eos: tokens that end generation (eos_token_id, may be a list)
 * @bos: bos_token_id or -1
 * @temperature: suggested temperature, or -1 when the file gives none
 * @top_k: suggested top-k, or -1
 * @top_p: suggested top-p, or -1
 */
struct llm_gen_defaults {
	int n_eos;
	int32_t eos[LLM_MODEL_MAX_EOS];
	int32_t bos;
	float temperature;
	int top_k;
	float top_p;
};

struct llm_st; /* safetensors mappings (private) */

/**
 * struct llm_model - an opened model. Owned by the caller of
 * llm_model_open(), released with llm_model_close(). Read-only after open:
 * any number of threads may read it.
 * @format: which loader opened it
 * @path: the path given to llm_model_open()
 * @cfg: hyperparameters
 * @w: weight tensors; pointers into @src
 * @tok: tokenizer; NULL for a Hugging Face directory without tokenizer.json
 * @gen: generation defaults
 * @src: the tensor table: the GGUF file itself, or for a Hugging Face
 *	directory a table (no metadata) whose tensors carry GGUF names
 *	("blk.N.attn_q.weight") and point into the safetensors mappings
 * @st: the safetensors mappings (NULL for GGUF)
 */
struct llm_model {
	enum llm_model_format format;
	char path[4096];
	struct llm_config cfg;
	struct llm_weights w;
	struct llm_tok *tok;
	struct llm_gen_defaults gen;
	struct llm_gguf *src;
	struct llm_st *st;
};

int llm_model_open(const char *path, struct llm_model **out, char *err,
		   size_t errlen);
void llm_model_close(struct llm_model *m);

/**
 * llm_qk_file_row() - the stored row holding Hugging Face row @r of wq or
 * wk (bias rows too)
 * @c: the model's configuration
 * @r: row in Hugging Face (rotate-half) order, 0 .. heads * head_dim - 1
 *
 * Return: @r itself unless @c->qk_interleaved; then the row of the
 * pairwise-RoPE order of llama GGUF files.
 */
static inline uint64_t llm_qk_file_row(const struct llm_config *c,
				       uint64_t r)
{
	uint64_t hd = c->head_dim, h = r / hd, i = r % hd;

	if (!c->qk_interleaved)
		return r;
	/* HF row j * hd/2 + i2 of a head is file row 2 * i2 + j */
	return h * hd + 2 * (i % (hd / 2)) + i / (hd / 2);
}

#endif /* LLM_MODEL_H */
