/* SPDX-License-Identifier: MIT */
/*
 * kvk_cudart.h - cudaError_t -> errno, the one mapping, for C and CUDA
 * files of every module that call the CUDA runtime.
 */
#ifndef KVK_CUDART_H
#define KVK_CUDART_H

#include <cuda_runtime.h>
#include <errno.h>

static inline int kvk_cuda_errno(cudaError_t e)
{
	switch (e) {
	case cudaSuccess:
		return 0;
	case cudaErrorMemoryAllocation:
		return -ENOMEM;
	case cudaErrorInvalidValue:
	case cudaErrorInvalidConfiguration:
	case cudaErrorInvalidResourceHandle:
		return -EINVAL;
	case cudaErrorNoDevice:
	case cudaErrorInsufficientDriver:
	case cudaErrorInitializationError:
	case cudaErrorNoKernelImageForDevice:
		return -ENODEV;
	case cudaErrorInvalidDevicePointer:
	case cudaErrorIllegalAddress:
		return -EFAULT;
	default:
		return -EIO;
	}
}

/*
 * Every time the host drains a stream (waits for all of its work), across
 * every module: the figure `kvmm bench decode` reports per step.
 */
extern unsigned long kvk_host_syncs;

static inline int kvk_cuda_drain(void *stream)
{
	__atomic_add_fetch(&kvk_host_syncs, 1, __ATOMIC_RELAXED);
	return kvk_cuda_errno(cudaStreamSynchronize((cudaStream_t)stream));
}

#endif /* KVK_CUDART_H */
