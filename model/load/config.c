// SPDX-License-Identifier: MIT
/*
 * config.c - model hyperparameters and weight binding from GGUF.
 *
 * GGUF stores a matrix W of shape [out, in] (row-major, one row per output)
 * as ne = { in, out }: ne[0] is the row length. The shapes in config.h are
 * written in that ne order.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static int __attribute__((format(printf, 4, 5)))
cfg_fail(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (err && errlen) {
		n = snprintf(err, errlen, "model: ");
		if (n > 0 && (size_t)n < errlen) {
			va_start(ap, fmt);
			vsnprintf(err + n, errlen - n, fmt, ap);
			va_end(ap);
		}
	}
	return ret;
}

static const struct {
	const char *name;
	enum llm_arch arch;
} arch_tab[] = {
	{ "llama", LLM_ARCH_LLAMA },
	{ "mistral", LLM_ARCH_MISTRAL },
	{ "qwen2", LLM_ARCH_QWEN2 },
	{ "qwen3", LLM_ARCH_QWEN3 },
};

/* read "<arch>.<key>" as u32; @dflt used when absent unless @required */
static int cfg_u32(const struct llm_gguf *g, const struct llm_config *c,
		   const char *key, bool required, uint32_t dflt,
		   uint32_t lo, uint32_t hi, uint32_t *out, char *err,
		   size_t errlen)
{
	char full[96];
	int ret;

	snprintf(full, sizeof(full), "%s.%s", c->arch_name, key);
	ret = llm_gguf_get_u32(g, full, out);
	if (ret == -ENOENT && !required) {
		*out = dflt;
		return 0;
	}
	if (ret == -ENOENT)
		return cfg_fail(err, errlen, -EBADMSG, "missing key %s", full);
	if (ret)
		return cfg_fail(err, errlen, -EBADMSG,
				"key %s is not an unsigned integer", full);
	if (*out < lo || *out > hi)
		return cfg_fail(err, errlen, -EBADMSG,
				"%s = %u out of range [%u, %u]", full, *out,
				lo, hi);
	return 0;
}

static int cfg_f32(const struct llm_gguf *g, const struct llm_config *c,
		   const char *key, bool required, float dflt, float lo,
		   float hi, float *out, char *err, size_t errlen)
{
	char full[96];
	int ret;

	snprintf(full, sizeof(full), "%s.%s", c->arch_name, key);
	ret = llm_gguf_get_f32(g, full, out);
	if (ret == -ENOENT && !required) {
		*out = dflt;
		return 0;
	}
	if (ret == -ENOENT)
		return cfg_fail(err, errlen, -EBADMSG, "missing key %s", full);
	if (ret)
		return cfg_fail(err, errlen, -EBADMSG, "key %s is not a float",
				full);
	if (!isfinite(*out) || !(*out > lo) || !(*out < hi))
		return cfg_fail(err, errlen, -EBADMSG,
				"%s = %g out of range (%g, %g)", full, *out,
				lo, hi);
	return 0;
}

static int cfg_vocab(const struct llm_gguf *g, struct llm_config *c,
		     char *err, size_t errlen)
{
	const struct llm_gguf_kv *tok;
	const struct llm_gguf_tensor *emb;
	int ret;

	/* absent: from the tokenizer or the embedding; present: not 0 */
	ret = cfg_u32(g, c, "vocab_size", false, 0, 1, LLM_MAX_VOCAB,
		      &c->n_vocab, err, errlen);
	if (ret)
		return ret;
	tok = llm_gguf_find_kv(g, "tokenizer.ggml.tokens");
	emb = llm_gguf_find_tensor(g, "token_embd.weight");
	if (!c->n_vocab && tok && tok->type == LLM_GGUF_ARRAY &&
	    tok->arr_n <= LLM_MAX_VOCAB)
		c->n_vocab = (uint32_t)tok->arr_n;
	if (!c->n_vocab && emb && emb->n_dims == 2 &&
	    emb->ne[1] <= LLM_MAX_VOCAB)
		c->n_vocab = (uint32_t)emb->ne[1];
	if (!c->n_vocab)
		return cfg_fail(err, errlen, -EBADMSG,
				"cannot tell the vocabulary size");
	if (tok && tok->type == LLM_GGUF_ARRAY && tok->arr_n > c->n_vocab)
		return cfg_fail(err, errlen, -EBADMSG,
				"tokenizer has %llu tokens, vocab_size %u",
				(unsigned long long)tok->arr_n, c->n_vocab);
	return 0;
}

