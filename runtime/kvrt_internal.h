/* SPDX-License-Identifier: MIT */
/*
 * kvrt_internal.h - runtime internals: the backend operations table, the
 * context and space structures. Not for use outside runtime/ and its tests.
 */
#ifndef KVRT_INTERNAL_H
#define KVRT_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>

#include "kvrt.h"

struct kvrt_ctx;

/**
 * struct kvrt_backend_ops - what a backend provides. Every op returns 0 or
 * -errno and has no effect when it fails. Sizes are multiples of the granule.
 * Ops are called only through the KVRT_CALL() wrapper, which counts calls,
 * keeps the live-object counters and injects faults.
 */
struct kvrt_backend_ops {
	const char *name;
	int (*init)(struct kvrt_ctx *ctx);
	void (*fini)(struct kvrt_ctx *ctx);
	int (*va_reserve)(struct kvrt_ctx *ctx, uint64_t size, uint64_t *va);
	int (*va_free)(struct kvrt_ctx *ctx, uint64_t va, uint64_t size);
	int (*mem_create)(struct kvrt_ctx *ctx, uint64_t size, enum kvrt_loc loc,
			  int node, uint64_t *handle);
	int (*mem_release)(struct kvrt_ctx *ctx, uint64_t handle);
	int (*mem_map)(struct kvrt_ctx *ctx, uint64_t va, uint64_t size,
		       uint64_t handle);
	int (*mem_unmap)(struct kvrt_ctx *ctx, uint64_t va, uint64_t size);
	int (*set_access)(struct kvrt_ctx *ctx, uint64_t va, uint64_t size);
	int (*stream_create)(struct kvrt_ctx *ctx, void **stream);
	int (*stream_destroy)(struct kvrt_ctx *ctx, void *stream);
	int (*stream_host_fn)(struct kvrt_ctx *ctx, void *stream,
			      void (*fn)(void *), void *arg);
	int (*stream_sync)(struct kvrt_ctx *ctx, void *stream);
	int (*event_create)(struct kvrt_ctx *ctx, void **event);
	int (*event_destroy)(struct kvrt_ctx *ctx, void *event);
	int (*event_record)(struct kvrt_ctx *ctx, void *event, void *stream);
	/* 0 when complete (or never recorded), -EBUSY while pending */
	int (*event_query)(struct kvrt_ctx *ctx, void *event);
	int (*event_sync)(struct kvrt_ctx *ctx, void *event);
	int (*memcpy_to)(struct kvrt_ctx *ctx, uint64_t dst, const void *src,
			 size_t bytes);
	int (*memcpy_from)(struct kvrt_ctx *ctx, void *dst, uint64_t src,
			   size_t bytes);
};

extern const struct kvrt_backend_ops kvrt_host_ops;
#ifdef KVMM_HAVE_CUDA
extern const struct kvrt_backend_ops kvrt_cuda_ops;
#endif

/*
 * struct kvrt_ctx - one runtime context.
 * Owner: the caller of kvrt_ctx_create(). @lock protects the counters, the
 * fault state and @last_error; backend calls may come from several threads.
 */
struct kvrt_ctx {
	const struct kvrt_backend_ops *ops;
	enum kvrt_backend_kind kind;
	int device;			/* CUDA ordinal, or -1 */
	uint64_t mem_total;		/* device memory (bytes) */
	uint64_t host_total;		/* host tier a space may add (bytes) */
	int numa_nodes;			/* host NUMA nodes seen */
	void *priv;			/* backend state */
	pthread_mutex_t lock;
	struct kvrt_counts counts;
	uint64_t fault_nth;		/* 0: off; else fail the nth call */
	int fault_err;			/* positive errno to inject */
	char last_error[256];
};

/*
 * struct kvrt_fence - one event recorded on one stream, shared by the space
 * fence table and the granules that snapshot it at retirement.
 * Owner: the space; @refs counts those holders, under the space lock.
 */
