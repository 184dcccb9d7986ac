// SPDX-License-Identifier: MIT
/* placeholder replaced below */
#include "kvmm.h"

int cmd_bench_swap(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return 1;
}
