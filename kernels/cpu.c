// SPDX-License-Identifier: MIT
/*
 * cpu.c - x86 features for the host kernels' run-time dispatch (cpu.h).
 */
#include <stdint.h>

#include "cpu.h"

#if defined(__x86_64__)
#include <cpuid.h>

/* the OS saves the SSE and AVX state (XCR0 bits 1 and 2) */
static bool os_avx(void)
{
	uint32_t lo, hi;

	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (lo & 6) == 6;
}

/* @v: -1 unknown, else the cached answer of @probe */
static bool cached(int *v, bool (*probe)(void))
{
	int x = __atomic_load_n(v, __ATOMIC_RELAXED);

	if (x < 0) {
		x = probe();
		__atomic_store_n(v, x, __ATOMIC_RELAXED);
	}
	return x;
}

/* F16C, AVX and OSXSAVE: cpuid leaf 1, ECX bits 29, 28, 27 */
static bool probe_f16c(void)
{
	unsigned int a, b, c, d;

	return __get_cpuid(1, &a, &b, &c, &d) && (c >> 27 & 7) == 7 &&
	       os_avx();
}

/* FMA, AVX and OSXSAVE (leaf 1: ECX bits 12, 27, 28), AVX2 (leaf 7: EBX 5) */
static bool probe_avx2_fma(void)
{
	unsigned int a, b, c, d;

	return __get_cpuid(1, &a, &b, &c, &d) && (c >> 12 & 1) &&
	       (c >> 27 & 3) == 3 && os_avx() &&
	       __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b >> 5 & 1);
}

/**
 * kvk_cpu_f16c() - whether fp16 <-> fp32 conversions (F16C) may run
 *
 * Return: true with F16C and AVX on a CPU whose OS saves the AVX state.
 */
bool kvk_cpu_f16c(void)
{
	static int v = -1;

	return cached(&v, probe_f16c);
}

/**
 * kvk_cpu_avx2_fma() - whether AVX2 and FMA code may run
 *
 * Return: true with AVX2, FMA and AVX on a CPU whose OS saves the AVX
 * state.
 */
bool kvk_cpu_avx2_fma(void)
{
	static int v = -1;

	return cached(&v, probe_avx2_fma);
}

#else

bool kvk_cpu_f16c(void)
{
	return false;
}

bool kvk_cpu_avx2_fma(void)
{
	return false;
}

#endif
