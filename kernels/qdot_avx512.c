// SPDX-License-Identifier: MIT
/*
 * qdot_avx512.c - the dot products of qdot.h for AVX-512 with VNNI
 * (AVX512F/BW/VL + AVX512_VNNI: vpdpbusd on 256-bit vectors, byte masks,
 * 32 vector registers; qdot_x86.h compiled for that target). Called only
 * after kvk_qdot_isa_ok(KVK_ISA_AVX512).
 */
#include "qdot_int.h"

#if defined(__x86_64__)
#define QD_T                                                                 \
	__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,"    \
			      "avx512vnni")))
#define QD_VNNI 1
#define QD_TAB qdot_tab_avx512
#define QD_PTAB qdot_ptab_avx512
#define QD_QUANT qdot_quant_avx512
#include "qdot_x86.h"
#endif
