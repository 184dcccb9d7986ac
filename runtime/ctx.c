// SPDX-License-Identifier: MIT
/*
 * ctx.c - runtime contexts, streams, the backend-call wrapper and fault
 * injection.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvrt_internal.h"

/**
 * DOC: fault injection
 *
 * kvrt_fault_inject(ctx, n, err) makes the n-th backend call from now fail
 * with -err before it reaches the backend. Tests walk n = 1, 2, ... over an
 * operation until it succeeds, so every unwind label is taken once, and check
 * after each failure that the live-object counters and the space are as they
 * were.
 */

/**
 * kvrt_call_begin() - account for one backend call, injecting a fault
 * @ctx: context the call is made on
 *
 * Return: 0 to go on with the call, or the injected -errno.
 */
int kvrt_call_begin(struct kvrt_ctx *ctx)
{
	int ret = 0;

	pthread_mutex_lock(&ctx->lock);
	ctx->counts.calls++;
	if (ctx->fault_nth && --ctx->fault_nth == 0)
		ret = -ctx->fault_err;
	pthread_mutex_unlock(&ctx->lock);
	return ret;
}

/**
 * kvrt_put_failed() - note a teardown call that the backend refused
 * @ctx: context
 * @op: name of the op
 * @err: its -errno
 */
void kvrt_put_failed(struct kvrt_ctx *ctx, const char *op, int err)
{
	kvrt_err(ctx, err, "backend %s failed during teardown (%s)", op,
		 strerror(-err));
	fprintf(stderr, "kvrt: %s failed during teardown: %s\n", op,
		strerror(-err));
}

/**
 * kvrt_fault_inject() - fail the nth backend call from now
 * @ctx: context
 * @nth: 1 fails the next call; 0 turns injection off
 * @err: positive errno the call returns (negated)
 */
void kvrt_fault_inject(struct kvrt_ctx *ctx, uint64_t nth, int err)
{
	pthread_mutex_lock(&ctx->lock);
	ctx->fault_nth = nth;
	ctx->fault_err = err > 0 ? err : EIO;
	pthread_mutex_unlock(&ctx->lock);
}

/**
 * kvrt_fault_pending() - calls left before the injected fault fires
 * @ctx: context
 *
 * Return: 0 when no fault is armed (it fired, or none was set).
 */
uint64_t kvrt_fault_pending(const struct kvrt_ctx *ctx)
{
	uint64_t n;

	pthread_mutex_lock((pthread_mutex_t *)&ctx->lock);
	n = ctx->fault_nth;
	pthread_mutex_unlock((pthread_mutex_t *)&ctx->lock);
	return n;
}

/**
 * kvrt_count() - adjust one live-object counter of @ctx
 * @ctx: context
 * @counter: a field of ctx->counts
 * @delta: change
 */
void kvrt_count(struct kvrt_ctx *ctx, uint64_t *counter, int64_t delta)
{
	pthread_mutex_lock(&ctx->lock);
	*counter += delta;
	pthread_mutex_unlock(&ctx->lock);
}

/**
 * kvrt_ctx_counts() - snapshot the live backend objects of @ctx
 * @ctx: context
 * @out: filled with the counters
 */
void kvrt_ctx_counts(const struct kvrt_ctx *ctx, struct kvrt_counts *out)
{
	pthread_mutex_lock((pthread_mutex_t *)&ctx->lock);
	*out = ctx->counts;
	pthread_mutex_unlock((pthread_mutex_t *)&ctx->lock);
}

/**
 * kvrt_err() - record why a call failed, and return the error
 * @ctx: context whose last error is set
 * @err: negative errno
 * @fmt: printf format naming what was wrong
 *
 * Return: @err
 */
int kvrt_err(struct kvrt_ctx *ctx, int err, const char *fmt, ...)
{
	va_list ap;

	if (!ctx)
		return err;
	pthread_mutex_lock(&ctx->lock);
	va_start(ap, fmt);
	vsnprintf(ctx->last_error, sizeof(ctx->last_error), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&ctx->lock);
	return err;
}

/**
 * kvrt_ctx_last_error() - words for the last failure on @ctx
 * @ctx: context
 *
 * Return: a string, empty when nothing failed yet. Valid until the next
 * failing call on @ctx.
 */
const char *kvrt_ctx_last_error(const struct kvrt_ctx *ctx)
{
	return ctx->last_error;
}

static const struct kvrt_backend_ops *kvrt_pick(enum kvrt_backend_kind kind)
{
	switch (kind) {
	case KVRT_BACKEND_HOST:
		return &kvrt_host_ops;
	case KVRT_BACKEND_CUDA:
#ifdef KVMM_HAVE_CUDA
		return &kvrt_cuda_ops;
#else
		return NULL;
#endif
	default:
		return NULL;
	}
}

