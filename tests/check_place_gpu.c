// SPDX-License-Identifier: MIT
/*
 * check_place_gpu.c - migration on the GPU against its CPU reference:
 *  - the rewrite: random batches with chained moves (a victim out, a hot
 *    page into its place) over random tables; tables and reverse map
 *    identical;
 *  - a two-tier CUDA space (device granules up to an HBM cap, host-NUMA
 *    granules for the rest, one VA), as `kvmm bench place --backend cuda`
 *    builds it: rounds of kva_migrate() whose copies run on a side stream
 *    (kva_copy_pages_cuda() through the copy hook), then every page's
 *    bytes against a host copy, and the decode attention over a selection
 *    of pages on both tiers against the CPU reference over that copy.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kva.h"
#include "kvattn.h"
#include "kvmm_base.h"
#include "kvq.h"
#include "kvtest.h"
#include "migrate.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime.h>

#define CK_CUDA(call)                                                          \
	ck_assert_msg((call) == cudaSuccess, "%s: %s", #call,                  \
		      cudaGetErrorString(cudaGetLastError()))

static void *to_dev(const void *p, size_t n)
{
	void *d;

	CK_CUDA(cudaMalloc(&d, n ? n : 1));
	CK_CUDA(cudaMemcpy(d, p, n, cudaMemcpyHostToDevice));
	return d;
}

START_TEST(test_migrate_rewrite_cuda_vs_cpu)
{
	uint64_t seed = kvtest_seed("migrate_rewrite_cuda_vs_cpu");

	for (int round = 0; round < 20; round++) {
		uint32_t lists = 1 + kvtest_rand(&seed) % 64, width = 64;
		uint32_t pages = lists * width * 2, n = 0;
		size_t tb = (size_t)lists * width * 4;
		uint32_t *table = malloc(tb), *pl = malloc(pages * 4);
		uint32_t *pp = malloc(pages * 4), *src = malloc(pages * 4);
		uint32_t *dst = malloc(pages * 4), *li = malloc(pages * 4);
		uint32_t *po = malloc(pages * 4), *freep = malloc(pages * 4);
		uint8_t *leaves = malloc(pages);
		uint32_t nfree = 0, *gt, *gl, *gp;
		struct kvk_migrate_args a, d;
		void *dt, *dl, *dp, *ds, *dd, *dli, *dpo, *dlv;

		/* pages 0..lists*width-1 owned in order, the rest free */
		for (uint32_t i = 0; i < lists * width; i++) {
			table[i] = i;
			pl[i] = i / width;
			pp[i] = i % width;
		}
		for (uint32_t p = lists * width; p < pages; p++) {
			pl[p] = UINT32_MAX - 1;
			pp[p] = UINT32_MAX;
			freep[nfree++] = p;
		}
		/* demote a victim v to a free page, promote h into v */
		for (uint32_t k = 0; k < 200 && nfree; k++) {
			uint32_t v = kvtest_rand(&seed) % (lists * width);
			uint32_t h = kvtest_rand(&seed) % (lists * width);
			int used = 0;

			for (uint32_t i = 0; i < n; i++)
				used |= src[i] == v || src[i] == h ||
					dst[i] == v || dst[i] == h;
			if (used || v == h)
				continue;
			src[n] = v, dst[n] = freep[--nfree];
			li[n] = pl[v], po[n] = pp[v], leaves[n++] = 0;
			src[n] = h, dst[n] = v;
			li[n] = pl[h], po[n] = pp[h], leaves[n++] = 1;
		}
		a = (struct kvk_migrate_args){
			.table = table, .width = width, .page_list = pl,
			.page_pos = pp, .nr_lists = lists, .nr_pages = pages,
			.n = n, .src = src, .dst = dst, .list = li, .pos = po,
			.src_leaves = leaves, .src_owner = 12345,
		};
		dt = to_dev(table, tb);
		dl = to_dev(pl, pages * 4);
		dp = to_dev(pp, pages * 4);
		ds = to_dev(src, n * 4);
		dd = to_dev(dst, n * 4);
		dli = to_dev(li, n * 4);
		dpo = to_dev(po, n * 4);
		dlv = to_dev(leaves, n);
		d = a;
		d.table = dt, d.page_list = dl, d.page_pos = dp;
		d.src = ds, d.dst = dd, d.list = dli, d.pos = dpo;
		d.src_leaves = dlv;
		ck_assert_int_eq(kvk_migrate_rewrite_cpu(&a, NULL), 0);
		ck_assert_int_eq(kvk_migrate_rewrite_cuda(&d, NULL), 0);
		CK_CUDA(cudaDeviceSynchronize());
		gt = malloc(tb), gl = malloc(pages * 4), gp = malloc(pages * 4);
		CK_CUDA(cudaMemcpy(gt, dt, tb, cudaMemcpyDeviceToHost));
		CK_CUDA(cudaMemcpy(gl, dl, pages * 4, cudaMemcpyDeviceToHost));
		CK_CUDA(cudaMemcpy(gp, dp, pages * 4, cudaMemcpyDeviceToHost));
		ck_assert_int_eq(memcmp(gt, table, tb), 0);
		ck_assert_int_eq(memcmp(gl, pl, pages * 4), 0);
		ck_assert_int_eq(memcmp(gp, pp, pages * 4), 0);
		cudaFree(dt), cudaFree(dl), cudaFree(dp), cudaFree(ds);
		cudaFree(dd), cudaFree(dli), cudaFree(dpo), cudaFree(dlv);
		free(gt), free(gl), free(gp), free(table), free(pl), free(pp);
		free(src), free(dst), free(li), free(po), free(freep);
		free(leaves);
	}
}
END_TEST

