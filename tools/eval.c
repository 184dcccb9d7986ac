// SPDX-License-Identifier: MIT
/*
 * eval.c - `kvmm eval ppl|needle|sweep`: what a KV memory policy costs in
 * quality, measured through the compressed cache itself.
 *
 * Every policy of a run is evaluated in lockstep with the full policy: the
 * same tokens go through one cache per policy, and at each step the
 * policy's next-token distribution is compared with full's (perplexity,
 * top-1 agreement, KL divergence). A prefix is prefilled and the rest of
 * the context decoded token by token, so that compression acts as it does
 * in generation. See Documentation/policies/index.rst.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "forward.h"
#ifdef KVMM_HAVE_CUDA
#include "forward_cuda.h"
#endif
#include "evalstat.h"
#include "kvmm_base.h"
#include "kvmm.h"
#include "kvpolicy.h"
#include "model.h"
#include "policy.h"

#define EV_MAX_POL 32
#define EV_MAX_GRID 16

/* chunks of a ppl or sweep run unless --chunks says (fewer if the text
 * is shorter): enough for a 95% interval that means something */
#define EV_CHUNKS_DEFAULT 8

struct ev_opts {
	const char *model;
	const char *text;
	const char *calib;	/* calibrate: --calib FILE */
	const char *out;
	const char *spec[EV_MAX_POL];
	int n_spec;
	uint64_t context, prefix, chunks, threads, trials, seed;
	uint64_t split;		/* --split PCT: percent for calibration */
	enum llm_eval_part part;	/* the part of the text read */
	bool chunks_set;	/* --chunks given: refuse rather than clip */
	double target;		/* calibrate: --target, dPPL % */
	bool by_mean;		/* calibrate: --criterion mean */
	uint64_t rounds;	/* calibrate: --rounds */
	uint64_t lengths[EV_MAX_GRID], depths[EV_MAX_GRID];
	int n_len, n_depth;
	bool json;
	bool cuda;		/* --device cuda */
};

/* struct ev_pol - one policy of a lockstep run and its running sums */
struct ev_pol {
	struct llm_policy p;
	char spec[LLM_POLICY_SPEC_MAX + 1];
	struct llm_kv *kv;
	float *logits;		/* [n_vocab] of the current step */
	double nll, kl;		/* sums over scored tokens */
	uint64_t agree, n;	/* top-1 equal to full's; scored tokens */
	uint64_t hits, tries;	/* needle */
	struct llm_kv_usage u;	/* summed over chunks */
	double *chunk_delta;	/* [chunks] ppl change against full, % */
	uint64_t n_chunks;	/* entries of @chunk_delta */
};

/*
 * struct ev_multi - every policy's cache as one llm_kv: sequence i of the
 * batch is policy i, so one forward pass (the weights read once) serves
 * every policy of a step, and each policy's cache attends its own copy.
 */
struct ev_multi {
	struct llm_kv kv;
	struct llm_kv *sub[EV_MAX_POL];
};

/* struct ev_run - the model and the policies. Owned by one command. */
struct ev_run {
	const char *who;
	struct llm_model *m;
	struct llm_cpu *cpu;
	struct llm_cuda *gpu;	/* --device cuda: the executor, caches on it */
	struct ev_pol pol[EV_MAX_POL];
	int n_pol;
	int threads;
	struct ev_multi multi;
	int len[EV_MAX_POL];
	float *logits;		/* [n_pol][n_vocab] of the last step */
	int32_t *tok;		/* [n_pol * max_tok] a step's tokens */
	int n_tok[EV_MAX_POL], seq[EV_MAX_POL];
	struct kvmm_progress prog; /* tokens decoded (ppl), prompts (needle) */
	bool said;		/* a message says why the run failed */
	struct llm_eval_range range;	/* ppl: tokens of the part read */
	size_t ntok;		/* ppl: tokens of the whole text */
	uint64_t chunks;	/* ppl: chunks read */
};

/* one line on stderr saying why the run fails; every failure has one */
static void __attribute__((format(printf, 2, 3)))
ev_err(struct ev_run *r, const char *fmt, ...)
{
	va_list ap;

	kvmm_progress_end(&r->prog);
	fprintf(stderr, "kvmm eval %s: ", r->who);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	r->said = true;
}

/* the exit status of a run: 2 for bad input, 1 for a failed run */
static int ev_status(struct ev_run *r, int ret)
{
	kvmm_progress_end(&r->prog);
	if (ret && !r->said)
		ev_err(r, "%s", strerror(-ret));
	return ret == -EINVAL ? 2 : ret ? 1 : 0;
}

/* sub-batch @i of @b: sequence 0 of policy b->seq[i]'s cache */
static struct llm_kv *multi_sub(struct llm_kv *kv, const struct llm_batch *b,
				int i, struct llm_batch *one)
{
	static const int zero;

	*one = (struct llm_batch){ 1, &zero, &b->n_tok[i], NULL };
	return ((struct ev_multi *)kv)->sub[b->seq[i]];
}

static int multi_begin(struct llm_kv *kv, const struct llm_batch *b,
		       void *stream)
{
	struct llm_batch one;
	int ret = 0;

	for (int i = 0; !ret && i < b->n_seq; i++) {
		struct llm_kv *sub = multi_sub(kv, b, i, &one);

		ret = sub->ops->begin(sub, &one, stream);
	}
	return ret;
}

/* each policy's cache on its own rows of the step */
static int multi_layer(struct llm_kv *kv, const struct llm_batch *b,
		       int layer, const struct llm_kv_io *io, void *stream)
{
	size_t es = kvk_dtype_size(io->odt), row = 0;
	struct llm_batch one;
	int ret = 0;

	for (int i = 0; !ret && i < b->n_seq; row += b->n_tok[i++]) {
		struct llm_kv *sub = multi_sub(kv, b, i, &one);
		struct llm_kv_io x = *io;

		x.q = io->q + row * io->ldq;
		x.k = io->k + row * io->ldkv;
		x.v = io->v + row * io->ldkv;
		x.out = (uint8_t *)io->out + row * io->ldo * es;
		ret = sub->ops->layer(sub, &one, layer, &x, stream);
	}
	return ret;
}

static int multi_end(struct llm_kv *kv, const struct llm_batch *b,
		     void *stream)
{
	struct llm_batch one;
	int ret = 0;

	for (int i = 0; !ret && i < b->n_seq; i++) {
		struct llm_kv *sub = multi_sub(kv, b, i, &one);

		ret = sub->ops->end(sub, &one, stream);
		if (!ret)
			llm_kv_commit(sub, 0, b->n_tok[i]);
	}
	return ret;
}

static int multi_status(struct llm_kv *kv)
{
	struct ev_multi *mu = (struct ev_multi *)kv;
	int ret = 0;

	for (int i = 0; !ret && i < kv->n_seq; i++)
		if (mu->sub[i]->ops->status)
			ret = mu->sub[i]->ops->status(mu->sub[i]);
	return ret;
}

static void multi_destroy(struct llm_kv *kv)
{
	(void)kv;	/* the policies own their caches */
}

/* struct llm_kv.id of the last set of caches, above the policy caches' */
static uint64_t ev_multi_ids = 1ULL << 62;

static const struct llm_kv_ops multi_ops = {
	.begin = multi_begin,
	.layer = multi_layer,
	.end = multi_end,
	.status = multi_status,
	.destroy = multi_destroy,
};

