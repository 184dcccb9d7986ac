// SPDX-License-Identifier: MIT
/*
 * kvcontig.c - the tests' reference KV cache: every key and value in fp32,
 * contiguous per (sequence, layer, kv-head), exact softmax attention. The
 * executors' tests compare their forward passes against independent
 * references through it, without the policy cache's fp16 rounding.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvcontig.h"

struct kv_contig {
	struct llm_kv kv;
	float *k; /* [n_seq][n_layers][n_kv_heads][max_tok][head_dim] */
	float *v; /* same shape */
	float *s; /* [max_tok] scores */
};

static float *at(struct kv_contig *c, float *base, int seq, int layer, int h,
		 int pos)
{
	const struct llm_kv *kv = &c->kv;
	size_t o = ((size_t)seq * kv->n_layers + layer) * kv->n_kv_heads + h;

	return base + (o * kv->max_tok + pos) * kv->head_dim;
}

static int kvc_begin(struct llm_kv *kv, const struct llm_batch *b,
		     void *stream)
{
	(void)stream;
	for (int i = 0; i < b->n_seq; i++) {
		if (b->seq[i] < 0 || b->seq[i] >= kv->n_seq || b->n_tok[i] < 1)
			return -EINVAL;
		if (llm_kv_len(kv, b->seq[i]) + b->n_tok[i] > kv->max_tok)
			return -ENOSPC;
	}
	return 0;
}

/* store every new token, then attend: token t sees positions 0 .. its own */
static int kvc_layer(struct llm_kv *kv, const struct llm_batch *b, int layer,
		     const struct llm_kv_io *io, void *stream)
{
	struct kv_contig *c = (struct kv_contig *)kv;
	int hd = kv->head_dim, grp = kv->n_heads / kv->n_kv_heads;
	float scale = 1.0f / sqrtf((float)hd);
	size_t row = 0;

	(void)stream;
	if (io->odt != KVK_F32)
		return -EINVAL;
	for (int i = 0; i < b->n_seq; row += b->n_tok[i++]) {
		int s = b->seq[i], p0 = llm_kv_len(kv, s);

		for (int t = 0; t < b->n_tok[i]; t++)
			for (int h = 0; h < kv->n_kv_heads; h++) {
				const float *k = io->k + (row + t) * io->ldkv;
				const float *v = io->v + (row + t) * io->ldkv;

				memcpy(at(c, c->k, s, layer, h, p0 + t),
				       k + h * hd, hd * sizeof(float));
				memcpy(at(c, c->v, s, layer, h, p0 + t),
				       v + h * hd, hd * sizeof(float));
			}
		for (int t = 0; t < b->n_tok[i]; t++)
			for (int h = 0; h < kv->n_heads; h++) {
				const float *q = io->q + (row + t) * io->ldq +
						 h * hd;
				float *o = (float *)io->out +
					   (row + t) * io->ldo + h * hd;
				int g = h / grp, n = p0 + t + 1;
				float m = -INFINITY, sum = 0;

				for (int j = 0; j < n; j++) {
					const float *kj = at(c, c->k, s, layer,
							     g, j);
					float d = 0;

					for (int e = 0; e < hd; e++)
						d += q[e] * kj[e];
					c->s[j] = d * scale;
					m = c->s[j] > m ? c->s[j] : m;
				}
				for (int j = 0; j < n; j++) {
					c->s[j] = expf(c->s[j] - m);
					sum += c->s[j];
				}
				memset(o, 0, hd * sizeof(float));
				for (int j = 0; j < n; j++) {
					const float *vj = at(c, c->v, s, layer,
							     g, j);

					for (int e = 0; e < hd; e++)
						o[e] += c->s[j] / sum * vj[e];
				}
			}
	}
	return 0;
}

static int kvc_end(struct llm_kv *kv, const struct llm_batch *b, void *stream)
{
	(void)kv, (void)b, (void)stream;
	return 0;
}

static void kvc_destroy(struct llm_kv *kv)
{
	struct kv_contig *c = (struct kv_contig *)kv;

	free(c->k);
	free(c->v);
	free(c->s);
	free(kv->len);
	free(c);
}

static const struct llm_kv_ops kvc_ops = {
	.begin = kvc_begin,
	.layer = kvc_layer,
	.end = kvc_end,
	.destroy = kvc_destroy,
};

/**
 * llm_kv_contig_create() - the tests' contiguous fp32 KV cache
 * @c: the model's configuration (layers, heads, kv heads, head_dim)
 * @n_seq: sequence slots; >= 1
 * @max_tok: tokens each sequence can hold; 1 .. c->n_ctx
 * @out: the cache, released with llm_kv_destroy()
 *
 * Memory: 2 * n_seq * n_layers * n_kv_heads * max_tok * head_dim floats,
 * allocated at once.
 *
 * Return: 0, -EINVAL for a bad count, -ENOMEM.
 */
int llm_kv_contig_create(const struct llm_config *c, int n_seq, int max_tok,
			 struct llm_kv **out)
{
	struct kv_contig *kc;
	size_t n;

	if (n_seq < 1 || n_seq > 4096 || max_tok < 1 ||
	    (uint32_t)max_tok > c->n_ctx || !c->n_kv_heads)
		return -EINVAL;
	kc = calloc(1, sizeof(*kc));
	if (!kc)
		return -ENOMEM;
	kc->kv.ops = &kvc_ops;
	kc->kv.n_seq = n_seq;
	kc->kv.n_layers = c->n_layers;
	kc->kv.n_heads = c->n_heads;
	kc->kv.n_kv_heads = c->n_kv_heads;
	kc->kv.head_dim = c->head_dim;
	kc->kv.max_tok = max_tok;
	n = (size_t)n_seq * c->n_layers * c->n_kv_heads * max_tok *
	    c->head_dim;
	kc->kv.bytes = 2 * n * sizeof(float);
	kc->kv.len = calloc(n_seq, sizeof(int));
	kc->k = malloc(n * sizeof(float));
	kc->v = malloc(n * sizeof(float));
	kc->s = malloc((size_t)max_tok * sizeof(float));
	if (!kc->kv.len || !kc->k || !kc->v || !kc->s) {
		kvc_destroy(&kc->kv);
		return -ENOMEM;
	}
	*out = &kc->kv;
	return 0;
}
