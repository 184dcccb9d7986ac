/* SPDX-License-Identifier: MIT */
/*
 * bench_place.h - what `kvmm bench place` (bench_place.c) shares with its
 * CUDA path (bench_place_cuda.c): the options, the recorded trace, one
 * replay's result, and the device half of a replay.
 */
#ifndef BENCH_PLACE_H
#define BENCH_PLACE_H

#include <stdint.h>

#include "kva.h"
#include "kvattn.h"

#define BP_KVH 8
#define BP_GROUP 4
#define BP_HD 128
#define BP_MAX_FRAC 8
#define BP_MAX_CTX 8

struct bp_opts {
	uint32_t batch;
	uint32_t ctx[BP_MAX_CTX];
	uint32_t nr_ctx;
	double frac[BP_MAX_FRAC];
	uint32_t nr_frac;
	uint32_t topk;		/* pages per list; 0: ctx / 16 tokens */
	uint32_t steps;		/* measured decode steps */
	uint32_t warm;		/* steps before: the prompt window */
	double budget_mib;	/* migration bytes per step */
	int plan_select;	/* --plan-at select: plan between the step's
				 * selection and its reads */
	int host_copy;		/* --host-copy on: clean host copies of the
				 * full HBM pages, demotions without copies */
	double hbm_gbs, host_gbs, pcie_gbs;
	int json;
	int check;
	uint32_t threads;	/* phase one's CPU threads (--threads) */
	int cuda;		/* --backend cuda: phase two on the GPU */
	uint64_t seed;
};

/* the trace of one context length */
struct bp_trace {
	uint32_t nr_lists, width, tpp, page_size, steps;
	uint32_t ctx;
	uint32_t topk;		/* the selection's pages per list */
	float *mass;		/* [steps][lists][width]; 0: not selected */
	double err_sum;		/* relative L2 of sparse vs dense, summed */
	double err_max;
	uint32_t err_n;
	double dense_us, sparse_us; /* CPU time per step, measured */
	double mass_kept;	/* dense mass inside the selection, mean */
	uint64_t all_pages;	/* high-tier pages at the last step */
	/*
	 * --backend cuda only (NULL otherwise): what a replay on the device
	 * needs to hold the same data and ask the same questions
	 */
	float *q;		/* [steps][lists][GROUP][HD]: the queries */
	/*
	 * every page of the trace at its last step, (list, entry) as page
	 * id list * width + entry in the pool layout of @stage_ppg pages per
	 * 2 MiB (so the CPU attention reads it as a pool)
	 */
	uint8_t *stage;
	uint64_t stage_bytes;
	uint32_t stage_ppg;
	struct kvk_attn_tier tier; /* the pages' layout */
};

/* what one replay measured */
struct bp_result {
	double hit;		/* importance-weighted HBM hit ratio */
	double hbm_bytes, host_bytes, mig_bytes; /* per step */
	double init_mig_bytes;	/* placement at prefill, once */
	uint32_t no_room;	/* kva_migrate() calls stopped by a full
				 * tier, the placement at prefill's too */
	double step_us;		/* modelled (host); measured (cuda) */
	uint64_t hbm_pages;	/* the HBM capacity, pages */
	/* --backend cuda, per measured step */
	double model_us;	/* the model's step time, same bytes */
	double model_meas_us;	/* the model with the rates measured */
	double select_us;	/* summaries of the new tokens + the page
				 * selection kernel, CUDA events */
	double attn_us;		/* attention, CUDA events */
	double mig_us;		/* migration copies, CUDA events */
	double up_us;		/* page-list upload (not in step_us) */
	double plan_us;		/* policy + migration plan on the host */
	double check_err;	/* --check: worst rel L2 against the CPU */
};

/* the rates measured on the device in the same run, GB/s */
struct bp_rates {
	double hbm_read;	/* streaming read of device granules */
	double host_read;	/* the same kernel over host-NUMA granules */
	double promote;		/* page copy host -> HBM */
	double demote;		/* page copy HBM -> host */
};

/* what one step took on the device (bp_dev_step_end()), us */
struct bp_step_time {
	double up;		/* page-list upload */
	double select;		/* summaries + selection (sparse steps) */
	double attn;		/* attention */
	double mig;		/* migration copies (0: none) */
};

struct kvrt_ctx;
struct bp_dev;

struct kva_pool *bp_trace_pool(struct kvrt_ctx *ctx, uint32_t B,
			       uint32_t max_tokens, uint64_t va);
int bp_fill_pool(struct kva_pool *pool, uint32_t B, uint32_t ctx);
int bp_append_token(struct kva_pool *pool, uint32_t B);
double bp_rel_l2(const float *x, const float *ref, size_t n);

/* the CUDA half (bench_place_cuda.c); -ENODEV in a build without CUDA */
int bp_dev_open(struct bp_dev **out, struct bp_rates *rates);
void bp_dev_close(struct bp_dev *d);
struct kvrt_ctx *bp_dev_ctx(struct bp_dev *d);
int bp_dev_trace(struct bp_dev *d, const struct bp_trace *tr);
int bp_dev_begin(struct bp_dev *d, struct kva_pool *pool,
		 struct kva_migrate_control *mc, int sparse);
int bp_dev_new_pages(struct bp_dev *d, struct kva_pool *pool,
		     const uint32_t *npages_before);
int bp_dev_attend(struct bp_dev *d, struct kva_pool *pool, uint32_t step,
		  const float *mass, int check);
int bp_dev_step_end(struct bp_dev *d, struct bp_step_time *t);
double bp_dev_check_err(const struct bp_dev *d);
void bp_dev_end(struct bp_dev *d);

#endif /* BENCH_PLACE_H */
