// SPDX-License-Identifier: MIT
/*
 * serve.c - `kvmm serve`: the OpenAI-compatible HTTP server
 * (model/serve/) on a model, until SIGINT or SIGTERM.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmm.h"
#include "model.h"
#include "scheduler.h"
#include "server.h"

static const char serve_usage[] =
	"usage: kvmm serve --model PATH [options]\n"
	"  --model PATH          GGUF file or Hugging Face directory\n"
	"  --host H              address to listen on (127.0.0.1; 0.0.0.0\n"
	"                        for every interface)\n"
	"  --port P              TCP port (8000; 0 picks a free one)\n"
	"  --served-model-name N the model's id in requests (the file name)\n"
	"  --device cpu|cuda     executor (cpu)\n"
	"  --policy SPEC         the KV cache's policy (full): full, uniform,\n"
	"                        diffkv, kvcompress, with knobs\n"
	"  --kv-budget BYTES     KV memory budget, K/KiB/M/MiB/G/GiB (256MiB)\n"
	"  --max-seqs N          sequences that run at once (64)\n"
	"  --max-model-len N     prompt + output tokens of a request (the\n"
	"                        model's context, at most 4096)\n"
	"  --max-step-tokens N   token budget of a step (2048; also\n"
	"                        --step-tokens): longer prompts come in chunks\n"
	"  --no-chunked-prefill  whole prompts only\n"
	"  --reserve F           share of each request's remaining output\n"
	"                        held back at admission, 0..1 (1)\n"
	"  --preempt MODE        recompute, swap (CPU only) or auto: what a\n"
	"                        preemption does with the victim's pages\n"
	"                        (auto: swap when cheaper, measured)\n"
	"  --swap-dir DIR        where the swap file is made, unlinked at\n"
	"                        once ($TMPDIR, else /tmp)\n"
	"  --threads N           CPU executor threads (all cores)\n"
	"  --max-body BYTES      largest request body (1MiB); larger: 413\n"
	"  --grace S             seconds in-flight requests may finish after\n"
	"                        SIGINT/SIGTERM (30)\n"
	"Endpoints: POST /v1/completions, POST /v1/chat/completions,\n"
	"GET /v1/models, /health, /metrics (Documentation/serve/http.rst).\n";

enum { OPT_MODEL = 256, OPT_HOST, OPT_PORT, OPT_NAME, OPT_DEVICE,
       OPT_POLICY, OPT_BUDGET, OPT_SEQS, OPT_LEN, OPT_STEPTOK, OPT_RESERVE,
       OPT_PREEMPT, OPT_SWAPDIR, OPT_THREADS, OPT_BODY, OPT_GRACE,
       OPT_NOCHUNK, OPT_HELP };

static const struct option serve_longopts[] = {
	{ "model", required_argument, NULL, OPT_MODEL },
	{ "host", required_argument, NULL, OPT_HOST },
	{ "port", required_argument, NULL, OPT_PORT },
	{ "served-model-name", required_argument, NULL, OPT_NAME },
	{ "device", required_argument, NULL, OPT_DEVICE },
	{ "policy", required_argument, NULL, OPT_POLICY },
	{ "kv-budget", required_argument, NULL, OPT_BUDGET },
	{ "max-seqs", required_argument, NULL, OPT_SEQS },
	{ "max-model-len", required_argument, NULL, OPT_LEN },
	{ "step-tokens", required_argument, NULL, OPT_STEPTOK },
	{ "max-step-tokens", required_argument, NULL, OPT_STEPTOK },
	{ "no-chunked-prefill", no_argument, NULL, OPT_NOCHUNK },
	{ "reserve", required_argument, NULL, OPT_RESERVE },
	{ "preempt", required_argument, NULL, OPT_PREEMPT },
	{ "swap-dir", required_argument, NULL, OPT_SWAPDIR },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "max-body", required_argument, NULL, OPT_BODY },
	{ "grace", required_argument, NULL, OPT_GRACE },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* Return: 0, 1 for --help, -EINVAL */
