// SPDX-License-Identifier: MIT
/*
 * runner.c - the one Check runner for every kvmm suite.
 *
 *   kvmm-check [--cpu | --gpu | --all] [--tap FILE] [--xml FILE] [SUITE...]
 *
 * --cpu (the default) runs the CPU suites, --gpu the GPU suites (files named
 * check_*_gpu.c). Without a CUDA device each GPU test is reported as skipped
 * with the reason, never as passed. The last line is
 * "Checks: N passed, N failed, N skipped".
 *
 * Tests run in fork mode; CK_FORK=no in the environment runs them in-process
 * (for gdb and valgrind).
 */
#include <dirent.h>
#include <getopt.h>
#include <limits.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvtest.h"
#include "kvrt.h"

#define KVMM_SUITE(name) Suite *suite_##name(void);
#include "suites.h"
#undef KVMM_SUITE

struct suite_def {
	const char *name;
	Suite *(*make)(void);
	int gpu;
};

#define KVMM_SUITE(name) { #name, suite_##name, 0 },
static struct suite_def suites[] = {
#include "suites.h"
};
#undef KVMM_SUITE

static const char *cur_suite;
static struct kvtest_entry notes[4096];
static int nr_notes;

void kvtest_note(const char *name)
{
	if (nr_notes < (int)ARRAY_SIZE(notes))
		notes[nr_notes++] = (struct kvtest_entry){ cur_suite, name };
}

uint64_t kvtest_seed(const char *test)
{
	const char *env = getenv("KVMM_SEED");
	struct timespec ts;
	uint64_t seed;

	if (env && *env) {
		seed = strtoull(env, NULL, 0);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (uint64_t)ts.tv_sec * 1000000007ULL ^ ts.tv_nsec;
	}
	if (!seed)
		seed = 0x9e3779b97f4a7c15ULL;
	printf("# %s: seed %" PRIu64 " (replay with KVMM_SEED=%" PRIu64 ")\n",
	       test, seed, seed);
	fflush(stdout);
	return seed;
}

void kvtest_skip(const char *test, const char *fmt, ...)
{
	const char *path = getenv("KVTEST_SKIP_FILE");
	char why[512];
	va_list ap;
	FILE *f;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	printf("SKIP: %s: %s\n", test, why);
	fflush(stdout);
	f = path ? fopen(path, "a") : NULL;
	if (f) {
		fprintf(f, "%s: %s\n", test, why);
		fclose(f);
	}
}

static int count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	int n = 0, c;

	if (!f)
		return 0;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

int kvtest_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

/*
 * Probe for a device in a child process: CUDA cannot be used in a child
 * forked after the parent initialised it, and Check forks every test.
 */
static int probe_gpu(char *why, size_t len)
{
	int fds[2], status = 0;
	ssize_t n;
	pid_t pid;

	if (pipe(fds))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		char buf[256] = "";
		int ret = kvrt_cuda_probe(buf, sizeof(buf));

		close(fds[0]);
		if (write(fds[1], buf, strlen(buf)) < 0)
			_exit(3);
		_exit(ret ? 1 : 0);
	}
	close(fds[1]);
	n = read(fds[0], why, len - 1);
	why[n > 0 ? n : 0] = '\0';
	close(fds[0]);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ENODEV;
}

static int is_gpu_suite(const char *name)
{
	size_t n = strlen(name);

	return n > 4 && !strcmp(name + n - 4, "_gpu");
}

