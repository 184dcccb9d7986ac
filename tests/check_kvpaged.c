// SPDX-License-Identifier: MIT
/*
 * check_kvpaged.c - the KV cache in allocator pages (model/kv/kvpaged.c),
 * reached through the uapi, against the contiguous fp32 cache: round trips
 * of random keys and values (fp16 exact), attention from the pages against
 * attention over the fp32 rows, page accounting, refused calls, and with
 * the default model identical greedy tokens through either cache.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "gguf_writer.h"
#include "kva.h"
#include "kvcache.h"
#include "kvk.h"
#include "kvtest.h"
#include "model.h"

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * (1.0 / 9007199254740992.0)) *
	       4.0f - 2.0f;
}

static const struct llm_config small_cfg = {
	.n_layers = 3, .n_kv_heads = 2, .head_dim = 64, .n_heads = 4,
	.n_ctx = 1024,
};

/* random rows appended in uneven chunks come back fp16-rounded, exactly */
START_TEST(test_kvpaged_roundtrip)
{
	const struct llm_config *c = &small_cfg;
	int n_seq = 3, max_tok = 150, hd = c->head_dim, nkv = c->n_kv_heads;
	long ld = 2L * nkv * hd + 7; /* rows with K then V, padded */
	uint64_t s = kvtest_seed(__func__);
	struct llm_kv *kp, *kc;
	float *rows = malloc((size_t)max_tok * ld * sizeof(float));
	struct llm_kv_stats st;

	ck_assert_int_eq(llm_kv_paged_create(c, n_seq, max_tok, &kp), 0);
	ck_assert_int_eq(llm_kv_contig_create(c, n_seq, max_tok, &kc), 0);
	for (int q = 0; q < n_seq; q++) {
		for (int l = 0; l < (int)c->n_layers; l++) {
			int pos = 0;

			for (size_t i = 0; i < (size_t)max_tok * ld; i++)
				rows[i] = frand(&s);
			while (pos < max_tok) {
				int nt = 1 + (int)(kvtest_rand(&s) % 40);

				if (pos + nt > max_tok)
					nt = max_tok - pos;
				ck_assert_int_eq(kp->ops->append(kp, q, l, pos,
						 nt, rows + pos * ld,
						 rows + pos * ld + nkv * hd,
						 ld), 0);
				ck_assert_int_eq(kc->ops->append(kc, q, l, pos,
						 nt, rows + pos * ld,
						 rows + pos * ld + nkv * hd,
						 ld), 0);
				pos += nt;
			}
		}
	}
	for (int q = 0; q < n_seq; q++)
		for (int l = 0; l < (int)c->n_layers; l++)
			for (int h = 0; h < nkv; h++) {
				const float *k1, *v1, *k2, *v2;

				ck_assert_int_eq(kp->ops->view(kp, q, l, h,
						 max_tok, &k1, &v1), 0);
				ck_assert_int_eq(kc->ops->view(kc, q, l, h,
						 max_tok, &k2, &v2), 0);
				for (int i = 0; i < max_tok * hd; i++) {
					float ek = kvk_f16_to_f32(
						kvk_f32_to_f16(k2[i]));
					float ev = kvk_f16_to_f32(
						kvk_f32_to_f16(v2[i]));

					ck_assert_msg(k1[i] == ek &&
						      v1[i] == ev, "seq %d "
						      "layer %d head %d elem "
						      "%d", q, l, h, i);
				}
			}
	ck_assert_int_eq(llm_kv_stats(kp, &st), 0);
	ck_assert(st.paged);
	ck_assert_uint_gt(st.tokens_per_page, 0);
	/*
	 * every list holds the admission's worst case: ceil(max_tok / tpp)
	 * pages, plus one when a two-tier split could need it
	 */
	ck_assert_uint_eq(st.pages_used[0],
			  (uint64_t)n_seq * c->n_layers * nkv *
			  kva_worst_pages((uint32_t)st.tokens_per_page,
					  (uint32_t)st.tokens_per_page,
					  (uint32_t)max_tok));
	ck_assert_uint_eq(st.bytes, st.pages_used[0] * st.page_size);
	ck_assert_uint_eq(kp->bytes, st.bytes);
	printf("kvpaged: page %llu bytes, %llu tokens/page, %llu pages\n",
	       (unsigned long long)st.page_size,
	       (unsigned long long)st.tokens_per_page,
	       (unsigned long long)st.pages_used[0]);
	llm_kv_destroy(kp);
	llm_kv_destroy(kc);
	free(rows);
}
END_TEST

