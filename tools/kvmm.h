/* SPDX-License-Identifier: MIT */
/*
 * kvmm.h - the kvmm tool: subcommand table and shared option helpers.
 */
#ifndef KVMM_TOOL_H
#define KVMM_TOOL_H

#include <stdint.h>

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
int cmd_eval(int argc, char **argv);
int cmd_bench_attn(int argc, char **argv);
int cmd_bench_evict(int argc, char **argv);
int cmd_bench_alloc(int argc, char **argv);
int cmd_bench_compact(int argc, char **argv);
int cmd_bench_prefill(int argc, char **argv);
int cmd_bench_decode(int argc, char **argv);
int cmd_bench_serve(int argc, char **argv);

#endif /* KVMM_TOOL_H */
