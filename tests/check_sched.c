// SPDX-License-Identifier: MIT
/*
 * check_sched.c - the serving scheduler (model/sched/) on the CPU executor,
 * a host policy cache and a small random Llama model made in memory:
 * continuous batching, admission by real pages, preemption under a budget
 * oversubscribed 2x, greedy outputs equal to one-by-one runs, nothing lost,
 * refusals.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "forward.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "kvk.h"
#include "kvpolicy.h"
#include "kvshim.h"
#include "kvtest.h"
#include "model.h"
#include "scheduler.h"

/* the model: 4 layers x 2 kv-heads = 8 lists per sequence, head_dim 64 */
enum { DIM = 128, NH = 4, NKV = 2, HD = 64, FFN = 256, VOCAB = 256,
       LAYERS = 4, MAXTOK = 192 };

static float frand(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

static void kv_u32(struct gbuf *b, const char *k, uint32_t v)
{
	char key[96];

	snprintf(key, sizeof(key), "llama.%s", k);
	gb_str(b, key);
	gb_u32(b, LLM_GGUF_U32);
	gb_u32(b, v);
}

static void kv_f32(struct gbuf *b, const char *k, float v)
{
	char key[96];

	snprintf(key, sizeof(key), "llama.%s", k);
	gb_str(b, key);
	gb_u32(b, LLM_GGUF_F32);
	gb_put(b, &v, 4);
}

struct tensor {
	char name[48];
	uint64_t ne0, ne1;
};

/* a GGUF image of a random F32 llama of the shape above, tied output */
static void model_build(uint64_t seed, struct gbuf *b)
{
	static const struct {
		const char *s;
		int ne0, ne1; /* 0 dim, 1 q, 2 kv, 3 ffn, 5 one */
	} blk[] = {
		{ "attn_norm.weight", 0, 5 }, { "attn_q.weight", 0, 1 },
		{ "attn_k.weight", 0, 2 }, { "attn_v.weight", 0, 2 },
		{ "attn_output.weight", 1, 0 }, { "ffn_norm.weight", 0, 5 },
		{ "ffn_gate.weight", 0, 3 }, { "ffn_up.weight", 0, 3 },
		{ "ffn_down.weight", 3, 0 },
	};
	uint64_t d[6] = { DIM, NH * HD, NKV * HD, FFN, HD, 1 };
	struct tensor t[64];
	uint64_t off = 0;
	int n = 0;

	t[n++] = (struct tensor){ "token_embd.weight", DIM, VOCAB };
	t[n++] = (struct tensor){ "output_norm.weight", DIM, 1 };
	for (int l = 0; l < LAYERS; l++)
		for (size_t i = 0; i < sizeof(blk) / sizeof(blk[0]); i++) {
			snprintf(t[n].name, sizeof(t[n].name), "blk.%d.%s", l,
				 blk[i].s);
			t[n].ne0 = d[blk[i].ne0];
			t[n++].ne1 = d[blk[i].ne1];
		}
	gb_u32(b, LLM_GGUF_MAGIC);
	gb_u32(b, 3);
	gb_u64(b, n);
	gb_u64(b, 11);
	gb_str(b, "general.architecture");
	gb_u32(b, LLM_GGUF_STRING);
	gb_str(b, "llama");
	kv_u32(b, "context_length", 256);
	kv_u32(b, "embedding_length", DIM);
	kv_u32(b, "block_count", LAYERS);
	kv_u32(b, "feed_forward_length", FFN);
	kv_u32(b, "attention.head_count", NH);
	kv_u32(b, "attention.head_count_kv", NKV);
	kv_u32(b, "attention.key_length", HD);
	kv_u32(b, "vocab_size", VOCAB);
	kv_f32(b, "rope.freq_base", 10000.0f);
	kv_f32(b, "attention.layer_norm_rms_epsilon", 1e-5f);
	for (int i = 0; i < n; i++) {
		gb_str(b, t[i].name);
		gb_u32(b, t[i].ne1 > 1 ? 2 : 1);
		gb_u64(b, t[i].ne0);
		if (t[i].ne1 > 1)
			gb_u64(b, t[i].ne1);
		gb_u32(b, LLM_GGML_F32);
		gb_u64(b, off);
		off += (t[i].ne0 * t[i].ne1 * 4 + 31) / 32 * 32;
	}
	gb_put(b, NULL, (b->len + 31) / 32 * 32 - b->len);
	for (int i = 0; i < n; i++) {
		uint64_t ne = t[i].ne0 * t[i].ne1;
		bool norm = strstr(t[i].name, "norm.weight") != NULL;
		bool embd = !strcmp(t[i].name, "token_embd.weight");

		for (uint64_t e = 0; e < ne; e++) {
			float u = frand(&seed), v;

			if (norm)
				v = 1.0f + 0.2f * u;
			else if (embd)
				v = u;
			else
				v = u * 2.0f / sqrtf((float)t[i].ne0);
			gb_put(b, &v, 4);
		}
		gb_put(b, NULL, (ne * 4 + 31) / 32 * 32 - ne * 4);
	}
}

struct tmodel {
	struct llm_config c;
	struct llm_cpu *cpu;
	float *z;		/* [MAXSEQ][VOCAB] logits of a step */
};

enum { MAXSEQ = 32 };

static void model_open(struct tmodel *m)
{
	char err[LLM_GGUF_ERR_MAX] = "";
	struct llm_weights w = { 0 };
	struct gbuf b = { 0 };
	struct llm_gguf *g;

	model_build(0x5c4ed, &b);
	ck_assert_msg(!llm_gguf_open_mem(b.p, b.len, &g, err, sizeof(err)),
		      "%s", err);
	ck_assert_msg(!llm_config_load(g, &m->c, err, sizeof(err)), "%s", err);
	ck_assert_msg(!llm_weights_bind(g, &m->c, &w, err, sizeof(err)), "%s",
		      err);
	ck_assert_msg(!llm_cpu_load(&m->c, &w, 1, &m->cpu, err, sizeof(err)),
		      "%s", err);
	llm_weights_fini(&w);
	llm_gguf_close(g);
	free(b.p);
	m->z = malloc((size_t)MAXSEQ * VOCAB * sizeof(float));
	ck_assert_ptr_nonnull(m->z);
}

static void model_close(struct tmodel *m)
{
	llm_cpu_free(m->cpu);
	free(m->z);
}

/* the scheduler's step callback on the CPU executor: greedy tokens */
static int cpu_step(void *ctx, struct llm_kv *kv, const struct llm_batch *b,
		    int32_t *next)
{
	struct tmodel *m = ctx;
	int ret;

	ck_assert_int_le(b->n_seq, MAXSEQ);
	ret = llm_cpu_forward(m->cpu, kv, b, m->z);
	if (ret)
		return ret;
	return kvk_argmax_cpu(next, m->z, b->n_seq, VOCAB, KVK_F32, NULL);
}

static struct llm_kv *cache_tok(const struct tmodel *m, const char *pol,
				int n_seq, int max_tok, uint64_t budget)
{
	struct llm_kv_policy_opts o = { .n_seq = n_seq, .max_tok = max_tok,
					.n_threads = 1, .device = -1,
					.budget = budget };
	char err[200] = "";
	struct llm_policy p;
	struct llm_kv *kv;

	ck_assert_msg(!llm_policy_parse(pol, &p, err, sizeof(err)), "%s", err);
	ck_assert_msg(!llm_kv_policy_open(&m->c, &p, &o, &kv, err,
					  sizeof(err)), "%s", err);
	return kv;
}

static struct llm_kv *cache(const struct tmodel *m, const char *pol,
			    int n_seq, uint64_t budget)
{
	return cache_tok(m, pol, n_seq, MAXTOK, budget);
}

/* greedy tokens of one prompt alone under @pol, as `kvmm generate` runs it */
static void alone_pol(struct tmodel *m, const char *pol,
		      const int32_t *prompt, int np, int nnew, int32_t *out)
{
	struct llm_kv *kv = cache(m, pol, 1, 0);
	int seq = 0, nt = np;
	struct llm_batch b = { 1, &seq, &nt, prompt };

	for (int i = 0; i < nnew; i++) {
		ck_assert_int_eq(cpu_step(m, kv, &b, &out[i]), 0);
		nt = 1;
		b.tok = &out[i];
	}
	llm_kv_destroy(kv);
}

static void alone(struct tmodel *m, const int32_t *prompt, int np, int nnew,
		  int32_t *out)
{
	alone_pol(m, "full", prompt, np, nnew, out);
}

struct work {
	int n;
	int np[64], nnew[64];
	int32_t prompt[64][MAXTOK];
};

static void work_make(struct work *w, int n, int p0, int p1, int o0, int o1,
		      uint64_t *seed)
{
	w->n = n;
	for (int i = 0; i < n; i++) {
		w->np[i] = p0 + (int)(kvtest_rand(seed) % (p1 - p0 + 1));
		w->nnew[i] = o0 + (int)(kvtest_rand(seed) % (o1 - o0 + 1));
		for (int t = 0; t < w->np[i]; t++)
			w->prompt[i][t] = (int32_t)(kvtest_rand(seed) % VOCAB);
	}
}

/* submit everything, step until idle; every request completed */
static void serve(struct llm_sched *s, const struct work *w, int *ids)
{
	struct llm_sched_info in;
	int guard = 0;

	for (int i = 0; i < w->n; i++) {
		struct llm_sched_req r = { w->prompt[i], w->np[i], w->nnew[i],
					   -1.0f, -1.0f };

		ck_assert_int_eq(llm_sched_submit(s, &r, &ids[i]), 0);
	}
	while (!llm_sched_idle(s)) {
		int ret = llm_sched_step(s);

		ck_assert_msg(ret >= 0, "step: %s", strerror(-ret));
		ck_assert_int_lt(++guard, 10000);
	}
	for (int i = 0; i < w->n; i++) {
		ck_assert_int_eq(llm_sched_info(s, ids[i], &in), 0);
		ck_assert_msg(in.state == LLM_SCHED_DONE, "request %d: state "
			      "%d: %s", i, in.state, in.reason);
		ck_assert_int_eq(in.n_gen, w->nnew[i]);
	}
}

/* every request's tokens equal the one-by-one greedy run's */
static int check_outputs(struct tmodel *m, struct llm_sched *s,
			 const struct work *w, const int *ids)
{
	int32_t ref[MAXTOK];
	int bad = 0;

	for (int i = 0; i < w->n; i++) {
		struct llm_sched_info in;

		llm_sched_info(s, ids[i], &in);
		alone(m, w->prompt[i], w->np[i], w->nnew[i], ref);
		for (int t = 0; t < w->nnew[i]; t++)
			if (in.out[t] != ref[t]) {
				printf("request %d (preempted %d): token %d "
				       "is %d, alone %d\n", i, in.preemptions,
				       t, in.out[t], ref[t]);
				bad++;
				break;
			}
	}
	return bad;
}

/*
 * Four slots, a short request among long ones: the fifth request joins
 * when the short one leaves (a step with its prompt and the others' decode
 * tokens) and finishes before the long ones; every output equals the
 * request run alone (`kvmm generate` one by one) under full.
 */
START_TEST(test_sched_joins_and_leaves)
{
	static const int nnew[6] = { 2, 24, 24, 24, 6, 6 };
	uint64_t seed = kvtest_seed(__func__);
	struct llm_sched_info in[6];
	struct llm_sched_stats st;
	struct llm_sched *s;
	struct tmodel m;
	struct llm_kv *kv;
	struct work w;
	int ids[6];

	model_open(&m);
	work_make(&w, 6, 8, 30, 1, 1, &seed);
	for (int i = 0; i < 6; i++)
		w.nnew[i] = nnew[i];
	kv = cache(&m, "full", 4, 0);
	ck_assert_int_eq(llm_sched_create(kv, NULL, cpu_step, &m, &s), 0);
	serve(s, &w, ids);
	for (int i = 0; i < 6; i++)
		llm_sched_info(s, ids[i], &in[i]);
	llm_sched_stats(s, &st);
	printf("joins and leaves: %llu steps, peak %d running, %llu "
	       "prefill and %llu decode tokens\n",
	       (unsigned long long)st.steps, st.peak_running,
	       (unsigned long long)st.prefill_tokens,
	       (unsigned long long)st.decode_tokens);
	ck_assert_int_eq(st.peak_running, 4);
	ck_assert_int_eq(st.done, 6);
	ck_assert_int_eq(st.failed, 0);
	/* request 4 joined after request 0 left, and left before 1 .. 3 */
	ck_assert(in[4].t_first >= in[0].t_done);
	ck_assert(in[4].t_done < in[1].t_done);
	ck_assert(in[5].t_done < in[1].t_done);
	/* one step per token of the longest, plus the prompts' first tokens:
	 * continuous batching, not one request after another */
	ck_assert_int_le(st.steps, 26);
	ck_assert_int_eq(st.generated, 2 + 3 * 24 + 2 * 6);
	ck_assert_int_eq(check_outputs(&m, s, &w, ids), 0);
	ck_assert_int_eq(st.preemptions, 0);
	llm_sched_destroy(s);
	llm_kv_destroy(kv);
	model_close(&m);
}
END_TEST

/*
 * The queue's order: with one slot the requests run one at a time, in
 * the queue's order. First come first served by default; longest output
 * first (ties: first come) with LLM_SCHED_ORDER_LONGEST. The tokens are
 * the same either way; an order out of range is refused.
 */
START_TEST(test_sched_order)
{
	static const int nnew[6] = { 3, 9, 5, 9, 1, 7 };
	static const int longest[6] = { 1, 3, 5, 2, 0, 4 };
	uint64_t seed = kvtest_seed(__func__);
	struct llm_sched_opts bad = { .order = LLM_SCHED_ORDER_LONGEST + 1 };
	struct tmodel m;
	struct work w;

	model_open(&m);
	work_make(&w, 6, 8, 20, 1, 1, &seed);
	for (int i = 0; i < 6; i++)
		w.nnew[i] = nnew[i];
	for (int pass = 0; pass < 2; pass++) {
		struct llm_sched_opts o = {
			.reserve = 1.0f,
			.order = pass ? LLM_SCHED_ORDER_LONGEST
				      : LLM_SCHED_ORDER_FCFS,
		};
		struct llm_kv *kv = cache(&m, "full", 1, 0);
		struct llm_sched_info a, b;
		struct llm_sched *s;
		int ids[6];

		ck_assert_int_eq(llm_sched_create(kv, &o, cpu_step, &m, &s),
				 0);
		serve(s, &w, ids);
		for (int k = 0; k + 1 < 6; k++) {
			int x = pass ? longest[k] : k;
			int y = pass ? longest[k + 1] : k + 1;

			llm_sched_info(s, ids[x], &a);
			llm_sched_info(s, ids[y], &b);
			ck_assert_msg(a.t_done <= b.t_first, "%s: request %d "
				      "ran after %d", llm_sched_order_name(
				      o.order), x, y);
		}
		ck_assert_int_eq(check_outputs(&m, s, &w, ids), 0);
		llm_sched_destroy(s);
		llm_kv_destroy(kv);
	}
	{
		struct llm_kv *kv = cache(&m, "full", 1, 0);
		struct llm_sched *s = NULL;
		enum llm_sched_order ord = LLM_SCHED_ORDER_FCFS;

		ck_assert_int_eq(llm_sched_create(kv, &bad, cpu_step, &m, &s),
				 -EINVAL);
		ck_assert_ptr_null(s);
		ck_assert_int_eq(llm_sched_parse_order("longest", &ord), 0);
		ck_assert_int_eq(ord, LLM_SCHED_ORDER_LONGEST);
		ck_assert_int_eq(llm_sched_parse_order("lifo", &ord), -EINVAL);
		ck_assert_int_eq(ord, LLM_SCHED_ORDER_LONGEST);
		ck_assert_str_eq(llm_sched_order_name(LLM_SCHED_ORDER_FCFS),
				 "fcfs");
		llm_kv_destroy(kv);
	}
	model_close(&m);
}
END_TEST

/*
 * Cancel: a running request and a waiting one are withdrawn between steps
 * (a client that went away). The running one's slot and pages go back at
 * once, the waiting one never runs, the others' tokens are unchanged, and
 * forgotten ids are given to later requests.
 */
START_TEST(test_sched_cancel)
{
	uint64_t seed = kvtest_seed(__func__), pages;
	struct llm_sched_info in;
	struct llm_sched_stats st;
	struct llm_sched *s;
	struct tmodel m;
	struct llm_kv *kv;
	struct work w;
	int ids[4], id, gone, guard = 0;

	model_open(&m);
	work_make(&w, 4, 8, 30, 12, 12, &seed);
	kv = cache(&m, "full", 2, 0);
	ck_assert_int_eq(llm_sched_create(kv, NULL, cpu_step, &m, &s), 0);
	for (int i = 0; i < 4; i++) {
		struct llm_sched_req r = { w.prompt[i], w.np[i], w.nnew[i],
					   -1.0f, -1.0f };

		ck_assert_int_eq(llm_sched_submit(s, &r, &ids[i]), 0);
	}
	/* two slots: 0 and 1 run, 2 and 3 wait */
	ck_assert_int_eq(llm_sched_step(s), 2);
	ck_assert_int_eq(llm_sched_step(s), 2);
	llm_sched_stats(s, &st);
	pages = st.pages_used;
	ck_assert_int_eq(st.running, 2);
	ck_assert_int_eq(st.waiting, 2);
	ck_assert_int_ne(llm_sched_slot_owner(s, 0), -1);
	ck_assert_int_eq(llm_sched_slot_owner(s, 2), -1);
	ck_assert_int_eq(llm_sched_cancel(s, ids[1]), 0);
	ck_assert_int_eq(llm_sched_cancel(s, ids[2]), 0);
	ck_assert_int_eq(llm_sched_cancel(s, ids[2]), -EALREADY);
	ck_assert_int_eq(llm_sched_forget(s, ids[0]), -EBUSY);
	llm_sched_stats(s, &st);
	ck_assert_int_eq(st.running, 1);
	ck_assert_int_eq(st.waiting, 1);
	ck_assert_int_eq(st.cancelled, 2);
	ck_assert_uint_lt(st.pages_used, pages);
	ck_assert_int_eq(llm_sched_info(s, ids[1], &in), 0);
	ck_assert_int_eq(in.state, LLM_SCHED_CANCELLED);
	ck_assert_int_eq(in.n_gen, 2);
	/* request 3 joins in request 1's slot; the pages went back at once */
	ck_assert_int_eq(llm_sched_step(s), 2);
	llm_sched_stats(s, &st);
	printf("cancel: %llu pages before, %llu after the swap\n",
	       (unsigned long long)pages, (unsigned long long)st.pages_used);
	while (!llm_sched_idle(s)) {
		ck_assert_int_ge(llm_sched_step(s), 0);
		ck_assert_int_lt(++guard, 1000);
	}
	llm_sched_stats(s, &st);
	ck_assert_int_eq(st.done, 2);
	ck_assert_int_eq(st.pages_used, 0);
	ck_assert_int_eq(llm_sched_info(s, ids[2], &in), 0);
	ck_assert_int_eq(in.n_gen, 0);
	/* the survivors' tokens are those of a run alone */
	ck_assert_int_eq(llm_sched_info(s, ids[3], &in), 0);
	ck_assert_int_eq(in.state, LLM_SCHED_DONE);
	gone = ids[1];
	ids[1] = ids[3];
	w.np[1] = w.np[3];
	w.nnew[1] = w.nnew[3];
	memcpy(w.prompt[1], w.prompt[3], sizeof(w.prompt[1]));
	w.n = 2;
	ck_assert_int_eq(check_outputs(&m, s, &w, ids), 0);
	/* forget: the id comes back, the info is gone */
	ck_assert_int_eq(llm_sched_forget(s, gone), 0);
	ck_assert_int_eq(llm_sched_forget(s, gone), -EINVAL);
	ck_assert_int_eq(llm_sched_info(s, gone, &in), -EINVAL);
	ck_assert_int_eq(llm_sched_cancel(s, gone), -EINVAL);
	{
		struct llm_sched_req r = { w.prompt[1], w.np[1], 3, -1.0f,
					   -1.0f };

		ck_assert_int_eq(llm_sched_submit(s, &r, &id), 0);
	}
	ck_assert_int_eq(id, gone);
	while (!llm_sched_idle(s))
		ck_assert_int_ge(llm_sched_step(s), 0);
	ck_assert_int_eq(llm_sched_info(s, id, &in), 0);
	ck_assert_int_eq(in.state, LLM_SCHED_DONE);
	ck_assert_int_eq(in.n_gen, 3);
	llm_sched_destroy(s);
	llm_kv_destroy(kv);
	model_close(&m);
}
END_TEST

/* the peak concurrency of a workload under @pol within one granule */
static int peak_under(struct tmodel *m, const char *pol, const struct work *w,
		      uint64_t *pages, uint32_t *page_size)
{
	struct llm_kv *kv = cache(m, pol, MAXSEQ, 2ULL << 20);
	struct llm_sched_stats st;
	struct llm_sched *s;
	int ids[64];

	ck_assert_int_eq(llm_sched_create(kv, NULL, cpu_step, m, &s), 0);
	serve(s, w, ids);
	llm_sched_stats(s, &st);
	printf("%s: peak %d running (mean %.1f) of %d, %llu preemptions, "
	       "peak %llu of %llu pages of %u B\n", pol, st.peak_running,
	       (double)st.sum_running / st.steps, w->n,
	       (unsigned long long)st.preemptions,
	       (unsigned long long)st.peak_pages,
	       (unsigned long long)st.budget_pages, st.page_size);
	ck_assert_int_eq(st.done, w->n);
	ck_assert_uint_le(st.peak_pages, st.budget_pages);
	*pages = st.budget_pages;
	*page_size = st.page_size;
	llm_sched_destroy(s);
	llm_kv_destroy(kv);
	return st.peak_running;
}

/*
 * Admission counts the pages a request really uses: at the same budget
 * (one 2 MiB granule) and on the same requests, diffkv (K8V4/K4V2 pages,
 * pruned tokens) runs more requests at once than full (fp16 pages).
 */
START_TEST(test_sched_admission_real_pages)
{
	uint64_t seed = kvtest_seed(__func__), pf, pd;
	uint32_t sf, sd;
	struct tmodel m;
	struct work w;
	int full, dkv;

	model_open(&m);
	work_make(&w, 32, 48, 64, 24, 32, &seed);
	full = peak_under(&m, "full", &w, &pf, &sf);
	dkv = peak_under(&m, "diffkv", &w, &pd, &sd);
	ck_assert_uint_eq(pf * sf / (2 << 20), pd * sd / (2 << 20));
	ck_assert_msg(dkv > full, "diffkv ran %d at once, full %d", dkv,
		      full);
	model_close(&m);
}
END_TEST

/*
 * A budget oversubscribed 2x: requests are admitted on their prompts alone
 * (reserve 0, as vLLM does), pages run out as they decode, victims are
 * released and recomputed (--preempt recompute); every request completes,
 * and its tokens equal those of the request run alone.
 */
START_TEST(test_sched_preempt_2x)
{
	/* _i: first come first served, then longest output first */
	struct llm_sched_opts o = { .reserve = -1.0f,
				    .preempt = LLM_SCHED_PREEMPT_RECOMPUTE,
				    .order = (enum llm_sched_order)_i };
	uint64_t seed = kvtest_seed(__func__), demand = 0;
	struct llm_kv_geometry g;
	struct llm_sched_stats st;
	struct llm_sched *s;
	struct tmodel m;
	struct llm_kv *kv;
	struct work w;
	int ids[64];

	model_open(&m);
	/* as many requests as it takes (24 at least) to need 2x the budget */
	work_make(&w, 64, 16, 40, 40, 64, &seed);
	kv = cache(&m, "full", 24, 2ULL << 20);
	ck_assert_int_eq(llm_kv_policy_geometry(kv, &g), 0);
	for (int i = 0; i < w.n; i++) {
		demand += g.lists * ((w.np[i] + w.nnew[i] +
				      g.tokens_per_page[0] - 1) /
				     g.tokens_per_page[0]);
		if (i + 1 >= 24 && demand >= 2 * g.budget_pages) {
			w.n = i + 1;
			break;
		}
	}
	printf("preempt: %d requests need %llu pages at once, the budget "
	       "maps %llu\n", w.n, (unsigned long long)demand,
	       (unsigned long long)g.budget_pages);
	ck_assert_uint_ge(demand, 2 * g.budget_pages);
	ck_assert_int_eq(llm_sched_create(kv, &o, cpu_step, &m, &s), 0);
	serve(s, &w, ids);
	llm_sched_stats(s, &st);
	printf("preempt: %llu preemptions, %llu rollbacks, %llu compactions "
	       "(%llu granules back), peak %d running, %llu steps\n",
	       (unsigned long long)st.preemptions,
	       (unsigned long long)st.rollbacks,
	       (unsigned long long)st.compactions,
	       (unsigned long long)st.granules_released, st.peak_running,
	       (unsigned long long)st.steps);
	ck_assert_uint_gt(st.preemptions, 0);
	ck_assert_uint_le(st.peak_pages, g.budget_pages);
	ck_assert_int_eq(check_outputs(&m, s, &w, ids), 0);
	llm_sched_destroy(s);
	llm_kv_destroy(kv);
	model_close(&m);
}
END_TEST

/* page bytes held after the prefills of @n requests served one at a time */
static uint64_t held_after(struct tmodel *m, const struct llm_sched_req *r,
			   int n)
{
	struct llm_kv *kv = cache(m, "diffkv", 1, 0);
	struct llm_sched_stats st;
	struct llm_sched_info in;
	struct llm_sched *s;
	int id;

	ck_assert_int_eq(llm_sched_create(kv, NULL, cpu_step, m, &s), 0);
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(llm_sched_submit(s, &r[i], &id), 0);
	while (!llm_sched_idle(s))
		ck_assert_int_ge(llm_sched_step(s), 0);
	for (int i = 0; i < n; i++) {
		ck_assert_int_eq(llm_sched_info(s, i, &in), 0);
		ck_assert_int_eq(in.state, LLM_SCHED_DONE);
	}
	llm_sched_stats(s, &st);
	llm_sched_destroy(s);
	llm_kv_destroy(kv);
	return st.held_bytes;
}

/*
 * Per-request diffkv thresholds: a request that prunes hard holds fewer
 * pages after its prefill than one with the cache's thresholds, and the
 * next request in the same slot classifies with the cache's again.
 */
START_TEST(test_sched_request_thresholds)
{
	uint64_t seed = kvtest_seed(__func__), hard, dflt, both;
	struct llm_sched_req r[2];
	struct tmodel m;
	int32_t p[160];

	model_open(&m);
	for (int i = 0; i < 160; i++)
		p[i] = (int32_t)(kvtest_rand(&seed) % VOCAB);
	r[0] = (struct llm_sched_req){ p, 160, 2, 1.0f, 1.0f };
	r[1] = (struct llm_sched_req){ p, 160, 2, -1.0f, -1.0f };
	hard = held_after(&m, &r[0], 1);
	dflt = held_after(&m, &r[1], 1);
	both = held_after(&m, r, 2);
	printf("thresholds: %llu B pruning hard, %llu B with the cache's, "
	       "%llu B one after the other in one slot\n",
	       (unsigned long long)hard, (unsigned long long)dflt,
	       (unsigned long long)both);
	ck_assert_uint_lt(hard, dflt);
	ck_assert_uint_eq(both, hard + dflt);
	model_close(&m);
}
END_TEST

/*
 * Nothing lost: a request longer than a sequence holds and one whose
 * prompt needs more pages than the budget maps fail with a reason; the
 * others complete. Bad requests and knobs are refused and change nothing.
 */
START_TEST(test_sched_refusals)
{
	enum { BIG = 4000 };
	static int32_t big[BIG];
	int32_t p[4] = { 1, 2, 3, 4 };
	struct llm_sched_req r = { p, 4, 3, -1.0f, -1.0f };
	struct llm_sched_opts bad = { .reserve = 2.0f };
	struct llm_kv_geometry g;
	struct llm_sched_info in;
	struct llm_sched_stats st;
	struct llm_sched *s;
	struct tmodel m;
	struct llm_kv *kv;
	int id, ok, toolong, toobig, guard = 0;
	uint64_t v;

	model_open(&m);
	kv = cache_tok(&m, "full", 2, BIG + 8, 2ULL << 20);
	ck_assert_int_eq(llm_kv_policy_geometry(kv, &g), 0);
	ck_assert_int_eq(llm_sched_create(kv, &bad, cpu_step, &m, &s),
			 -EINVAL);
	ck_assert_int_eq(llm_sched_create(kv, NULL, NULL, &m, &s), -EINVAL);
	ck_assert_int_eq(llm_sched_create(kv, NULL, cpu_step, &m, &s), 0);
	r.n_prompt = 0;
	ck_assert_int_eq(llm_sched_submit(s, &r, &id), -EINVAL);
	r.n_prompt = 4;
	r.max_new = 0;
	ck_assert_int_eq(llm_sched_submit(s, &r, &id), -EINVAL);
	r.max_new = 3;
	p[1] = -2;
	ck_assert_int_eq(llm_sched_submit(s, &r, &id), -EINVAL);
	p[1] = 2;
	r.alpha_prune = 0.5f;
	r.alpha_quant = 0.1f;
	ck_assert_int_eq(llm_sched_submit(s, &r, &id), -EINVAL);
	llm_sched_stats(s, &st);
	ck_assert_int_eq(st.waiting, 0);
	ck_assert(llm_sched_idle(s));
	ck_assert_int_eq(llm_sched_info(s, 0, &in), -EINVAL);

	/* per-request thresholds on a full cache: fails with a reason */
	r.alpha_quant = 1.0f;
	ck_assert_int_eq(llm_sched_submit(s, &r, &id), 0);
	r.alpha_prune = r.alpha_quant = -1.0f;
	ck_assert_int_eq(llm_sched_submit(s, &r, &ok), 0);
	r.max_new = BIG + 8;
	ck_assert_int_eq(llm_sched_submit(s, &r, &toolong), 0);
	ck_assert_int_eq(llm_sched_info(s, toolong, &in), 0);
	ck_assert_int_eq(in.state, LLM_SCHED_FAILED);
	ck_assert_int_eq(in.err, -E2BIG);
	ck_assert_ptr_nonnull(strstr(in.reason, "exceed"));
	/* fits a sequence, not the budget: its prompt's pages exceed it */
	for (int i = 0; i < BIG; i++)
		big[i] = i % VOCAB;
	ck_assert_uint_gt((uint64_t)g.lists * (BIG / g.tokens_per_page[0]),
			  g.budget_pages);
	r.prompt = big;
	r.n_prompt = BIG;
	r.max_new = 1;
	ck_assert_int_eq(llm_sched_submit(s, &r, &toobig), 0);
	ck_assert_int_eq(llm_sched_set_budget(s, 0), -EINVAL);
	while (!llm_sched_idle(s)) {
		ck_assert_int_ge(llm_sched_step(s), 0);
		ck_assert_int_lt(++guard, 1000);
	}
	ck_assert_int_eq(llm_sched_info(s, id, &in), 0);
	ck_assert_int_eq(in.state, LLM_SCHED_FAILED);
	ck_assert_int_eq(in.err, -EINVAL);
	printf("refusals: thresholds on full: %s\n", in.reason);
	ck_assert_int_eq(llm_sched_info(s, ok, &in), 0);
	ck_assert_int_eq(in.state, LLM_SCHED_DONE);
	ck_assert_int_eq(in.n_gen, 3);
	ck_assert_int_eq(llm_sched_info(s, toobig, &in), 0);
	printf("refusals: the long prompt: %s\n", in.reason);
	ck_assert_int_eq(in.state, LLM_SCHED_FAILED);
	ck_assert_int_eq(in.err, -ENOSPC);
	llm_sched_stats(s, &st);
	ck_assert_int_eq(st.done, 1);
	ck_assert_int_eq(st.failed, 3);
	llm_sched_destroy(s);
	llm_kv_destroy(kv);

	ck_assert_int_eq(llm_parse_bytes("16GiB", &v), 0);
	ck_assert_uint_eq(v, 16ULL << 30);
	ck_assert_int_eq(llm_parse_bytes("512MiB", &v), 0);
	ck_assert_uint_eq(v, 512ULL << 20);
	ck_assert_int_eq(llm_parse_bytes("4K", &v), 0);
	ck_assert_uint_eq(v, 4096);
	ck_assert_int_eq(llm_parse_bytes("123", &v), 0);
	ck_assert_uint_eq(v, 123);
	ck_assert_int_eq(llm_parse_bytes("16GB", &v), -EINVAL);
	ck_assert_int_eq(llm_parse_bytes("-1", &v), -EINVAL);
	ck_assert_int_eq(llm_parse_bytes("0", &v), -EINVAL);
	ck_assert_int_eq(llm_parse_bytes("99999999999TiB", &v), -EINVAL);
	ck_assert_uint_eq(v, 123);
	model_close(&m);
}
END_TEST

/*
 * struct chunk_ctx - the step callback of the chunked-prefill tests: the
 * CPU executor's greedy step, with what each scheduler step ran
 */
struct chunk_ctx {
	struct tmodel *m;
	int step_tok;		/* tokens of the scheduler step so far */
	int max_tok;		/* most tokens of one scheduler step */
	bool chunk;		/* this step ran a chunk not ending a prompt */
	bool dec;		/* this step ran decode tokens */
	int mixed;		/* steps with such a chunk and decode tokens */
	int refuse;		/* last chunks to refuse as a full cache does */
	int refused;		/* and refused */
};

static int chunk_step(void *ctx, struct llm_kv *kv, const struct llm_batch *b,
		      int32_t *next)
{
	struct chunk_ctx *c = ctx;
	int ret, kind = llm_kv_batch_kind(kv, b);

	ck_assert_int_gt(kind, 0);	/* the scheduler hands pure batches */
	for (int i = 0; kind == LLM_KV_PREFILL && i < b->n_seq; i++) {
		int seq = b->seq[i], len = llm_kv_len(kv, seq);

		/* the admission of a staged prompt's last chunk refused, as
		 * the cache does when pages ran out: nothing changes */
		if (c->refuse && len && len + b->n_tok[i] == kv->prompt[seq]) {
			c->refuse--;
			c->refused++;
			return -ENOSPC;
		}
	}
	for (int i = 0; i < b->n_seq; i++) {
		int seq = b->seq[i];

		if (kind == LLM_KV_PREFILL && kv->prompt &&
		    llm_kv_len(kv, seq) + b->n_tok[i] < kv->prompt[seq])
			c->chunk = true;
	}
	ret = cpu_step(c->m, kv, b, next);
	/* the tokens of calls that ran: a refused call is retried smaller */
	for (int i = 0; !ret && i < b->n_seq; i++)
		c->step_tok += b->n_tok[i];
	if (!ret && kind == LLM_KV_DECODE)
		c->dec = true;
	return ret;
}

/*
 * serve @w under @pol in 8 slots, prompts in chunks (or whole), the
 * space's invariants checked after every step; the tokens into @out
 */
static void serve_chunked(struct tmodel *m, const char *pol, bool chunk,
			  int step_tok, float reserve, uint64_t budget,
			  const struct work *w, int32_t (*out)[MAXTOK],
			  struct llm_sched_stats *st, struct chunk_ctx *c,
			  int refuse)
{
	struct llm_sched_opts o = { .max_step_tokens = step_tok,
				    .reserve = reserve, .no_chunk = !chunk };
	struct llm_kv *kv = cache(m, pol, 8, budget);
	struct llm_sched_info in;
	struct llm_sched *s;
	char why[200];
	int ids[64], guard = 0;

	*c = (struct chunk_ctx){ .m = m, .refuse = refuse };
	ck_assert_int_eq(llm_sched_create(kv, &o, chunk_step, c, &s), 0);
	for (int i = 0; i < w->n; i++) {
		struct llm_sched_req r = { w->prompt[i], w->np[i], w->nnew[i],
					   -1.0f, -1.0f };

		ck_assert_int_eq(llm_sched_submit(s, &r, &ids[i]), 0);
	}
	while (!llm_sched_idle(s)) {
		int ret;

		c->step_tok = 0;
		c->chunk = c->dec = false;
		ret = llm_sched_step(s);
		ck_assert_msg(ret >= 0, "step: %s", strerror(-ret));
		ck_assert_msg(!llm_kv_policy_check(kv, why, sizeof(why)),
			      "%s: %s", pol, why);
		if (chunk)
			ck_assert_int_le(c->step_tok, step_tok);
		c->max_tok = c->step_tok > c->max_tok ? c->step_tok
						      : c->max_tok;
		c->mixed += c->chunk && c->dec;
		ck_assert_int_lt(++guard, 20000);
	}
	for (int i = 0; i < w->n; i++) {
		ck_assert_int_eq(llm_sched_info(s, ids[i], &in), 0);
		ck_assert_msg(in.state == LLM_SCHED_DONE, "%s request %d: %s",
			      pol, i, in.reason);
		ck_assert_int_eq(in.n_gen, w->nnew[i]);
		memcpy(out[i], in.out, in.n_gen * sizeof(int32_t));
	}
	llm_sched_stats(s, st);
	llm_sched_destroy(s);
	llm_kv_destroy(kv);
}

/*
 * Chunked prefill: prompts of 60-160 tokens against a step budget of 32
 * tokens. The long prompts come in chunks of at most what is left of the
 * budget, the running requests' decode tokens go on in the same steps, no
 * step exceeds the budget, and every greedy output equals the one of the
 * same run with whole prompts, bit for bit (the chunks are staged in fp32
 * and classified as the whole prompt), under full, diffkv and kvcompress;
 * under full it also equals the request run alone.
 */
START_TEST(test_sched_chunked_prefill)
{
	static const char *const pol[] = { "full", "diffkv",
					   "kvcompress:rate=2" };
	static int32_t a[16][MAXTOK], b[16][MAXTOK];
	uint64_t seed = kvtest_seed(__func__);
	struct llm_sched_stats sa, sb;
	struct chunk_ctx ca, cb;
	struct tmodel m;
	struct work w;
	int32_t ref[MAXTOK];

	model_open(&m);
	work_make(&w, 10, 60, 160, 4, 24, &seed);
	for (size_t p = 0; p < sizeof(pol) / sizeof(pol[0]); p++) {
		serve_chunked(&m, pol[p], true, 32, 1.0f, 0, &w, a, &sa, &ca,
			      0);
		serve_chunked(&m, pol[p], false, 32, 1.0f, 0, &w, b, &sb, &cb,
			      0);
		printf("chunked %s: %llu steps, %llu chunks, %d steps with a "
		       "chunk and decode tokens, at most %d tokens a step; "
		       "whole prompts: %llu steps, at most %d tokens\n",
		       pol[p], (unsigned long long)sa.steps,
		       (unsigned long long)sa.chunks, ca.mixed, ca.max_tok,
		       (unsigned long long)sb.steps, cb.max_tok);
		ck_assert_uint_gt(sa.chunks, 0);
		ck_assert_int_gt(ca.mixed, 0);
		ck_assert_int_le(ca.max_tok, 32);
		ck_assert_int_gt(cb.max_tok, 32);
		ck_assert_uint_eq(sb.chunks, 0);
		ck_assert_uint_eq(sa.prefill_tokens, sb.prefill_tokens);
		for (int i = 0; i < w.n; i++)
			for (int t = 0; t < w.nnew[i]; t++)
				ck_assert_msg(a[i][t] == b[i][t], "%s request "
					      "%d token %d: chunked %d, whole "
					      "%d", pol[p], i, t, a[i][t],
					      b[i][t]);
		if (p)
			continue;
		for (int i = 0; i < w.n; i++) {
			alone(&m, w.prompt[i], w.np[i], w.nnew[i], ref);
			for (int t = 0; t < w.nnew[i]; t++)
				ck_assert_int_eq(a[i][t], ref[t]);
		}
	}
	model_close(&m);
}
END_TEST

/*
 * Preemption mid-prefill. First on cue: four short requests (whole
 * prompts) decode while a long prompt comes in chunks of at most 24 tokens; its last chunk's
 * admission is refused once (as the cache refuses pages that ran out,
 * changing nothing), so it steps aside: preempted with its earlier chunks
 * staged, released, queued again at the head, recomputed when a request
 * leaves. Then for real: a budget of one granule that eight slots of
 * these requests oversubscribe, requests admitted on their prompts alone
 * (reserve 0), long prompts in chunks.
 * Every request completes with the tokens of its run alone; the
 * invariants hold after every step.
 */
START_TEST(test_sched_preempt_mid_prefill)
{
	static int32_t a[64][MAXTOK];
	uint64_t seed = kvtest_seed(__func__);
	struct llm_sched_stats st;
	struct chunk_ctx c;
	struct tmodel m;
	struct work w;
	int32_t ref[MAXTOK];

	model_open(&m);
	work_make(&w, 5, 5, 5, 40, 40, &seed);
	w.np[4] = 150;
	w.nnew[4] = 8;
	for (int t = 0; t < w.np[4]; t++)
		w.prompt[4][t] = (int32_t)(kvtest_rand(&seed) % VOCAB);
	serve_chunked(&m, "full", true, 24, 1.0f, 0, &w, a, &st, &c, 1);
	printf("mid-prefill on cue: %d refused, %llu preemptions, %llu of "
	       "them mid-prefill, %llu chunks\n", c.refused,
	       (unsigned long long)st.preemptions,
	       (unsigned long long)st.prefill_preemptions,
	       (unsigned long long)st.chunks);
	ck_assert_int_eq(c.refused, 1);
	ck_assert_uint_eq(st.prefill_preemptions, 1);
	ck_assert_uint_eq(st.preemptions, 1);
	/* its chunks before the last one ran twice */
	ck_assert_uint_ge(st.prefill_tokens, 4 * 5 + 150 + 4 + 24 * 5);
	for (int i = 0; i < w.n; i++) {
		alone(&m, w.prompt[i], w.np[i], w.nnew[i], ref);
		for (int t = 0; t < w.nnew[i]; t++)
			ck_assert_int_eq(a[i][t], ref[t]);
	}

	work_make(&w, 40, 40, 100, 40, 80, &seed);
	serve_chunked(&m, "full", true, 24, -1.0f, 2ULL << 20, &w, a, &st, &c,
		      0);
	printf("mid-prefill for real: %llu preemptions, %llu of them "
	       "mid-prefill, %llu rollbacks, %llu chunks, %llu steps\n",
	       (unsigned long long)st.preemptions,
	       (unsigned long long)st.prefill_preemptions,
	       (unsigned long long)st.rollbacks,
	       (unsigned long long)st.chunks, (unsigned long long)st.steps);
	ck_assert_uint_gt(st.chunks, 0);
	for (int i = 0; i < w.n; i++) {
		alone(&m, w.prompt[i], w.np[i], w.nnew[i], ref);
		for (int t = 0; t < w.nnew[i]; t++)
			ck_assert_msg(a[i][t] == ref[t], "request %d token %d: "
				      "%d, alone %d", i, t, a[i][t], ref[t]);
	}
	model_close(&m);
}
END_TEST

/* struct mix_ctx - the step callback of the mixed-policy test */
struct mix_ctx {
	struct tmodel *m;
	struct llm_kv *kv[4];
	unsigned int seen;	/* caches of this scheduler step (bits) */
	int mixed;		/* steps that ran more than one cache */
};

static int mix_step(void *ctx, struct llm_kv *kv, const struct llm_batch *b,
		    int32_t *next)
{
	struct mix_ctx *c = ctx;

	for (int i = 0; i < 4; i++)
		if (c->kv[i] == kv)
			c->seen |= 1u << i;
	return cpu_step(c->m, kv, b, next);
}

/*
 * Per-request policies: one scheduler over four caches (full, diffkv,
 * kvcompress, uniform K4V4), sixteen requests of every policy in turn,
 * prompts in chunks of a 64-token step budget, a budget of two granules
 * (4 MiB) the four spaces contend for (preemptions, compactions that give
 * granules back from one cache to another). Steps run requests of several policies; after every step
 * each space's invariants hold and the granules the four spaces map stay
 * within the budget; every request's greedy tokens equal those of the
 * request run alone under its policy (`kvmm generate --policy`).
 */
START_TEST(test_sched_mixed_policies)
{
	static const char *const pol[4] = { "full", "diffkv",
					    "kvcompress:rate=2",
					    "uniform:tier=k4v4" };
	struct llm_sched_opts o = { .max_step_tokens = 64 };
	uint64_t seed = kvtest_seed(__func__), budget = 4ULL << 20;
	struct llm_sched_info in;
	struct llm_sched_stats st;
	struct mix_ctx c = { 0 };
	struct llm_sched *s;
	struct tmodel m;
	struct work w;
	int32_t ref[MAXTOK];
	int ids[64], idx[4] = { 0 }, guard = 0, peak = 0;
	char why[200];

	model_open(&m);
	c.m = &m;
	for (int i = 0; i < 4; i++)
		c.kv[i] = cache(&m, pol[i], 8, budget);
	ck_assert_int_eq(llm_sched_create(c.kv[0], &o, mix_step, &c, &s), 0);
	for (int i = 1; i < 4; i++) {
		ck_assert_int_eq(llm_sched_add_cache(s, c.kv[i], &idx[i]), 0);
		ck_assert_int_eq(idx[i], i);
	}
	ck_assert_int_eq(llm_sched_add_cache(s, c.kv[1], &idx[0]), -EINVAL);
	work_make(&w, 16, 40, 100, 16, 40, &seed);
	for (int i = 0; i < w.n; i++) {
		struct llm_sched_req r = { w.prompt[i], w.np[i], w.nnew[i],
					   -1.0f, -1.0f, i % 4 };

		ck_assert_int_eq(llm_sched_submit(s, &r, &ids[i]), 0);
	}
	{
		struct llm_sched_req r = { w.prompt[0], 4, 4, -1.0f, -1.0f,
					   4 };

		ck_assert_int_eq(llm_sched_submit(s, &r, &ids[63]), -EINVAL);
	}
	while (!llm_sched_idle(s)) {
		uint64_t granules = 0;
		int n = 0;

		c.seen = 0;
		ck_assert_int_ge(llm_sched_step(s), 0);
		for (int i = 0; i < 4; i++) {
			struct llm_kv_stats ks;
			struct llm_kv_geometry g;

			ck_assert_msg(!llm_kv_policy_check(c.kv[i], why,
							   sizeof(why)),
				      "%s: %s", pol[i], why);
			ck_assert_int_eq(llm_kv_stats(c.kv[i], &ks), 0);
			ck_assert_int_eq(llm_kv_policy_geometry(c.kv[i], &g),
					 0);
			granules += ks.pages_total / g.pages_per_granule;
			n += (c.seen >> i) & 1;
		}
		ck_assert_uint_le(granules, budget >> 21);
		c.mixed += n > 1;
		peak = n > peak ? n : peak;
		ck_assert_int_lt(++guard, 10000);
	}
	llm_sched_stats(s, &st);
	printf("mixed policies: %llu steps, %d of them with several "
	       "policies (at most %d), %llu chunks, %llu preemptions, %llu "
	       "compactions, peak %.2f of %.2f MB\n",
	       (unsigned long long)st.steps, c.mixed, peak,
	       (unsigned long long)st.chunks,
	       (unsigned long long)st.preemptions,
	       (unsigned long long)st.compactions, st.peak_bytes / 1e6,
	       st.budget_bytes / 1e6);
	ck_assert_int_gt(c.mixed, 0);
	ck_assert_int_eq(st.caches, 4);
	ck_assert_uint_le(st.peak_bytes, st.budget_bytes);
	for (int i = 0; i < w.n; i++) {
		ck_assert_int_eq(llm_sched_info(s, ids[i], &in), 0);
		ck_assert_msg(in.state == LLM_SCHED_DONE, "request %d: %s", i,
			      in.reason);
		alone_pol(&m, pol[i % 4], w.prompt[i], w.np[i], w.nnew[i],
			  ref);
		for (int t = 0; t < w.nnew[i]; t++)
			ck_assert_msg(in.out[t] == ref[t], "%s request %d "
				      "token %d: %d, alone %d", pol[i % 4], i,
				      t, in.out[t], ref[t]);
	}
	llm_sched_destroy(s);
	for (int i = 0; i < 4; i++)
		llm_kv_destroy(c.kv[i]);
	model_close(&m);
}
END_TEST

/* ---- preemption by swap ---- */

/* a fresh directory for swap files */
static void swap_dir(char *dir, size_t len)
{
	const char *t = getenv("TMPDIR");

	snprintf(dir, len, "%s/kvmm-check-swap-XXXXXX", t && *t ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* names in @dir (. and .. aside) */
static int dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

/* this process's open files under @dir (unlinked ones included) */
static int open_under(const char *dir)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char p[320], t[512];
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d))) {
		ssize_t k;

		snprintf(p, sizeof(p), "/proc/self/fd/%s", e->d_name);
		k = readlink(p, t, sizeof(t) - 1);
		if (k <= 0)
			continue;
		t[k] = 0;
		n += !strncmp(t, dir, strlen(dir)) && t[strlen(dir)] == '/';
	}
	closedir(d);
	return n;
}