static int ev_threads(uint64_t want)
{
	cpu_set_t set;

	if (want)
		return (int)want;
	if (!sched_getaffinity(0, sizeof(set), &set) && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	return 1;
}

static int ev_load(struct ev_run *r, const struct ev_opts *o)
{
	char err[LLM_GGUF_ERR_MAX] = "";
	int ret;

	r->threads = ev_threads(o->threads);
	ret = llm_model_open(o->model, &r->m, err, sizeof(err));
#ifdef KVMM_HAVE_CUDA
	if (!ret && o->cuda)
		ret = llm_cuda_load(&r->m->cfg, &r->m->w, NULL, &r->gpu, err,
				    sizeof(err));
	else
#endif
	if (!ret)
		ret = llm_cpu_load(&r->m->cfg, &r->m->w, r->threads, &r->cpu,
				   err, sizeof(err));
	if (ret)
		ev_err(r, "%s", *err ? err : strerror(-ret));
	return ret;
}

/*
 * the policies of the command line, full first (added when absent); needs
 * no model, so that a bad one is refused before anything is loaded
 */
static int ev_parse_policies(struct ev_run *r, const struct ev_opts *o)
{
	char err[200];

	llm_policy_default(LLM_POLICY_FULL, &r->pol[0].p);
	r->n_pol = 1;
	for (int i = 0; i < o->n_spec; i++) {
		struct llm_policy p;

		if (llm_policy_parse(o->spec[i], &p, err, sizeof(err))) {
			ev_err(r, "--policy: %s", err);
			return -EINVAL;
		}
		if (p.kind == LLM_POLICY_FULL && !p.topk)
			continue;
		if (r->n_pol == EV_MAX_POL) {
			ev_err(r, "more than %d policies", EV_MAX_POL - 1);
			return -EINVAL;
		}
		r->pol[r->n_pol++].p = p;
	}
	return 0;
}

/* the policies' logits, once the model is loaded */
static int ev_policies(struct ev_run *r)
{
	r->logits = malloc((size_t)r->n_pol * r->m->cfg.n_vocab *
			   sizeof(float));
	if (!r->logits) {
		ev_err(r, "out of memory for %d x %u logits", r->n_pol,
		       r->m->cfg.n_vocab);
		return -ENOMEM;
	}
	for (int i = 0; i < r->n_pol; i++) {
		llm_policy_format(&r->pol[i].p, r->pol[i].spec,
				  sizeof(r->pol[i].spec));
		r->pol[i].logits = r->logits + (size_t)i * r->m->cfg.n_vocab;
		r->seq[i] = i;
	}
	return 0;
}

static void ev_fini(struct ev_run *r)
{
	for (int i = 0; i < r->n_pol; i++) {
		llm_kv_destroy(r->pol[i].kv);
		free(r->pol[i].chunk_delta);
	}
	free(r->logits);
	free(r->tok);
	llm_cpu_free(r->cpu);
#ifdef KVMM_HAVE_CUDA
	llm_cuda_free(r->gpu);
#endif
	llm_model_close(r->m);
}

/* fresh caches of @max_tok tokens for every policy, as one llm_kv */
static int ev_caches(struct ev_run *r, int max_tok)
{
	const struct llm_config *c = &r->m->cfg;
	char err[200] = "";
	int32_t *tok;

	tok = realloc(r->tok, (size_t)r->n_pol * max_tok * sizeof(int32_t));
	if (!tok) {
		ev_err(r, "out of memory");
		return -ENOMEM;
	}
	r->tok = tok;
	r->multi.kv = (struct llm_kv){
		.ops = &multi_ops, .n_seq = r->n_pol,
		.n_layers = (int)c->n_layers, .n_heads = (int)c->n_heads,
		.n_kv_heads = (int)c->n_kv_heads,
		.head_dim = (int)c->head_dim, .max_tok = max_tok,
		.device = r->gpu != NULL, .len = r->len,
		/* new caches: an executor must not replay older graphs */
		.id = ++ev_multi_ids,
	};
	memset(r->len, 0, sizeof(r->len));
	for (int i = 0; i < r->n_pol; i++) {
		int ret;

		llm_kv_destroy(r->pol[i].kv);
		r->pol[i].kv = NULL;
#ifdef KVMM_HAVE_CUDA
		if (r->gpu) {
			ret = llm_kv_policy_create_cuda(&r->m->cfg, &r->pol[i].p,
							1, max_tok, 0,
							&r->pol[i].kv, err,
							sizeof(err));
		} else
#endif
		ret = llm_kv_policy_create(&r->m->cfg, &r->pol[i].p, 1, max_tok,
					   r->threads, &r->pol[i].kv, err,
					   sizeof(err));
		if (ret) {
			ev_err(r, "%s: %s", r->pol[i].spec,
			       *err ? err : strerror(-ret));
			return ret;
		}
		r->multi.sub[i] = r->pol[i].kv;
	}
	return 0;
}

/*
 * feed @n tokens to every policy's cache in one forward pass (@tok[i * n ..]
 * to policy i, or the same @tok to all when @same); the logits of each
 * policy's last token into its pol->logits
 */
static int ev_feed(struct ev_run *r, const int32_t *tok, int n, bool same)
{
	struct llm_batch b = { .n_seq = r->n_pol, .seq = r->seq,
			       .n_tok = r->n_tok, .tok = r->tok };
	int ret;

	for (int i = 0; i < r->n_pol; i++) {
		r->n_tok[i] = n;
		memcpy(r->tok + (size_t)i * n, same ? tok : tok + (size_t)i * n,
		       n * sizeof(int32_t));
	}
#ifdef KVMM_HAVE_CUDA
	if (r->gpu)
		ret = llm_cuda_forward(r->gpu, &r->multi.kv, &b, r->logits);
	else
#endif
	ret = llm_cpu_forward(r->cpu, &r->multi.kv, &b, r->logits);
	if (ret)
		ev_err(r, "forward pass: %s", strerror(-ret));
	return ret;
}

/* log-sum-exp of @x and its argmax */
static double lse(const float *x, int n, int *amax)
{
	double m = x[0], s = 0;

	*amax = 0;
	for (int i = 1; i < n; i++)
		if (x[i] > m) {
			m = x[i];
			*amax = i;
		}
	for (int i = 0; i < n; i++)
		s += exp(x[i] - m);
	return m + log(s);
}

/* score @target under every policy against full (pol[0]) */
static void ev_score(struct ev_run *r, int32_t target)
{
	int n = (int)r->m->cfg.n_vocab, a0, a;
	const float *f = r->pol[0].logits;
	double l0 = lse(f, n, &a0);

	for (int i = 0; i < r->n_pol; i++) {
		struct ev_pol *p = &r->pol[i];
		double li = i ? lse(p->logits, n, &a) : l0, kl = 0;

		if (!i)
			a = a0;
		p->nll += li - p->logits[target];
		p->agree += a == a0;
		p->n++;
		for (int v = 0; i && v < n; v++) {
			double lf = f[v] - l0, lp = p->logits[v] - li;

			kl += exp(lf) * (lf - lp);
		}
		p->kl += kl;
	}
}

static void usage_add(struct llm_kv_usage *s, const struct llm_kv_usage *u)
{
	for (int t = 0; t < 2; t++) {
		s->tokens[t] += u->tokens[t];
		s->pages[t] += u->pages[t];
	}
	s->pruned += u->pruned;
	s->bits += u->bits;
	s->full_pages += u->full_pages;
	s->full_bits += u->full_bits;
	s->page_size = u->page_size;
	s->full_page_size = u->full_page_size;
}

static int ev_usage_add(struct ev_run *r)
{
	for (int i = 0; i < r->n_pol; i++) {
		struct llm_kv_usage u;
		int ret = llm_kv_policy_usage(r->pol[i].kv, 0, &u);

		if (ret) {
			ev_err(r, "%s: usage: %s", r->pol[i].spec,
			       strerror(-ret));
			return ret;
		}
		usage_add(&r->pol[i].u, &u);
	}
	return 0;
}

/* one chunk: prefill @prefix tokens, decode the rest teacher-forced */
static int ev_chunk(struct ev_run *r, const int32_t *tok, int ctx, int prefix)
{
	int ret = ev_caches(r, ctx);

	if (!ret)
		ret = ev_feed(r, tok, prefix, true);
	for (int t = prefix; !ret && t < ctx; t++) {
		if (t > prefix)
			ret = ev_feed(r, &tok[t - 1], 1, true);
		if (!ret) {
			ev_score(r, tok[t]);
			kvmm_progress_add(&r->prog, 1);
		}
	}
	return ret ? ret : ev_usage_add(r);
}

/* the whole text file, tokenized */
static int ev_text(struct ev_run *r, const char *path, int32_t **ids,
		   size_t *n)
{
	size_t len = 0, cap = 1 << 20, got;
	char *buf = malloc(cap), who[64];
	FILE *f = NULL;
	int ret;

	snprintf(who, sizeof(who), "kvmm eval %s: --text", r->who);
	ret = kvmm_open_regular(who, path, &f);
	if (ret) {
		r->said = true;
		goto out;
	}
	if (!buf) {
		ret = -ENOMEM;
		ev_err(r, "out of memory");
		goto out;
	}
	while ((got = fread(buf + len, 1, cap - len, f)) > 0) {
		len += got;
		if (len == cap) {
			char *nb = cap < (1u << 30) ? realloc(buf, 2 * cap)
						    : NULL;

			if (!nb) {
				ev_err(r, "%s: larger than 1 GiB", path);
				ret = -EFBIG;
				goto out;
			}
			buf = nb;
			cap *= 2;
		}
	}
	if (ferror(f)) {
		ret = -EIO;
		ev_err(r, "%s: read error", path);
		goto out;
	}
	*ids = malloc((len + 1) * sizeof(int32_t));
	if (!*ids) {
		ret = -ENOMEM;
		ev_err(r, "out of memory");
		goto out;
	}
	ret = llm_tok_encode(r->m->tok, buf, len, 0, *ids, len + 1, n);
	if (ret)
		ev_err(r, "%s: not text the tokenizer takes: %s", path,
		       strerror(-ret));
out:
	if (f)
		fclose(f);
	free(buf);
	return ret;
}

static double ev_ppl_of(const struct ev_pol *p)
{
	return p->n ? exp(p->nll / (double)p->n) : 0.0;
}

/* the JSON list of a policy's per-chunk ppl changes, for error bars */
static void ev_print_chunks(const struct ev_pol *p, FILE *f)
{
	fputs(", \"chunk_delta_pct\": [", f);
	for (uint64_t c = 0; c < p->n_chunks; c++)
		fprintf(f, "%s%.4f", c ? ", " : "", p->chunk_delta[c]);
	fputc(']', f);
}

/* the text line: which tokens a run reads, so a reader can check the split */
static void ev_print_text(const struct ev_run *r, const struct ev_opts *o,
			  FILE *f)
{
	fprintf(f, "text %s: %zu tokens; read [%zu, %zu)", o->text, r->ntok,
		r->range.first, r->range.first + r->chunks * o->context);
	if (o->part != LLM_EVAL_ALL)
		fprintf(f, ", in its %s part [%zu, %zu) of --split %lu "
			"(calibration [0, %zu), evaluation [%zu, %zu))",
			llm_eval_part_name(o->part), r->range.first,
			r->range.first + r->range.n, o->split,
			o->part == LLM_EVAL_CALIB ? r->range.n : r->range.first,
			o->part == LLM_EVAL_CALIB ? r->range.n : r->range.first,
			r->ntok);
	fprintf(f, "; %lu chunk%s of %lu tokens, %lu prefilled%s\n",
		r->chunks, r->chunks == 1 ? "" : "s", o->context, o->prefix,
		r->chunks < EV_CHUNKS_DEFAULT && !o->chunks_set ?
		" (all that fit)" : "");
}

/* a policy's spread of per-chunk changes (one chunk: no interval) */
static void ev_spread(const struct ev_pol *p, struct llm_eval_spread *s)
{
	if (!p->n_chunks || llm_eval_spread(p->chunk_delta,
					    (uint32_t)p->n_chunks, s))
		*s = (struct llm_eval_spread){ .half = NAN, .lo = NAN,
					       .hi = NAN };
}

static void ev_print_ppl(const struct ev_run *r, const struct ev_opts *o,
			 FILE *f, bool json)
{
	double ppl0 = ev_ppl_of(&r->pol[0]);

	if (!json) {
		ev_print_text(r, o, f);
		fprintf(f, "%-58s %9s %8s %8s %17s %7s %8s %8s %8s\n",
			"policy", "ppl", "d-ppl%", "mean%", "95% interval",
			"top1%", "KL", "logical", "physical");
	}
	for (int i = 0; i < r->n_pol; i++) {
		const struct ev_pol *p = &r->pol[i];
		double ppl = ev_ppl_of(p), n = p->n ? (double)p->n : 1;
		struct llm_eval_spread sp;
		char ci[40];

		ev_spread(p, &sp);
		if (!json) {
			if (isnan(sp.half))
				snprintf(ci, sizeof(ci), "-");
			else
				snprintf(ci, sizeof(ci), "[%+.2f, %+.2f]",
					 sp.lo, sp.hi);
			fprintf(f, "%-58s %9.4f %+8.3f %+8.3f %17s %7.2f "
				"%8.5f %7.2fx %7.2fx\n", p->spec, ppl,
				100.0 * (ppl / ppl0 - 1.0), sp.mean, ci,
				100.0 * p->agree / n, p->kl / n,
				llm_kv_logical_ratio(&p->u),
				llm_kv_physical_ratio(&p->u));
			continue;
		}
		if (isnan(sp.half))
			snprintf(ci, sizeof(ci), "null");
		else
			snprintf(ci, sizeof(ci), "[%.4f, %.4f]", sp.lo, sp.hi);
		fprintf(f, "{\"model\": \"%s\", \"device\": \"%s\", "
			"\"text\": \"%s\", \"part\": \"%s\", \"split\": %lu, "
			"\"first_token\": %zu, \"context\": %lu, \"prefix\": "
			"%lu, \"chunks\": %lu, \"policy\": \"%s\", "
			"\"kind\": \"%s\", \"scored\": %lu, \"ppl\": %.6f, "
			"\"delta_pct\": %.4f, \"delta_mean_pct\": %.4f, "
			"\"delta_ci95_pct\": %s, "
			"\"top1\": %.5f, \"kl\": %.6f, "
			"\"logical_ratio\": %.4f, \"physical_ratio\": %.4f, "
			"\"tokens\": [%lu, %lu], \"pruned\": %lu, "
			"\"pages\": [%lu, %lu], \"page_size\": %lu",
			o->model, o->cuda ? "cuda" : "cpu", o->text,
			llm_eval_part_name(o->part), o->split, r->range.first,
			o->context, o->prefix, r->chunks, p->spec,
			llm_policy_name(p->p.kind), p->n, ppl,
			100.0 * (ppl / ppl0 - 1.0), sp.mean, ci, p->agree / n,
			p->kl / n, llm_kv_logical_ratio(&p->u),
			llm_kv_physical_ratio(&p->u), p->u.tokens[0],
			p->u.tokens[1], p->u.pruned, p->u.pages[0],
			p->u.pages[1], p->u.page_size);
		ev_print_chunks(p, f);
		fputs("}\n", f);
		fflush(f); /* each point on disk as soon as it is written */
	}
}

enum {
	OPT_MODEL = 256, OPT_TEXT, OPT_CONTEXT, OPT_PREFIX, OPT_CHUNKS,
	OPT_POLICY, OPT_THREADS, OPT_DEVICE, OPT_JSON, OPT_OUT, OPT_LENGTHS,
	OPT_DEPTHS, OPT_TRIALS, OPT_SEED, OPT_SPLIT, OPT_CALIB, OPT_TARGET,
	OPT_CRITERION, OPT_ROUNDS, OPT_HELP,
};

static const struct option ev_longopts[] = {
	{ "model", required_argument, NULL, OPT_MODEL },
	{ "text", required_argument, NULL, OPT_TEXT },
	{ "context", required_argument, NULL, OPT_CONTEXT },
	{ "prefix", required_argument, NULL, OPT_PREFIX },
	{ "chunks", required_argument, NULL, OPT_CHUNKS },
	{ "policy", required_argument, NULL, OPT_POLICY },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "device", required_argument, NULL, OPT_DEVICE },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "out", required_argument, NULL, OPT_OUT },
	{ "lengths", required_argument, NULL, OPT_LENGTHS },
	{ "depths", required_argument, NULL, OPT_DEPTHS },
	{ "trials", required_argument, NULL, OPT_TRIALS },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "split", required_argument, NULL, OPT_SPLIT },
	{ "calib", required_argument, NULL, OPT_CALIB },
	{ "target", required_argument, NULL, OPT_TARGET },
	{ "criterion", required_argument, NULL, OPT_CRITERION },
	{ "rounds", required_argument, NULL, OPT_ROUNDS },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/*
 * The sweep's grid: full (always), uniform at four precisions, diffkv over
 * DiffKV's threshold ranges, kvcompress over rates; every other knob at
 * its default. All of them run in lockstep over the same chunks.
 */
