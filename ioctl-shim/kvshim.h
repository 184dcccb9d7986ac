/* SPDX-License-Identifier: MIT */
/*
 * kvshim.h - the userspace driver that serves the kvmm uapi (uapi/kvmm.h)
 * in-process: a file-descriptor-like handle per open, one ioctl entry point.
 *
 * Every call returns 0 (or a handle) or a negative errno; a call that fails
 * changes nothing. See Documentation/uapi/kvmm.rst.
 */
#ifndef KVSHIM_H
#define KVSHIM_H

#include <stddef.h>
#include <stdint.h>

#include "kvmm.h"

/* Most handles open at once, and most spaces one handle may own. */
#define KVSHIM_MAX_FILES 64
#define KVSHIM_MAX_SPACES 64

int kvshim_open(void);
int kvshim_close(int fd);
int kvshim_ioctl(int fd, unsigned long cmd, void *arg);

/* tests and fuzzing: kva_check() on one space's pool (not uapi) */
int kvshim_check(int fd, uint32_t space, char *why, size_t len);

#endif /* KVSHIM_H */