#define TT_SEQS 4
#define TT_HEADS 8
#define TT_GROUP 4
#define TT_HD 128
#define TT_LISTS (TT_SEQS * TT_HEADS)
#define TT_TOKENS 1000		/* per list: 63 pages of 16 */
#define G2 KVRT_GRANULE_SIZE

/* the copy hook: one batch of moves on the side stream */
struct tt_copy {
	struct kva_pool *pool;
	cudaStream_t st;
	uint32_t *d;		/* device move lists */
	uint32_t cap, used;
};

static int tt_copy(void *arg, const uint32_t *src, const uint32_t *dst,
		   uint32_t n)
{
	struct tt_copy *c = arg;
	struct kva_pool *pool = c->pool;
	uint32_t *d = c->d + c->used;

	ck_assert_uint_le(c->used + 2 * n, c->cap);
	CK_CUDA(cudaMemcpyAsync(d, src, n * 4, cudaMemcpyHostToDevice, c->st));
	CK_CUDA(cudaMemcpyAsync(d + n, dst, n * 4, cudaMemcpyHostToDevice,
				c->st));
	c->used += 2 * n;
	return kva_copy_pages_cuda(pool->base, pool->page_size,
				   pool->pages_per_granule, d, d + n, n,
				   c->st);
}

/* the host copy of (list l, entry e): page id l * width + e of @stage */
static uint8_t *tt_stage(uint8_t *stage, const struct kva_pool *pool,
			 uint32_t l, uint32_t e)
{
	uint64_t id = (uint64_t)l * pool->width + e;

	return stage + id / pool->pages_per_granule * G2 +
	       id % pool->pages_per_granule * pool->page_size;
}

static double tt_rel_l2(const float *x, const float *ref, size_t n)
{
	double a = 0, b = 0;

	for (size_t i = 0; i < n; i++) {
		a += (x[i] - ref[i]) * (double)(x[i] - ref[i]);
		b += (double)ref[i] * ref[i];
	}
	return b > 0 ? sqrt(a / b) : sqrt(a);
}

