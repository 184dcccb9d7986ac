// SPDX-License-Identifier: MIT
/*
 * bench_decode.c - `kvmm bench decode`: the CUDA executor's decode step
 * through the one KV cache, per policy, batch and context, beside its
 * floor: (weight bytes + KV bytes the step reads) / the device's read
 * ceiling measured in the same run. Also the host drains of a stream per
 * step (0 on the decode path), the kernels in the step's graph, and
 * whether the cache fits at all.
 *
 * Needs a model directory (a random Llama-3-8B-shaped one made on the
 * device by tests/ref/random_llama.py --shape llama3-8b, as
 * tools/gpu-suite.d/decode.sh does):
 * weights do not matter for speed, only the compression the policies reach
 * on them does, and every row reports it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmm.h"

#define DEC_MAX_LIST 16

static const char *const dec_default_pol[] = {
	"full", "diffkv", "diffkv:prune=0", "uniform:tier=k4v4",
	"kvcompress:rate=4",
};

static const char dec_usage[] =
	"usage: kvmm bench decode --model DIR [options]\n"
	"  --model DIR         a model (Hugging Face directory or GGUF file)\n"
	"  --batch LIST        sequences per step (1,16,32,64,128)\n"
	"  --ctx LIST          tokens of each prompt (1024,8192)\n"
	"  --policy SPEC       a KV policy, repeatable (full, diffkv,\n"
	"                      diffkv:prune=0, uniform:tier=k4v4,\n"
	"                      kvcompress:rate=4)\n"
	"  --steps N           timed decode steps per point (32)\n"
	"  --chunk N           most prompt tokens per prefill step (16384)\n"
	"  --reserve-mib N     device memory kept out of the KV budget for\n"
	"                      the executor's workspace (3072)\n"
	"  --device-mib N      behave as on a card of N MiB (a smaller one's\n"
	"                      capacity on a larger card: 81559 for an H100\n"
	"                      80GB); 0: the card's own (0)\n"
	"  --weight-bits N     16 (the file's fp16/bf16), 8 or 4: the layers'\n"
	"                      matrices kept at N bits on the device; the\n"
	"                      floor is then the quantized bytes (16)\n"
	"  --json              one JSON object per point\n"
	"Needs a CUDA device. The prompts are random tokens; prefill runs with\n"
	"KVMM_PREFILL_SPLIT=0 (one GEMM pass: its precision does not matter\n"
	"here). A point whose cache does not fit in the device's memory says\n"
	"so.\n";

struct dec_opts {
	const char *model;
	uint64_t batch[DEC_MAX_LIST], ctx[DEC_MAX_LIST];
	int n_batch, n_ctx;
	const char *pol[DEC_MAX_LIST];
	int n_pol;
	uint64_t steps, chunk, reserve_mib, device_mib, wbits;
	int json;
};

/* "a,b,c" into @v, each in [lo, hi] */
static int parse_list(const char *opt, const char *s, uint64_t lo,
		      uint64_t hi, uint64_t *v, int *n)
{
	char buf[256], *save = NULL, *tok;

	if (strlen(s) >= sizeof(buf)) {
		fprintf(stderr, "kvmm bench decode: %s: too long\n", opt);
		return -EINVAL;
	}
	strcpy(buf, s);
	*n = 0;
	for (tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (*n == DEC_MAX_LIST) {
			fprintf(stderr, "kvmm bench decode: %s: at most %d "
				"values\n", opt, DEC_MAX_LIST);
			return -EINVAL;
		}
		if (kvmm_parse_u64(opt, tok, lo, hi, &v[(*n)++]))
			return -EINVAL;
	}
	if (!*n) {
		fprintf(stderr, "kvmm bench decode: %s: empty list\n", opt);
		return -EINVAL;
	}
	return 0;
}

enum { OPT_MODEL = 256, OPT_BATCH, OPT_CTX, OPT_POLICY, OPT_STEPS,
       OPT_CHUNK, OPT_RESERVE, OPT_DEVMIB, OPT_WBITS, OPT_JSON, OPT_HELP };