static int serve_parse(int argc, char **argv, struct llm_serve_opts *o,
		       const char **model, double *grace)
{
	uint64_t v;
	char *end;
	int c;

	memset(o, 0, sizeof(*o));
	*model = NULL;
	*grace = 30;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", serve_longopts, NULL)) != -1) {
		switch (c) {
		case OPT_MODEL:
			*model = optarg;
			break;
		case OPT_HOST:
			o->host = optarg;
			break;
		case OPT_PORT:
			if (kvmm_parse_u64("--port", optarg, 0, 65535, &v))
				return -EINVAL;
			o->port = v ? (int)v : -1;
			break;
		case OPT_NAME:
			o->name = optarg;
			break;
		case OPT_DEVICE:
			if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
				fprintf(stderr, "kvmm serve: --device: '%s' "
					"is neither cpu nor cuda\n", optarg);
				return -EINVAL;
			}
			o->cuda = !strcmp(optarg, "cuda");
			break;
		case OPT_POLICY:
			o->policy = optarg;
			break;
		case OPT_BUDGET:
		case OPT_BODY:
			if (llm_parse_bytes(optarg, &v)) {
				fprintf(stderr, "kvmm serve: --%s: '%s' is not "
					"a byte count (e.g. 512MiB)\n",
					c == OPT_BUDGET ? "kv-budget" :
					"max-body", optarg);
				return -EINVAL;
			}
			if (c == OPT_BUDGET)
				o->budget = v;
			else
				o->max_body = (size_t)v;
			break;
		case OPT_SEQS:
			if (kvmm_parse_u64("--max-seqs", optarg, 1, 65536, &v))
				return -EINVAL;
			o->max_seqs = (int)v;
			break;
		case OPT_LEN:
			if (kvmm_parse_u64("--max-model-len", optarg, 2,
					   1 << 24, &v))
				return -EINVAL;
			o->max_model_len = (int)v;
			break;
		case OPT_STEPTOK:
			if (kvmm_parse_u64("--max-step-tokens", optarg, 1,
					   1 << 24, &v))
				return -EINVAL;
			o->step_tokens = (int)v;
			break;
		case OPT_NOCHUNK:
			o->no_chunk = true;
			break;
		case OPT_RESERVE:
			o->reserve = strtof(optarg, &end);
			if (*end || !(o->reserve >= 0 && o->reserve <= 1)) {
				fprintf(stderr, "kvmm serve: --reserve: '%s' "
					"is not in [0, 1]\n", optarg);
				return -EINVAL;
			}
			if (o->reserve == 0)
				o->reserve = -1;
			break;
		case OPT_PREEMPT:
			if (llm_sched_parse_preempt(optarg, &o->preempt)) {
				fprintf(stderr, "kvmm serve: --preempt: '%s' "
					"is not recompute, swap or auto\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_SWAPDIR:
			o->swap_dir = optarg;
			break;
		case OPT_THREADS:
			if (kvmm_parse_u64("--threads", optarg, 1, 1024, &v))
				return -EINVAL;
			o->threads = (int)v;
			break;
		case OPT_GRACE:
			*grace = strtod(optarg, &end);
			if (*end || !(*grace >= 0 && *grace <= 86400)) {
				fprintf(stderr, "kvmm serve: --grace: '%s' is "
					"not seconds in [0, 86400]\n", optarg);
				return -EINVAL;
			}
			break;
		case OPT_HELP:
			fputs(serve_usage, stdout);
			return 1;
		default:
			fputs(serve_usage, stderr);
			return -EINVAL;
		}
	}
	if (o->cuda && o->preempt == LLM_SCHED_PREEMPT_SWAP) {
		fprintf(stderr, "kvmm serve: --preempt swap: the CUDA device "
			"cache cannot swap yet (its page tables are on the "
			"device); use --preempt recompute or auto\n");
		return -EINVAL;
	}
	if (optind < argc || !*model) {
		fprintf(stderr, "kvmm serve: %s\n", optind < argc ?
			"unexpected argument" : "--model is required");
		fputs(serve_usage, stderr);
		return -EINVAL;
	}
	return 0;
}

/**
 * cmd_serve() - `kvmm serve`
 * @argc: argument count
 * @argv: arguments, argv[0] = "serve"
 *
 * Serves until SIGINT or SIGTERM, then stops gracefully (--grace).
 *
 * Return: 0 after a signal; 1 when the model or the server failed to
 * start; 2 for bad arguments.
 */
int cmd_serve(int argc, char **argv)
{
	char err[LLM_GGUF_ERR_MAX] = "";
	struct llm_server *srv = NULL;
	struct llm_model *mo = NULL;
	struct llm_serve_opts o;
	const char *model;
	sigset_t set;
	double grace;
	int ret, sig;

	ret = serve_parse(argc, argv, &o, &model, &grace);
	if (ret)
		return ret > 0 ? 0 : 2;
	ret = llm_model_open(model, &mo, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "kvmm serve: %s\n", err);
		return 1;
	}
	/* every thread started from here on leaves the signals to sigwait */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	ret = llm_serve_start(mo, &o, &srv, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "kvmm serve: %s\n", *err ? err :
			strerror(-ret));
		llm_model_close(mo);
		return ret == -EINVAL ? 2 : 1;
	}
	fprintf(stderr, "kvmm serve: %s on http://%s:%d (policy %s, "
		"%s executor); SIGINT or SIGTERM stops\n", model,
		o.host ? o.host : "127.0.0.1", llm_serve_port(srv),
		o.policy ? o.policy : "full", o.cuda ? "cuda" : "cpu");
	sigwait(&set, &sig);
	fprintf(stderr, "kvmm serve: %s: stopping (in-flight requests have "
		"%.0f s)\n", strsignal(sig), grace);
	llm_serve_stop(srv, grace);
	llm_model_close(mo);
	return 0;
}