static float tt_gauss(uint64_t *s)
{
	double u1 = ((kvtest_rand(s) >> 11) + 1.0) / 9007199254740993.0;
	double u2 = (kvtest_rand(s) >> 11) / 9007199254740992.0;

	return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

START_TEST(test_two_tier_attn_cuda)
{
	uint64_t seed = kvtest_seed("two_tier_attn_cuda");
	const uint32_t lists = TT_LISTS;
	struct kvrt_ctx_opts co = { .backend = KVRT_BACKEND_CUDA };
	struct kva_pool_params pp = {
		.va_bytes = 64 * G2,
		.budget_bytes = 64 * G2,
		.head_dim = TT_HD,
		.tiers = { { 16, 16, 1, 1 } },
		.nr_tiers = 1,
		.nr_slots = TT_SEQS,
		.nr_layers = 1,
		.nr_heads = TT_HEADS,
		.max_tokens = 4096,
		.wmark_low = 1,
		.wmark_high = 1,
	};
	uint32_t slots[TT_SEQS], prompt[TT_SEQS], hi[TT_LISTS], lo[TT_LISTS];
	uint32_t lb[TT_SEQS], ntok[2 * TT_LISTS];
	struct kva_migrate_control mc;
	struct kvk_attn_tier tier;
	struct kvrt_stream *ks;
	struct kvrt_ctx *ctx;
	struct kva_pool *pool;
	struct tt_copy cp = { 0 };
	struct kvk_attn_args a, r;
	uint32_t *host, *hbm, *tab, *rtab, W, tpp, nh_sel = 0, nb_sel = 0;
	uint8_t *stage, *page;
	uint64_t stage_bytes, need;
	size_t nq = (size_t)lists * TT_GROUP * TT_HD, wb;
	uint16_t *q16, *o_gpu, *o_cpu;
	float *x, *y;
	void *dq, *dout, *dtab, *dntok, *dlb, *work;
	char why[256];
	double err;
	int ret;

	ret = kvrt_ctx_create(&co, &ctx);
	ck_assert_msg(!ret, "no CUDA context: %s", strerror(-ret));
	pp.ctx = ctx;
	ck_assert_int_eq(kva_pool_create(&pp, &pool), 0);
	/* 2 granules of HBM, the rest from the host tier, 2 spare */
	ck_assert_int_eq(kva_pool_set_mem_budget(pool, KVA_MEM_HBM, 2 * G2), 0);
	need = (uint64_t)kva_admit_pages(pool, TT_TOKENS) * lists;
	need = need / pool->pages_per_granule + 3;
	ck_assert_int_eq(kva_pool_grow_auto(pool, (uint32_t)need), 0);
	ret = kva_check(pool, why, sizeof(why));
	ck_assert_msg(!ret, "%s", why);
	for (uint32_t i = 0; i < TT_SEQS; i++)
		slots[i] = i, prompt[i] = TT_TOKENS, lb[i] = i * TT_HEADS;
	for (uint32_t l = 0; l < lists; l++)
		hi[l] = TT_TOKENS, lo[l] = 0;
	ck_assert_int_eq(kva_admit(pool, slots, prompt, TT_SEQS), 0);
	ck_assert_int_eq(kva_trim(pool, slots, TT_SEQS, hi, lo), 0);
	W = pool->width;
	tpp = pool->layout[KVA_HI].tokens;
	tier = kva_attn_tier(&pool->tiers[0], &pool->layout[KVA_HI]);

	/* random K/V into the host copy, then into the pages */
	stage_bytes = ((uint64_t)lists * W + pool->pages_per_granule - 1) /
		      pool->pages_per_granule * G2;
	stage = aligned_alloc(4096, stage_bytes);
	ck_assert_ptr_nonnull(stage);
	memset(stage, 0, stage_bytes);
	for (uint32_t l = 0; l < lists; l++)
		for (uint32_t t = 0; t < TT_TOKENS; t++) {
			float k[TT_HD], v[TT_HD];

			for (int i = 0; i < TT_HD; i++) {
				k[i] = tt_gauss(&seed);
				v[i] = tt_gauss(&seed);
			}
			ck_assert_int_eq(kvq_page_put(tt_stage(stage, pool, l,
							       t / tpp),
						      &tier, TT_HD, t % tpp, k,
						      v, 0, (int32_t)t), 0);
		}
	for (uint32_t l = 0; l < lists; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l]; e++)
			CK_CUDA(cudaMemcpy(
				(void *)(uintptr_t)kva_page_addr(
					pool, pool->table[(size_t)l * W + e]),
				tt_stage(stage, pool, l, e), pool->page_size,
				cudaMemcpyHostToDevice));

	/* rounds of migration, the copies on a side stream */
	ck_assert_int_eq(kvrt_stream_create(ctx, &ks), 0);
	ck_assert_int_eq(kva_migrate_init(&mc, pool, 96 * pool->page_size),
			 0);
	cp.pool = pool;
	cp.st = (cudaStream_t)kvrt_stream_handle(ks);
	cp.cap = 2 * pool->nr_page_ids;
	CK_CUDA(cudaMalloc((void **)&cp.d, cp.cap * 4));
	mc.copy = tt_copy;
	mc.copy_arg = &cp;
	mc.streams = &ks;
	mc.nr_streams = 1;
	host = malloc(pool->nr_page_ids * 4);
	hbm = malloc(pool->nr_page_ids * 4);
	for (int round = 0; round < 8; round++) {
		uint32_t nh = 0, nb = 0;

		for (uint32_t p = 0; p < pool->nr_page_ids; p++) {
			if (!kva_owned(pool->page_list[p]))
				continue;
			if (kva_page_mem(pool, p) == KVA_MEM_HBM)
				hbm[nb++] = p;
			else
				host[nh++] = p;
		}
		for (uint32_t i = 0; i < nh; i++) {	/* shuffle */
			uint32_t j = i + kvtest_rand(&seed) % (nh - i), t;

			t = host[i], host[i] = host[j], host[j] = t;
		}
		for (uint32_t i = 0; i < nb; i++) {
			uint32_t j = i + kvtest_rand(&seed) % (nb - i), t;

			t = hbm[i], hbm[i] = hbm[j], hbm[j] = t;
		}
		mc.hbm_reserve = round % 3;
		cp.used = 0;
		ck_assert_int_eq(kva_migrate(pool, &mc, host,
					     nh < 40 ? nh : 40, hbm,
					     nb < 40 ? nb : 40), 0);
		CK_CUDA(cudaStreamSynchronize(cp.st));
		ck_assert_int_ge(kva_migrate_reclaim(pool, 1), 0);
		ret = kva_check(pool, why, sizeof(why));
		ck_assert_msg(!ret, "round %d: %s", round, why);
	}
	ck_assert_uint_gt(mc.pages_promoted, 0);
	ck_assert_uint_gt(mc.pages_demoted, 0);

	/* every page holds what its entry held, on whichever tier */
	page = malloc(pool->page_size);
	for (uint32_t l = 0; l < lists; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l]; e++) {
			CK_CUDA(cudaMemcpy(
				page,
				(void *)(uintptr_t)kva_page_addr(
					pool, pool->table[(size_t)l * W + e]),
				pool->page_size, cudaMemcpyDeviceToHost));
			ck_assert_msg(!memcmp(page, tt_stage(stage, pool, l, e),
					      pool->page_size),
				      "list %u entry %u moved wrong", l, e);
		}

	/* a selection: sink, last page, a random third of the rest */
	tab = calloc((size_t)lists * W, 4);
	rtab = calloc((size_t)lists * W, 4);
	for (uint32_t l = 0; l < lists; l++) {
		uint32_t np = (TT_TOKENS + tpp - 1) / tpp, k = 0, tok = 0;

		for (uint32_t e = 0; e < np; e++) {
			uint32_t p = pool->table[(size_t)l * W + e];

			if (e && e + 1 < np && kvtest_rand(&seed) % 3)
				continue;
			tab[(size_t)l * W + k] = p;
			rtab[(size_t)l * W + k] = l * W + e;
			tok += TT_TOKENS - e * tpp < tpp ? TT_TOKENS - e * tpp
							 : tpp;
			k++;
			if (kva_page_mem(pool, p) == KVA_MEM_HBM)
				nb_sel++;
			else
				nh_sel++;
		}
		ntok[2 * l] = tok;
		ntok[2 * l + 1] = 0;
	}
	ck_assert_uint_gt(nb_sel, 0);
	ck_assert_uint_gt(nh_sel, 0);
	q16 = malloc(nq * 2);
	o_gpu = malloc(nq * 2);
	o_cpu = malloc(nq * 2);
	for (size_t i = 0; i < nq; i++)
		q16[i] = kvk_f32_to_f16(3 * tt_gauss(&seed));
	memset(&a, 0, sizeof(a));
	a.nr_seqs = TT_SEQS;
	a.nr_kv_heads = TT_HEADS;
	a.group = TT_GROUP;
	a.head_dim = TT_HD;
	a.scale = 1 / sqrtf(TT_HD);
	a.dtype = KVK_F16;
	a.pool = pool->base;
	a.page_size = pool->page_size;
	a.pages_per_granule = pool->pages_per_granule;
	a.width = W;
	a.tier[0] = a.tier[1] = tier;
	r = a;
	dq = to_dev(q16, nq * 2);
	dtab = to_dev(tab, (size_t)lists * W * 4);
	dntok = to_dev(ntok, sizeof(ntok));
	dlb = to_dev(lb, sizeof(lb));
	CK_CUDA(cudaMalloc(&dout, nq * 2));
	a.q = dq;
	a.out = dout;
	a.tables = dtab;
	a.ntokens = dntok;
	a.list_base = dlb;
	wb = kvk_attn_work_bytes(&a);
	CK_CUDA(cudaMalloc(&work, wb ? wb : 16));
	a.work = work;
	a.work_bytes = wb;
	ck_assert_int_eq(kvk_attn_decode_cuda(&a, cp.st), 0);
	CK_CUDA(cudaStreamSynchronize(cp.st));
	CK_CUDA(cudaMemcpy(o_gpu, dout, nq * 2, cudaMemcpyDeviceToHost));
	r.pool = (uint64_t)(uintptr_t)stage;
	r.q = q16;
	r.out = o_cpu;
	r.tables = rtab;
	r.ntokens = ntok;
	r.list_base = lb;
	ck_assert_int_eq(kvk_attn_decode_cpu(&r, NULL), 0);
	x = malloc(nq * 4);
	y = malloc(nq * 4);
	for (size_t i = 0; i < nq; i++) {
		x[i] = kvk_f16_to_f32(o_gpu[i]);
		y[i] = kvk_f16_to_f32(o_cpu[i]);
	}
	err = tt_rel_l2(x, y, nq);
	printf("# two_tier_attn_cuda: %u pages selected in HBM, %u on the "
	       "host tier; %llu promoted, %llu demoted; rel L2 %.2e\n",
	       nb_sel, nh_sel, (unsigned long long)mc.pages_promoted,
	       (unsigned long long)mc.pages_demoted, err);
	ck_assert_msg(err < 2e-3, "two-tier attention vs CPU: rel L2 %g",
		      err);

	cudaFree(dq), cudaFree(dtab), cudaFree(dntok), cudaFree(dlb);
	cudaFree(dout), cudaFree(work), cudaFree(cp.d);
	free(x), free(y), free(q16), free(o_gpu), free(o_cpu), free(tab);
	free(rtab), free(page), free(host), free(hbm), free(stage);
	kva_migrate_fini(&mc);
	ck_assert_int_eq(kvrt_stream_destroy(ks), 0);
	ck_assert_int_eq(kva_pool_destroy(pool), 0);
	kvrt_ctx_destroy(ctx);
}
END_TEST
#else
START_TEST(test_migrate_rewrite_cuda_vs_cpu)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST

START_TEST(test_two_tier_attn_cuda)
{
	ck_abort_msg("built without CUDA: this suite cannot run");
}
END_TEST
#endif

Suite *suite_place_gpu(void)
{
	Suite *s = suite_create("place_gpu");
	TCase *tc = tcase_create("migrate");

	KV_ADD(tc, test_migrate_rewrite_cuda_vs_cpu);
	KV_ADD(tc, test_two_tier_attn_cuda);
	suite_add_tcase(s, tc);
	return s;
}
