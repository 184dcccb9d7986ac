/* SPDX-License-Identifier: MIT */
/*
 * kvmm.h - the kvmm tool: subcommand table and shared option helpers.
 */
#ifndef KVMM_TOOL_H
#define KVMM_TOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kvrt.h"

/**
 * struct kvmm_cmd - one subcommand
 * @name: what the user types
 * @run: entry, with argv[0] the subcommand's name; returns the exit status
 * @help: one line
 */
struct kvmm_cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
};

/**
 * struct kvmm_progress - one progress line on stderr (tools/progress.c).
 * Owned by one command, single-threaded.
 * @label: what runs, e.g. "eval ppl"
 * @unit: what @done and @total count, e.g. "tokens"
 * @total: units of the whole run, 0 when unknown
 * @done: units finished
 * @on: stderr is a terminal and no --json
 * @t0_us: start, microseconds (kvmm_now_us())
 * @last_us: last redraw, microseconds; 0 before the first
 * @drawn: the line is on the terminal now
 */
struct kvmm_progress {
	const char *label;
	const char *unit;
	uint64_t total;
	uint64_t done;
	bool on;
	double t0_us;
	double last_us;
	bool drawn;
};

void kvmm_progress_start(struct kvmm_progress *p, const char *label,
			 const char *unit, uint64_t total, bool quiet);
void kvmm_progress_add(struct kvmm_progress *p, uint64_t n);
void kvmm_progress_clear(struct kvmm_progress *p);
void kvmm_progress_end(struct kvmm_progress *p);
int kvmm_progress_format(const struct kvmm_progress *p, double now_us,
			 char *buf, size_t len);
int kvmm_open_regular(const char *who, const char *path, FILE **f);

int kvmm_dispatch(const char *prog, const struct kvmm_cmd *cmds, int n,
		  int argc, char **argv);
int kvmm_parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi,
		   uint64_t *out);
int kvmm_parse_backend(const char *s, enum kvrt_backend_kind *out);
double kvmm_now_us(void);
int kvmm_cmp_double(const void *a, const void *b);
double kvmm_median(double *v, int n);
uint64_t kvmm_rand(uint64_t *s);
#ifdef KVMM_HAVE_CUDA
int kvmm_read_ceiling(double *gbs);
#endif
int kvmm_ctx_open(const char *who, const struct kvrt_ctx_opts *opts,
		  struct kvrt_ctx **ctx);

int cmd_bench(int argc, char **argv);
int cmd_bench_vmm(int argc, char **argv);
int cmd_bench_mem(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench_attn(int argc, char **argv);
int cmd_bench_evict(int argc, char **argv);
int cmd_bench_place(int argc, char **argv);
int cmd_bench_swap(int argc, char **argv);
int cmd_bench_alloc(int argc, char **argv);
int cmd_bench_compact(int argc, char **argv);
int cmd_bench_prefill(int argc, char **argv);
int cmd_bench_decode(int argc, char **argv);
int cmd_bench_gemv(int argc, char **argv);
int cmd_bench_gemv_cuda(int json, int reps);
int cmd_bench_serve(int argc, char **argv);

#endif /* KVMM_TOOL_H */
