/* SPDX-License-Identifier: MIT */
/*
 * kvrt.h - the kvmm userspace runtime.
 *
 * A KV address space is one virtual-address reservation. Physical memory
 * comes in 2 MiB granules, created on the device or on a host NUMA node and
 * mapped into that one range on demand (grow) and handed back after use
 * (shrink). Streams run work in order; fences (events recorded on a stream)
 * keep a granule mapped while work that may read it is still in flight.
 *
 * Two backends share this API and its semantics: CUDA (driver VMM calls,
 * libcuda loaded at run time) and host (mmap PROT_NONE reservation, memfd
 * granules mapped MAP_FIXED, worker-thread streams). Everything above the
 * runtime runs and is tested on the host backend on machines without a GPU.
 *
 * Every function returns 0 or a negative errno and, when it fails, leaves the
 * context and its spaces as they were. kvrt_ctx_last_error() names what was
 * wrong in words.
 */
#ifndef KVRT_H
#define KVRT_H

#include <stddef.h>
#include <stdint.h>

#include "kvmm_base.h"

/* Size of one physical granule: the VMM granularity measured on the H100. */
#define KVRT_GRANULE_SIZE SZ_2M

/* Streams that may fence one space. */
#define KVRT_MAX_STREAMS 8

enum kvrt_backend_kind {
	KVRT_BACKEND_AUTO = 0,	/* CUDA if a device answers, else host */
	KVRT_BACKEND_HOST = 1,
	KVRT_BACKEND_CUDA = 2,
};

enum kvrt_loc {
	KVRT_LOC_DEVICE = 0,	/* device memory (HBM) */
	KVRT_LOC_HOST_NUMA = 1, /* host memory on one NUMA node */
	KVRT_LOC_NR,
};

/* kvrt_space_shrink() flags */
#define KVRT_SHRINK_WAIT BIT(0) /* wait for fences instead of -EBUSY */
#define KVRT_SHRINK_FLAGS KVRT_SHRINK_WAIT

struct kvrt_ctx;
struct kvrt_space;
struct kvrt_stream;

/**
 * struct kvrt_ctx_opts - how to open a runtime context
 * @backend: which backend; AUTO picks CUDA when a device answers
 * @device: CUDA device ordinal (ignored by the host backend)
 * @host_mem_bytes: host backend only: the "device memory" that budgets are
 *	checked against; 0 means the machine's physical memory
 * @fault_nth: tests: fail the nth backend call made while opening (0: off)
 * @host_tier_bytes: host memory a space may hold as its host tier (host-NUMA
 *	granules) beyond @host_mem_bytes / the device's memory. CUDA: 0 means
 *	the machine's physical memory. Host backend: 0 means none, so a
 *	budget stays within @host_mem_bytes; set it to emulate two tiers
 *	(Documentation/runtime/index.rst, "Two tiers")
 */
struct kvrt_ctx_opts {
	enum kvrt_backend_kind backend;
	int device;
	uint64_t host_mem_bytes;
	uint64_t fault_nth;
	uint64_t host_tier_bytes;
};

/**
 * struct kvrt_counts - live backend objects of one context, for leak checks
 */
struct kvrt_counts {
	uint64_t va_ranges;	/* reservations held */
	uint64_t handles;	/* physical granules created */
	uint64_t mapped;	/* granules mapped */
	uint64_t streams;
	uint64_t events;
	uint64_t calls;		/* backend calls made, failed ones included */
};

/**
 * struct kvrt_granule_info - one granule slot of a space
 */
struct kvrt_granule_info {
	uint64_t addr;		/* device-visible address of the slot */
	int mapped;		/* 1 when backed by physical memory */
	enum kvrt_loc loc;
	int node;		/* NUMA node for KVRT_LOC_HOST_NUMA, else -1 */
	int retired;		/* 1 after kvrt_space_retire() */
};

/**
 * struct kvrt_space_stats - occupancy of one space
 */
struct kvrt_space_stats {
	uint64_t va_bytes;	/* size of the reservation */
	uint64_t budget_bytes;	/* most physical memory the space may hold */
	uint32_t nr_slots;	/* granule slots in the reservation */
	uint32_t cap_slots;	/* slots the runtime keeps state for: the
				 * largest budget so far, in granules */
	uint32_t nr_mapped;	/* slots backed by a granule */
	uint32_t nr_by_loc[KVRT_LOC_NR];
	uint32_t nr_retired;
	uint64_t loc_budget[KVRT_LOC_NR]; /* bytes per location, or
					   * KVRT_LOC_UNCAPPED */
};

/* kvrt_space_set_loc_budget(): no cap of its own, only the space budget */
#define KVRT_LOC_UNCAPPED UINT64_MAX

struct kvrt_fence;

/* context */
int kvrt_ctx_create(const struct kvrt_ctx_opts *opts, struct kvrt_ctx **out);
void kvrt_ctx_destroy(struct kvrt_ctx *ctx);
enum kvrt_backend_kind kvrt_ctx_backend(const struct kvrt_ctx *ctx);
const char *kvrt_ctx_name(const struct kvrt_ctx *ctx);
uint64_t kvrt_ctx_mem_total(const struct kvrt_ctx *ctx);
uint64_t kvrt_ctx_loc_total(const struct kvrt_ctx *ctx, enum kvrt_loc loc);
int kvrt_ctx_numa_nodes(const struct kvrt_ctx *ctx);
const char *kvrt_ctx_last_error(const struct kvrt_ctx *ctx);
void kvrt_ctx_counts(const struct kvrt_ctx *ctx, struct kvrt_counts *out);
int kvrt_cuda_probe(char *why, size_t len);

