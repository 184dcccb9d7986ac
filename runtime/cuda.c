// SPDX-License-Identifier: MIT
/*
 * cuda.c - the CUDA backend: driver VMM calls, streams and events.
 *
 * libcuda is not linked: it is opened with dlopen() on first use and every
 * entry point is looked up through cuGetProcAddress(). A machine with the
 * CUDA toolkit but no NVIDIA driver (CI) therefore starts the same binaries
 * and gets -ENODEV with a reason, never a loader error.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvrt_internal.h"

/* entry points, looked up by their base names at CUDA_VERSION */
#define CU_FUNCS(X)                                                            \
	X(cuInit)                                                              \
	X(cuDriverGetVersion)                                                  \
	X(cuDeviceGetCount)                                                    \
	X(cuDeviceGet)                                                         \
	X(cuDeviceGetName)                                                     \
	X(cuDeviceTotalMem)                                                    \
	X(cuDevicePrimaryCtxRetain)                                            \
	X(cuDevicePrimaryCtxRelease)                                           \
	X(cuCtxSetCurrent)                                                     \
	X(cuGetErrorName)                                                      \
	X(cuMemGetAllocationGranularity)                                       \
	X(cuMemAddressReserve)                                                 \
	X(cuMemAddressFree)                                                    \
	X(cuMemCreate)                                                         \
	X(cuMemRelease)                                                        \
	X(cuMemMap)                                                            \
	X(cuMemUnmap)                                                          \
	X(cuMemSetAccess)                                                      \
	X(cuStreamCreate)                                                      \
	X(cuStreamDestroy)                                                     \
	X(cuStreamSynchronize)                                                 \
	X(cuLaunchHostFunc)                                                    \
	X(cuEventCreate)                                                       \
	X(cuEventDestroy)                                                      \
	X(cuEventRecord)                                                       \
	X(cuEventQuery)                                                        \
	X(cuEventSynchronize)                                                  \
	X(cuMemcpyHtoD)                                                        \
	X(cuMemcpyDtoH)

static struct {
#define X(f) __typeof__(f) *f;
	CU_FUNCS(X)
#undef X
} cu;

static pthread_once_t cu_once = PTHREAD_ONCE_INIT;
static int cu_load_err;
static char cu_load_why[200];

static void cu_load(void)
{
	CUresult (*get_proc)(const char *, void **, int, cuuint64_t,
			     CUdriverProcAddressQueryResult *);
	void *lib;
	CUresult r;

	lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		snprintf(cu_load_why, sizeof(cu_load_why),
			 "no NVIDIA driver: %s", dlerror());
		cu_load_err = -ENODEV;
		return;
	}
	get_proc = (__typeof__(get_proc))dlsym(lib, "cuGetProcAddress_v2");
	if (!get_proc) {
		snprintf(cu_load_why, sizeof(cu_load_why),
			 "driver too old: no cuGetProcAddress_v2");
		cu_load_err = -ENODEV;
		return;
	}
#define X(f)                                                                   \
	if (get_proc(#f, (void **)&cu.f, CUDA_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, \
		     NULL) != CUDA_SUCCESS || !cu.f) {                         \
		snprintf(cu_load_why, sizeof(cu_load_why),                     \
			 "driver lacks %s for CUDA %d", #f, CUDA_VERSION);     \
		cu_load_err = -ENODEV;                                         \
		return;                                                        \
	}
	CU_FUNCS(X)
#undef X
	r = cu.cuInit(0);
	if (r != CUDA_SUCCESS) {
		const char *name = "?";

		cu.cuGetErrorName(r, &name);
		snprintf(cu_load_why, sizeof(cu_load_why), "cuInit: %s", name);
		cu_load_err = -ENODEV;
	}
}

/* CUresult -> -errno (out of memory -> -ENOMEM) */
static int cu_errno(CUresult r)
{
	switch (r) {
	case CUDA_SUCCESS:
		return 0;
	case CUDA_ERROR_OUT_OF_MEMORY:
		return -ENOMEM;
	case CUDA_ERROR_INVALID_VALUE:
	case CUDA_ERROR_INVALID_HANDLE:
	case CUDA_ERROR_INVALID_CONTEXT:
		return -EINVAL;
	case CUDA_ERROR_NOT_READY:
		return -EBUSY;
	case CUDA_ERROR_NO_DEVICE:
	case CUDA_ERROR_INVALID_DEVICE:
	case CUDA_ERROR_NOT_INITIALIZED:
	case CUDA_ERROR_DEINITIALIZED:
	case CUDA_ERROR_SYSTEM_DRIVER_MISMATCH:
		return -ENODEV;
	case CUDA_ERROR_NOT_SUPPORTED:
		return -EOPNOTSUPP;
	case CUDA_ERROR_NOT_PERMITTED:
		return -EPERM;
	case CUDA_ERROR_ALREADY_MAPPED:
		return -EEXIST;
	case CUDA_ERROR_NOT_MAPPED:
		return -ENOENT;
	case CUDA_ERROR_ILLEGAL_ADDRESS:
		return -EFAULT;
	default:
		return -EIO;
	}
}