struct kvrt_fence {
	struct kvrt_ctx *ctx;		/* set by kvrt_fence_record() */
	void *event;			/* backend event */
	uint64_t seq;			/* space sequence number when recorded */
	unsigned int refs;
};

/*
 * struct kvrt_granule - one 2 MiB slot of a space's reservation.
 * Protected by the owning space's lock.
 */
struct kvrt_granule {
	uint64_t handle;		/* backend physical handle, valid if mapped */
	uint64_t map_seq;		/* space seq when mapped */
	uint8_t mapped;
	uint8_t retired;
	uint8_t loc;			/* enum kvrt_loc */
	uint8_t seen;			/* scratch: duplicate check */
	int16_t node;
	/* retired: the fences that must complete before unmap */
	struct kvrt_fence *wait[KVRT_MAX_STREAMS];
};

/*
 * struct kvrt_space - one KV address space: a reservation and its slots.
 * Owner: the caller of kvrt_space_create(). @lock serialises every call on
 * the space; the driver serialises VMM calls anyway (DESIGN.md).
 */
struct kvrt_space {
	struct kvrt_ctx *ctx;
	pthread_mutex_t lock;
	uint64_t base;			/* start of the reservation */
	uint64_t va_bytes;
	uint64_t budget;		/* bytes */
	uint64_t loc_budget[KVRT_LOC_NR]; /* bytes, or KVRT_LOC_UNCAPPED */
	uint32_t nr_loc[KVRT_LOC_NR];	/* mapped granules per location */
	uint32_t nr_slots;		/* granule slots of the reservation */
	uint32_t cap_slots;		/* entries of @slots: the largest budget
					 * so far, in granules; slots at or past
					 * it are unmapped (the lowest free slots
					 * are taken, so none is ever reached) */
	uint32_t nr_mapped;
	uint64_t seq;			/* bumped on every map and fence */
	struct kvrt_granule *slots;	/* [cap_slots] */
	/* latest fence per stream that fenced this space */
	struct kvrt_stream *fence_stream[KVRT_MAX_STREAMS];
	struct kvrt_fence *fence[KVRT_MAX_STREAMS];
};

/* struct kvrt_stream - a backend stream. Owner: its creator. */
struct kvrt_stream {
	struct kvrt_ctx *ctx;
	void *handle;
};

int kvrt_call_begin(struct kvrt_ctx *ctx);

/*
 * KVRT_CALL() - call backend op @op, unless fault injection fails it first.
 * Evaluates to 0 or -errno. Used for every call that can fail for a reason
 * other than a bad argument: reserve, create, map, set-access, unmap, stream
 * and event creation, record, host functions, copies.
 */
#define KVRT_CALL(ctx, op, ...)                                                \
	({                                                                     \
		int __r = kvrt_call_begin(ctx);                                \
		if (!__r)                                                      \
			__r = (ctx)->ops->op((ctx), __VA_ARGS__);              \
		__r;                                                           \
	})

/*
 * KVRT_PUT() - call a teardown op (release, free, destroy). These are the
 * unwind paths themselves and, like kernel free functions, are not failed by
 * injection; a real failure is recorded by kvrt_put_failed() and the object
 * stays counted, so a leak check sees it.
 */
#define KVRT_PUT(ctx, op, ...)                                                 \
	({                                                                     \
		int __r;                                                       \
		kvrt_count(ctx, &(ctx)->counts.calls, 1);                      \
		__r = (ctx)->ops->op((ctx), __VA_ARGS__);                      \
		if (__r)                                                       \
			kvrt_put_failed(ctx, #op, __r);                        \
		__r;                                                           \
	})

void kvrt_put_failed(struct kvrt_ctx *ctx, const char *op, int err);

void kvrt_count(struct kvrt_ctx *ctx, uint64_t *counter, int64_t delta);
int kvrt_err(struct kvrt_ctx *ctx, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* host backend helpers shared with the CUDA backend's host streams */
int kvrt_sys_numa_nodes(void);
uint64_t kvrt_sys_mem_total(void);

#endif /* KVRT_INTERNAL_H */