/**
 * llm_config_load() - read and validate the hyperparameters.
 * @g: parsed GGUF file.
 * @c: filled on success.
 * @err: buffer for a one-line message on failure (may be NULL).
 * @errlen: bytes in @err.
 *
 * Return: 0, -EOPNOTSUPP for an unknown architecture, -EBADMSG for a
 * missing, mistyped, out-of-range or inconsistent value.
 */
int llm_config_load(const struct llm_gguf *g, struct llm_config *c,
		    char *err, size_t errlen)
{
	struct llm_gguf_str arch;
	size_t i;
	int ret;

	memset(c, 0, sizeof(*c));
	if (llm_gguf_get_str(g, "general.architecture", &arch))
		return cfg_fail(err, errlen, -EBADMSG,
				"missing string general.architecture");
	for (i = 0; i < ARRAY_SIZE(arch_tab); i++)
		if (llm_gguf_str_eq(arch, arch_tab[i].name))
			break;
	if (i == ARRAY_SIZE(arch_tab))
		return cfg_fail(err, errlen, -EOPNOTSUPP,
				"unsupported architecture '%.*s'",
				(int)(arch.len > 32 ? 32 : arch.len), arch.ptr);
	c->arch = arch_tab[i].arch;
	snprintf(c->arch_name, sizeof(c->arch_name), "%s", arch_tab[i].name);
	c->qkv_bias = c->arch == LLM_ARCH_QWEN2;
	c->qk_norm = c->arch == LLM_ARCH_QWEN3;
	c->qk_interleaved = c->arch == LLM_ARCH_LLAMA ||
			    c->arch == LLM_ARCH_MISTRAL;

	ret = cfg_u32(g, c, "context_length", true, 0, 1, LLM_MAX_CTX,
		      &c->n_ctx, err, errlen);
	if (!ret)
		ret = cfg_u32(g, c, "embedding_length", true, 0, 1,
			      LLM_MAX_DIM, &c->dim, err, errlen);
	if (!ret)
		ret = cfg_u32(g, c, "block_count", true, 0, 1, LLM_MAX_LAYERS,
			      &c->n_layers, err, errlen);
	if (!ret)
		ret = cfg_u32(g, c, "feed_forward_length", true, 0, 1,
			      LLM_MAX_FFN, &c->ffn_dim, err, errlen);
	if (!ret)
		ret = cfg_u32(g, c, "attention.head_count", true, 0, 1,
			      LLM_MAX_HEADS, &c->n_heads, err, errlen);
	if (!ret)
		ret = cfg_u32(g, c, "attention.head_count_kv", false,
			      c->n_heads, 1, LLM_MAX_HEADS, &c->n_kv_heads,
			      err, errlen);
	if (ret)
		return ret;
	if (c->n_heads % c->n_kv_heads)
		return cfg_fail(err, errlen, -EBADMSG,
				"head_count %u is not a multiple of "
				"head_count_kv %u", c->n_heads, c->n_kv_heads);
	ret = cfg_u32(g, c, "attention.key_length", false, 0, 2, LLM_MAX_DIM,
		      &c->head_dim, err, errlen);
	if (ret)
		return ret;
	if (!c->head_dim) {
		if (c->dim % c->n_heads)
			return cfg_fail(err, errlen, -EBADMSG,
					"embedding_length %u is not a multiple "
					"of head_count %u", c->dim,
					c->n_heads);
		c->head_dim = c->dim / c->n_heads;
	}
	if (c->head_dim % 2 || c->head_dim < 2)
		return cfg_fail(err, errlen, -EBADMSG,
				"head dimension %u is not even", c->head_dim);
	ret = cfg_u32(g, c, "rope.dimension_count", false, c->head_dim, 2,
		      c->head_dim, &c->rope_dim, err, errlen);
	if (!ret && c->rope_dim % 2)
		ret = cfg_fail(err, errlen, -EBADMSG,
			       "rope.dimension_count %u is odd", c->rope_dim);
	if (!ret)
		ret = cfg_f32(g, c, "rope.freq_base", false, 10000.0f, 0.0f,
			      1e12f, &c->rope_theta, err, errlen);
	if (!ret)
		ret = cfg_f32(g, c, "attention.layer_norm_rms_epsilon", true, 0,
			      0.0f, 1.0f, &c->rms_eps, err, errlen);
	if (!ret)
		ret = cfg_vocab(g, c, err, errlen);
	if (!ret && err && errlen)
		err[0] = 0;
	return ret;
}