/* attend() from the pages against softmax attention over fp32 rows */
START_TEST(test_kvpaged_attend)
{
	const struct llm_config *c = &small_cfg;
	int max_tok = 97, hd = c->head_dim, nkv = c->n_kv_heads;
	long ld = 2L * nkv * hd;
	uint64_t s = kvtest_seed(__func__);
	float *rows = malloc((size_t)max_tok * ld * sizeof(float));
	float q[64], out[64], ref[64], *sc = malloc(max_tok * sizeof(float));
	struct llm_kv *kp, *kc;
	double e = 0, n2 = 0;

	for (size_t i = 0; i < (size_t)max_tok * ld; i++)
		rows[i] = frand(&s);
	ck_assert_int_eq(llm_kv_paged_create(c, 2, max_tok, &kp), 0);
	ck_assert_int_eq(llm_kv_contig_create(c, 2, max_tok, &kc), 0);
	ck_assert_int_eq(kp->ops->append(kp, 1, 2, 0, max_tok, rows,
					 rows + nkv * hd, ld), 0);
	ck_assert_int_eq(kc->ops->append(kc, 1, 2, 0, max_tok, rows,
					 rows + nkv * hd, ld), 0);
	for (int n = 1; n <= max_tok; n += 12) {
		const float *k, *v;
		float mx = -INFINITY, sum = 0, scale = 0.125f;

		for (int i = 0; i < hd; i++)
			q[i] = frand(&s);
		ck_assert_int_eq(kp->ops->attend(kp, 1, 2, 1, n, q, scale,
						 out, sc), 0);
		ck_assert_int_eq(kc->ops->view(kc, 1, 2, 1, n, &k, &v), 0);
		for (int j = 0; j < n; j++) {
			float d = 0;

			for (int i = 0; i < hd; i++)
				d += q[i] * k[j * hd + i];
			sc[j] = d * scale;
			mx = fmaxf(mx, sc[j]);
		}
		memset(ref, 0, sizeof(ref));
		for (int j = 0; j < n; j++)
			sum += sc[j] = expf(sc[j] - mx);
		for (int j = 0; j < n; j++)
			for (int i = 0; i < hd; i++)
				ref[i] += sc[j] / sum * v[j * hd + i];
		for (int i = 0; i < hd; i++) {
			e += (out[i] - ref[i]) * (double)(out[i] - ref[i]);
			n2 += ref[i] * (double)ref[i];
		}
	}
	printf("kvpaged attend: rel L2 %.3g against fp32 rows\n",
	       sqrt(e / n2));
	ck_assert(sqrt(e / n2) < 2e-3);
	llm_kv_destroy(kp);
	llm_kv_destroy(kc);
	free(rows);
	free(sc);
}
END_TEST

START_TEST(test_kvpaged_refused)
{
	struct llm_config c = small_cfg;
	float row[256] = { 0 }, out[64], sc[8];
	const float *k, *v;
	struct llm_kv *kp;

	ck_assert_int_eq(llm_kv_paged_create(&c, 0, 8, &kp), -EINVAL);
	c.head_dim = 8; /* not a head_dim the uapi serves */
	ck_assert_int_eq(llm_kv_paged_create(&c, 1, 8, &kp), -EINVAL);
	c = small_cfg;
	ck_assert_int_eq(llm_kv_paged_create(&c, 2, 8, &kp), 0);
	ck_assert_int_eq(kp->ops->append(kp, 0, 0, 6, 3, row, row + 128,
					 256), -ENOSPC);
	ck_assert_int_eq(kp->ops->append(kp, 2, 0, 0, 1, row, row + 128,
					 256), -EINVAL);
	ck_assert_int_eq(kp->ops->append(kp, 0, 3, 0, 1, row, row + 128,
					 256), -EINVAL);
	ck_assert_int_eq(kp->ops->view(kp, 0, 0, 2, 1, &k, &v), -EINVAL);
	ck_assert_int_eq(kp->ops->view(kp, 0, 0, 0, 9, &k, &v), -EINVAL);
	ck_assert_int_eq(kp->ops->attend(kp, 0, 0, 0, 0, row, 1, out, sc),
			 -EINVAL);
	llm_kv_destroy(kp);
}
END_TEST

