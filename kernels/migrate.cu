// SPDX-License-Identifier: MIT
/*
 * migrate.cu - the migration rewrite on the GPU: one thread per move, the
 * same result as kvk_migrate_rewrite_cpu() (migrate.h says why no two
 * threads write the same word).
 */
#include <cuda_runtime.h>
#include <errno.h>

#include "kvk_cuda.cuh"
#include "migrate.h"

#define KVK_MIGRATE_THREADS 256

__global__ void kvk_migrate_rewrite_kernel(struct kvk_migrate_args a)
{
	const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;

	if (i >= a.n)
		return;
	const uint32_t s = a.src[i], d = a.dst[i];
	const uint32_t l = a.list[i], p = a.pos[i];

	/* out-of-range ids are skipped: the planner never makes them */
	if (s >= a.nr_pages || d >= a.nr_pages || l >= a.nr_lists ||
	    p >= a.width)
		return;
	a.table[(size_t)l * a.width + p] = d;
	a.page_list[d] = l;
	a.page_pos[d] = p;
	if (a.src_leaves[i]) {
		a.page_list[s] = a.src_owner;
		a.page_pos[s] = KVK_MIGRATE_POS_NONE;
	}
}

/**
 * kvk_migrate_rewrite_cuda() - kvk_migrate_rewrite_cpu() on the device
 * @a: batch; every array a device address
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * Ids cannot be range-checked on the host (device arrays): a move with one
 * out of range is skipped by its thread instead of refused.
 *
 * Return: 0; -EINVAL from kvk_migrate_check(); the launch error.
 */
extern "C" int kvk_migrate_rewrite_cuda(const struct kvk_migrate_args *a,
					void *stream)
{
	int ret = kvk_migrate_check(a);

	if (ret)
		return ret;
	if (!a->n)
		return 0;
	kvk_migrate_rewrite_kernel<<<(a->n + KVK_MIGRATE_THREADS - 1) /
					     KVK_MIGRATE_THREADS,
				     KVK_MIGRATE_THREADS, 0,
				     (cudaStream_t)stream>>>(*a);
	return kvk_cuda_errno(cudaGetLastError());
}
