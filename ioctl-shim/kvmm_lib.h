/* SPDX-License-Identifier: MIT */
/*
 * kvmm_lib.h - typed wrappers of the kvmm uapi for C users (after libdrm).
 *
 * One function per ioctl, all of one shape:
 *
 *	int kvmm_<cmd>(int fd, struct kvmm_<cmd> *arg);
 *
 * returning 0 or a negative errno, with the ioctl's own semantics (a call
 * that fails changes nothing; *arg is written only on success). Then a few
 * helpers for what every user writes: open with a version check, admit and
 * release plain arrays, destroy by handle, compact until done.
 * See Documentation/uapi/lib.rst.
 */
#ifndef KVMM_LIB_H
#define KVMM_LIB_H

#include <stdint.h>

#include "kvmm.h"

/* one wrapper per ioctl */
int kvmm_version(int fd, struct kvmm_version *arg);
int kvmm_space_create(int fd, struct kvmm_space_create *arg);
int kvmm_space_destroy(int fd, struct kvmm_space_destroy *arg);
int kvmm_seq_admit(int fd, struct kvmm_seq_admit *arg);
int kvmm_seq_release(int fd, struct kvmm_seq_release *arg);
int kvmm_set_budget(int fd, struct kvmm_set_budget *arg);
int kvmm_compact(int fd, struct kvmm_compact *arg);
int kvmm_stats(int fd, struct kvmm_stats *arg);
int kvmm_page_table_info(int fd, struct kvmm_page_table_info *arg);
int kvmm_space_map(int fd, struct kvmm_space_map *arg);
int kvmm_step_submit(int fd, struct kvmm_step_submit *arg);
int kvmm_fence(int fd, struct kvmm_fence *arg);
int kvmm_seq_stats(int fd, struct kvmm_seq_stats *arg);

/* helpers */
int kvmm_open(uint64_t features);
int kvmm_close(int fd);
int kvmm_destroy(int fd, uint32_t space);
int kvmm_admit(int fd, uint32_t space, const uint32_t *tokens, uint32_t n,
	       uint32_t *slots);
int kvmm_release(int fd, uint32_t space, const uint32_t *slots, uint32_t n);
int kvmm_compact_all(int fd, uint32_t space, uint64_t byte_budget,
		     struct kvmm_compact *total);

/* the driver's rules, for users who plan before they create a space */
int kvmm_tier_valid(const struct kvmm_tier *t);
int kvmm_geometry(uint32_t head_dim, const struct kvmm_tier *tiers,
		  uint32_t nr_tiers, uint32_t *page_size, uint32_t *tokens);

#endif /* KVMM_LIB_H */