/* the default model: 16 greedy tokens and logits, contiguous vs paged */
START_TEST(test_kvpaged_model_greedy)
{
	static const char prompt[] = "The three primary colors are";
	char err[LLM_GGUF_ERR_MAX + 64];
	struct llm_model *m;
	struct llm_cpu *cpu;
	int32_t ids[64], gen[2][16];
	float *z[2];
	size_t n;
	double e = 0, n2 = 0;

	if (access(model_path(), R_OK)) {
		kvtest_skip(__func__, "%s absent (make model fetches it)",
			    model_path());
		return;
	}
	ck_assert_msg(!llm_model_open(model_path(), &m, err, sizeof(err)),
		      "%s", err);
	ck_assert_msg(!llm_cpu_load(&m->cfg, &m->w, 2, &cpu, err,
				    sizeof(err)), "%s", err);
	ck_assert_int_eq(llm_tok_encode(m->tok, prompt, strlen(prompt), 0,
					ids, 64, &n), 0);
	for (int k = 0; k < 2; k++) {
		struct llm_kv *kv;
		int seq = 0, nt = (int)n;
		struct llm_batch b = { 1, &seq, &nt, ids };

		ck_assert_int_eq(k ? llm_kv_paged_create(&m->cfg, 1, 64, &kv) :
				 llm_kv_contig_create(&m->cfg, 1, 64, &kv), 0);
		z[k] = malloc(m->cfg.n_vocab * sizeof(float));
		for (int s = 0; s < 16; s++) {
			ck_assert_int_eq(llm_cpu_forward(cpu, kv, &b, z[k]), 0);
			kvk_argmax_cpu(&gen[k][s], z[k], 1, m->cfg.n_vocab,
				       KVK_F32, NULL);
			nt = 1;
			b.tok = &gen[k][s];
		}
		llm_kv_destroy(kv);
	}
	for (uint32_t i = 0; i < m->cfg.n_vocab; i++) {
		e += (z[1][i] - z[0][i]) * (double)(z[1][i] - z[0][i]);
		n2 += z[0][i] * (double)z[0][i];
	}
	printf("kvpaged model: last logits rel L2 %.3g (fp16 KV)\n",
	       sqrt(e / n2));
	for (int s = 0; s < 16; s++)
		ck_assert_msg(gen[0][s] == gen[1][s], "step %d: %d vs %d", s,
			      gen[0][s], gen[1][s]);
	ck_assert(sqrt(e / n2) < 1e-2);
	free(z[0]);
	free(z[1]);
	llm_cpu_free(cpu);
	llm_model_close(m);
}
END_TEST

/*
 * A cache with only the optional step op (store and attend in one call),
 * built on a contiguous cache: the forward pass must give the logits it
 * gives through append and view.
 */
struct kv_stepper {
	struct llm_kv kv;
	struct llm_kv *in;
	int n_heads;
};

static int stepper_step(struct llm_kv *kv, int seq, int layer, int pos,
			int ntok, const float *q, long ldq, const float *k,
			const float *v, long ldkv, float *out, long ldo)
{
	struct kv_stepper *st = (struct kv_stepper *)kv;
	int hd = kv->head_dim, grp = st->n_heads / kv->n_kv_heads, ret;
	float *sc = malloc((size_t)(pos + ntok) * sizeof(float));

	ret = st->in->ops->append(st->in, seq, layer, pos, ntok, k, v, ldkv);
	for (int t = 0; !ret && t < ntok; t++) {
		for (int h = 0; !ret && h < st->n_heads; h++) {
			const float *qh = q + t * ldq + (size_t)h * hd, *K, *V;
			float *o = out + t * ldo + (size_t)h * hd;
			float mx = -INFINITY, sum = 0;
			int n = pos + t + 1;

			ret = st->in->ops->view(st->in, seq, layer, h / grp, n,
						&K, &V);
			for (int j = 0; !ret && j < n; j++) {
				float d = 0;

				for (int i = 0; i < hd; i++)
					d += qh[i] * K[j * hd + i];
				sc[j] = d / sqrtf((float)hd);
				mx = fmaxf(mx, sc[j]);
			}
			for (int j = 0; !ret && j < n; j++)
				sum += sc[j] = expf(sc[j] - mx);
			memset(o, 0, hd * sizeof(float));
			for (int j = 0; !ret && j < n; j++)
				for (int i = 0; i < hd; i++)
					o[i] += sc[j] / sum * V[j * hd + i];
		}
	}
	free(sc);
	return ret;
}

