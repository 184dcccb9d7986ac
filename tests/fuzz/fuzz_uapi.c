// SPDX-License-Identifier: MIT
/*
 * fuzz_uapi.c - libFuzzer harness of the kvmm uapi (kvshim_ioctl()).
 *
 * DOC: what one input is
 *
 * An input is a program: a sequence of operations decoded byte by byte
 * (open a handle, close one, one ioctl with structured but hostile
 * arguments, one ioctl with a raw command number and raw bytes, arm a
 * fault: the nth runtime call of a space, or the allocator step of the
 * next admission, or the nth chunk write of the next swap-out (an error or
 * a write cut short), or play the data-plane kernels: raise some token counts
 * of a slot through the SPACE_MAP mapping, within its pages). STEP_SUBMIT
 * gets up to four generated ops (APPEND, TRIM, EVICT, SHRINK) with their
 * slot arrays, at one fixed place in the arena. SWAP_SETUP names a
 * directory the harness owns ($TMPDIR or /tmp), one that is not there, or
 * none; SEQ_SWAP_OUT mostly a decoding slot of a space the harness gave a
 * swap file (it makes one, outside the checked calls), SEQ_SWAP_IN mostly
 * the space's last handle. Arguments live in a fuzzer-owned arena, at any
 * alignment; the user pointers inside them point into the arena or are
 * NULL, with counts that may exceed what the space allows (the driver must
 * refuse those before it reads). A real kernel would fail an unmapped
 * pointer with -EFAULT; an in-process driver cannot tell, so the harness
 * only hands out pointers to arrays that fit in the arena.
 *
 * After every ioctl, for every space the harness knows of (several
 * handles, several spaces each):
 *
 * - kvshim_check() (the allocator's kva_check()) passes;
 * - STATS adds up: used + free pages = pages in mapped granules;
 * - when the call failed, or only reads (VERSION, STATS,
 *   PAGE_TABLE_INFO), every space's STATS (with per-head figures),
 *   PAGE_TABLE_INFO and kvshim_digest() are what they were before, and the
 *   arena (everything the caller can see) is byte for byte unchanged;
 * - when it succeeded, every space but the one it named is unchanged.
 *
 * Any violation prints what broke and aborts. At exit the harness prints
 * the number of ioctls it made (FUZZ_STATS=path also writes them there),
 * and every million on the way; FUZZ_IOCTLS=n stops it after the input
 * that reaches n ioctls (leak check, report, exit status 0).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sanitizer/lsan_interface.h>

#include "kvshim.h"

#define MB2 (2ULL << 20)
#define MAX_FDS 3
#define MAX_SPACES 6
#define MAX_HEADS 64		/* nr_layers * nr_kv_heads, at most */
#define ARENA_SIZE 22528
/* where each kind of argument may start, and the largest it can be */
#define ARG_AREA 0		/* structures: 4096 starts + 256 */
#define SEQ_AREA 4608		/* kvmm_seq[64]: 4096 starts + 1024 */
#define SEQ_SPAN 4096
#define SLOT_AREA 9856		/* __u32[64]: 1024 starts + 256 */
#define SLOT_SPAN 1024
#define HEAD_AREA 11264		/* kvmm_head_stats[64]: 2048 + 2048 */
#define HEAD_SPAN 2048
#define OPS_AREA 16384		/* kvmm_step_op[17]: at one fixed place */
#define OPS_SIZE 1024
#define STEP_AREA 17408		/* kvmm_step_slot[18] per op, 4 ops:
				 * 256 starts + 288 each */
#define STEP_STRIDE 640
#define STEP_SPAN 256
#define INFO_AREA (STEP_AREA + 4 * STEP_STRIDE) /* kvmm_seq_info[18]:
						  * 1024 starts + 720 */
#define INFO_SPAN 1024

struct in {
	const uint8_t *p;
	size_t n;
};

/* everything userspace can see of a space */
struct snap {
	uint64_t digest;
	struct kvmm_stats st;
	struct kvmm_head_stats h[MAX_HEADS];
	struct kvmm_page_table_info pti;
};

struct space {
	int fd;
	uint32_t id;
	uint32_t nr_heads;
	uint32_t max_seqs;
	uint64_t handle;	/* its last SEQ_SWAP_OUT's, or 0 */
	struct snap snap;
};

static int fds[MAX_FDS];
static int nr_fds;
static struct space spaces[MAX_SPACES];
static int nr_spaces;
static unsigned char arena[ARENA_SIZE] __attribute__((aligned(64)));
static unsigned char arena_before[ARENA_SIZE];
static struct snap now;

static unsigned long long nr_ioctls, nr_failed, nr_inputs, nr_faults;
static unsigned long long nr_mutated;
static unsigned long long max_ioctls, next_progress = 1000000;
static unsigned long long nr_ok[32];
static unsigned long long nr_kernel;
static unsigned long long nr_cap_refused, nr_va_max;
static uint64_t ops_ptr;	/* where the last STEP_SUBMIT's ops are */