static const char *const sweep_grid[] = {
	"uniform:tier=k8v8", "uniform:tier=k8v4", "uniform:tier=k4v4",
	"uniform:tier=k4v2",
	"diffkv:prune=0,quant=0.5", "diffkv:prune=0.02,quant=1",
	"diffkv:prune=0.02,quant=2", "diffkv:prune=0.05,quant=1",
	"diffkv:prune=0.05,quant=2", "diffkv:prune=0.1,quant=2",
	"diffkv:prune=0.1,quant=4", "diffkv:prune=0.2,quant=5",
	"kvcompress:rate=1.5", "kvcompress:rate=2", "kvcompress:rate=3",
	"kvcompress:rate=4", "kvcompress:rate=6",
};

static const char ev_help_policy[] =
	"  --policy SPEC     a policy to compare with full (repeatable):\n"
	"                    full[:topk=N], uniform[:tier=k4v4,hadamard=0],\n"
	"                    diffkv[:prune=A,quant=B,hi=k8v4,lo=k4v2,window=64,\n"
	"                    score=64,hadamard=0,sinks=0] or diffkv:profile=F,\n"
	"                    kvcompress[:rate=R,window=64,score=32,\n"
	"                    interval=16,sinks=0]\n";
static const char ev_help_chunks[] =
	"  --context N       tokens per chunk (2048)\n"
	"  --prefix P        tokens prefilled, the rest decoded (N/2)\n"
	"  --chunks K        consecutive chunks of the text (8, or all that\n"
	"                    fit when the text is shorter); the mean change\n"
	"                    over chunks comes with its 95% interval\n";