/* find @name and check its shape (2-D when @ne1 is nonzero) */
static int bind(const struct llm_gguf *g, const char *name, uint64_t ne0,
		uint64_t ne1, bool optional, const struct llm_gguf_tensor **out,
		uint64_t *bytes, char *err, size_t errlen)
{
	const struct llm_gguf_tensor *t = llm_gguf_find_tensor(g, name);
	uint32_t nd = ne1 ? 2 : 1;

	*out = NULL;
	if (!t) {
		if (optional)
			return 0;
		return cfg_fail(err, errlen, -EBADMSG, "missing tensor '%s'",
				name);
	}
	if (t->n_dims != nd || t->ne[0] != ne0 || (ne1 && t->ne[1] != ne1)) {
		if (ne1)
			return cfg_fail(err, errlen, -EBADMSG,
					"tensor '%s' has shape [%llu, %llu, "
					"%llu, %llu] (%u dims), expected "
					"[%llu, %llu]", name,
					(unsigned long long)t->ne[0],
					(unsigned long long)t->ne[1],
					(unsigned long long)t->ne[2],
					(unsigned long long)t->ne[3], t->n_dims,
					(unsigned long long)ne0,
					(unsigned long long)ne1);
		return cfg_fail(err, errlen, -EBADMSG,
				"tensor '%s' has shape [%llu, %llu] (%u dims), "
				"expected [%llu]", name,
				(unsigned long long)t->ne[0],
				(unsigned long long)t->ne[1], t->n_dims,
				(unsigned long long)ne0);
	}
	*out = t;
	*bytes += t->nbytes;
	return 0;
}

static int bind_layer(const struct llm_gguf *g, const struct llm_config *c,
		      uint32_t l, struct llm_layer_weights *lw,
		      uint64_t *bytes, char *err, size_t errlen)
{
	uint64_t q = (uint64_t)c->n_heads * c->head_dim;
	uint64_t kv = (uint64_t)c->n_kv_heads * c->head_dim;
	const struct {
		const char *suffix;
		uint64_t ne0, ne1;
		bool want;
		const struct llm_gguf_tensor **dst;
	} tab[] = {
		{ "attn_norm.weight", c->dim, 0, true, &lw->attn_norm },
		{ "attn_q.weight", c->dim, q, true, &lw->wq },
		{ "attn_k.weight", c->dim, kv, true, &lw->wk },
		{ "attn_v.weight", c->dim, kv, true, &lw->wv },
		{ "attn_output.weight", q, c->dim, true, &lw->wo },
		{ "attn_q.bias", q, 0, c->qkv_bias, &lw->bq },
		{ "attn_k.bias", kv, 0, c->qkv_bias, &lw->bk },
		{ "attn_v.bias", kv, 0, c->qkv_bias, &lw->bv },
		{ "attn_q_norm.weight", c->head_dim, 0, c->qk_norm, &lw->q_norm },
		{ "attn_k_norm.weight", c->head_dim, 0, c->qk_norm, &lw->k_norm },
		{ "ffn_norm.weight", c->dim, 0, true, &lw->ffn_norm },
		{ "ffn_gate.weight", c->dim, c->ffn_dim, true, &lw->w_gate },
		{ "ffn_up.weight", c->dim, c->ffn_dim, true, &lw->w_up },
		{ "ffn_down.weight", c->ffn_dim, c->dim, true, &lw->w_down },
	};
	char name[LLM_GGUF_NAME_MAX];
	int ret;

	for (size_t i = 0; i < ARRAY_SIZE(tab); i++) {
		snprintf(name, sizeof(name), "blk.%u.%s", l, tab[i].suffix);
		if (!tab[i].want) {
			*tab[i].dst = NULL;
			continue;
		}
		ret = bind(g, name, tab[i].ne0, tab[i].ne1, false, tab[i].dst,
			   bytes, err, errlen);
		if (ret)
			return ret;
	}
	return 0;
}

static void mark(const struct llm_gguf *g, const struct llm_gguf_tensor *t,
		 bool *used)
{
	if (t && t >= g->tensors && t < g->tensors + g->n_tensors)
		used[t - g->tensors] = true;
}

/*
 * Every tensor of the file must be one the model reads: a layer past
 * block_count, an attention bias the architecture has no use for or a
 * name nothing knows would otherwise be ignored without a word.
 */