static uint8_t rd8(struct in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static uint16_t rd16(struct in *in)
{
	return rd8(in) | (uint16_t)rd8(in) << 8;
}

static uint32_t rd32(struct in *in)
{
	return rd16(in) | (uint32_t)rd16(in) << 16;
}

static uint64_t rd64(struct in *in)
{
	return rd32(in) | (uint64_t)rd32(in) << 32;
}

#define violation(...)                                                         \
	do {                                                                   \
		fprintf(stderr, "fuzz_uapi: VIOLATION: " __VA_ARGS__);        \
		fputc('\n', stderr);                                           \
		abort();                                                       \
	} while (0)

static void take(const struct space *s, struct snap *out)
{
	char why[256] = "";
	int ret;

	memset(out, 0, sizeof(*out));
	out->st.space = s->id;
	out->st.heads = (uint64_t)(uintptr_t)out->h;
	out->st.nr_heads = s->nr_heads;
	ret = kvshim_ioctl(s->fd, KVMM_IOC_STATS, &out->st);
	if (ret)
		violation("STATS of space %u on fd %d: %d", s->id, s->fd, ret);
	out->st.heads = 0;
	out->pti.space = s->id;
	ret = kvshim_ioctl(s->fd, KVMM_IOC_PAGE_TABLE_INFO, &out->pti);
	if (ret)
		violation("PAGE_TABLE_INFO of space %u: %d", s->id, ret);
	ret = kvshim_digest(s->fd, s->id, &out->digest);
	if (ret)
		violation("digest of space %u: %d", s->id, ret);
	ret = kvshim_check(s->fd, s->id, why, sizeof(why));
	if (ret)
		violation("kva_check of space %u: %d %s", s->id, ret, why);
	if (out->st.pages_used[0] + out->st.pages_used[1] +
		    out->st.pages_free != out->st.pages_total)
		violation("space %u: used %llu + %llu + free %llu != %llu",
			  s->id, (unsigned long long)out->st.pages_used[0],
			  (unsigned long long)out->st.pages_used[1],
			  (unsigned long long)out->st.pages_free,
			  (unsigned long long)out->st.pages_total);
}

static int space_index(int fd, uint32_t id)
{
	for (int i = 0; i < nr_spaces; i++)
		if (spaces[i].fd == fd && spaces[i].id == id)
			return i;
	return -1;
}

static void space_forget(int i)
{
	spaces[i] = spaces[--nr_spaces];
}

/*
 * After a call: every space still valid; unchanged unless it is @changed
 * (the index of the space a successful mutating call named, or -1).
 */
static void check_all(int changed, const char *what, int ret)
{
	for (int i = 0; i < nr_spaces; i++) {
		take(&spaces[i], &now);
		if (i != changed && memcmp(&now, &spaces[i].snap, sizeof(now)))
			violation("%s returned %d and changed space %u "
				  "(fd %d)%s",
				  what, ret, spaces[i].id, spaces[i].fd,
				  now.digest != spaces[i].snap.digest ?
					  ": digest differs" : "");
		spaces[i].snap = now;
	}
}

static int pick_fd(struct in *in)
{
	uint8_t c = rd8(in);

	if (c < 240 && nr_fds)
		return fds[c % nr_fds];
	switch (c & 3) {
	case 0:
		return -1;
	case 1:
		return KVSHIM_MAX_FILES;
	case 2:
		return c;	/* most likely not open */
	default:
		return nr_fds ? fds[0] + 1 : 0;
	}
}

static uint32_t pick_space(struct in *in, int fd)
{
	uint8_t c = rd8(in);

	if (c < 200 && nr_spaces) {
		/* mostly one of fd's own, sometimes another handle's */
		for (int k = 0; c < 160 && k < nr_spaces; k++) {
			const struct space *s = &spaces[(c + k) % nr_spaces];

			if (s->fd == fd)
				return s->id;
		}
		return spaces[c % nr_spaces].id;
	}
	switch (c & 3) {
	case 0:
		return 0;
	case 1:
		return UINT32_MAX;
	case 2:
		return nr_spaces ? spaces[0].id + 1 : 1;
	default:
		return rd32(in);
	}
}

static uint32_t hostile32(struct in *in, uint32_t sane)
{
	static const uint32_t vals[] = { 0, 1, 2, 3, 7, 64, 255, 256,
					 65535, 1U << 31, UINT32_MAX,
					 UINT32_MAX - 1 };
	uint8_t c = rd8(in);

	if (c < 232)
		return sane;
	if (c < 250)
		return vals[c % (sizeof(vals) / sizeof(vals[0]))];
	return rd32(in);
}

/* flip one byte of the structure now and then: pads, reserved, flags */
static void maybe_corrupt(struct in *in, void *k, size_t size)
{
	uint8_t c = rd8(in);

	if (c < 240)
		return;
	((unsigned char *)k)[rd16(in) % size] ^= (uint8_t)(1 + rd8(in));
}

/* NULL, or anywhere an array of the largest valid count still fits */
static uint64_t user_ptr(struct in *in, size_t area, size_t span)
{
	uint8_t c = rd8(in);

	if (c >= 248)
		return 0;
	if (c < 128)
		return (uint64_t)(uintptr_t)arena + area;
	return (uint64_t)(uintptr_t)arena + area + rd16(in) % span;
}

static const struct kvmm_tier good_tiers[] = {
	{ 16, 16, 1, 1 }, { 8, 8, 1, 1 }, { 8, 4, 1, 2 }, { 4, 2, 1, 1 },
	{ 4, 4, 2, 2 },	  { 2, 2, 4, 4 }, { 1, 1, 1, 1 }, { 2, 1, 2, 1 },
};

/*
 * The fewest sequences that make @c cost more than KVSHIM_MAX_SPACE_BYTES
 * (kvshim_space_cost()), or 0 when none in range does.
 */
static uint32_t seqs_over_cap(struct kvmm_space_create c)
{
	uint64_t lo = 1, hi = UINT32_MAX / 2 / c.nr_layers / c.nr_kv_heads;
	uint64_t host, dev;

	c.max_seqs = hi;
	if (kvshim_space_cost(&c, &host, &dev) ||
	    (host <= KVSHIM_MAX_SPACE_BYTES && dev <= KVSHIM_MAX_SPACE_BYTES))
		return 0;
	while (lo < hi) {
		c.max_seqs = (lo + hi) / 2;
		if (kvshim_space_cost(&c, &host, &dev))
			return 0;
		if (host > KVSHIM_MAX_SPACE_BYTES ||
		    dev > KVSHIM_MAX_SPACE_BYTES)
			hi = c.max_seqs;
		else
			lo = c.max_seqs + 1;
	}
	return lo;
}

/* set when the generator made a SPACE_CREATE over the cost cap */
static int create_over_cap;

static void gen_create(struct in *in, struct kvmm_space_create *c)
{
	static const uint32_t dims[] = { 64, 80, 96, 128, 256, 128, 64, 100 };
	uint64_t lists, va_g, host = 0, dev = 0;
	uint32_t over;

	c->backend = rd8(in) >= 240 ? KVMM_BACKEND_DEVICE : KVMM_BACKEND_HOST;
	c->backend = hostile32(in, c->backend);
	c->nr_layers = hostile32(in, 1 + rd8(in) % 4);
	c->nr_kv_heads = hostile32(in, 1 + rd8(in) % 4);
	c->head_dim = hostile32(in, dims[rd8(in) % 8]);
	c->nr_tiers = hostile32(in, 1 + rd8(in) % 2);
	c->tiers[0] = good_tiers[rd8(in) % 8];
	if (c->nr_tiers == 2)
		c->tiers[1] = good_tiers[rd8(in) % 8];
	c->max_seqs = hostile32(in, 1 + rd8(in) % 16);
	c->max_tokens = hostile32(in, 1 + rd16(in) % 1024);
	/* one in eight at the VA's bound, or a granule under: a budget of
	 * up to 8 granules in it costs what it costs in 16 MiB of VA */
	va_g = rd8(in);
	va_g = va_g < 224 ? 1 + va_g % 8 :
			    KVSHIM_MAX_VA_BYTES / MB2 - (va_g & 1);
	c->va_bytes = va_g * MB2;
	c->budget_bytes = (1 + rd8(in) % (va_g < 8 ? va_g : 8)) * MB2;
	switch (rd8(in)) {
	case 250:
		c->va_bytes += 4096;
		break;
	case 251:
		c->budget_bytes = c->va_bytes + MB2;
		break;
	case 252:
		c->va_bytes = KVSHIM_MAX_VA_BYTES + MB2;
		break;
	case 253:
		c->budget_bytes = 0;
		break;
	case 254:
		c->va_bytes = rd64(in);
		break;
	case 255:
		c->max_tokens = KVSHIM_MAX_TOKENS + 1;
		break;
	case 246:	/* the VA's bound, or one granule under: cheap now */
		c->va_bytes = KVSHIM_MAX_VA_BYTES - (rd8(in) & 1) * MB2;
		break;
	case 247:	/* the most tokens, in the most VA */
		c->max_tokens = KVSHIM_MAX_TOKENS;
		c->va_bytes = KVSHIM_MAX_VA_BYTES;
		break;
	case 248:	/* just over the cost cap: the fewest sequences */
	case 249:
		c->max_tokens = KVSHIM_MAX_TOKENS;
		c->va_bytes = KVSHIM_MAX_VA_BYTES;
		over = c->nr_layers && c->nr_kv_heads ? seqs_over_cap(*c) : 0;
		if (over)
			c->max_seqs = over;
		break;
	}
	maybe_corrupt(in, c, sizeof(*c));

	/*
	 * Keep what could be created small: the harness snapshots every
	 * space after every call. The VA is cheap (the arrays follow the
	 * budget): any up to the bound is kept. A valid request for much
	 * memory becomes one just over the driver's bounds, which it must
	 * refuse: over the cost cap when a sequence count gets it there,
	 * else over the token bound.
	 */
	lists = (uint64_t)c->max_seqs * c->nr_layers * c->nr_kv_heads;
	create_over_cap = !kvshim_space_cost(c, &host, &dev) &&
			  (host > KVSHIM_MAX_SPACE_BYTES ||
			   dev > KVSHIM_MAX_SPACE_BYTES);
	if ((lists > 64 || c->nr_layers * (uint64_t)c->nr_kv_heads >
				   MAX_HEADS ||
	     lists * c->max_tokens > (1ULL << 18) ||
	     c->budget_bytes > 16 * MB2) &&
	    !create_over_cap && !kvshim_space_cost(c, &host, &dev)) {
		over = seqs_over_cap(*c);
		if (over && rd8(in) < 128) {
			c->max_seqs = over;
			create_over_cap = 1;
		} else {
			c->max_tokens = KVSHIM_MAX_TOKENS + 1;
		}
	}
	if (nr_spaces == MAX_SPACES)
		c->reserved[rd8(in) % 4] |= 1;
}

static void gen_seqs(struct in *in, uint64_t ptr, uint32_t count)
{
	unsigned char *at = (unsigned char *)(uintptr_t)ptr;

	for (uint32_t i = 0; at && i < count && i < 64; i++) {
		struct kvmm_seq q = { 0 };
		uint8_t c = rd8(in);

		q.tokens = c < 200 ? rd16(in) % 300 :
			   c < 250 ? rd16(in) : rd32(in);
		q.slot = rd8(in) >= 248 ? rd32(in) : 0;
		if (rd8(in) >= 252)
			q.reserved = 1ULL << (rd8(in) % 64);
		memcpy(at + i * sizeof(q), &q, sizeof(q));
	}
}

/* a release array: mostly slots in range, repeats and free ones included */
static void gen_slots(struct in *in, uint64_t ptr, uint32_t count,
		      uint32_t max)
{
	unsigned char *at = (unsigned char *)(uintptr_t)ptr;

	for (uint32_t i = 0; at && i < count && i < 64; i++) {
		uint8_t c = rd8(in);
		uint32_t v = c < 240 ? c % (max + 2) : rd32(in);

		memcpy(at + i * 4, &v, 4);
	}
}

/*
 * A step: up to 4 generated ops (more are zero, refused as op 0) at one
 * fixed place, each with its own slot array; mostly valid ops and slots
 * in range, the arguments EVICT takes, now and then a hostile field.
 */
static void gen_step(struct in *in, struct kvmm_step_submit *s, uint32_t sp,
		     uint32_t max)
{
	uint8_t c = rd8(in);
	uint32_t n = c < 240 ? c % 5 : c < 250 ? KVMM_STEP_MAX_OPS : rd32(in);

	s->space = sp;
	s->nr_ops = n;
	s->ops = rd8(in) >= 250 ? 0 : (uint64_t)(uintptr_t)arena + OPS_AREA;
	memset(arena + OPS_AREA, 0, OPS_SIZE);
	for (uint32_t i = 0; i < n && i < 4; i++) {
		struct kvmm_step_op o = { 0 };
		unsigned char *at;

		c = rd8(in);
		o.op = c < 240 ? 1 + c % KVMM_OP_MAX : c;
		o.count = hostile32(in, rd8(in) % (max + 2));
		o.slots = user_ptr(in, STEP_AREA + i * STEP_STRIDE, STEP_SPAN);
		c = rd8(in);
		o.sinks = o.op == KVMM_OP_EVICT ? c % 8 : c >= 250;
		if (rd8(in) >= 250)
			o.flags = 1;
		if (rd8(in) >= 250)
			o.reserved = 1;
		at = (unsigned char *)(uintptr_t)o.slots;
		for (uint32_t j = 0; at && j < o.count && j < 18; j++) {
			struct kvmm_step_slot e = { 0 };

			c = rd8(in);
			e.slot = c < 240 ? c % (max + 1) : rd32(in);
			if (o.op == KVMM_OP_EVICT || rd8(in) >= 250) {
				e.arg0 = rd8(in);
				e.arg1 = rd8(in) < 240 ? rd16(in) : rd32(in);
			}
			if (rd8(in) >= 252)
				e.pad = 1;
			memcpy(at + j * sizeof(e), &e, sizeof(e));
		}
		memcpy(arena + OPS_AREA + i * sizeof(o), &o, sizeof(o));
	}
	ops_ptr = (uint64_t)(uintptr_t)arena + OPS_AREA;
	maybe_corrupt(in, s, sizeof(*s));
}

/* fill the argument, return the command and the space it names (or -1) */
/* SWAP_SETUP's directories: one that takes a file, one that is not there */
static char swap_dir[256];
static const char swap_nodir[] = "/nonexistent-kvmm-fuzz-dir";

/*
 * a slot of space @idx in the decode state (SEQ_SWAP_OUT takes no other),
 * the nth one for a byte of input; slot 0 when none is
 */
static uint32_t decoding_slot(struct in *in, int idx)
{
	struct kvmm_seq_info info[64];
	struct kvmm_seq_stats q = { .space = spaces[idx].id,
				    .seqs = (uint64_t)(uintptr_t)info };
	uint32_t n = spaces[idx].max_seqs < 64 ? spaces[idx].max_seqs : 64;
	uint32_t dec[64], nd = 0;

	q.count = n;
	for (uint32_t i = 0; i < n; i++)
		info[i] = (struct kvmm_seq_info){ .slot = i };
	if (kvshim_ioctl(spaces[idx].fd, KVMM_IOC_SEQ_STATS, &q))
		return 0;
	for (uint32_t i = 0; i < n; i++)
		if (info[i].state == KVMM_SEQ_DECODE)
			dec[nd++] = i;
	if (!nd) {
		/* none: trim a prefill slot to its counts, as a prompt's
		 * end() does, outside the checked calls */
		struct kvmm_step_slot sl = { 0 };
		struct kvmm_step_op o = { .op = KVMM_OP_TRIM, .count = 1,
					  .slots = (uint64_t)(uintptr_t)&sl };
		struct kvmm_step_submit st = { .space = spaces[idx].id,
					       .nr_ops = 1,
					       .ops = (uint64_t)(uintptr_t)&o };

		for (uint32_t i = 0; i < n && !nd; i++)
			if (info[i].state == KVMM_SEQ_PREFILL)
				dec[nd++] = i;
		if (!nd)
			return 0;
		sl.slot = dec[0];
		if (kvshim_ioctl(spaces[idx].fd, KVMM_IOC_STEP_SUBMIT, &st))
			return 0;
		take(&spaces[idx], &spaces[idx].snap);
	}
	return dec[rd8(in) % nd];
}

/*
 * give space @idx a swap file if it has none (as a user would before
 * SEQ_SWAP_OUT), outside the checked calls: the checker takes the new
 * state as do_kernel()'s writes
 */
static void swap_ready(int idx)
{
	struct kvmm_swap_setup w = { .space = spaces[idx].id,
				     .dir = (uint64_t)(uintptr_t)swap_dir,
				     .chunk_bytes = 8192, .depth = 2 };
	int ret = kvshim_ioctl(spaces[idx].fd, KVMM_IOC_SWAP_SETUP, &w);

	if (ret && ret != -EBUSY)
		violation("SWAP_SETUP of space %u in %s: %d", spaces[idx].id,
			  swap_dir, ret);
	take(&spaces[idx], &spaces[idx].snap);
}

static unsigned long gen_ioctl(struct in *in, int fd, void *k,
			       uint32_t *space_out)
{
	uint32_t sp = pick_space(in, fd), max = 16;
	int idx = space_index(fd, sp);
	uint8_t which = rd8(in) % 18;

	if (idx >= 0)
		max = spaces[idx].max_seqs;
	*space_out = sp;
	switch (which) {
	case 0: {
		struct kvmm_version *v = k;

		maybe_corrupt(in, v, sizeof(*v));
		return KVMM_IOC_VERSION;
	}
	case 1:
		gen_create(in, k);
		*space_out = 0;
		return KVMM_IOC_SPACE_CREATE;
	case 2: {
		struct kvmm_space_destroy *d = k;

		d->space = sp;
		maybe_corrupt(in, d, sizeof(*d));
		return KVMM_IOC_SPACE_DESTROY;
	}
	case 3: {
		struct kvmm_seq_admit *a = k;

		a->space = sp;
		a->count = hostile32(in, rd8(in) % (max + 2));
		a->seqs = user_ptr(in, SEQ_AREA, SEQ_SPAN);
		gen_seqs(in, a->seqs, a->count);
		maybe_corrupt(in, a, sizeof(*a));
		return KVMM_IOC_SEQ_ADMIT;
	}
	case 4: {
		struct kvmm_seq_release *r = k;

		r->space = sp;
		r->count = hostile32(in, rd8(in) % (max + 2));
		r->slots = user_ptr(in, SLOT_AREA, SLOT_SPAN);
		gen_slots(in, r->slots, r->count, max);
		maybe_corrupt(in, r, sizeof(*r));
		return KVMM_IOC_SEQ_RELEASE;
	}
	case 5: {
		struct kvmm_set_budget *b = k;
		uint8_t c = rd8(in);

		b->space = sp;
		b->budget_bytes = c < 190 ? (1 + c % 10) * MB2 :
				  c < 200 ? (1 + rd16(in) % 512) * MB2 :
				  c < 220 ? 0 :
				  c < 240 ? (1 + c % 10) * MB2 + 4096 :
				  c < 248 ? KVSHIM_MAX_VA_BYTES -
						    (c & 1) * MB2 :
					    rd64(in);
		maybe_corrupt(in, b, sizeof(*b));
		return KVMM_IOC_SET_BUDGET;
	}
	case 6: {
		struct kvmm_compact *c = k;
		uint8_t b = rd8(in);

		c->space = sp;
		c->byte_budget = b < 64 ? 0 : b < 200 ? (uint64_t)b * 997 :
				 rd64(in);
		if (rd8(in) >= 248)	/* out fields are ignored on input */
			c->pages_moved = rd64(in);
		maybe_corrupt(in, c, sizeof(*c));
		return KVMM_IOC_COMPACT;
	}
	case 7: {
		struct kvmm_stats *s = k;
		uint8_t c = rd8(in);

		s->space = sp;
		if (c < 128) {
			s->nr_heads = idx >= 0 ? spaces[idx].nr_heads : 4;
			s->heads = user_ptr(in, HEAD_AREA, HEAD_SPAN);
		} else if (c < 140) {
			s->nr_heads = rd8(in) % (MAX_HEADS + 1);
			s->heads = user_ptr(in, HEAD_AREA, HEAD_SPAN);
		} else if (c < 150) {
			s->nr_heads = rd32(in);
		}
		maybe_corrupt(in, s, sizeof(*s));
		return KVMM_IOC_STATS;
	}
	case 8: {
		struct kvmm_page_table_info *p = k;

		p->space = sp;
		maybe_corrupt(in, p, sizeof(*p));
		return KVMM_IOC_PAGE_TABLE_INFO;
	}
	case 9: {
		struct kvmm_space_map *m = k;

		m->space = sp;
		if (rd8(in) >= 240)	/* a host space binds no stream */
			m->stream = rd64(in);
		maybe_corrupt(in, m, sizeof(*m));
		return KVMM_IOC_SPACE_MAP;
	}
	case 10:
		gen_step(in, k, sp, max);
		return KVMM_IOC_STEP_SUBMIT;
	case 11: {
		struct kvmm_fence *f = k;
		uint8_t c = rd8(in);

		f->space = sp;
		f->seqno = c < 128 ? 0 : c < 240 ? c % 16 : rd64(in);
		c = rd8(in);
		f->flags = c < 128 ? 0 : c < 250 ? KVMM_FENCE_WAIT : c;
		maybe_corrupt(in, f, sizeof(*f));
		return KVMM_IOC_FENCE;
	}
	case 13: {
		struct kvmm_tier_budget *t = k;
		uint8_t c = rd8(in);

		t->space = sp;
		t->flags = c < 96 ? 0 : c < 240 ? c % 4 : c;
		c = rd8(in);
		t->hbm_bytes = c < 200 ? (uint64_t)(c % 12) * MB2 :
			       c < 230 ? KVMM_TIER_UNCAPPED :
			       c < 240 ? MB2 + 4096 : rd64(in);
		c = rd8(in);
		t->host_bytes = c < 200 ? (uint64_t)(c % 12) * MB2 :
				c < 230 ? KVMM_TIER_UNCAPPED : rd64(in);
		maybe_corrupt(in, t, sizeof(*t));
		return KVMM_IOC_TIER_BUDGET;
	}
	case 14: {
		struct kvmm_migrate *g = k;
		uint8_t c = rd8(in);

		g->space = sp;
		/* GROW_HOST and KEEP_COPIES in any mix, some unknown bits */
		c = rd8(in);
		g->flags = c < 240 ? c % 4 : c;
		c = rd8(in);
		g->byte_budget = c < 64 ? 0 : c < 240 ? (uint64_t)c * 512 :
				 rd64(in);
		g->nr_promote = hostile32(in, rd8(in) % 9);
		g->nr_demote = hostile32(in, rd8(in) % 9);
		g->hbm_reserve = rd8(in) % 4;
		g->promote = user_ptr(in, SLOT_AREA, SLOT_SPAN / 2);
		g->demote = user_ptr(in, SLOT_AREA + SLOT_SPAN / 2,
				     SLOT_SPAN / 2);
		/* page ids: mostly in the first granules, some far out */
		gen_slots(in, g->promote, g->nr_promote, 600);
		gen_slots(in, g->demote, g->nr_demote, 600);
		maybe_corrupt(in, g, sizeof(*g));
		return KVMM_IOC_MIGRATE;
	}
	case 15: {
		struct kvmm_swap_setup *w = k;
		uint8_t c = rd8(in);

		w->space = sp;
		/* mostly a directory that works; a close; one that is not */
		w->dir = c < 140 ? (uint64_t)(uintptr_t)swap_dir :
			 c < 220 ? 0 : (uint64_t)(uintptr_t)swap_nodir;
		c = rd8(in);
		/* small files: a setup registers depth x chunk bytes */
		w->chunk_bytes = c < 200 ? (1 + c % 4) * 4096 :
				 c < 240 ? (c % 8) * 4096 : rd32(in);
		c = rd8(in);
		w->depth = c < 200 ? 1 + c % 4 : c % 70;
		maybe_corrupt(in, w, sizeof(*w));
		return KVMM_IOC_SWAP_SETUP;
	}
	case 16:
	case 17: {
		struct kvmm_seq_swap *w = k;
		uint8_t c = rd8(in);

		w->space = sp;
		if (which == 16) {
			if (c < 128 && idx >= 0)
				swap_ready(idx);
			w->slot = c < 128 && idx >= 0 ? decoding_slot(in, idx) :
				  c < 240 ? c % (max + 2) : rd32(in);
		} else {
			/* the space's last swap-out; handles count from 1 */
			w->handle = c < 128 && idx >= 0 ? spaces[idx].handle :
				    c < 240 ? c % 10 : rd64(in);
			c = rd8(in);
			w->flags = c < 160 ? 0 : c < 240 ? KVMM_SWAP_DISCARD :
						      c;
		}
		maybe_corrupt(in, w, sizeof(*w));
		return which == 16 ? KVMM_IOC_SEQ_SWAP_OUT :
				     KVMM_IOC_SEQ_SWAP_IN;
	}
	default: {
		struct kvmm_seq_stats *q = k;
		unsigned char *at;

		q->space = sp;
		q->count = hostile32(in, rd8(in) % (max + 2));
		q->seqs = user_ptr(in, INFO_AREA, INFO_SPAN);
		at = (unsigned char *)(uintptr_t)q->seqs;
		for (uint32_t i = 0; at && i < q->count && i < 18; i++) {
			struct kvmm_seq_info e = { 0 };
			uint8_t c = rd8(in);

			e.slot = c < 240 ? c % (max + 2) : rd32(in);
			memcpy(at + i * sizeof(e), &e, sizeof(e));
		}
		maybe_corrupt(in, q, sizeof(*q));
		return KVMM_IOC_SEQ_STATS;
	}
	}
}

/* the wrong direction, size, number or magic, now and then */
static unsigned long mutate_cmd(struct in *in, unsigned long cmd)
{
	uint8_t c = rd8(in);

	if (c < 244)
		return cmd;
	switch (c % 6) {
	case 0:
		return cmd ^ ((unsigned long)(1 + rd8(in) % 3)
			      << _IOC_DIRSHIFT);
	case 1:
		return _IOC(_IOC_DIR(cmd), _IOC_TYPE(cmd), _IOC_NR(cmd),
			    (_IOC_SIZE(cmd) + 8 * (1 + rd8(in) % 4)) &
				    _IOC_SIZEMASK);
	case 2:
		return _IOC(_IOC_DIR(cmd), _IOC_TYPE(cmd), _IOC_NR(cmd),
			    _IOC_SIZE(cmd) - 8);
	case 3:
		return _IOC(_IOC_DIR(cmd), _IOC_TYPE(cmd),
			    (unsigned int)rd8(in), _IOC_SIZE(cmd));
	case 4:
		return _IOC(_IOC_DIR(cmd), (unsigned int)rd8(in), _IOC_NR(cmd),
			    _IOC_SIZE(cmd));
	default:
		return cmd | (1UL << 32);
	}
}

/*
 * A pointer the harness cannot vouch for (a corrupted byte, raw bytes)
 * goes back into its area: an in-process driver cannot fail it with
 * -EFAULT as a kernel would.
 */
static void fix_ptr(uint64_t *p, size_t area, size_t span)
{
	uint64_t lo = (uint64_t)(uintptr_t)arena + area;

	if (*p && (*p < lo || *p >= lo + span))
		*p = lo;
}

static void fix_at(void *k, size_t off, size_t area, size_t span)
{
	uint64_t p;

	memcpy(&p, (char *)k + off, sizeof(p));
	fix_ptr(&p, area, span);
	memcpy((char *)k + off, &p, sizeof(p));
}

static void fix_ptrs(unsigned long cmd, void *k)
{
	switch (_IOC_NR(cmd)) {
	case _IOC_NR(KVMM_IOC_SEQ_ADMIT):
		fix_at(k, offsetof(struct kvmm_seq_admit, seqs), SEQ_AREA,
		       SEQ_SPAN);
		break;
	case _IOC_NR(KVMM_IOC_SEQ_RELEASE):
		fix_at(k, offsetof(struct kvmm_seq_release, slots), SLOT_AREA,
		       SLOT_SPAN);
		break;
	case _IOC_NR(KVMM_IOC_STATS):
		fix_at(k, offsetof(struct kvmm_stats, heads), HEAD_AREA,
		       HEAD_SPAN);
		break;
	case _IOC_NR(KVMM_IOC_STEP_SUBMIT): {
		/* the ops are read where they were written, or not at all */
		uint64_t p;
		size_t off = offsetof(struct kvmm_step_submit, ops);

		memcpy(&p, (char *)k + off, sizeof(p));
		if (p && p != ops_ptr)
			p = ops_ptr;
		memcpy((char *)k + off, &p, sizeof(p));
		break;
	}
	case _IOC_NR(KVMM_IOC_SEQ_STATS):
		fix_at(k, offsetof(struct kvmm_seq_stats, seqs), INFO_AREA,
		       INFO_SPAN);
		break;
	case _IOC_NR(KVMM_IOC_MIGRATE):
		fix_at(k, offsetof(struct kvmm_migrate, promote), SLOT_AREA,
		       SLOT_SPAN / 2);
		fix_at(k, offsetof(struct kvmm_migrate, demote),
		       SLOT_AREA + SLOT_SPAN / 2, SLOT_SPAN / 2);
		break;
	case _IOC_NR(KVMM_IOC_SWAP_SETUP): {
		/* a directory string the harness owns, or none */
		uint64_t p;
		size_t off = offsetof(struct kvmm_swap_setup, dir);

		memcpy(&p, (char *)k + off, sizeof(p));
		if (p && p != (uint64_t)(uintptr_t)swap_dir &&
		    p != (uint64_t)(uintptr_t)swap_nodir)
			p = (uint64_t)(uintptr_t)swap_dir;
		memcpy((char *)k + off, &p, sizeof(p));
		break;
	}
	}
}

static int is_readonly(unsigned long cmd)
{
	return cmd == KVMM_IOC_VERSION || cmd == KVMM_IOC_STATS ||
	       cmd == KVMM_IOC_PAGE_TABLE_INFO || cmd == KVMM_IOC_SPACE_MAP ||
	       cmd == KVMM_IOC_FENCE || cmd == KVMM_IOC_SEQ_STATS;
}

static void do_ioctl(struct in *in, int raw)
{
	union {
		struct kvmm_version v;
		struct kvmm_space_create c;
		struct kvmm_space_destroy d;
		struct kvmm_seq_admit a;
		struct kvmm_seq_release r;
		struct kvmm_set_budget b;
		struct kvmm_compact cp;
		struct kvmm_stats s;
		struct kvmm_page_table_info p;
		struct kvmm_space_map m;
		struct kvmm_step_submit st;
		struct kvmm_fence f;
		struct kvmm_seq_stats q;
		struct kvmm_tier_budget tb;
		struct kvmm_migrate mg;
		struct kvmm_swap_setup ss;
		struct kvmm_seq_swap sw;
		unsigned char bytes[256];
	} k;
	int fd = pick_fd(in), changed = -1, ret;
	uint32_t sp = 0;
	unsigned long cmd, gen = 0;
	char what[48];
	unsigned char *arg;
	uint8_t c;

	memset(&k, 0, sizeof(k));
	create_over_cap = 0;
	if (raw) {
		cmd = rd8(in) < 128 ? _IOC(rd8(in) % 4U, KVMMIO,
					   rd8(in) % 0x20U, rd16(in) % 256U) :
				      (unsigned long)rd32(in);
		for (size_t i = 0; i < sizeof(k.bytes) && in->n; i++)
			k.bytes[i] = rd8(in) < 200 ? 0 : rd8(in);
	} else {
		gen = gen_ioctl(in, fd, &k, &sp);
		cmd = mutate_cmd(in, gen);
		if (cmd != gen)
			nr_mutated++;
	}
	fix_ptrs(cmd, &k);
	/* only the generator may create: it keeps spaces small */
	if (cmd == KVMM_IOC_SPACE_CREATE && gen != KVMM_IOC_SPACE_CREATE)
		k.c.flags |= 1;
	c = rd8(in);
	arg = c >= 252 ? NULL :
	      arena + ARG_AREA + (c < 128 ? 0 : rd16(in) % 4096);
	if (arg)
		memcpy(arg, &k, sizeof(k));
	memcpy(arena_before, arena, sizeof(arena));

	ret = kvshim_ioctl(fd, cmd, arg);
	nr_ioctls++;
	if (ret) {
		nr_failed++;
		if (create_over_cap && cmd == KVMM_IOC_SPACE_CREATE &&
		    ret == -E2BIG)
			nr_cap_refused++;
		if (ret >= 0 || ret < -4095)
			violation("ioctl %#lx returned %d", cmd, ret);
		if (memcmp(arena, arena_before, sizeof(arena)))
			violation("failed ioctl %#lx (%d) wrote user memory",
				  cmd, ret);
		snprintf(what, sizeof(what), "a failed ioctl %#lx", cmd);
		check_all(-1, what, ret);
		return;
	}
	nr_ok[_IOC_NR(cmd) & 31]++;
	memcpy(&k, arg, sizeof(k));	/* what it returned, what it named */
	if (cmd == KVMM_IOC_SPACE_CREATE) {
		struct space *s;

		if (create_over_cap)
			violation("CREATE over KVSHIM_MAX_SPACE_BYTES made "
				  "space %u", k.c.space);
		if (nr_spaces == MAX_SPACES)
			violation("space created over the harness's limit");
		s = &spaces[nr_spaces++];
		s->fd = fd;
		s->id = k.c.space;
		s->nr_heads = k.c.nr_layers * k.c.nr_kv_heads;
		s->max_seqs = k.c.max_seqs;
		nr_va_max += k.c.va_bytes >= KVSHIM_MAX_VA_BYTES - MB2;
		if (space_index(fd, s->id) != nr_spaces - 1 || !s->id)
			violation("CREATE gave a used handle %u", s->id);
		take(s, &s->snap);
		if (s->snap.st.pages_total)
			violation("a new space has mapped pages");
		check_all(-1, "CREATE", ret);
		return;
	}
	if (cmd == KVMM_IOC_SPACE_DESTROY) {
		int i = space_index(fd, k.d.space);

		if (i < 0)
			violation("DESTROY of an unknown space %u", k.d.space);
		space_forget(i);
		if (kvshim_digest(fd, k.d.space, &now.digest) != -ENOENT)
			violation("space %u alive after DESTROY", k.d.space);
		check_all(-1, "DESTROY", ret);
		return;
	}
	if (!is_readonly(cmd)) {
		/* every other command names its space in its first word */
		uint32_t named;

		memcpy(&named, &k, sizeof(named));
		changed = space_index(fd, named);
		if (changed < 0)
			violation("ioctl %#lx succeeded on space %u not of "
				  "fd %d", cmd, named, fd);
		if (cmd == KVMM_IOC_SEQ_SWAP_OUT)
			spaces[changed].handle = k.sw.handle;
	}
	if ((cmd != KVMM_IOC_SEQ_ADMIT &&
	     memcmp(arena + SEQ_AREA, arena_before + SEQ_AREA,
		    HEAD_AREA - SEQ_AREA)) ||
	    memcmp(arena + OPS_AREA, arena_before + OPS_AREA,
		   INFO_AREA - OPS_AREA))
		violation("ioctl %#lx wrote an array it only reads", cmd);
	check_all(changed, "an ioctl", ret);
}

static void do_open(void)
{
	int fd;

	if (nr_fds == MAX_FDS)
		return;
	fd = kvshim_open();
	if (fd < 0)
		violation("open: %d", fd);
	for (int i = 0; i < nr_fds; i++)
		if (fds[i] == fd)
			violation("open gave an open handle %d", fd);
	fds[nr_fds++] = fd;
}

static void do_close(int fd, int disarm)
{
	int ret, i;

	if (disarm)
		for (i = 0; i < nr_spaces; i++)
			if (spaces[i].fd == fd) {
				kvshim_fault_inject(fd, spaces[i].id,
						    KVSHIM_FAULT_RUNTIME, 0, 0);
				kvshim_fault_inject(fd, spaces[i].id,
						    KVSHIM_FAULT_ADMIT, 0, 0);
			}
	ret = kvshim_close(fd);
	if (ret && disarm)
		violation("close of fd %d with no fault armed: %d", fd, ret);
	if (ret) {
		/* the spaces it could not destroy stay, unchanged */
		for (i = 0; i < nr_spaces; i++) {
			uint64_t d;

			if (spaces[i].fd != fd)
				continue;
			if (kvshim_digest(fd, spaces[i].id, &d) == -ENOENT)
				space_forget(i--);
		}
		check_all(-1, "a failed close", ret);
		return;
	}
	for (i = 0; i < nr_spaces; i++)
		if (spaces[i].fd == fd)
			space_forget(i--);
	for (i = 0; i < nr_fds; i++)
		if (fds[i] == fd)
			fds[i] = fds[--nr_fds];
	if (kvshim_ioctl(fd, KVMM_IOC_VERSION, arena) != -EBADF)
		violation("closed fd %d still answers", fd);
	check_all(-1, "close", 0);
}

static void do_fault(struct in *in, unsigned int where)
{
	static const int errs[] = { EIO, ENOMEM, EBUSY, ENOSPC, EINVAL,
				    EFAULT };
	const struct space *s;
	uint64_t nth;
	int ret;

	if (!nr_spaces)
		return;
	s = &spaces[rd8(in) % nr_spaces];
	if (where == KVSHIM_FAULT_ADMIT || where >= KVSHIM_FAULT_SWAP_EIO) {
		nth = 1 + rd8(in) % 3;
	} else {
		/* mostly early; sometimes past a compaction's page copies */
		uint8_t c = rd8(in);

		nth = 1 + (c < 192 ? c % 12 : rd16(in) % 512);
	}
	if (where == KVSHIM_FAULT_SWAP_EIO && rd8(in) % 2)
		where = KVSHIM_FAULT_SWAP_SHORT;
	ret = kvshim_fault_inject(s->fd, s->id, where, nth, errs[rd8(in) % 6]);
	/* a swap fault needs the space's swap file */
	if (ret && !(ret == -ENOENT && where >= KVSHIM_FAULT_SWAP_EIO))
		violation("fault_inject on space %u", s->id);
	if (ret)
		return;
	nr_faults++;
}

/*
 * What the data-plane kernels do between submissions: raise the token
 * counts of some lists of one slot through the mapping, within what its
 * pages hold (a prefill slot: both tiers in its reserved pages; a decoding
 * one: each tier up to its pages, never down, as the checker wants).
 */
static void do_kernel(struct in *in)
{
	struct kvmm_space_map m = { 0 };
	struct kvmm_seq_info info = { 0 };
	struct kvmm_seq_stats q = { .count = 1,
				    .seqs = (uint64_t)(uintptr_t)&info };
	struct space *s;
	uint32_t *np, *nt, a, b;

	if (!nr_spaces)
		return;
	s = &spaces[rd8(in) % nr_spaces];
	m.space = q.space = s->id;
	info.slot = rd8(in) % s->max_seqs;
	if (kvshim_ioctl(s->fd, KVMM_IOC_SPACE_MAP, &m) ||
	    kvshim_ioctl(s->fd, KVMM_IOC_SEQ_STATS, &q))
		violation("MAP or SEQ_STATS of space %u", s->id);
	if (info.state == KVMM_SEQ_FREE)
		return;
	np = (uint32_t *)(uintptr_t)m.npages;
	nt = (uint32_t *)(uintptr_t)m.ntokens;
	a = m.tiers[0].tokens;
	b = m.tiers[1].tokens;
	for (uint32_t j = 0; j < m.lists_per_slot; j++) {
		uint32_t l = info.slot * m.lists_per_slot + j, hi, lo, room;

		if (rd8(in) < 64)
			continue;
		if (info.state == KVMM_SEQ_PREFILL) {
			hi = rd16(in) % (np[2 * l] * a + 1);
			room = np[2 * l] - (hi + a - 1) / a;
			lo = rd16(in) % (room * b + 1);
		} else {
			hi = nt[2 * l] +
			     rd16(in) % (np[2 * l] * a - nt[2 * l] + 1);
			lo = nt[2 * l + 1] +
			     rd16(in) % (np[2 * l + 1] * b - nt[2 * l + 1] + 1);
		}
		if ((uint64_t)hi + lo > m.max_tokens)
			continue;
		nt[2 * l] = hi;
		nt[2 * l + 1] = lo;
	}
	nr_kernel++;
	take(s, &s->snap);	/* the checker accepts what kernels write */
}

static void report(void);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = { data, size };

	nr_inputs++;
	while (in.n) {
		uint8_t op = rd8(&in) % 35;

		if (op < 2)
			do_open();
		else if (op < 3 && nr_fds)
			do_close(fds[rd8(&in) % nr_fds], rd8(&in) < 200);
		else if (op < 28)
			do_ioctl(&in, 0);
		else if (op < 30)
			do_ioctl(&in, 1);
		else if (op < 31)
			do_fault(&in, KVSHIM_FAULT_RUNTIME);
		else if (op < 32)
			do_fault(&in, KVSHIM_FAULT_ADMIT);
		else if (op < 33)
			do_fault(&in, KVSHIM_FAULT_SWAP_EIO);
		else
			do_kernel(&in);
		/* the first operation of most inputs finds a handle open */
		if (!nr_fds && rd8(&in) < 192)
			do_open();
	}
	while (nr_fds)
		do_close(fds[0], 1);
	if (nr_spaces)
		violation("%d spaces left after every close", nr_spaces);
	if (nr_ioctls >= next_progress) {
		fprintf(stderr, "fuzz_uapi: %llu ioctls after %llu inputs\n",
			nr_ioctls, nr_inputs);
		next_progress += 1000000;
	}
	if (max_ioctls && nr_ioctls >= max_ioctls) {
		/*
		 * libFuzzer takes exit() from the target for a crash: check
		 * for leaks and report here, then leave without its handlers.
		 */
		__lsan_do_leak_check();
		report();
		fflush(NULL);
		_exit(0);
	}
	return 0;
}

