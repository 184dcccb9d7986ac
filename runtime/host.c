// SPDX-License-Identifier: MIT
/*
 * host.c - the host backend: the CUDA VMM semantics on host memory.
 *
 * reserve  = mmap(PROT_NONE, MAP_NORESERVE), 2 MiB aligned
 * create   = memfd_create + ftruncate (the fd is the handle)
 * map      = mmap(MAP_SHARED | MAP_FIXED) of the memfd over the reservation,
 *            PROT_NONE until set-access, as cuMemMap
 * access   = mprotect(PROT_READ | PROT_WRITE)
 * unmap    = mmap(PROT_NONE, MAP_FIXED) anonymous: the range is reserved again
 * release  = close(fd); a mapping keeps the memory until it is unmapped
 * streams  = one worker thread each, running host functions in order
 * events   = a stream position; complete once the worker has passed it
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kvrt_internal.h"

#define HOST_MPOL_PREFERRED 1 /* from linux/mempolicy.h */

/* handle = fd in the low 32 bits, node + 1 in the next 16 (0: none) */
static int handle_fd(uint64_t h)
{
	return (int)(uint32_t)h;
}

static int handle_node(uint64_t h)
{
	return (int)((h >> 32) & 0xffff) - 1;
}

/**
 * kvrt_sys_numa_nodes() - host NUMA nodes, from sysfs
 *
 * Return: the number of node directories, at least 1.
 */
int kvrt_sys_numa_nodes(void)
{
	DIR *d = opendir("/sys/devices/system/node");
	struct dirent *e;
	int n = 0;

	if (!d)
		return 1;
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, "node", 4) &&
		    e->d_name[4] >= '0' && e->d_name[4] <= '9')
			n++;
	closedir(d);
	return n ? n : 1;
}

/**
 * kvrt_sys_mem_total() - physical memory of the host
 *
 * Return: bytes.
 */
uint64_t kvrt_sys_mem_total(void)
{
	long pages = sysconf(_SC_PHYS_PAGES);
	long psz = sysconf(_SC_PAGESIZE);

	return pages > 0 && psz > 0 ? (uint64_t)pages * psz : 0;
}

static int host_init(struct kvrt_ctx *ctx)
{
	if (!ctx->mem_total)
		ctx->mem_total = kvrt_sys_mem_total();
	ctx->mem_total -= ctx->mem_total % KVRT_GRANULE_SIZE;
	return 0;
}

static void host_fini(struct kvrt_ctx *ctx)
{
	(void)ctx;
}

static int host_va_reserve(struct kvrt_ctx *ctx, uint64_t size, uint64_t *va)
{
	uint64_t slack = KVRT_GRANULE_SIZE, start, head, tail;
	void *p;

	(void)ctx;
	p = mmap(NULL, size + slack, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	/* keep the 2 MiB aligned part, like the driver's reservations */
	start = kvmm_round_up((uintptr_t)p, KVRT_GRANULE_SIZE);
	head = start - (uintptr_t)p;
	tail = slack - head;
	if (head)
		munmap(p, head);
	if (tail)
		munmap((void *)(uintptr_t)(start + size), tail);
	*va = start;
	return 0;
}

static int host_va_free(struct kvrt_ctx *ctx, uint64_t va, uint64_t size)
{
	(void)ctx;
	return munmap((void *)(uintptr_t)va, size) ? -errno : 0;
}

static int host_mem_create(struct kvrt_ctx *ctx, uint64_t size,
			   enum kvrt_loc loc, int node, uint64_t *handle)
{
	int fd;

	(void)ctx;
	fd = memfd_create("kvrt-granule", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, size)) {
		int err = -errno;

		close(fd);
		return err;
	}
	*handle = (uint32_t)fd;
	if (loc == KVRT_LOC_HOST_NUMA)
		*handle |= (uint64_t)(node + 1) << 32;
	return 0;
}

static int host_mem_release(struct kvrt_ctx *ctx, uint64_t handle)
{
	(void)ctx;
	return close(handle_fd(handle)) ? -errno : 0;
}

static int host_mem_map(struct kvrt_ctx *ctx, uint64_t va, uint64_t size,
			uint64_t handle)
{
	int node = handle_node(handle);
	void *p;

	(void)ctx;
	p = mmap((void *)(uintptr_t)va, size, PROT_NONE, MAP_SHARED | MAP_FIXED,
		 handle_fd(handle), 0);
	if (p == MAP_FAILED)
		return -errno;
	if (node >= 0) {
		unsigned long mask[4] = { 0 };

		mask[node / 64] = 1UL << (node % 64);
		/*
		 * Placement is a preference: containers often refuse mbind,
		 * and the memory is still host memory, which is what the
		 * semantics need.
		 */
		(void)syscall(SYS_mbind, p, size, HOST_MPOL_PREFERRED, mask,
			      sizeof(mask) * 8, 0);
	}
	return 0;
}

static int host_mem_unmap(struct kvrt_ctx *ctx, uint64_t va, uint64_t size)
{
	void *p;

	(void)ctx;
	p = mmap((void *)(uintptr_t)va, size, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
		 0);
	return p == MAP_FAILED ? -errno : 0;
}

static int host_set_access(struct kvrt_ctx *ctx, uint64_t va, uint64_t size)
{
	(void)ctx;
	return mprotect((void *)(uintptr_t)va, size, PROT_READ | PROT_WRITE) ?
		       -errno :
		       0;
}

