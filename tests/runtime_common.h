/* SPDX-License-Identifier: MIT */
/*
 * runtime_common.h - runtime tests shared by the host suite (check_runtime.c)
 * and the CUDA suite (check_runtime_gpu.c): the same semantics are checked
 * on both backends. Each test opens a context of rt_backend.
 */
#ifndef RUNTIME_COMMON_H
#define RUNTIME_COMMON_H

#include "kvrt.h"

/* snapshot of everything a failed call must leave as it was */
struct rt_state {
	struct kvrt_counts counts;
	struct kvrt_space_stats stats;
	int fds;
};

void rt_state_take(struct kvrt_ctx *ctx, struct kvrt_space *space,
		   struct rt_state *st);
void rt_state_same(const struct rt_state *a, const struct rt_state *b,
		   const char *what);
void rt_no_leaks(struct kvrt_ctx *ctx);

/* a stream blocked until rt_gate_open(), to keep fences pending */
struct rt_gate;
struct rt_gate *rt_gate_close(struct kvrt_stream *stream);
void rt_gate_open(struct rt_gate *gate);

TCase *rt_tcase_api(enum kvrt_backend_kind backend);
TCase *rt_tcase_fault(enum kvrt_backend_kind backend);

#endif /* RUNTIME_COMMON_H */