static const struct option dec_longopts[] = {
	{ "model", required_argument, NULL, OPT_MODEL },
	{ "batch", required_argument, NULL, OPT_BATCH },
	{ "ctx", required_argument, NULL, OPT_CTX },
	{ "policy", required_argument, NULL, OPT_POLICY },
	{ "steps", required_argument, NULL, OPT_STEPS },
	{ "chunk", required_argument, NULL, OPT_CHUNK },
	{ "reserve-mib", required_argument, NULL, OPT_RESERVE },
	{ "device-mib", required_argument, NULL, OPT_DEVMIB },
	{ "weight-bits", required_argument, NULL, OPT_WBITS },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* Return: 0, 1 for --help, -EINVAL */
static int dec_parse(int argc, char **argv, struct dec_opts *o)
{
	static const uint64_t batch[] = { 1, 16, 32, 64, 128 };
	static const uint64_t ctx[] = { 1024, 8192 };
	int c;

	memset(o, 0, sizeof(*o));
	o->steps = 32;
	o->chunk = 16384;
	o->reserve_mib = 3072;
	o->wbits = 16;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", dec_longopts, NULL)) != -1) {
		switch (c) {
		case OPT_MODEL:
			o->model = optarg;
			break;
		case OPT_BATCH:
			if (parse_list("--batch", optarg, 1, 1024, o->batch,
				       &o->n_batch))
				return -EINVAL;
			break;
		case OPT_WBITS:
			if (kvmm_parse_u64("--weight-bits", optarg, 4, 16,
					   &o->wbits))
				return -EINVAL;
			if (o->wbits != 4 && o->wbits != 8 &&
			    o->wbits != 16) {
				fprintf(stderr, "kvmm bench decode: "
					"--weight-bits: 16, 8 or 4, not %s\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_CTX:
			if (parse_list("--ctx", optarg, 1, 1 << 20, o->ctx,
				       &o->n_ctx))
				return -EINVAL;
			break;
		case OPT_POLICY:
			if (o->n_pol == DEC_MAX_LIST) {
				fprintf(stderr, "kvmm bench decode: at most "
					"%d policies\n", DEC_MAX_LIST);
				return -EINVAL;
			}
			o->pol[o->n_pol++] = optarg;
			break;
		case OPT_STEPS:
			if (kvmm_parse_u64("--steps", optarg, 1, 100000,
					   &o->steps))
				return -EINVAL;
			break;
		case OPT_CHUNK:
			if (kvmm_parse_u64("--chunk", optarg, 1, 1 << 20,
					   &o->chunk))
				return -EINVAL;
			break;
		case OPT_RESERVE:
			if (kvmm_parse_u64("--reserve-mib", optarg, 0,
					   1 << 20, &o->reserve_mib))
				return -EINVAL;
			break;
		case OPT_DEVMIB:
			if (kvmm_parse_u64("--device-mib", optarg, 0,
					   1 << 24, &o->device_mib))
				return -EINVAL;
			break;
		case OPT_JSON:
			o->json = 1;
			break;
		case OPT_HELP:
			fputs(dec_usage, stdout);
			return 1;
		default:
			fputs(dec_usage, stderr);
			return -EINVAL;
		}
	}
	if (optind < argc || !o->model) {
		fprintf(stderr, "kvmm bench decode: %s\n", optind < argc ?
			"unexpected argument" : "--model is required");
		fputs(dec_usage, stderr);
		return -EINVAL;
	}
	if (!o->n_batch) {
		memcpy(o->batch, batch, sizeof(batch));
		o->n_batch = ARRAY_SIZE(batch);
	}
	if (!o->n_ctx) {
		memcpy(o->ctx, ctx, sizeof(ctx));
		o->n_ctx = ARRAY_SIZE(ctx);
	}
	if (!o->n_pol) {
		for (size_t i = 0; i < ARRAY_SIZE(dec_default_pol); i++)
			o->pol[i] = dec_default_pol[i];
		o->n_pol = ARRAY_SIZE(dec_default_pol);
	}
	return 0;
}

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>
#include <cuda_profiler_api.h>

#include "forward_cuda.h"
#include "kvk_cudart.h"
#include "kvpolicy.h"
#include "kvattn.h"
#include "model.h"

/* struct dec_point - one measured row */
struct dec_point {
	const char *policy;
	int batch, ctx, fits;
	double step_ms, wall_ms, floor_ms, kv_gb, held_gb, full_gb;
	double prefill_tok_s, wread_gb;
	int wbits;
	double syncs, waits;
	uint32_t kernels;
	char why[160];
};

/*
 * bytes the decode attention reads for what @kv holds of @n sequences, by
 * the kernel's own count (kvk_attn_bytes(): K, V, metadata, scores when
 * updated, table entries), each sequence's lists summed as one pair
 */
static double kv_read_bytes(struct llm_kv *kv, const struct llm_policy *p,
			    int n, int hd, double *held, double *full)
{
	struct kvmm_tier t[2] = { p->hi, p->lo };
	struct llm_kv_geometry g;
	struct kvk_attn_args a = {
		.nr_seqs = 1, .nr_kv_heads = 1, .group = 1,
		.head_dim = (uint32_t)hd, .dtype = KVK_F16,
		.update_scores = p->kind == LLM_POLICY_DIFFKV ||
				 p->kind == LLM_POLICY_KVCOMPRESS,
	};
	double b = 0;

	*held = *full = 0;
	if (llm_kv_policy_geometry(kv, &g))
		return 0;
	for (int i = 0; i < 2; i++)
		a.tier[i] = (struct kvk_attn_tier){
			.kbits = t[i].kbits, .vbits = t[i].vbits,
			.kgroups = t[i].kgroups, .vgroups = t[i].vgroups,
			.tokens = g.tokens_per_page[i],
		};
	for (int s = 0; s < n; s++) {
		struct llm_kv_usage u;
		uint32_t nt[2];

		if (llm_kv_policy_usage(kv, s, &u))
			continue;
		nt[0] = (uint32_t)u.tokens[0];
		nt[1] = (uint32_t)u.tokens[1];
		b += (double)kvk_attn_bytes(&a, nt);
		*held += (double)(u.pages[0] + u.pages[1]) * u.page_size;
		*full += (double)u.full_pages * u.full_page_size;
	}
	return b;
}

/* prefill @n sequences of @ctx random tokens, @chunk tokens a step */
static int prefill(struct llm_cuda *m, struct llm_kv *kv, int n, int ctx,
		   int chunk, uint64_t *seed, int32_t *next, double *tok_s)
{
	int per = chunk / ctx > 0 ? chunk / ctx : 1, ret = 0;
	int32_t *tok = malloc((size_t)per * ctx * sizeof(int32_t));
	int *seq = malloc(per * sizeof(int)), *nt = malloc(per * sizeof(int));
	uint32_t vocab = llm_cuda_config(m)->n_vocab;
	double t0 = kvmm_now_us();

	if (!tok || !seq || !nt)
		ret = -ENOMEM;
	for (int s0 = 0; !ret && s0 < n; s0 += per) {
		int k = n - s0 < per ? n - s0 : per;
		struct llm_batch b = { k, seq, nt, tok };

		for (int i = 0; i < k; i++) {
			seq[i] = s0 + i;
			nt[i] = ctx;
		}
		for (size_t i = 0; i < (size_t)k * ctx; i++)
			tok[i] = (int32_t)(kvmm_rand(seed) % vocab);
		ret = llm_cuda_forward_greedy(m, kv, &b, next + s0);
	}
	*tok_s = (double)n * ctx / ((kvmm_now_us() - t0) * 1e-6);
	free(tok);
	free(seq);
	free(nt);
	return ret;
}

/* one point: make the cache, prefill, time the decode steps */
static int run_point(struct llm_cuda *m, const struct dec_opts *o,
		     const struct llm_policy *pol, int n, int ctx,
		     double read_gbs, uint64_t *seed, struct dec_point *pt)
{
	const struct llm_config *c = llm_cuda_config(m);
	struct llm_kv_policy_opts ko = { .n_seq = n,
					 .max_tok = ctx + (int)o->steps + 8 };
	int *seq = malloc(n * sizeof(int)), *nt = malloc(n * sizeof(int));
	int32_t *ids = malloc(n * sizeof(int32_t));
	struct llm_batch b = { n, seq, nt, ids };
	unsigned long w0, w1, s0, s1;
	struct llm_kv *kv = NULL;
	size_t free_b, total_b;
	cudaEvent_t e0, e1;
	double t0, t1;
	char err[200] = "";
	float ms = 0;
	int ret;

	pt->fits = 0;
	if (!seq || !nt || !ids) {
		ret = -ENOMEM;
		goto out;
	}
	llm_cuda_trim(m);
	cudaMemGetInfo(&free_b, &total_b);
	/* a smaller card: its size less what is in use here */
	if (o->device_mib && (o->device_mib << 20) < total_b) {
		size_t used = total_b - free_b;

		free_b = (o->device_mib << 20) > used ?
				 (o->device_mib << 20) - used : 0;
	}
	if (free_b < (o->reserve_mib << 20) + (64ULL << 20)) {
		snprintf(pt->why, sizeof(pt->why), "no device memory left");
		ret = 0;
		goto out;
	}
	ko.budget = free_b - (o->reserve_mib << 20);
	ret = llm_kv_policy_open(c, pol, &ko, &kv, err, sizeof(err));
	if (ret) {
		snprintf(pt->why, sizeof(pt->why), "%s", err);
		ret = ret == -ENOSPC || ret == -ENOMEM ? 0 : ret;
		goto out;
	}
	ret = prefill(m, kv, n, ctx, (int)o->chunk, seed, ids,
		      &pt->prefill_tok_s);
	if (ret == -ENOSPC || ret == -ENOMEM) {
		snprintf(pt->why, sizeof(pt->why), "does not fit: %.1f GB of "
			 "KV budget beside %.1f GB of weights",
			 ko.budget / 1e9, llm_cuda_weight_bytes(m) / 1e9);
		ret = 0;
		goto out;
	}
	if (ret)
		goto out;
	llm_cuda_trim(m);
	for (int i = 0; i < n; i++) {
		seq[i] = i;
		nt[i] = 1;
	}
	/* the first steps capture the graph and warm up */
	ret = llm_cuda_forward_greedy(m, kv, &b, ids);
	for (int i = 0; !ret && i < 2; i++)
		ret = llm_cuda_decode_async(m, kv, &b, true);
	if (!ret)
		ret = llm_cuda_wait(m, kv, NULL, 0);
	if (ret)
		goto out;
	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	llm_cuda_counters(m, &w0, NULL, n);
	s0 = kvk_host_syncs;
	t0 = kvmm_now_us();
	/* a profiler started with --profile-from-start off sees only these */
	cudaProfilerStart();
	cudaEventRecord(e0, llm_cuda_stream(m));
	for (uint64_t s = 0; !ret && s < o->steps; s++)
		ret = llm_cuda_decode_async(m, kv, &b, true);
	cudaEventRecord(e1, llm_cuda_stream(m));
	cudaProfilerStop();
	s1 = kvk_host_syncs;
	llm_cuda_counters(m, &w1, &pt->kernels, n);
	if (!ret)
		ret = llm_cuda_wait(m, kv, ids, n);
	t1 = kvmm_now_us();
	if (!ret)
		cudaEventElapsedTime(&ms, e0, e1);
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	if (ret)
		goto out;
	pt->fits = 1;
	pt->step_ms = ms / o->steps;
	pt->syncs = (double)(s1 - s0) / o->steps;
	pt->waits = (double)(w1 - w0) / o->steps;
	pt->kv_gb = kv_read_bytes(kv, pol, n, (int)c->head_dim, &pt->held_gb,
				  &pt->full_gb) / 1e9;
	pt->held_gb /= 1e9;
	pt->full_gb /= 1e9;
	pt->floor_ms = (llm_cuda_step_bytes(m) / 1e9 + pt->kv_gb) /
		       read_gbs * 1e3;
	pt->wall_ms = (t1 - t0) / 1e3 / o->steps;
	pt->wbits = llm_cuda_weight_bits(m);
	pt->wread_gb = llm_cuda_step_bytes(m) / 1e9;
out:
	llm_kv_destroy(kv);
	free(seq);
	free(nt);
	free(ids);
	return ret;
}

static void print_point(const struct dec_opts *o, const struct dec_point *p)
{
	if (o->json) {
		printf("{\"policy\": \"%s\", \"batch\": %d, \"ctx\": %d, "
		       "\"fits\": %s", p->policy, p->batch, p->ctx,
		       p->fits ? "true" : "false");
		if (p->fits)
			printf(", \"step_ms\": %.3f, \"wall_ms\": %.3f, "
			       "\"floor_ms\": %.3f, "
			       "\"ratio\": %.3f, \"kv_read_gb\": %.3f, "
			       "\"kv_held_gb\": %.3f, \"kv_full_gb\": %.3f, "
			       "\"syncs_per_step\": %.2f, "
			       "\"throttle_waits_per_step\": %.2f, "
			       "\"graph_kernels\": %u, "
			       "\"prefill_tok_s\": %.0f, \"weight_bits\": %d, "
			       "\"weight_read_gb\": %.3f", p->step_ms,
			       p->wall_ms, p->floor_ms, p->step_ms / p->floor_ms,
			       p->kv_gb, p->held_gb, p->full_gb, p->syncs,
			       p->waits, p->kernels, p->prefill_tok_s,
			       p->wbits, p->wread_gb);
		else
			printf(", \"why\": \"%s\"", p->why);
		printf("}\n");
		fflush(stdout);
		return;
	}
	if (!p->fits) {
		printf("%-22s %5d %6d  %s\n", p->policy, p->batch, p->ctx,
		       p->why);
		fflush(stdout);
		return;
	}
	printf("%-22s %5d %6d %9.3f %9.3f %6.3f %8.2f %8.2f %6.2fx %5.2f "
	       "%6u %9.0f\n", p->policy, p->batch, p->ctx, p->step_ms,
	       p->floor_ms, p->step_ms / p->floor_ms, p->kv_gb, p->held_gb,
	       p->held_gb > 0 ? p->full_gb / p->held_gb : 0, p->syncs,
	       p->kernels, p->prefill_tok_s);
	fflush(stdout);
}

int cmd_bench_decode(int argc, char **argv)
{
	char err[LLM_GGUF_ERR_MAX] = "";
	struct llm_model *mo = NULL;
	struct llm_cuda *m = NULL;
	struct llm_policy pol[DEC_MAX_LIST];
	uint64_t seed = 0x5eed;
	struct dec_opts o;
	double gbs;
	int ret;

	ret = dec_parse(argc, argv, &o);
	if (ret)
		return ret > 0 ? 0 : 2;
	for (int i = 0; i < o.n_pol; i++)
		if (llm_policy_parse(o.pol[i], &pol[i], err, sizeof(err))) {
			fprintf(stderr, "kvmm bench decode: --policy: %s\n",
				err);
			return 2;
		}
	if (kvrt_cuda_probe(err, sizeof(err))) {
		fprintf(stderr, "kvmm bench decode: no GPU: %s\n", err);
		return 1;
	}
	setenv("KVMM_PREFILL_SPLIT", "0", 1);
	ret = llm_model_open(o.model, &mo, err, sizeof(err));
	if (!ret)
		ret = llm_cuda_load(&mo->cfg, &mo->w, &(struct llm_cuda_opts){
					.wbits = o.wbits == 16 ? 0 :
						 (int)o.wbits }, &m, err,
				    sizeof(err));
	if (!ret)
		ret = llm_cuda_read_weights(m, &gbs);
	if (ret) {
		fprintf(stderr, "kvmm bench decode: %s\n",
			*err ? err : strerror(-ret));
		goto out;
	}
	llm_model_close(mo);
	mo = NULL;
	if (!o.json)
		printf("# %s: %.2f GB of %s weights at %d bits, %.2f GB read "
		       "per step (all but the embedding table), read ceiling "
		       "%.0f GB/s; floor = (weights read + KV read) / "
		       "ceiling\n"
		       "%-22s %5s %6s %9s %9s %6s %8s %8s %7s %5s %6s %9s\n",
		       o.model, llm_cuda_weight_bytes(m) / 1e9,
		       kvk_dtype_name(llm_cuda_dtype(m)),
		       llm_cuda_weight_bits(m), llm_cuda_step_bytes(m) / 1e9,
		       gbs, "policy",
		       "batch", "ctx", "step_ms", "floor_ms", "ratio",
		       "kvread", "kvheld", "vsfull", "syncs", "kerns",
		       "prefill/s");
	for (int ci = 0; ci < o.n_ctx; ci++)
		for (int bi = 0; bi < o.n_batch; bi++)
			for (int pi = 0; pi < o.n_pol; pi++) {
				struct dec_point pt = {
					.policy = o.pol[pi],
					.batch = (int)o.batch[bi],
					.ctx = (int)o.ctx[ci],
				};

				ret = run_point(m, &o, &pol[pi], pt.batch,
						pt.ctx, gbs, &seed, &pt);
				if (ret) {
					fprintf(stderr, "kvmm bench decode: "
						"%s, batch %d, ctx %d: %s\n",
						pt.policy, pt.batch, pt.ctx,
						strerror(-ret));
					goto out;
				}
				print_point(&o, &pt);
			}
out:
	llm_cuda_free(m);
	llm_model_close(mo);
	return ret ? 1 : 0;
}
#else
int cmd_bench_decode(int argc, char **argv)
{
	struct dec_opts o;
	int ret = dec_parse(argc, argv, &o);

	if (ret)
		return ret > 0 ? 0 : 2;
	fprintf(stderr, "kvmm bench decode: no GPU: built without CUDA\n");
	return 1;
}
#endif