static int check_unused(const struct llm_gguf *g, const struct llm_config *c,
			const struct llm_weights *w, char *err, size_t errlen)
{
	bool *used = calloc(g->n_tensors ? g->n_tensors : 1, sizeof(*used));
	const char *name = NULL;
	char suffix[LLM_GGUF_NAME_MAX];
	unsigned int l;
	int n;

	if (!used)
		return cfg_fail(err, errlen, -ENOMEM, "out of memory");
	mark(g, w->tok_embd, used);
	mark(g, w->output_norm, used);
	mark(g, w->output, used);
	mark(g, w->rope_freqs, used);
	for (uint32_t i = 0; i < w->n_layers; i++) {
		const struct llm_layer_weights *lw = &w->layers[i];

		mark(g, lw->attn_norm, used);
		mark(g, lw->wq, used);
		mark(g, lw->wk, used);
		mark(g, lw->wv, used);
		mark(g, lw->wo, used);
		mark(g, lw->bq, used);
		mark(g, lw->bk, used);
		mark(g, lw->bv, used);
		mark(g, lw->q_norm, used);
		mark(g, lw->k_norm, used);
		mark(g, lw->ffn_norm, used);
		mark(g, lw->w_gate, used);
		mark(g, lw->w_up, used);
		mark(g, lw->w_down, used);
	}
	for (uint64_t i = 0; i < g->n_tensors && !name; i++)
		if (!used[i])
			name = g->tensors[i].name;
	free(used);
	if (!name)
		return 0;
	n = 0;
	if (sscanf(name, "blk.%u.%n", &l, &n) == 1 && n > 0) {
		snprintf(suffix, sizeof(suffix), "%s", name + n);
		if (l >= c->n_layers)
			return cfg_fail(err, errlen, -EBADMSG,
					"tensor '%s' is past block_count %u",
					name, c->n_layers);
		if (!strncmp(suffix, "attn_", 5) &&
		    strstr(suffix, ".bias"))
			return cfg_fail(err, errlen, -EOPNOTSUPP,
					"tensor '%s': %s has no attention "
					"bias", name, c->arch_name);
	}
	return cfg_fail(err, errlen, -EBADMSG, "unknown tensor '%s'", name);
}

/**
 * llm_weights_bind() - find every weight tensor and check its shape.
 * @g: parsed GGUF file; must stay open while @w is used.
 * @c: hyperparameters from llm_config_load().
 * @w: filled on success; release with llm_weights_fini().
 * @err: buffer for a one-line message on failure (may be NULL).
 * @errlen: bytes in @err.
 *
 * The output matrix is output.weight, or token_embd.weight when absent
 * (tied embeddings). A tensor the model does not read is refused: a layer
 * past block_count, an attention bias of an architecture without one, an
 * unknown name.
 *
 * Return: 0, -EBADMSG for a missing, surplus or unknown tensor or a wrong
 * shape, -EOPNOTSUPP for an attention bias the architecture does not have,
 * -ENOMEM.
 */
int llm_weights_bind(const struct llm_gguf *g, const struct llm_config *c,
		     struct llm_weights *w, char *err, size_t errlen)
{
	int ret;

	memset(w, 0, sizeof(*w));
	w->layers = calloc(c->n_layers, sizeof(*w->layers));
	if (!w->layers)
		return cfg_fail(err, errlen, -ENOMEM, "out of memory");
	w->n_layers = c->n_layers;
	w->src = g;
	ret = bind(g, "token_embd.weight", c->dim, c->n_vocab, false,
		   &w->tok_embd, &w->bytes, err, errlen);
	if (!ret)
		ret = bind(g, "output_norm.weight", c->dim, 0, false,
			   &w->output_norm, &w->bytes, err, errlen);
	if (!ret)
		ret = bind(g, "output.weight", c->dim, c->n_vocab, true,
			   &w->output, &w->bytes, err, errlen);
	if (!ret)
		ret = bind(g, "rope_freqs.weight", c->rope_dim / 2, 0, true,
			   &w->rope_freqs, &w->bytes, err, errlen);
	for (uint32_t l = 0; !ret && l < c->n_layers; l++)
		ret = bind_layer(g, c, l, &w->layers[l], &w->bytes, err,
				 errlen);
	if (!ret)
		ret = check_unused(g, c, w, err, errlen);
	if (ret) {
		llm_weights_fini(w);
		return ret;
	}
	w->tied = !w->output;
	if (w->tied)
		w->output = w->tok_embd;
	if (err && errlen)
		err[0] = 0;
	return 0;
}

/**
 * llm_weights_fini() - release what llm_weights_bind() allocated.
 * @w: bound weights (zeroed on return).
 */
void llm_weights_fini(struct llm_weights *w)
{
	free(w->layers);
	memset(w, 0, sizeof(*w));
}