/**
 * kvrt_ctx_create() - open a runtime context
 * @opts: backend and device; NULL means AUTO on device 0
 * @out: the new context
 *
 * With KVRT_BACKEND_AUTO the CUDA backend is tried first and the host
 * backend taken when no device answers (no driver, no GPU, CPU-only build).
 *
 * Return: 0, -EINVAL for a bad option, -ENODEV when the asked-for backend has
 * no device (or was not built), -ENOMEM.
 */
int kvrt_ctx_create(const struct kvrt_ctx_opts *opts, struct kvrt_ctx **out)
{
	struct kvrt_ctx_opts def = { .backend = KVRT_BACKEND_AUTO };
	struct kvrt_ctx *ctx;
	int ret;

	if (!out)
		return -EINVAL;
	if (!opts)
		opts = &def;
	if (opts->backend > KVRT_BACKEND_CUDA || opts->device < 0)
		return -EINVAL;
	if (opts->backend == KVRT_BACKEND_AUTO) {
		struct kvrt_ctx_opts o = *opts;

		o.backend = KVRT_BACKEND_CUDA;
		ret = kvrt_ctx_create(&o, out);
		if (ret != -ENODEV)
			return ret;
		o.backend = KVRT_BACKEND_HOST;
		return kvrt_ctx_create(&o, out);
	}

	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->kind = opts->backend;
	ctx->ops = kvrt_pick(opts->backend);
	ctx->device = opts->backend == KVRT_BACKEND_CUDA ? opts->device : -1;
	ctx->mem_total = opts->host_mem_bytes;
	ctx->numa_nodes = kvrt_sys_numa_nodes();
	pthread_mutex_init(&ctx->lock, NULL);
	if (!ctx->ops) {
		ret = -ENODEV;
		goto out_free;
	}
	ctx->fault_nth = opts->fault_nth;
	ctx->fault_err = EIO;
	ret = ctx->ops->init(ctx);
	ctx->fault_nth = 0;
	if (ret)
		goto out_free;
	if (opts->host_tier_bytes)
		ctx->host_total = opts->host_tier_bytes;
	else if (opts->backend == KVRT_BACKEND_CUDA)
		ctx->host_total = kvrt_sys_mem_total();
	ctx->host_total -= ctx->host_total % KVRT_GRANULE_SIZE;
	*out = ctx;
	return 0;

out_free:
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
	return ret;
}

/**
 * kvrt_ctx_destroy() - close a context
 * @ctx: context; its spaces and streams must be gone already
 */
void kvrt_ctx_destroy(struct kvrt_ctx *ctx)
{
	if (!ctx)
		return;
	ctx->ops->fini(ctx);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
}

/**
 * kvrt_ctx_backend() - which backend a context runs on
 * @ctx: context
 *
 * Return: KVRT_BACKEND_HOST or KVRT_BACKEND_CUDA.
 */
enum kvrt_backend_kind kvrt_ctx_backend(const struct kvrt_ctx *ctx)
{
	return ctx->kind;
}

/**
 * kvrt_ctx_name() - the backend's name, "host" or "cuda"
 * @ctx: context
 *
 * Return: a static string.
 */
const char *kvrt_ctx_name(const struct kvrt_ctx *ctx)
{
	return ctx->ops->name;
}

/**
 * kvrt_ctx_mem_total() - memory a space budget is checked against
 * @ctx: context
 *
 * Return: the device's memory in bytes (CUDA), or the configured host size.
 */
uint64_t kvrt_ctx_mem_total(const struct kvrt_ctx *ctx)
{
	return ctx->mem_total;
}

/**
 * kvrt_ctx_loc_total() - memory one location may hold in a space
 * @ctx: context
 * @loc: KVRT_LOC_DEVICE or KVRT_LOC_HOST_NUMA
 *
 * The device's memory (the configured size on the host backend), or the
 * host tier (struct kvrt_ctx_opts @host_tier_bytes). A space's budget may
 * reach their sum; a per-location budget (kvrt_space_set_loc_budget()) is
 * at most its location's figure. A host-backend context without a host
 * tier of its own emulates one in the same memory: its host figure is
 * then the device figure, though the space budget does not grow.
 *
 * Return: bytes, a multiple of the granule; 0 for an unknown location.
 */
uint64_t kvrt_ctx_loc_total(const struct kvrt_ctx *ctx, enum kvrt_loc loc)
{
	if (loc == KVRT_LOC_DEVICE)
		return ctx->mem_total;
	if (loc != KVRT_LOC_HOST_NUMA)
		return 0;
	if (!ctx->host_total && ctx->kind == KVRT_BACKEND_HOST)
		return ctx->mem_total;
	return ctx->host_total;
}

