/* SPDX-License-Identifier: MIT */
/*
 * kvtest.h - shared by every Check suite.
 *
 * Each tests/check_<module>.c defines suite_<module>(); a file whose name
 * ends in _gpu holds a GPU suite, which the runner skips (counted as
 * skipped) when no CUDA device answers. Tests are added with KV_ADD() so the
 * runner knows every test's name, also for the ones it skips.
 */
#ifndef KVTEST_H
#define KVTEST_H

#include <check.h>
#include <stdint.h>

struct kvtest_entry {
	const char *suite;
	const char *name;
};

void kvtest_note(const char *name);

/* tcase_add_test() that also records the test for skip accounting */
#define KV_ADD(tc, fn)                                                         \
	do {                                                                   \
		kvtest_note(#fn);                                              \
		tcase_add_test(tc, fn);                                        \
	} while (0)

#define KV_ADD_LOOP(tc, fn, lo, hi)                                            \
	do {                                                                   \
		for (int __i = (lo); __i < (hi); __i++)                        \
			kvtest_note(#fn);                                      \
		tcase_add_loop_test(tc, fn, lo, hi);                           \
	} while (0)

/*
 * kvtest_seed() - the seed for this test's random inputs: KVMM_SEED from the
 * environment, else fresh from the clock. It is printed, so a failure
 * replays with KVMM_SEED=<seed>.
 */
uint64_t kvtest_seed(const char *test);

/* xorshift64* generator, for inputs that replay from a printed seed */
static inline uint64_t kvtest_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

/*
 * kvtest_skip() - report the running test as skipped, with the reason
 * (a missing model file, say). The test must return right after. The
 * runner counts it as skipped, not passed.
 */
void kvtest_skip(const char *test, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* number of open file descriptors of this process */
int kvtest_open_fds(void);

#endif /* KVTEST_H */