/* fault injection (tests) */
void kvrt_fault_inject(struct kvrt_ctx *ctx, uint64_t nth, int err);
uint64_t kvrt_fault_pending(const struct kvrt_ctx *ctx);

/* streams */
int kvrt_stream_create(struct kvrt_ctx *ctx, struct kvrt_stream **out);
int kvrt_stream_destroy(struct kvrt_stream *stream);
int kvrt_stream_host_fn(struct kvrt_stream *stream, void (*fn)(void *),
			void *arg);
int kvrt_stream_sync(struct kvrt_stream *stream);
void *kvrt_stream_handle(const struct kvrt_stream *stream);

/* fences of one stream, outside any space (migration's held pages) */
int kvrt_fence_record(struct kvrt_stream *stream, struct kvrt_fence **out);
int kvrt_fence_done(struct kvrt_fence *fence, int wait);
void kvrt_fence_put(struct kvrt_fence *fence);

/* spaces */
int kvrt_space_create(struct kvrt_ctx *ctx, uint64_t va_bytes,
		      uint64_t budget_bytes, struct kvrt_space **out);
int kvrt_space_destroy(struct kvrt_space *space);
uint64_t kvrt_space_base(const struct kvrt_space *space);
int kvrt_space_grow(struct kvrt_space *space, uint32_t n, enum kvrt_loc loc,
		    int node, uint32_t *idx_out);
int kvrt_space_shrink(struct kvrt_space *space, const uint32_t *idx,
		      uint32_t n, unsigned int flags);
size_t kvrt_space_slot_bytes(void);
int kvrt_space_set_budget(struct kvrt_space *space, uint64_t budget_bytes);
int kvrt_space_set_loc_budget(struct kvrt_space *space, enum kvrt_loc loc,
			      uint64_t bytes);
uint32_t kvrt_space_loc_room(const struct kvrt_space *space,
			     enum kvrt_loc loc);
int kvrt_space_fence(struct kvrt_space *space, struct kvrt_stream *stream);
int kvrt_space_retire(struct kvrt_space *space, const uint32_t *idx,
		      uint32_t n);
int kvrt_space_granule(const struct kvrt_space *space, uint32_t idx,
		       struct kvrt_granule_info *info);
int kvrt_space_busy(struct kvrt_space *space, uint32_t idx);
void kvrt_space_stats(const struct kvrt_space *space,
		      struct kvrt_space_stats *out);
struct kvrt_ctx *kvrt_space_ctx(const struct kvrt_space *space);

/* memory access through the backend (tests, tools, small transfers) */
int kvrt_memcpy_to(struct kvrt_ctx *ctx, uint64_t dst, const void *src,
		   size_t bytes);
int kvrt_memcpy_from(struct kvrt_ctx *ctx, void *dst, uint64_t src,
		     size_t bytes);

/* the CPU's pointer to a mapped address, or NULL (io.c) */
void *kvrt_host_ptr(struct kvrt_ctx *ctx, uint64_t addr);

/* file I/O into host memory: io_uring, pread where io_uring is refused */
int kvrt_file_read(int fd, uint64_t off, void *dst, size_t bytes);
const char *kvrt_file_read_engine(void);

/*
 * swap files: O_DIRECT, several requests in flight; staged through
 * registered buffers, or zero-copy from and to host-addressable pages
 */
struct kvrt_swapfile;

/* kvrt_swapfile_fault() modes */
#define KVRT_SWAP_FAULT_EIO 1	/* the nth chunk write completes with -EIO */
#define KVRT_SWAP_FAULT_SHORT 2	/* the nth chunk write is cut short */
#define KVRT_SWAP_FAULT_READ 4	/* or'ed in: count chunk reads instead */

/* kvrt_swapfile_set_flags() flags; 0: staged through registered buffers */
#define KVRT_SWAP_ZEROCOPY BIT(0) /* from/to the memory itself where it can */
#define KVRT_SWAP_SYNC BIT(1)	  /* pwritev/preadv, not io_uring (tests) */

/* alignment of swap file offsets and lengths (O_DIRECT) */
#define KVRT_SWAP_ALIGN 4096

int kvrt_swapfile_open(const char *path, uint32_t chunk, uint32_t depth,
		       struct kvrt_swapfile **out);
void kvrt_swapfile_close(struct kvrt_swapfile *sf);
int kvrt_swapfile_write(struct kvrt_swapfile *sf, uint64_t off,
			const void *src, size_t bytes);
int kvrt_swapfile_read(struct kvrt_swapfile *sf, uint64_t off, void *dst,
		       size_t bytes);
int kvrt_swapfile_write_pages(struct kvrt_swapfile *sf, struct kvrt_ctx *ctx,
			      uint64_t off, const uint64_t *addr, uint64_t n,
			      uint32_t page_bytes);
int kvrt_swapfile_read_pages(struct kvrt_swapfile *sf, struct kvrt_ctx *ctx,
			     uint64_t off, const uint64_t *addr, uint64_t n,
			     uint32_t page_bytes);
int kvrt_swapfile_sync(struct kvrt_swapfile *sf);
int kvrt_swapfile_set_flags(struct kvrt_swapfile *sf, unsigned int flags);
const char *kvrt_swapfile_path(const struct kvrt_swapfile *sf);
void kvrt_swapfile_fault(struct kvrt_swapfile *sf, uint64_t nth, int mode);
const char *kvrt_swapfile_engine(const struct kvrt_swapfile *sf);
int kvrt_swapfile_direct(const struct kvrt_swapfile *sf);
uint32_t kvrt_swapfile_dio_align(const struct kvrt_swapfile *sf);

#endif /* KVRT_H */