struct cu_priv {
	CUdevice dev;
	CUcontext cuctx;
};

/* Translate @r, naming the call in the context's last error. */
static int cu_check(struct kvrt_ctx *ctx, CUresult r, const char *call)
{
	const char *name = "?";

	if (r == CUDA_SUCCESS)
		return 0;
	if (r != CUDA_ERROR_NOT_READY) {
		cu.cuGetErrorName(r, &name);
		kvrt_err(ctx, cu_errno(r), "%s: %s", call, name);
	}
	return cu_errno(r);
}

#define CU(ctx, call) cu_check(ctx, cu_current(ctx) ?: cu.call, #call)

/*
 * CU_INIT() - a driver call made while opening a context: it goes through
 * the fault-injection counter itself, since no KVRT_CALL() wraps it.
 */
#define CU_INIT(ctx, call)                                                     \
	({                                                                     \
		int __r = kvrt_call_begin(ctx);                                \
		__r ?: cu_check(ctx, cu.call, #call);                          \
	})

static CUresult cu_current(struct kvrt_ctx *ctx)
{
	struct cu_priv *p = ctx->priv;

	return cu.cuCtxSetCurrent(p->cuctx);
}

/**
 * kvrt_cuda_probe() - whether a CUDA device answers
 * @why: receives the reason when none does (may be NULL)
 * @len: size of @why
 *
 * Return: 0 when device 0 can be used, -ENODEV otherwise.
 */
int kvrt_cuda_probe(char *why, size_t len)
{
	int n = 0;

	pthread_once(&cu_once, cu_load);
	if (cu_load_err) {
		if (why)
			snprintf(why, len, "%s", cu_load_why);
		return cu_load_err;
	}
	if (cu.cuDeviceGetCount(&n) != CUDA_SUCCESS || n < 1) {
		if (why)
			snprintf(why, len, "the driver sees no device");
		return -ENODEV;
	}
	return 0;
}

static int cu_init(struct kvrt_ctx *ctx)
{
	CUmemAllocationProp prop = { 0 };
	struct cu_priv *p;
	char why[256];
	size_t gran = 0, total = 0;
	int n = 0, ret;

	ret = kvrt_cuda_probe(why, sizeof(why));
	if (ret)
		return kvrt_err(ctx, ret, "cuda: %s", why);
	cu.cuDeviceGetCount(&n);
	if (ctx->device >= n)
		return kvrt_err(ctx, -ENODEV, "cuda: no device %d (%d found)",
				ctx->device, n);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	ret = CU_INIT(ctx, cuDeviceGet(&p->dev, ctx->device));
	if (ret)
		goto out_free;
	ret = CU_INIT(ctx, cuDevicePrimaryCtxRetain(&p->cuctx, p->dev));
	if (ret)
		goto out_free;
	ctx->priv = p;
	ret = CU_INIT(ctx, cuCtxSetCurrent(p->cuctx));
	if (ret)
		goto out_release;
	ret = CU_INIT(ctx, cuDeviceTotalMem(&total, p->dev));
	if (ret)
		goto out_release;
	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = p->dev;
	ret = CU_INIT(ctx, cuMemGetAllocationGranularity(
				   &gran, &prop,
				   CU_MEM_ALLOC_GRANULARITY_MINIMUM));
	if (ret)
		goto out_release;
	if (!gran || KVRT_GRANULE_SIZE % gran) {
		ret = kvrt_err(ctx, -EOPNOTSUPP,
			       "cuda: VMM granularity %zu does not divide "
			       "2 MiB",
			       gran);
		goto out_release;
	}
	ctx->mem_total = total - total % KVRT_GRANULE_SIZE;
	return 0;

out_release:
	cu.cuDevicePrimaryCtxRelease(p->dev);
	ctx->priv = NULL;
out_free:
	free(p);
	return ret;
}

static void cu_fini(struct kvrt_ctx *ctx)
{
	struct cu_priv *p = ctx->priv;

	cu.cuDevicePrimaryCtxRelease(p->dev);
	free(p);
}

static int cu_va_reserve(struct kvrt_ctx *ctx, uint64_t size, uint64_t *va)
{
	CUdeviceptr ptr = 0;
	int ret = CU(ctx, cuMemAddressReserve(&ptr, size, KVRT_GRANULE_SIZE, 0,
					      0));

	if (!ret)
		*va = ptr;
	return ret;
}

static int cu_va_free(struct kvrt_ctx *ctx, uint64_t va, uint64_t size)
{
	return CU(ctx, cuMemAddressFree(va, size));
}

static int cu_mem_create(struct kvrt_ctx *ctx, uint64_t size,
			 enum kvrt_loc loc, int node, uint64_t *handle)
{
	struct cu_priv *p = ctx->priv;
	CUmemAllocationProp prop = { 0 };
	CUmemGenericAllocationHandle h;
	int ret;

	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	if (loc == KVRT_LOC_HOST_NUMA) {
		prop.location.type = CU_MEM_LOCATION_TYPE_HOST_NUMA;
		prop.location.id = node;
	} else {
		prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
		prop.location.id = p->dev;
	}
	ret = CU(ctx, cuMemCreate(&h, size, &prop, 0));
	if (!ret)
		*handle = h;
	return ret;
}

static int cu_mem_release(struct kvrt_ctx *ctx, uint64_t handle)
{
	return CU(ctx, cuMemRelease(handle));
}

static int cu_mem_map(struct kvrt_ctx *ctx, uint64_t va, uint64_t size,
		      uint64_t handle)
{
	return CU(ctx, cuMemMap(va, size, 0, handle, 0));
}

static int cu_mem_unmap(struct kvrt_ctx *ctx, uint64_t va, uint64_t size)
{
	return CU(ctx, cuMemUnmap(va, size));
}

static int cu_set_access(struct kvrt_ctx *ctx, uint64_t va, uint64_t size)
{
	struct cu_priv *p = ctx->priv;
	CUmemAccessDesc desc = { 0 };

	desc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	desc.location.id = p->dev;
	desc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	return CU(ctx, cuMemSetAccess(va, size, &desc, 1));
}

static int cu_stream_create(struct kvrt_ctx *ctx, void **stream)
{
	CUstream s;
	int ret = CU(ctx, cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));

	if (!ret)
		*stream = s;
	return ret;
}

