// SPDX-License-Identifier: MIT
/*
 * qdot_avx2.c - the dot products of qdot.h for AVX2 + FMA + F16C
 * (qdot_x86.h compiled for that target). Called only after
 * kvk_qdot_isa_ok(KVK_ISA_AVX2).
 */
#include "qdot_int.h"

#if defined(__x86_64__)
#define QD_T __attribute__((target("avx2,fma,f16c")))
#define QD_VNNI 0
#define QD_TAB qdot_tab_avx2
#define QD_QUANT qdot_quant_avx2
#include "qdot_x86.h"
#endif