static void report(void)
{
	const char *path = getenv("FUZZ_STATS");
	char line[512];

	snprintf(line, sizeof(line),
		 "fuzz_uapi: %llu inputs, %llu ioctls (%llu failed, %llu "
		 "succeeded: create %llu admit %llu release %llu budget %llu "
		 "compact %llu map %llu step %llu fence %llu seq_stats %llu "
		 "tier_budget %llu migrate %llu swap_setup %llu swap_out "
		 "%llu swap_in %llu), "
		 "%llu commands mutated, %llu faults armed, %llu kernel "
		 "writes, %llu over the cost cap refused, %llu spaces at the "
		 "VA bound\n",
		 nr_inputs, nr_ioctls, nr_failed, nr_ioctls - nr_failed,
		 nr_ok[1], nr_ok[3], nr_ok[4], nr_ok[5], nr_ok[6], nr_ok[9],
		 nr_ok[10], nr_ok[11], nr_ok[12], nr_ok[16], nr_ok[17],
		 nr_ok[18], nr_ok[19], nr_ok[20],
		 nr_mutated, nr_faults,
		 nr_kernel, nr_cap_refused, nr_va_max);
	fputs(line, stderr);
	if (path) {
		FILE *f = fopen(path, "w");

		if (f) {
			fputs(line, f);
			fclose(f);
		}
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *max = getenv("FUZZ_IOCTLS");

	(void)argc;
	(void)argv;
	if (max)
		max_ioctls = strtoull(max, NULL, 0);
	snprintf(swap_dir, sizeof(swap_dir), "%s",
		 getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") :
							 "/tmp");
	atexit(report);
	return 0;
}