/**
 * kvrt_ctx_numa_nodes() - host NUMA nodes a host granule may be placed on
 * @ctx: context
 *
 * Return: number of nodes, at least 1.
 */
int kvrt_ctx_numa_nodes(const struct kvrt_ctx *ctx)
{
	return ctx->numa_nodes;
}

/**
 * kvrt_stream_create() - create a stream that runs work in order
 * @ctx: context
 * @out: the new stream
 *
 * Return: 0, -ENOMEM, or the backend's error.
 */
int kvrt_stream_create(struct kvrt_ctx *ctx, struct kvrt_stream **out)
{
	struct kvrt_stream *s;
	int ret;

	s = calloc(1, sizeof(*s));
	if (!s)
		return kvrt_err(ctx, -ENOMEM, "stream: out of memory");
	s->ctx = ctx;
	ret = KVRT_CALL(ctx, stream_create, &s->handle);
	if (ret) {
		free(s);
		return kvrt_err(ctx, ret, "stream: backend refused (%s)",
				strerror(-ret));
	}
	kvrt_count(ctx, &ctx->counts.streams, 1);
	*out = s;
	return 0;
}

/**
 * kvrt_stream_destroy() - wait for a stream's work and free it
 * @stream: stream; no space may still hold a fence of it
 *
 * Return: 0 or the backend's error (the stream is then still alive).
 */
int kvrt_stream_destroy(struct kvrt_stream *stream)
{
	struct kvrt_ctx *ctx;
	int ret;

	if (!stream)
		return 0;
	ctx = stream->ctx;
	ret = KVRT_PUT(ctx, stream_destroy, stream->handle);
	if (ret)
		return kvrt_err(ctx, ret, "stream: destroy failed (%s)",
				strerror(-ret));
	kvrt_count(ctx, &ctx->counts.streams, -1);
	free(stream);
	return 0;
}

/**
 * kvrt_stream_host_fn() - run @fn(@arg) on the host, in stream order
 * @stream: stream
 * @fn: function; it must not call back into the runtime
 * @arg: its argument
 *
 * On the host backend this is how work is "launched"; on CUDA it is
 * cuLaunchHostFunc().
 *
 * Return: 0 or the backend's error.
 */
int kvrt_stream_host_fn(struct kvrt_stream *stream, void (*fn)(void *),
			void *arg)
{
	return KVRT_CALL(stream->ctx, stream_host_fn, stream->handle, fn, arg);
}

/**
 * kvrt_stream_sync() - wait until all work queued on @stream is done
 * @stream: stream
 *
 * Return: 0 or the backend's error.
 */
int kvrt_stream_sync(struct kvrt_stream *stream)
{
	return KVRT_CALL(stream->ctx, stream_sync, stream->handle);
}

/**
 * kvrt_stream_handle() - the backend's stream (a CUstream on CUDA)
 * @stream: stream
 *
 * Return: the handle, for launching kernels on the stream.
 */
void *kvrt_stream_handle(const struct kvrt_stream *stream)
{
	return stream->handle;
}

/**
 * kvrt_memcpy_to() - copy host bytes to a mapped address
 * @ctx: context
 * @dst: device-visible address inside a mapped granule
 * @src: host source
 * @bytes: length
 *
 * Return: 0 or the backend's error.
 */
int kvrt_memcpy_to(struct kvrt_ctx *ctx, uint64_t dst, const void *src,
		   size_t bytes)
{
	return KVRT_CALL(ctx, memcpy_to, dst, src, bytes);
}

/**
 * kvrt_memcpy_from() - copy bytes from a mapped address to the host
 * @ctx: context
 * @dst: host destination
 * @src: device-visible address inside a mapped granule
 * @bytes: length
 *
 * Return: 0 or the backend's error.
 */
int kvrt_memcpy_from(struct kvrt_ctx *ctx, void *dst, uint64_t src,
		     size_t bytes)
{
	return KVRT_CALL(ctx, memcpy_from, dst, src, bytes);
}

#ifndef KVMM_HAVE_CUDA
/**
 * kvrt_cuda_probe() - whether a CUDA device answers (CPU-only build)
 * @why: receives the reason (may be NULL)
 * @len: size of @why
 *
 * Return: -ENODEV: this build has no CUDA backend.
 */
int kvrt_cuda_probe(char *why, size_t len)
{
	if (why)
		snprintf(why, len, "built without CUDA (CUDA=0 or no nvcc)");
	return -ENODEV;
}
#endif
