// SPDX-License-Identifier: MIT
/*
 * progress.c - the one progress line of the kvmm tool's long runs (eval
 * ppl, needle and sweep, long benchmarks): done/total units, the rate and
 * the time left, redrawn in place on stderr at most five times a second.
 *
 * Nothing is printed when stderr is not a terminal or the command writes
 * --json, so logs and pipes stay clean.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kvmm.h"

#define PROGRESS_EVERY_US 200000.0

/**
 * kvmm_progress_start() - begin a progress line
 * @p: the line's state
 * @label: what is counted, e.g. "eval ppl"
 * @unit: the unit of @total, e.g. "tokens"
 * @total: units of the whole run, 0 when unknown
 * @quiet: print nothing (--json)
 *
 * The line is shown only when stderr is a terminal and @quiet is false.
 */
void kvmm_progress_start(struct kvmm_progress *p, const char *label,
			 const char *unit, uint64_t total, bool quiet)
{
	memset(p, 0, sizeof(*p));
	p->label = label;
	p->unit = unit;
	p->total = total;
	p->on = !quiet && isatty(STDERR_FILENO);
	p->t0_us = kvmm_now_us();
	p->last_us = 0;
}

/**
 * kvmm_progress_format() - the text of the line, without redrawing
 * @p: the line's state
 * @now_us: the time, kvmm_now_us()
 * @buf: out
 * @len: bytes of @buf
 *
 * "label: done/total unit, R unit/s, ETA Ns" (no ETA before a rate is
 * known or without a total).
 *
 * Return: characters written, as snprintf().
 */
int kvmm_progress_format(const struct kvmm_progress *p, double now_us,
			 char *buf, size_t len)
{
	double s = (now_us - p->t0_us) / 1e6;
	double rate = s > 0 ? (double)p->done / s : 0;
	int n;

	if (p->total)
		n = snprintf(buf, len, "%s: %llu/%llu %s", p->label,
			     (unsigned long long)p->done,
			     (unsigned long long)p->total, p->unit);
	else
		n = snprintf(buf, len, "%s: %llu %s", p->label,
			     (unsigned long long)p->done, p->unit);
	if (n < 0 || (size_t)n >= len || rate <= 0)
		return n;
	n += snprintf(buf + n, len - n, ", %.1f %s/s", rate, p->unit);
	if ((size_t)n < len && p->total && p->done <= p->total)
		n += snprintf(buf + n, len - n, ", ETA %.0fs",
			      (double)(p->total - p->done) / rate);
	return n;
}

/**
 * kvmm_progress_add() - count @n more units done and redraw when due
 * @p: the line's state
 * @n: units just finished
 */
void kvmm_progress_add(struct kvmm_progress *p, uint64_t n)
{
	char line[160];
	double now;

	p->done += n;
	if (!p->on)
		return;
	now = kvmm_now_us();
	if (p->last_us && now - p->last_us < PROGRESS_EVERY_US &&
	    p->done != p->total)
		return;
	p->last_us = now;
	kvmm_progress_format(p, now, line, sizeof(line));
	/* \033[K: clear what a longer earlier line left */
	fprintf(stderr, "\r  %s\033[K", line);
	fflush(stderr);
	p->drawn = true;
}

/**
 * kvmm_progress_clear() - erase the line before other output; the next
 * kvmm_progress_add() draws it again
 * @p: the line's state
 */
void kvmm_progress_clear(struct kvmm_progress *p)
{
	if (p->on && p->drawn) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	p->drawn = false;
	p->last_us = 0;
}

/**
 * kvmm_progress_end() - erase the line, leaving the terminal as it was;
 * nothing is drawn after
 * @p: the line's state
 */
void kvmm_progress_end(struct kvmm_progress *p)
{
	kvmm_progress_clear(p);
	p->on = false;
}
