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

#endif /* KVK_CUDART_H */