static const char ev_help_split[] =
	"  --split S         the text's first S% of tokens are for\n"
	"                    calibration, the rest for evaluation: ppl and\n"
	"                    sweep read the evaluation part, calibrate the\n"
	"                    calibration part (the ranges are printed)\n";
static const char ev_help_common[] =
	"  --threads N       CPU threads (all available)\n"
	"  --device D        cpu (fp32 executor, host caches) or cuda (the\n"
	"                    CUDA executor, caches on the device) (cpu)\n"
	"  --json            JSON lines instead of a table (and no progress\n"
	"                    line on the terminal)\n";

static void ev_help(const char *who, FILE *f)
{
	if (!strcmp(who, "ppl")) {
		fputs("usage: kvmm eval ppl --model M --text FILE [options]\n"
		      "teacher-forced perplexity, top-1 agreement and KL of "
		      "each policy against full\n", f);
		fputs(ev_help_policy, f);
		fputs(ev_help_chunks, f);
		fputs(ev_help_split, f);
	} else if (!strcmp(who, "calibrate")) {
		fputs("usage: kvmm eval calibrate --model M (--calib FILE | "
		      "--text FILE --split S)\n"
		      "                           --out PROFILE.json "
		      "[options]\n"
		      "diffkv's prune and quant thresholds with the highest "
		      "physical compression\nwithin --target on calibration "
		      "text, written as a profile for\n--policy "
		      "diffkv:profile=PROFILE.json\n"
		      "  --calib FILE      the calibration text (all of it)\n"
		      "  --out FILE        the profile (JSON) written\n"
		      "  --target PCT      largest perplexity change against "
		      "full, in % (2)\n"
		      "  --criterion C     upper: the 95% interval's upper "
		      "end must be within\n"
		      "                    --target (the default); mean: the "
		      "mean change\n"
		      "  --rounds R        1: the grid only; 2: and a finer "
		      "grid around its best (2)\n"
		      "  --policy SPEC     the diffkv policy whose tiers, "
		      "window and score are kept\n"
		      "                    (diffkv)\n", f);
		fputs(ev_help_chunks, f);
		fputs(ev_help_split, f);
	} else if (!strcmp(who, "needle")) {
		fputs("usage: kvmm eval needle --model M [options]\n"
		      "pass-key retrieval accuracy per prompt length and "
		      "depth\n", f);
		fputs(ev_help_policy, f);
		fputs("  --lengths L,...   prompt lengths in tokens "
		      "(512,1024,2048)\n"
		      "  --depths D,...    depths of the key in percent "
		      "(0,25,50,75,100)\n"
		      "  --trials T        pass keys per cell (2)\n"
		      "  --seed S          seed of the pass keys (1)\n", f);
	} else {
		fputs("usage: kvmm eval sweep --model M --text FILE --out "
		      "FILE.jsonl [options]\n"
		      "perplexity of a grid of policies against full, one JSON "
		      "line per policy in --out\n"
		      "  --out FILE        the JSON lines; written to a "
		      "temporary file renamed\n"
		      "                    over FILE at the end, so a failed "
		      "run leaves FILE as it was\n"
		      "  --policy SPEC     run these policies instead of the "
		      "grid (repeatable)\n", f);
		fputs(ev_help_chunks, f);
		fputs(ev_help_split, f);
	}
	fputs(ev_help_common, f);
	if (strcmp(who, "sweep"))
		return;
	fputs("the grid (full is always run):\n", f);
	for (size_t i = 0; i < ARRAY_SIZE(sweep_grid); i++)
		fprintf(f, "  %s\n", sweep_grid[i]);
}

/* "a,b,c" into @v; -EINVAL with a message when out of [lo, hi] */
static int parse_list(const char *opt, const char *s, uint64_t lo,
		      uint64_t hi, uint64_t *v, int *n)
{
	char buf[256], *tok, *next;

	if (strlen(s) >= sizeof(buf))
		goto bad;
	strcpy(buf, s);
	*n = 0;
	for (tok = buf; tok; tok = next) {
		next = strchr(tok, ',');
		if (next)
			*next++ = '\0';
		if (*n == EV_MAX_GRID || !*tok ||
		    kvmm_parse_u64(opt, tok, lo, hi, &v[*n]))
			goto bad;
		(*n)++;
	}
	if (*n)
		return 0;
bad:
	fprintf(stderr, "kvmm eval: %s: '%s' is not a list of at most %d "
		"numbers in [%lu, %lu]\n", opt, s, EV_MAX_GRID, lo, hi);
	return -EINVAL;
}

/* which options a subcommand takes: an option of another is refused */
static bool ev_opt_ok(const char *who, int c)
{
	switch (c) {
	case OPT_TEXT:
	case OPT_CONTEXT:
	case OPT_PREFIX:
	case OPT_CHUNKS:
	case OPT_SPLIT:
		return strcmp(who, "needle");
	case OPT_LENGTHS:
	case OPT_DEPTHS:
	case OPT_TRIALS:
	case OPT_SEED:
		return !strcmp(who, "needle");
	case OPT_OUT:
		return !strcmp(who, "sweep") || !strcmp(who, "calibrate");
	case OPT_CALIB:
	case OPT_TARGET:
	case OPT_CRITERION:
	case OPT_ROUNDS:
		return !strcmp(who, "calibrate");
	default:
		return true;
	}
}

/*
 * which text and which part of it: ppl and sweep read --text, its
 * evaluation part with --split; calibrate reads --calib whole, or the
 * calibration part of --text with --split (never a whole --text: the
 * evaluation would then have no unseen text of it)
 */
