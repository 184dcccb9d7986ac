/* SPDX-License-Identifier: MIT */
/*
 * kvcontig.h - the tests' reference KV cache (kvcontig.c): fp32,
 * contiguous, exact attention, the ops of struct llm_kv_ops.
 */
#ifndef KVTEST_KVCONTIG_H
#define KVTEST_KVCONTIG_H

#include "config.h"
#include "kvcache.h"

int llm_kv_contig_create(const struct llm_config *c, int n_seq, int max_tok,
			 struct llm_kv **out);

#endif /* KVTEST_KVCONTIG_H */