/*
 * as many requests of @w (24 at least) as need @x times the budget's
 * pages, uncompressed
 */
static void oversubscribe(struct llm_kv *kv, struct work *w, int x)
{
	struct llm_kv_geometry g;
	uint64_t demand = 0;

	ck_assert_int_eq(llm_kv_policy_geometry(kv, &g), 0);
	for (int i = 0; i < w->n; i++) {
		demand += g.lists * ((w->np[i] + w->nnew[i] +
				      g.tokens_per_page[0] - 1) /
				     g.tokens_per_page[0]);
		if (i + 1 >= 24 && demand >= x * g.budget_pages) {
			w->n = i + 1;
			return;
		}
	}
}

/*
 * Preemption by swap under full, diffkv and kvcompress: a budget
 * oversubscribed 2x on the same requests (reserve 0), victims' pages go to
 * the swap file and come back; each request keeps its place, and its
 * tokens equal those of the request run alone, uninterrupted, under its
 * policy: bit for bit, which recompute cannot give a compressing policy
 * (its prompt of prompt + generated tokens is classified anew).
 */
START_TEST(test_sched_preempt_swap)
{
	/* kvcompress: pages grow between evictions, 48 steps apart */
	static const char *const pol[] = {
		"full", "diffkv", "kvcompress:rate=2,window=8,interval=48"
	};
	char dir[256];
	uint64_t seed = kvtest_seed(__func__);
	struct work w0;

	swap_dir(dir, sizeof(dir));
	work_make(&w0, 64, 16, 40, 40, 64, &seed);
	for (size_t p = 0; p < ARRAY_SIZE(pol); p++) {
		struct llm_sched_opts o = { .reserve = -1.0f,
					    .preempt = LLM_SCHED_PREEMPT_SWAP,
					    .swap_dir = dir };
		struct llm_sched_stats st;
		struct llm_sched_info in;
		struct llm_sched *s;
		struct tmodel m;
		struct llm_kv *kv;
		struct work w = w0;
		int32_t ref[MAXTOK];
		int ids[64], swapped = 0;

		model_open(&m);
		kv = cache(&m, pol[p], 24, 2ULL << 20);
		/* kvcompress keeps half the pages: twice the requests */
		oversubscribe(kv, &w, p == 2 ? 4 : 2);
		ck_assert_int_eq(llm_sched_create(kv, &o, cpu_step, &m, &s),
				 0);
		serve(s, &w, ids);
		llm_sched_stats(s, &st);
		fflush(stdout);
		printf("swap %s: %d requests, %llu preemptions, %llu swaps out "
		       "(%llu B), %llu in (%llu B), %llu fallbacks, peak %d "
		       "running\n", pol[p], w.n,
		       (unsigned long long)st.preemptions,
		       (unsigned long long)st.swaps_out,
		       (unsigned long long)st.swap_bytes_out,
		       (unsigned long long)st.swaps_in,
		       (unsigned long long)st.swap_bytes_in,
		       (unsigned long long)st.swap_fallbacks, st.peak_running);
		fflush(stdout);
		ck_assert_uint_gt(st.swaps_out, 0);
		ck_assert_uint_eq(st.swaps_in, st.swaps_out);
		ck_assert_uint_eq(st.swap_bytes_in, st.swap_bytes_out);
		ck_assert_uint_eq(st.swap_fallbacks, 0);
		ck_assert_uint_le(st.peak_pages, st.budget_pages);
		for (int i = 0; i < w.n; i++) {
			ck_assert_int_eq(llm_sched_info(s, ids[i], &in), 0);
			swapped += in.swaps > 0;
			alone_pol(&m, pol[p], w.prompt[i], w.np[i], w.nnew[i],
				  ref);
			for (int t = 0; t < w.nnew[i]; t++)
				ck_assert_msg(in.out[t] == ref[t],
					      "%s request %d (swapped %d): "
					      "token %d is %d, alone %d",
					      pol[p], i, in.swaps, t,
					      in.out[t], ref[t]);
		}
		ck_assert_int_gt(swapped, 0);
		llm_sched_destroy(s);
		llm_kv_destroy(kv);
		model_close(&m);
	}
	ck_assert_int_eq(dir_entries(dir), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/*
 * A swap write that fails (an error on a chunk, then a write cut short:
 * the faults check_swap.c injects) leaves the sequence in place, pages and
 * contents, and the scheduler recomputes that victim instead: every
 * request completes with the tokens of its run alone. Below the
 * scheduler, the failed swap-out changes nothing the space shows.
 */
START_TEST(test_sched_swap_write_fails)
{
	struct llm_sched_opts o = { .reserve = -1.0f,
				    .preempt = LLM_SCHED_PREEMPT_SWAP };
	uint64_t seed = kvtest_seed(__func__), before, after;
	struct llm_sched_stats st;
	struct llm_kv_swap sw = { 0 };
	struct llm_sched *s;
	struct tmodel m;
	struct llm_kv *kv;
	struct work w;
	char dir[256];
	int32_t out[24], ref[24];
	int ids[64], fd, seq = 0, nt, guard = 0, armed = 1;
	uint32_t space;

	swap_dir(dir, sizeof(dir));
	o.swap_dir = dir;
	model_open(&m);

	/* the cache alone: a killed swap-out, then decoding goes on */
	work_make(&w, 1, 30, 30, 24, 24, &seed);
	alone(&m, w.prompt[0], 30, 24, ref);
	kv = cache(&m, "full", 2, 0);
	ck_assert_int_eq(llm_kv_policy_swap_setup(kv, dir, NULL), 0);
	ck_assert_int_eq(llm_kv_policy_space(kv, &fd, &space), 0);
	nt = 30;
	{
		struct llm_batch b = { 1, &seq, &nt, w.prompt[0] };

		for (int i = 0; i < 24; i++) {
			if (i == 12) {
				ck_assert_int_eq(kvshim_digest(fd, space,
							       &before), 0);
				ck_assert_int_eq(kvshim_fault_inject(
					fd, space, KVSHIM_FAULT_SWAP_EIO, 1,
					0), 0);
				ck_assert_int_eq(llm_kv_policy_swap_out(kv, 0,
									&sw),
						 -EIO);
				ck_assert_int_eq(kvshim_fault_inject(
					fd, space, KVSHIM_FAULT_SWAP_SHORT, 1,
					0), 0);
				ck_assert_int_eq(llm_kv_policy_swap_out(kv, 0,
									&sw),
						 -EIO);
				ck_assert_int_eq(kvshim_digest(fd, space,
							       &after), 0);
				ck_assert_uint_eq(before, after);
				ck_assert_int_eq(llm_kv_len(kv, 0), 30 + 11);
				ck_assert_uint_eq(sw.handle, 0);
			}
			ck_assert_int_eq(cpu_step(&m, kv, &b, &out[i]), 0);
			nt = 1;
			b.tok = &out[i];
		}
	}
	for (int i = 0; i < 24; i++)
		ck_assert_int_eq(out[i], ref[i]);
	llm_kv_destroy(kv);

	/* the scheduler: the first two swap-outs fail, then they work */
	work_make(&w, 64, 16, 40, 40, 64, &seed);
	kv = cache(&m, "full", 24, 2ULL << 20);
	oversubscribe(kv, &w, 2);
	ck_assert_int_eq(llm_kv_policy_space(kv, &fd, &space), 0);
	ck_assert_int_eq(llm_sched_create(kv, &o, cpu_step, &m, &s), 0);
	ck_assert_int_eq(kvshim_fault_inject(fd, space, KVSHIM_FAULT_SWAP_EIO,
					     1, 0), 0);
	for (int i = 0; i < w.n; i++) {
		struct llm_sched_req r = { w.prompt[i], w.np[i], w.nnew[i],
					   -1.0f, -1.0f };

		ck_assert_int_eq(llm_sched_submit(s, &r, &ids[i]), 0);
	}
	while (!llm_sched_idle(s)) {
		ck_assert_int_ge(llm_sched_step(s), 0);
		ck_assert_int_lt(++guard, 10000);
		llm_sched_stats(s, &st);
		if (armed == 1 && st.swap_fallbacks == 1) {
			ck_assert_int_eq(kvshim_fault_inject(
				fd, space, KVSHIM_FAULT_SWAP_SHORT, 1, 0), 0);
			armed = 2;
		}
	}
	llm_sched_stats(s, &st);
	printf("swap faults: %llu preemptions, %llu swaps out, %llu in, %llu "
	       "fell back to recompute\n", (unsigned long long)st.preemptions,
	       (unsigned long long)st.swaps_out,
	       (unsigned long long)st.swaps_in,
	       (unsigned long long)st.swap_fallbacks);
	ck_assert_int_eq(armed, 2);
	ck_assert_uint_eq(st.swap_fallbacks, 2);
	ck_assert_uint_gt(st.swaps_out, 0);
	ck_assert_uint_eq(st.swaps_in, st.swaps_out);
	ck_assert_int_eq(st.done, w.n);
	ck_assert_int_eq(check_outputs(&m, s, &w, ids), 0);
	llm_sched_destroy(s);
	llm_kv_destroy(kv);
	model_close(&m);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/*
 * Swap files leave nothing behind: while requests are swapped out the
 * scheduler's file is open but already unlinked (the directory is empty),
 * and once the scheduler is gone it is closed. A directory that cannot
 * hold a file is refused by --preempt swap at once, with its error; auto
 * with no directory named recomputes.
 */
START_TEST(test_sched_swap_cleanup)
{
	struct llm_sched_opts o = { .reserve = -1.0f,
				    .preempt = LLM_SCHED_PREEMPT_SWAP };
	uint64_t seed = kvtest_seed(__func__);
	struct llm_sched_stats st;
	struct llm_sched *s;
	struct tmodel m;
	struct llm_kv *kv;
	struct work w;
	char dir[256];
	int ids[64], guard = 0, seen = 0;

	swap_dir(dir, sizeof(dir));
	o.swap_dir = dir;
	model_open(&m);
	work_make(&w, 64, 16, 40, 40, 64, &seed);
	kv = cache(&m, "full", 24, 2ULL << 20);
	oversubscribe(kv, &w, 2);
	ck_assert_int_eq(open_under(dir), 0);
	ck_assert_int_eq(llm_sched_create(kv, &o, cpu_step, &m, &s), 0);
	ck_assert_int_eq(open_under(dir), 1);
	ck_assert_int_eq(dir_entries(dir), 0);
	for (int i = 0; i < w.n; i++) {
		struct llm_sched_req r = { w.prompt[i], w.np[i], w.nnew[i],
					   -1.0f, -1.0f };

		ck_assert_int_eq(llm_sched_submit(s, &r, &ids[i]), 0);
	}
	while (!llm_sched_idle(s)) {
		ck_assert_int_ge(llm_sched_step(s), 0);
		ck_assert_int_lt(++guard, 10000);
		llm_sched_stats(s, &st);
		if (st.swaps_out > st.swaps_in) {
			seen++;
			ck_assert_int_eq(dir_entries(dir), 0);
			ck_assert_int_eq(open_under(dir), 1);
		}
	}
	printf("swap cleanup: %d steps with requests swapped out\n", seen);
	ck_assert_int_gt(seen, 0);
	llm_sched_destroy(s);
	ck_assert_int_eq(open_under(dir), 0);
	ck_assert_int_eq(dir_entries(dir), 0);
	/* the same cache again: a file can be made once more */
	ck_assert_int_eq(llm_sched_create(kv, &o, cpu_step, &m, &s), 0);
	llm_sched_destroy(s);
	ck_assert_int_eq(open_under(dir), 0);
	ck_assert_int_eq(rmdir(dir), 0);
	/* a directory that is not there */
	ck_assert_int_eq(llm_sched_create(kv, &o, cpu_step, &m, &s), -ENOENT);
	o.preempt = LLM_SCHED_PREEMPT_AUTO;
	ck_assert_int_eq(llm_sched_create(kv, &o, cpu_step, &m, &s), -ENOENT);
	o.swap_dir = NULL;
	ck_assert_int_eq(llm_sched_create(kv, &o, cpu_step, &m, &s), 0);
	llm_sched_destroy(s);
	o.preempt = (enum llm_sched_preempt)7;
	ck_assert_int_eq(llm_sched_create(kv, &o, cpu_step, &m, &s), -EINVAL);
	llm_kv_destroy(kv);
	model_close(&m);
}
END_TEST

Suite *suite_sched(void)
{
	Suite *s = suite_create("sched");
	TCase *tc = tcase_create("serve");

	KV_ADD(tc, test_sched_joins_and_leaves);
	KV_ADD(tc, test_sched_order);
	KV_ADD(tc, test_sched_admission_real_pages);
	KV_ADD_LOOP(tc, test_sched_preempt_2x, 0, 2);
	KV_ADD(tc, test_sched_request_thresholds);
	KV_ADD(tc, test_sched_refusals);
	KV_ADD(tc, test_sched_cancel);
	KV_ADD(tc, test_sched_chunked_prefill);
	KV_ADD(tc, test_sched_preempt_mid_prefill);
	KV_ADD(tc, test_sched_mixed_policies);
	KV_ADD(tc, test_sched_preempt_swap);
	KV_ADD(tc, test_sched_swap_write_fails);
	KV_ADD(tc, test_sched_swap_cleanup);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return s;
}