static int ev_parse_part(const char *who, struct ev_opts *o)
{
	if (strcmp(who, "calibrate")) {
		o->part = o->split ? LLM_EVAL_TEST : LLM_EVAL_ALL;
		return 0;
	}
	if (o->calib && (o->text || o->split)) {
		fprintf(stderr, "kvmm eval calibrate: --calib reads a whole "
			"file: give it alone, or --text with --split\n");
		return -EINVAL;
	}
	if (!o->calib && (!o->text || !o->split)) {
		fprintf(stderr, "kvmm eval calibrate: --calib FILE, or --text "
			"FILE with --split S, is required\n");
		return -EINVAL;
	}
	if (o->calib) {
		o->text = o->calib;
		o->part = LLM_EVAL_ALL;
	} else {
		o->part = LLM_EVAL_CALIB;
	}
	return 0;
}

/* Return: 0, 1 for --help, -EINVAL. */
static int ev_parse(const char *who, int argc, char **argv,
		    struct ev_opts *o)
{
	int c, idx;

	memset(o, 0, sizeof(*o));
	o->context = 2048;
	o->chunks = EV_CHUNKS_DEFAULT;
	o->target = 2.0;
	o->rounds = 2;
	o->trials = 2;
	o->seed = 1;
	parse_list("--lengths", "512,1024,2048", 1, LLM_MAX_CTX, o->lengths,
		   &o->n_len);
	parse_list("--depths", "0,25,50,75,100", 0, 100, o->depths,
		   &o->n_depth);
	optind = 1;
	while ((c = getopt_long(argc, argv, "", ev_longopts, &idx)) != -1) {
		int ret = 0;

		if (c >= OPT_MODEL && !ev_opt_ok(who, c)) {
			fprintf(stderr, "kvmm eval %s: --%s is not an option "
				"of %s (kvmm eval %s --help)\n", who,
				ev_longopts[idx].name, who, who);
			return -EINVAL;
		}
		switch (c) {
		case OPT_MODEL:
			o->model = optarg;
			break;
		case OPT_TEXT:
			o->text = optarg;
			break;
		case OPT_OUT:
			o->out = optarg;
			break;
		case OPT_CONTEXT:
			ret = kvmm_parse_u64("--context", optarg, 2,
					     LLM_MAX_CTX, &o->context);
			break;
		case OPT_PREFIX:
			ret = kvmm_parse_u64("--prefix", optarg, 1,
					     LLM_MAX_CTX, &o->prefix);
			break;
		case OPT_CHUNKS:
			ret = kvmm_parse_u64("--chunks", optarg, 1, 4096,
					     &o->chunks);
			o->chunks_set = true;
			break;
		case OPT_SPLIT:
			ret = kvmm_parse_u64("--split", optarg, 1, 99,
					     &o->split);
			break;
		case OPT_CALIB:
			o->calib = optarg;
			break;
		case OPT_ROUNDS:
			ret = kvmm_parse_u64("--rounds", optarg, 1, 2,
					     &o->rounds);
			break;
		case OPT_TARGET: {
			char *end;

			errno = 0;
			o->target = strtod(optarg, &end);
			if (errno || end == optarg || *end ||
			    !(o->target > 0 && o->target <= 100)) {
				fprintf(stderr, "kvmm eval %s: --target: '%s' "
					"is not a percentage in (0, 100]\n",
					who, optarg);
				return -EINVAL;
			}
			break;
		}
		case OPT_CRITERION:
			if (!strcmp(optarg, "mean")) {
				o->by_mean = true;
			} else if (strcmp(optarg, "upper")) {
				fprintf(stderr, "kvmm eval %s: --criterion: "
					"'%s' is not upper or mean\n", who,
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_THREADS:
			ret = kvmm_parse_u64("--threads", optarg, 1, 256,
					     &o->threads);
			break;
		case OPT_TRIALS:
			ret = kvmm_parse_u64("--trials", optarg, 1, 1000,
					     &o->trials);
			break;
		case OPT_SEED:
			ret = kvmm_parse_u64("--seed", optarg, 0, UINT64_MAX,
					     &o->seed);
			break;
		case OPT_LENGTHS:
			ret = parse_list("--lengths", optarg, 64, LLM_MAX_CTX,
					 o->lengths, &o->n_len);
			break;
		case OPT_DEPTHS:
			ret = parse_list("--depths", optarg, 0, 100, o->depths,
					 &o->n_depth);
			break;
		case OPT_POLICY:
			if (o->n_spec == EV_MAX_POL - 1) {
				fprintf(stderr, "kvmm eval: --policy: at most "
					"%d\n", EV_MAX_POL - 1);
				return -EINVAL;
			}
			o->spec[o->n_spec++] = optarg;
			break;
		case OPT_DEVICE:
			if (!strcmp(optarg, "cuda")) {
#ifdef KVMM_HAVE_CUDA
				o->cuda = true;
#else
				fprintf(stderr, "kvmm eval: --device cuda: "
					"no GPU: this kvmm was built without "
					"CUDA\n");
				return -EINVAL;
#endif
			} else if (strcmp(optarg, "cpu")) {
				fprintf(stderr, "kvmm eval: --device: '%s' is "
					"not cpu or cuda\n", optarg);
				return -EINVAL;
			}
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_HELP:
			ev_help(who, stdout);
			return 1;
		default:
			ev_help(who, stderr);
			return -EINVAL;
		}
		if (ret)
			return ret;
	}
	if (optind < argc || !o->model) {
		fprintf(stderr, "kvmm eval %s: %s\n", who,
			optind < argc ? "unexpected argument" :
					"--model is required");
		ev_help(who, stderr);
		return -EINVAL;
	}
	if (!o->prefix)
		o->prefix = o->context / 2;
	if (o->prefix >= o->context) {
		fprintf(stderr, "kvmm eval %s: --prefix %lu must be below "
			"--context %lu\n", who, o->prefix, o->context);
		return -EINVAL;
	}
	return ev_parse_part(who, o);
}

/*
 * the tokens of the text, the part of them read (--split) and the chunks
 * that fit in it, checked against the model's context and the chunks asked
 * for; nothing is run yet. *ids is the whole text; r->range the part.
 */
static int ev_ppl_prepare(struct ev_run *r, const struct ev_opts *o,
			  int32_t **ids)
{
	size_t n = 0;
	int ret;

	*ids = NULL;
	if (o->context > r->m->cfg.n_ctx) {
		ev_err(r, "--context %lu is longer than the model's context "
		       "(%u)", o->context, r->m->cfg.n_ctx);
		return -EINVAL;
	}
	ret = ev_text(r, o->text, ids, &n);
	if (ret)
		goto out;
	r->ntok = n;
	llm_eval_split(n, (uint32_t)o->split, o->part, &r->range);
	r->chunks = llm_eval_chunks_fit(&r->range, o->context);
	if (r->chunks > o->chunks || o->chunks_set)
		r->chunks = r->chunks < o->chunks ? r->chunks : o->chunks;
	if (r->chunks < o->chunks && (o->chunks_set || !r->chunks)) {
		if (o->part == LLM_EVAL_ALL)
			ev_err(r, "%s: %zu tokens, shorter than --chunks %lu x "
			       "--context %lu", o->text, n, o->chunks,
			       o->context);
		else
			ev_err(r, "%s: its %s part (--split %lu) has %zu "
			       "tokens, shorter than --chunks %lu x --context "
			       "%lu", o->text, llm_eval_part_name(o->part),
			       o->split, r->range.n, o->chunks, o->context);
		ret = -EINVAL;
	}
out:
	if (ret) {
		free(*ids);
		*ids = NULL;
	}
	return ret;
}

/* ppl over @o's chunks of @ids; results in @r */
static int ev_ppl_run(struct ev_run *r, const struct ev_opts *o,
		      const int32_t *ids)
{
	double nll[EV_MAX_POL];
	uint64_t n[EV_MAX_POL];
	int ret = 0;

	for (int i = 0; i < r->n_pol; i++) {
		r->pol[i].chunk_delta = calloc(r->chunks, sizeof(double));
		if (!r->pol[i].chunk_delta) {
			ev_err(r, "out of memory");
			return -ENOMEM;
		}
	}
	kvmm_progress_start(&r->prog, r->who, "tokens",
			    r->chunks * (o->context - o->prefix), o->json);
	for (uint64_t c = 0; !ret && c < r->chunks; c++) {
		double ppl0 = 0;

		for (int i = 0; i < r->n_pol; i++) {
			nll[i] = r->pol[i].nll;
			n[i] = r->pol[i].n;
		}
		ret = ev_chunk(r, ids + r->range.first + c * o->context,
			       (int)o->context, (int)o->prefix);
		/* this chunk's ppl change against full's on the same chunk */
		for (int i = 0; !ret && i < r->n_pol; i++) {
			struct ev_pol *p = &r->pol[i];
			double ppl = exp((p->nll - nll[i]) /
					 (double)(p->n - n[i]));

			if (!i)
				ppl0 = ppl;
			p->chunk_delta[c] = 100.0 * (ppl / ppl0 - 1.0);
			p->n_chunks = c + 1;
		}
	}
	kvmm_progress_end(&r->prog);
	return ret;
}

/* what ppl and sweep check before any output: text, policies, model */
static int ev_ppl_setup(struct ev_run *r, const struct ev_opts *o,
			int32_t **ids)
{
	int ret;

	*ids = NULL;
	if (!o->text) {
		ev_err(r, "--text is required");
		return -EINVAL;
	}
	ret = ev_parse_policies(r, o);
	if (!ret)
		ret = ev_load(r, o);
	if (!ret)
		ret = ev_policies(r);
	if (!ret)
		ret = ev_ppl_prepare(r, o, ids);
	return ret;
}

static int cmd_eval_ppl(int argc, char **argv)
{
	struct ev_run r = { .who = "ppl" };
	int32_t *ids = NULL;
	struct ev_opts o;
	int ret = ev_parse("ppl", argc, argv, &o);

	if (ret)
		return ret > 0 ? 0 : 2;
	ret = ev_ppl_setup(&r, &o, &ids);
	if (!ret)
		ret = ev_ppl_run(&r, &o, ids);
	if (!ret)
		ev_print_ppl(&r, &o, stdout, o.json);
	free(ids);
	ev_fini(&r);
	return ev_status(&r, ret);
}

/* the sweep's temporary file, removed if the run is interrupted */
static const char *volatile ev_tmp_path;

static void ev_on_signal(int sig)
{
	const char *p = ev_tmp_path;

	if (p)
		unlink(p);
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * A temporary file beside @out (same directory: the final rename(2) is
 * atomic and never crosses file systems); *tmp its name. Until the run
 * ends, SIGINT, SIGTERM and SIGHUP remove it before the process dies.
 */
static int ev_out_open(struct ev_run *r, const char *out, char **tmp,
		       FILE **f)
{
	size_t len = strlen(out) + sizeof(".XXXXXX");
	sigset_t sigs, old;
	mode_t um;
	int fd, ret = 0;

	*tmp = malloc(len);
	if (!*tmp) {
		ev_err(r, "out of memory");
		return -ENOMEM;
	}
	snprintf(*tmp, len, "%s.XXXXXX", out);
	/* no signal between the file's creation and its handler */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, &old);
	fd = mkstemp(*tmp);
	if (fd >= 0) {
		ev_tmp_path = *tmp;
		signal(SIGINT, ev_on_signal);
		signal(SIGTERM, ev_on_signal);
		signal(SIGHUP, ev_on_signal);
		*f = fdopen(fd, "w");
	}
	if (fd < 0 || !*f) {
		ret = -errno;
		ev_err(r, "%s: cannot create a temporary file beside it: %s",
		       out, strerror(-ret));
		if (fd >= 0) {
			close(fd);
			unlink(*tmp);
		}
		ev_tmp_path = NULL;
		free(*tmp);
		*tmp = NULL;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (ret)
		return ret;
	/* mkstemp() makes it 0600: give it what fopen() would have */
	um = umask(0);
	umask(um);
	fchmod(fd, 0666 & ~um);
	return 0;
}

static int cmd_eval_sweep(int argc, char **argv)
{
	struct ev_run r = { .who = "sweep" };
	int32_t *ids = NULL;
	char *tmp = NULL;
	struct ev_opts o;
	FILE *f = NULL;
	int ret = ev_parse("sweep", argc, argv, &o);

	if (ret)
		return ret > 0 ? 0 : 2;
	if (!o.out) {
		fprintf(stderr, "kvmm eval sweep: --out is required\n");
		return 2;
	}
	{
		struct stat st;

		if (!stat(o.out, &st) && !S_ISREG(st.st_mode)) {
			fprintf(stderr, "kvmm eval sweep: --out %s: not a "
				"regular file\n", o.out);
			return 2;
		}
	}
	if (!o.n_spec)
		for (size_t i = 0; i < ARRAY_SIZE(sweep_grid); i++)
			o.spec[o.n_spec++] = sweep_grid[i];
	/* everything is checked before --out is touched */
	ret = ev_ppl_setup(&r, &o, &ids);
	if (!ret)
		ret = ev_out_open(&r, o.out, &tmp, &f);
	if (!ret)
		ret = ev_ppl_run(&r, &o, ids);
	if (!ret) {
		ev_print_ppl(&r, &o, f, true);
		if (ferror(f) || fflush(f)) {
			ret = -EIO;
			ev_err(&r, "%s: write error", tmp);
		}
	}
	if (f && fclose(f) && !ret) {
		ret = -errno;
		ev_err(&r, "%s: %s", tmp, strerror(-ret));
	}
	if (!ret && rename(tmp, o.out)) {
		ret = -errno;
		ev_err(&r, "%s: %s", o.out, strerror(-ret));
	}
	if (ret && tmp)
		unlink(tmp);
	ev_tmp_path = NULL;
	if (!ret)
		ev_print_ppl(&r, &o, stdout, o.json);
	free(tmp);
	free(ids);
	ev_fini(&r);
	return ev_status(&r, ret);
}

/* ---- calibrate ---- */

/* @s as a JSON string; bytes past ASCII as '?', so it always parses */
static void ev_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c < 0x80 ? c : '?', f);
	}
	fputc('"', f);
}