static int wanted(const char *name, char **only, int nr_only)
{
	if (!nr_only)
		return 1;
	for (int i = 0; i < nr_only; i++)
		if (!strcmp(only[i], name))
			return 1;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: kvmm-check [--cpu|--gpu|--all] [--tap FILE] "
		   "[--xml FILE] [--list] [SUITE...]\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cpu", no_argument, NULL, 'c' },
		{ "gpu", no_argument, NULL, 'g' },
		{ "all", no_argument, NULL, 'a' },
		{ "tap", required_argument, NULL, 't' },
		{ "xml", required_argument, NULL, 'x' },
		{ "list", no_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int want_cpu = 1, want_gpu = 0, list = 0, c;
	const char *tap = NULL, *xml = NULL;
	char why[256] = "";
	int have_gpu, run = 0, failed = 0, skipped = 0, added = 0;
	SRunner *sr = NULL, *unrun = NULL; /* unrun: listed or skipped */
	FILE *skip_tap = NULL;	/* skip lines, in memory until a file is chosen */
	char *skip_buf = NULL;
	size_t skip_len = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			want_cpu = 1, want_gpu = 0;
			break;
		case 'g':
			want_cpu = 0, want_gpu = 1;
			break;
		case 'a':
			want_cpu = want_gpu = 1;
			break;
		case 't':
			tap = optarg;
			break;
		case 'x':
			xml = optarg;
			break;
		case 'l':
			list = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	for (int i = optind; i < argc; i++) {
		int found = 0;

		for (size_t s = 0; s < ARRAY_SIZE(suites); s++)
			found |= !strcmp(suites[s].name, argv[i]);
		if (!found) {
			fprintf(stderr, "kvmm-check: no suite named '%s'\n",
				argv[i]);
			return 2;
		}
	}

	have_gpu = want_gpu ? probe_gpu(why, sizeof(why)) == 0 : 0;
	for (size_t s = 0; s < ARRAY_SIZE(suites); s++) {
		struct suite_def *d = &suites[s];
		int first = nr_notes;
		Suite *su;

		d->gpu = is_gpu_suite(d->name);
		if (!wanted(d->name, argv + optind, argc - optind))
			continue;
		if (d->gpu ? !want_gpu : !want_cpu)
			continue;
		cur_suite = d->name;
		su = d->make();
		if (list) {
			for (int i = first; i < nr_notes; i++)
				printf("%s%s: %s\n", d->name,
				       d->gpu ? " (gpu)" : "", notes[i].name);
			unrun = unrun ? (srunner_add_suite(unrun, su), unrun) :
					srunner_create(su);
			continue;
		}
		if (d->gpu && !have_gpu) {
			for (int i = first; i < nr_notes; i++) {
				printf("SKIP: %s: %s: no CUDA device (%s)\n",
				       d->name, notes[i].name, why);
				if (tap && !skip_tap)
					skip_tap = open_memstream(&skip_buf,
								  &skip_len);
				if (skip_tap)
					fprintf(skip_tap,
						"ok %d - %s:%s # SKIP no CUDA "
						"device (%s)\n",
						++skipped, d->name,
						notes[i].name, why);
				else
					skipped++;
			}
			unrun = unrun ? (srunner_add_suite(unrun, su), unrun) :
					srunner_create(su);
			continue;
		}
		if (!sr)
			sr = srunner_create(su);
		else
			srunner_add_suite(sr, su);
		added++;
	}
	if (unrun)
		srunner_free(unrun);
	if (list)
		return 0;
	if (skip_tap) {
		/*
		 * Alone, the skips are the TAP log; beside suites that run,
		 * Check writes the log and the skips go to <tap>.skipped.
		 */
		char path[PATH_MAX];
		FILE *f;

		fclose(skip_tap);
		snprintf(path, sizeof(path), "%s%s", tap, sr ? ".skipped" : "");
		f = fopen(path, "w");
		if (f) {
			fprintf(f, "# skipped\n%s1..%d\n", skip_buf, skipped);
			fclose(f);
		}
		free(skip_buf);
	}
	if (sr) {
		char skip_file[] = "/tmp/kvmm-check-skips-XXXXXX";
		int fd = mkstemp(skip_file), in_test_skips;

		if (fd >= 0) {
			close(fd);
			setenv("KVTEST_SKIP_FILE", skip_file, 1);
		}
		if (tap)
			srunner_set_tap(sr, tap);
		if (xml)
			srunner_set_xml(sr, xml);
		srunner_run_all(sr, CK_NORMAL);
		run = srunner_ntests_run(sr);
		failed = srunner_ntests_failed(sr);
		srunner_free(sr);
		/* tests that called kvtest_skip() passed in Check's eyes */
		in_test_skips = fd >= 0 ? count_lines(skip_file) : 0;
		if (fd >= 0)
			unlink(skip_file);
		run -= in_test_skips;
		skipped += in_test_skips;
	}
	printf("Checks: %d passed, %d failed, %d skipped\n", run - failed,
	       failed, skipped);
	if (!added && !skipped) {
		fprintf(stderr, "kvmm-check: no suite selected\n");
		return 2;
	}
	return failed ? 1 : 0;
}