/*
 * struct host_work - one queued host function.
 * struct host_stream - a worker thread and its queue. @lock protects the
 * queue, the counters and @stop; @refs counts the stream itself and every
 * event last recorded on it, so an event may outlive its stream.
 */
struct host_work {
	struct host_work *next;
	void (*fn)(void *);
	void *arg;
};

struct host_stream {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* work queued, work done, stop */
	struct host_work *head, *tail;
	uint64_t submitted;		/* work items queued so far */
	uint64_t completed;		/* work items finished */
	unsigned int refs;
	bool stop;
};

struct host_event {
	struct host_stream *stream;	/* NULL: never recorded */
	uint64_t target;		/* complete when completed >= target */
};

static void *host_worker(void *arg)
{
	struct host_stream *s = arg;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct host_work *w;

		while (!s->head && !s->stop)
			pthread_cond_wait(&s->cond, &s->lock);
		if (!s->head)
			break;
		w = s->head;
		s->head = w->next;
		if (!s->head)
			s->tail = NULL;
		pthread_mutex_unlock(&s->lock);
		w->fn(w->arg);
		free(w);
		pthread_mutex_lock(&s->lock);
		s->completed++;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void host_stream_put(struct host_stream *s)
{
	bool last;

	pthread_mutex_lock(&s->lock);
	last = --s->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (!last)
		return;
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int host_stream_create(struct kvrt_ctx *ctx, void **stream)
{
	struct host_stream *s;
	int ret;

	(void)ctx;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->refs = 1;
	ret = pthread_create(&s->thread, NULL, host_worker, s);
	if (ret) {
		pthread_cond_destroy(&s->cond);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return -ret;
	}
	*stream = s;
	return 0;
}

static int host_stream_destroy(struct kvrt_ctx *ctx, void *stream)
{
	struct host_stream *s = stream;

	(void)ctx;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	host_stream_put(s);
	return 0;
}

static int host_stream_host_fn(struct kvrt_ctx *ctx, void *stream,
			       void (*fn)(void *), void *arg)
{
	struct host_stream *s = stream;
	struct host_work *w;

	(void)ctx;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fn = fn;
	w->arg = arg;
	pthread_mutex_lock(&s->lock);
	if (s->tail)
		s->tail->next = w;
	else
		s->head = w;
	s->tail = w;
	s->submitted++;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int host_wait(struct host_stream *s, uint64_t target)
{
	pthread_mutex_lock(&s->lock);
	while (s->completed < target)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int host_stream_sync(struct kvrt_ctx *ctx, void *stream)
{
	struct host_stream *s = stream;
	uint64_t target;

	(void)ctx;
	pthread_mutex_lock(&s->lock);
	target = s->submitted;
	pthread_mutex_unlock(&s->lock);
	return host_wait(s, target);
}

static int host_event_create(struct kvrt_ctx *ctx, void **event)
{
	(void)ctx;
	*event = calloc(1, sizeof(struct host_event));
	return *event ? 0 : -ENOMEM;
}

static int host_event_destroy(struct kvrt_ctx *ctx, void *event)
{
	struct host_event *e = event;

	(void)ctx;
	if (e->stream)
		host_stream_put(e->stream);
	free(e);
	return 0;
}

static int host_event_record(struct kvrt_ctx *ctx, void *event, void *stream)
{
	struct host_event *e = event;
	struct host_stream *s = stream;

	(void)ctx;
	pthread_mutex_lock(&s->lock);
	s->refs++;
	e->target = s->submitted;
	pthread_mutex_unlock(&s->lock);
	if (e->stream)
		host_stream_put(e->stream);
	e->stream = s;
	return 0;
}

static int host_event_query(struct kvrt_ctx *ctx, void *event)
{
	struct host_event *e = event;
	int ret;

	(void)ctx;
	if (!e->stream)
		return 0;
	pthread_mutex_lock(&e->stream->lock);
	ret = e->stream->completed >= e->target ? 0 : -EBUSY;
	pthread_mutex_unlock(&e->stream->lock);
	return ret;
}

static int host_event_sync(struct kvrt_ctx *ctx, void *event)
{
	struct host_event *e = event;

	(void)ctx;
	return e->stream ? host_wait(e->stream, e->target) : 0;
}

static int host_memcpy_to(struct kvrt_ctx *ctx, uint64_t dst, const void *src,
			  size_t bytes)
{
	(void)ctx;
	memcpy((void *)(uintptr_t)dst, src, bytes);
	return 0;
}

static int host_memcpy_from(struct kvrt_ctx *ctx, void *dst, uint64_t src,
			    size_t bytes)
{
	(void)ctx;
	memcpy(dst, (const void *)(uintptr_t)src, bytes);
	return 0;
}

const struct kvrt_backend_ops kvrt_host_ops = {
	.name = "host",
	.init = host_init,
	.fini = host_fini,
	.va_reserve = host_va_reserve,
	.va_free = host_va_free,
	.mem_create = host_mem_create,
	.mem_release = host_mem_release,
	.mem_map = host_mem_map,
	.mem_unmap = host_mem_unmap,
	.set_access = host_set_access,
	.stream_create = host_stream_create,
	.stream_destroy = host_stream_destroy,
	.stream_host_fn = host_stream_host_fn,
	.stream_sync = host_stream_sync,
	.event_create = host_event_create,
	.event_destroy = host_event_destroy,
	.event_record = host_event_record,
	.event_query = host_event_query,
	.event_sync = host_event_sync,
	.memcpy_to = host_memcpy_to,
	.memcpy_from = host_memcpy_from,
};