/* the value calibrate compares with --target: upper end or mean */
static double ev_crit(const struct ev_pol *p, const struct ev_opts *o)
{
	struct llm_eval_spread sp;

	ev_spread(p, &sp);
	return o->by_mean || isnan(sp.hi) ? sp.mean : sp.hi;
}

/*
 * policies 1.. of @r become @base with the thresholds @a[i] (prune,
 * quant); their sums start again
 */
static void ev_candidates(struct ev_run *r, const struct llm_policy *base,
			  const float (*a)[2], int n)
{
	for (int i = 0; i < r->n_pol; i++) {
		struct ev_pol *p = &r->pol[i];

		free(p->chunk_delta);
		llm_kv_destroy(p->kv);
		*p = (struct ev_pol){ .p = p->p, .logits = p->logits };
		llm_policy_format(&p->p, p->spec, sizeof(p->spec));
		r->multi.sub[i] = NULL;
	}
	r->n_pol = 1 + n;
	for (int i = 0; i < n; i++) {
		struct ev_pol *p = &r->pol[1 + i];

		p->p = *base;
		p->p.alpha_prune = a[i][0];
		p->p.alpha_quant = a[i][1];
		p->logits = r->logits + (size_t)(1 + i) * r->m->cfg.n_vocab;
		llm_policy_format(&p->p, p->spec, sizeof(p->spec));
	}
}

/* struct ev_best - the best candidate so far */
struct ev_best {
	struct llm_policy p;
	struct llm_eval_spread sp;
	double delta, phys, logical, crit;
	bool found;
};

/*
 * the round's candidates against the target; the best kept in @b: the
 * highest physical compression within the target, the smaller criterion
 * between equals
 */
