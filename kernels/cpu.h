/* SPDX-License-Identifier: MIT */
/*
 * cpu.h - what the x86 CPU and its OS let the host kernels run, found once
 * with cpuid and xgetbv (clang's __builtin_cpu_supports() knows no "f16c").
 * Both answer false off x86-64.
 */
#ifndef KVK_CPU_H
#define KVK_CPU_H

#include <stdbool.h>

bool kvk_cpu_f16c(void);
bool kvk_cpu_avx2_fma(void);

#endif /* KVK_CPU_H */