static int cu_stream_destroy(struct kvrt_ctx *ctx, void *stream)
{
	int ret = CU(ctx, cuStreamSynchronize(stream));

	return ret ?: CU(ctx, cuStreamDestroy(stream));
}

static int cu_stream_host_fn(struct kvrt_ctx *ctx, void *stream,
			     void (*fn)(void *), void *arg)
{
	return CU(ctx, cuLaunchHostFunc(stream, fn, arg));
}

static int cu_stream_sync(struct kvrt_ctx *ctx, void *stream)
{
	return CU(ctx, cuStreamSynchronize(stream));
}

static int cu_event_create(struct kvrt_ctx *ctx, void **event)
{
	CUevent e;
	int ret = CU(ctx, cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));

	if (!ret)
		*event = e;
	return ret;
}

static int cu_event_destroy(struct kvrt_ctx *ctx, void *event)
{
	return CU(ctx, cuEventDestroy(event));
}

static int cu_event_record(struct kvrt_ctx *ctx, void *event, void *stream)
{
	return CU(ctx, cuEventRecord(event, stream));
}

static int cu_event_query(struct kvrt_ctx *ctx, void *event)
{
	return CU(ctx, cuEventQuery(event));
}

static int cu_event_sync(struct kvrt_ctx *ctx, void *event)
{
	return CU(ctx, cuEventSynchronize(event));
}

static int cu_memcpy_to(struct kvrt_ctx *ctx, uint64_t dst, const void *src,
			size_t bytes)
{
	return CU(ctx, cuMemcpyHtoD(dst, src, bytes));
}

static int cu_memcpy_from(struct kvrt_ctx *ctx, void *dst, uint64_t src,
			  size_t bytes)
{
	return CU(ctx, cuMemcpyDtoH(dst, src, bytes));
}

const struct kvrt_backend_ops kvrt_cuda_ops = {
	.name = "cuda",
	.init = cu_init,
	.fini = cu_fini,
	.va_reserve = cu_va_reserve,
	.va_free = cu_va_free,
	.mem_create = cu_mem_create,
	.mem_release = cu_mem_release,
	.mem_map = cu_mem_map,
	.mem_unmap = cu_mem_unmap,
	.set_access = cu_set_access,
	.stream_create = cu_stream_create,
	.stream_destroy = cu_stream_destroy,
	.stream_host_fn = cu_stream_host_fn,
	.stream_sync = cu_stream_sync,
	.event_create = cu_event_create,
	.event_destroy = cu_event_destroy,
	.event_record = cu_event_record,
	.event_query = cu_event_query,
	.event_sync = cu_event_sync,
	.memcpy_to = cu_memcpy_to,
	.memcpy_from = cu_memcpy_from,
};