static void ev_round_pick(const struct ev_run *r, const struct ev_opts *o,
			  int round, struct ev_best *b)
{
	double ppl0 = ev_ppl_of(&r->pol[0]);

	if (!o->json)
		printf("round %d:\n", round);
	for (int i = 1; i < r->n_pol; i++) {
		const struct ev_pol *p = &r->pol[i];
		double phys = llm_kv_physical_ratio(&p->u), c = ev_crit(p, o);
		bool ok = c <= o->target;
		struct llm_eval_spread sp;

		ev_spread(p, &sp);
		if (!o->json)
			printf("  prune %-8g quant %-8g physical %6.3fx  mean "
			       "%+7.3f%%  95%% [%+.2f, %+.2f]  %s\n",
			       p->p.alpha_prune, p->p.alpha_quant, phys,
			       sp.mean, sp.lo, sp.hi, ok ? "within" : "over");
		fflush(stdout);
		if (!ok || (b->found && (phys < b->phys ||
					 (phys == b->phys && c >= b->crit))))
			continue;
		*b = (struct ev_best){
			.p = p->p, .sp = sp, .phys = phys, .crit = c,
			.found = true,
			.delta = 100.0 * (ev_ppl_of(p) / ppl0 - 1.0),
			.logical = llm_kv_logical_ratio(&p->u),
		};
	}
}

/*
 * Round 1: DiffKV's threshold ranges, coarse: alpha_quant by factors of 2
 * without pruning, and three light prunings (pruning cost more than it
 * saved in the measured runs); quant 0 (every token high) is the fallback
 * that nearly always fits.
 */
static const float cal_grid[][2] = {
	{ 0, 0 }, { 0, 0.25f }, { 0, 0.5f }, { 0, 1 }, { 0, 2 }, { 0, 4 },
	{ 0.005f, 1 }, { 0.01f, 2 }, { 0.02f, 1 },
};

/*
 * Round 2: between the best quant q and the next grid value above it
 * (2q; 0.25 above 0), three points at the best prune, and the best with
 * a little more pruning.
 */
static int cal_refine(const struct ev_best *b, float (*a)[2])
{
	float p = b->p.alpha_prune, q = b->p.alpha_quant;
	float up = q > 0 ? 2 * q : 0.25f;
	int n = 0;

	for (int k = 1; k <= 3; k++, n++) {
		a[n][0] = p;
		a[n][1] = q > 0 ? q * powf(up / q, k / 4.0f) : up * k / 4.0f;
	}
	if (q > 0 && p + 0.005f <= q) {
		a[n][0] = p + 0.005f;
		a[n++][1] = q;
	}
	return n;
}

/* the "calibration" object of the profile, as JSON text; NULL for OOM */
static char *ev_cal_json(const struct ev_run *r, const struct ev_opts *o,
			 const struct ev_best *b, int candidates)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	fputs("{\n    \"model\": ", f);
	ev_json_str(f, o->model);
	fputs(",\n    \"text\": ", f);
	ev_json_str(f, o->text);
	fprintf(f, ",\n    \"part\": \"%s\", \"split\": %lu, \"tokens\": "
		"[%zu, %zu],\n    \"context\": %lu, \"prefix\": %lu, "
		"\"chunks\": %lu, \"device\": \"%s\",\n    \"target_pct\": "
		"%g, \"criterion\": \"%s\", \"candidates\": %d,\n"
		"    \"delta_pct\": %.4f, \"delta_mean_pct\": %.4f, "
		"\"delta_ci95_pct\": ", llm_eval_part_name(o->part), o->split,
		r->range.first, r->range.first + r->chunks * o->context,
		o->context, o->prefix, r->chunks, o->cuda ? "cuda" : "cpu",
		o->target, o->by_mean ? "mean" : "upper", candidates, b->delta,
		b->sp.mean);
	if (isnan(b->sp.half))
		fputs("null", f);
	else
		fprintf(f, "[%.4f, %.4f]", b->sp.lo, b->sp.hi);
	fprintf(f, ",\n    \"physical_ratio\": %.4f, \"logical_ratio\": "
		"%.4f\n  }", b->phys, b->logical);
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}

static int ev_cal_base(struct ev_run *r, const struct ev_opts *o,
		       struct llm_policy *base)
{
	char err[300];

	llm_policy_default(LLM_POLICY_DIFFKV, base);
	if (o->n_spec > 1) {
		ev_err(r, "--policy: one diffkv policy at most");
		return -EINVAL;
	}
	if (o->n_spec && llm_policy_parse(o->spec[0], base, err,
					  sizeof(err))) {
		ev_err(r, "--policy: %s", err);
		return -EINVAL;
	}
	if (base->kind != LLM_POLICY_DIFFKV) {
		ev_err(r, "--policy: %s: only diffkv is calibrated",
		       o->spec[0]);
		return -EINVAL;
	}
	return 0;
}

static int cmd_eval_calibrate(int argc, char **argv)
{
	struct ev_run r = { .who = "calibrate" };
	const int ng = (int)ARRAY_SIZE(cal_grid);
	float a[ARRAY_SIZE(cal_grid)][2];
	char err[300], *cal = NULL;
	struct llm_policy base;
	struct ev_best b = { 0 };
	int32_t *ids = NULL;
	struct ev_opts o;
	int ret = ev_parse("calibrate", argc, argv, &o), n = 0;

	if (ret)
		return ret > 0 ? 0 : 2;
	if (!o.out) {
		fprintf(stderr, "kvmm eval calibrate: --out is required\n");
		return 2;
	}
	ret = ev_cal_base(&r, &o, &base);
	/* room for every candidate of the larger round */
	for (int i = 0; !ret && i < ng; i++)
		o.spec[i] = "diffkv";
	o.n_spec = ng;
	if (!ret)
		ret = ev_ppl_setup(&r, &o, &ids);
	if (!ret) {
		if (!o.json) {
			ev_print_text(&r, &o, stdout);
			fflush(stdout);
		}
		memcpy(a, cal_grid, sizeof(a));
		ev_candidates(&r, &base, a, ng);
		ret = ev_ppl_run(&r, &o, ids);
	}
	if (!ret) {
		ev_round_pick(&r, &o, 1, &b);
		n += ng;
	}
	if (!ret && b.found && o.rounds > 1) {
		int k = cal_refine(&b, a);

		ev_candidates(&r, &base, a, k);
		ret = ev_ppl_run(&r, &o, ids);
		if (!ret)
			ev_round_pick(&r, &o, 2, &b);
		n += k;
	}
	if (!ret && !b.found) {
		ev_err(&r, "no setting is within --target %g%% on this text, "
		       "not even quant=0 (every token at %s)", o.target,
		       "the high tier");
		ret = -ERANGE;
	}
	if (!ret && !(cal = ev_cal_json(&r, &o, &b, n))) {
		ev_err(&r, "out of memory");
		ret = -ENOMEM;
	}
	if (!ret && llm_profile_write(o.out, &b.p, cal, err, sizeof(err))) {
		ev_err(&r, "%s", err);
		ret = -EIO;
	}
	if (!ret) {
		llm_policy_format(&b.p, err, sizeof(err));
		if (o.json)
			printf("{\"profile\": \"%s\", \"policy\": \"%s\", "
			       "\"calibration\": %s}\n", o.out, err, cal);
		else
			printf("chosen: %s\n  physical %.3fx, change %+.3f%% "
			       "(mean %+.3f%%, 95%% [%+.2f, %+.2f]) on the "
			       "calibration text\nprofile: %s (--policy "
			       "diffkv:profile=%s)\n", err, b.phys, b.delta,
			       b.sp.mean, b.sp.lo, b.sp.hi, o.out, o.out);
	}
	free(cal);
	free(ids);
	ev_fini(&r);
	return ev_status(&r, ret);
}

/* tokens of @s appended to @ids */
static int ev_put(struct ev_run *r, const char *s, int32_t *ids, size_t cap,
		  size_t *n)
{
	size_t got = 0;
	int ret = llm_tok_encode(r->m->tok, s, strlen(s), 0, ids + *n,
				 cap - *n, &got);

	if (ret)
		ev_err(r, "the tokenizer cannot take '%.24s...': %s", s,
		       strerror(-ret));
	else
		*n += got;
	return ret;
}