static void stepper_destroy(struct llm_kv *kv)
{
	struct kv_stepper *st = (struct kv_stepper *)kv;

	llm_kv_destroy(st->in);
	free(kv->len);
	free(st);
}

static int stepper_noappend(struct llm_kv *kv, int seq, int layer, int pos,
			    int ntok, const float *k, const float *v, long ld)
{
	(void)kv, (void)seq, (void)layer, (void)pos, (void)ntok, (void)k;
	(void)v, (void)ld;
	return -EOPNOTSUPP; /* must not be called: step is */
}

static const struct llm_kv_ops stepper_ops = {
	.append = stepper_noappend,
	.step = stepper_step,
	.destroy = stepper_destroy,
};

START_TEST(test_forward_step_op)
{
	static const char prompt[] = "Paged caches hold";
	char err[LLM_GGUF_ERR_MAX + 64];
	struct llm_model *m;
	struct llm_cpu *cpu;
	int32_t ids[32], gen[2][6];
	float *z[2];
	size_t n;
	double e = 0, n2 = 0;

	if (access(model_path(), R_OK)) {
		kvtest_skip(__func__, "%s absent (make model fetches it)",
			    model_path());
		return;
	}
	ck_assert_msg(!llm_model_open(model_path(), &m, err, sizeof(err)),
		      "%s", err);
	ck_assert_msg(!llm_cpu_load(&m->cfg, &m->w, 2, &cpu, err,
				    sizeof(err)), "%s", err);
	ck_assert_int_eq(llm_tok_encode(m->tok, prompt, strlen(prompt), 0,
					ids, 32, &n), 0);
	for (int k = 0; k < 2; k++) {
		struct llm_kv *kv;
		int seq = 0, nt = (int)n;
		struct llm_batch b = { 1, &seq, &nt, ids };

		if (k) {
			struct kv_stepper *st = calloc(1, sizeof(*st));

			ck_assert_int_eq(llm_kv_contig_create(&m->cfg, 1, 32,
							      &st->in), 0);
			st->kv = *st->in;
			st->kv.ops = &stepper_ops;
			st->kv.len = calloc(1, sizeof(int));
			st->n_heads = (int)m->cfg.n_heads;
			kv = &st->kv;
		} else {
			ck_assert_int_eq(llm_kv_contig_create(&m->cfg, 1, 32,
							      &kv), 0);
		}
		z[k] = malloc(m->cfg.n_vocab * sizeof(float));
		for (int s = 0; s < 6; s++) {
			ck_assert_int_eq(llm_cpu_forward(cpu, kv, &b, z[k]), 0);
			kvk_argmax_cpu(&gen[k][s], z[k], 1, m->cfg.n_vocab,
				       KVK_F32, NULL);
			nt = 1;
			b.tok = &gen[k][s];
		}
		ck_assert_int_eq(llm_kv_len(kv, 0), (int)n + 5);
		llm_kv_destroy(kv);
	}
	for (uint32_t i = 0; i < m->cfg.n_vocab; i++) {
		e += (z[1][i] - z[0][i]) * (double)(z[1][i] - z[0][i]);
		n2 += z[0][i] * (double)z[0][i];
	}
	printf("step op: last logits rel L2 %.3g against append + view\n",
	       sqrt(e / n2));
	ck_assert(!memcmp(gen[0], gen[1], sizeof(gen[0])));
	ck_assert(sqrt(e / n2) < 1e-5);
	free(z[0]);
	free(z[1]);
	llm_cpu_free(cpu);
	llm_model_close(m);
}
END_TEST

Suite *suite_kvpaged(void)
{
	Suite *s = suite_create("kvpaged");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	KV_ADD(tc, test_kvpaged_roundtrip);
	KV_ADD(tc, test_kvpaged_attend);
	KV_ADD(tc, test_kvpaged_refused);
	KV_ADD(tc, test_kvpaged_model_greedy);
	KV_ADD(tc, test_forward_step_op);
	suite_add_tcase(s, tc);
	return s;
}