/*
 * The pass-key prompt of the landmark-attention paper: an instruction,
 * filler sentences around "The pass key is K. Remember it. K is the pass
 * key." at @depth percent, a question. About @len tokens. Each part takes
 * at most one token per byte, so the buffers hold it whatever the
 * tokenizer (a byte-level one included).
 */
static int ev_needle_prompt(struct ev_run *r, uint64_t len, uint64_t depth,
			    const char *key, int32_t *ids, size_t cap,
			    size_t *n)
{
	static const char head[] =
		"There is an important info hidden inside a lot of "
		"irrelevant text. Find it and memorize it. I will quiz you "
		"about the important information there.\n";
	static const char filler[] =
		" The grass is green. The sky is blue. The sun is yellow. "
		"Here we go. There and back again.";
	static const char tail[] =
		"\nWhat is the pass key? The pass key is";
	char needle[128];
	int32_t fill[sizeof(filler)];
	size_t nf = 0, nh = 0, nt = 0, nn = 0, body, at;
	int32_t tmp[sizeof(head) + sizeof(needle)];
	int ret;

	snprintf(needle, sizeof(needle), " The pass key is %s. Remember it. "
		 "%s is the pass key.", key, key);
	ret = ev_put(r, filler, fill, ARRAY_SIZE(fill), &nf);
	ret = ret ?: ev_put(r, head, tmp, ARRAY_SIZE(tmp), &nh);
	ret = ret ?: ev_put(r, tail, tmp, ARRAY_SIZE(tmp), &nt);
	ret = ret ?: ev_put(r, needle, tmp, ARRAY_SIZE(tmp), &nn);
	if (ret)
		return ret;
	if (!nf) {
		ev_err(r, "the filler text gives no tokens");
		return -EINVAL;
	}
	if (len < nh + nt + nn + nf || len > cap) {
		ev_err(r, "--lengths %lu: too short for the prompt (at least "
		       "%zu tokens with this tokenizer)", len,
		       nh + nt + nn + nf);
		return -EINVAL;
	}
	body = (len - nh - nt - nn) / nf;	/* filler sentences */
	at = (body * depth + 50) / 100;
	*n = 0;
	ret = ev_put(r, head, ids, cap, n);
	for (size_t i = 0; !ret && i <= body; i++) {
		if (i == at)
			ret = ev_put(r, needle, ids, cap, n);
		if (!ret && i < body) {
			memcpy(ids + *n, fill, nf * sizeof(int32_t));
			*n += nf;
		}
	}
	return ret ?: ev_put(r, tail, ids, cap, n);
}

/* greedy answer of every policy to @ids; hits counted per policy */
static int ev_needle_one(struct ev_run *r, const int32_t *ids, size_t n,
			 const char *key)
{
	int32_t out[10][EV_MAX_POL];
	int ret = ev_caches(r, (int)n + 16), amax;

	if (!ret)
		ret = ev_feed(r, ids, (int)n, true);
	for (int t = 0; !ret && t < 10; t++) {
		for (int i = 0; i < r->n_pol; i++) {
			lse(r->pol[i].logits, (int)r->m->cfg.n_vocab, &amax);
			out[t][i] = amax;
		}
		if (t < 9)
			ret = ev_feed(r, out[t], 1, false);
	}
	for (int i = 0; !ret && i < r->n_pol; i++) {
		int32_t ans[10];
		char text[128];
		size_t len = 0;

		for (int t = 0; t < 10; t++)
			ans[t] = out[t][i];
		ret = llm_tok_decode(r->m->tok, ans, 10, LLM_TOK_SKIP_SPECIAL,
				     text, sizeof(text) - 1, &len);
		if (ret) {
			ev_err(r, "decoding the answer: %s", strerror(-ret));
			break;
		}
		text[len] = '\0';
		r->pol[i].hits += strstr(text, key) != NULL;
		r->pol[i].tries++;
	}
	return ret;
}

static int cmd_eval_needle(int argc, char **argv)
{
	struct ev_run r = { .who = "needle" };
	uint64_t rng;
	int32_t *ids = NULL;
	struct ev_opts o;
	uint64_t cap = 0;
	size_t n;
	int ret = ev_parse("needle", argc, argv, &o);

	if (ret)
		return ret > 0 ? 0 : 2;
	rng = o.seed * 0x9e3779b97f4a7c15ULL + 1;
	for (int i = 0; i < o.n_len; i++)
		cap = o.lengths[i] > cap ? o.lengths[i] : cap;
	ret = ev_parse_policies(&r, &o);
	if (!ret)
		ret = ev_load(&r, &o);
	if (!ret)
		ret = ev_policies(&r);
	if (!ret && cap + 16 > r.m->cfg.n_ctx) {
		ev_err(&r, "--lengths %lu: longer than the model's context "
		       "(%u) less 16", cap, r.m->cfg.n_ctx);
		ret = -EINVAL;
	}
	if (!ret && !(ids = malloc(cap * sizeof(int32_t)))) {
		ev_err(&r, "out of memory");
		ret = -ENOMEM;
	}
	/* every length builds its prompt before the table starts */
	for (int li = 0; !ret && li < o.n_len; li++)
		ret = ev_needle_prompt(&r, o.lengths[li], 0, "00000", ids,
				       cap, &n);
	if (!ret && !o.json)
		printf("%-58s %7s %6s %9s\n", "policy", "length", "depth",
		       "accuracy");
	if (!ret)
		kvmm_progress_start(&r.prog, "needle", "prompts",
				    (uint64_t)o.n_len * o.n_depth * o.trials,
				    o.json);
	for (int li = 0; !ret && li < o.n_len; li++) {
		for (int di = 0; !ret && di < o.n_depth; di++) {
			for (int i = 0; i < r.n_pol; i++)
				r.pol[i].hits = r.pol[i].tries = 0;
			for (uint64_t t = 0; !ret && t < o.trials; t++) {
				char key[16];

				snprintf(key, sizeof(key), "%05lu",
					 kvmm_rand(&rng) % 100000);
				ret = ev_needle_prompt(&r, o.lengths[li],
						       o.depths[di], key, ids,
						       cap, &n);
				if (!ret)
					ret = ev_needle_one(&r, ids, n, key);
				kvmm_progress_add(&r.prog, 1);
			}
			kvmm_progress_clear(&r.prog);
			for (int i = 0; !ret && i < r.n_pol; i++) {
				const struct ev_pol *p = &r.pol[i];
				double acc = (double)p->hits / p->tries;

				if (o.json)
					printf("{\"policy\": \"%s\", "
					       "\"length\": %lu, \"depth\": "
					       "%lu, \"accuracy\": %.4f, "
					       "\"trials\": %lu}\n", p->spec,
					       o.lengths[li], o.depths[di],
					       acc, p->tries);
				else
					printf("%-58s %7lu %5lu%% %8.1f%%\n",
					       p->spec, o.lengths[li],
					       o.depths[di], 100.0 * acc);
			}
			fflush(stdout);
		}
	}
	free(ids);
	ev_fini(&r);
	return ev_status(&r, ret);
}

static const struct kvmm_cmd eval_cmds[] = {
	{ "ppl", cmd_eval_ppl, "teacher-forced perplexity against full" },
	{ "needle", cmd_eval_needle, "pass-key retrieval per length/depth" },
	{ "sweep", cmd_eval_sweep, "a grid of policies, JSON lines" },
	{ "calibrate", cmd_eval_calibrate,
	  "diffkv thresholds within a target, as a profile" },
};

/**
 * cmd_eval() - `kvmm eval ppl|needle|sweep`
 * @argc: argument count
 * @argv: arguments, argv[0] = "eval"
 *
 * Return: exit status: 0, 1 when the run failed, 2 for a bad command line
 * or input; every nonzero status comes with a message on stderr.
 */
int cmd_eval(int argc, char **argv)
{
	return kvmm_dispatch("kvmm eval", eval_cmds, ARRAY_SIZE(eval_cmds),
			     argc, argv);
}
