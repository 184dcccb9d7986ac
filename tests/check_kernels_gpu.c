// SPDX-License-Identifier: MIT
/*
 * check_kernels_gpu.c - every CUDA kernel of kernels/kvk.h against its CPU
 * reference, on fresh random inputs (seed printed; KVMM_SEED replays), in
 * fp32, fp16 and bf16. Outputs are poisoned with 0xff bytes (NaN in every
 * dtype, -1 as a token id) before the kernel runs, so an element the kernel
 * does not write fails. Values are compared by ||gpu - cpu|| / ||cpu||
 * against a bound per precision; token ids and gathered rows must be equal.
 * Skipped, not passed, when no CUDA device answers.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvk.h"
#include "kvmm_base.h"
#include "kvtest.h"

#ifdef KVMM_HAVE_CUDA
#include <cuda_runtime_api.h>

#define CK_CUDA(call)                                                          \
	do {                                                                   \
		cudaError_t __e = (call);                                      \
		ck_assert_msg(__e == cudaSuccess, "%s: %s", #call,             \
			      cudaGetErrorString(__e));                        \
	} while (0)

static const enum kvk_dtype all_dt[] = {KVK_F32, KVK_F16, KVK_BF16};

/* ||gpu - cpu|| / ||cpu|| must stay below this for results stored as dt */
static double bound_of(enum kvk_dtype dt)
{
	return dt == KVK_F32 ? 1e-5 : dt == KVK_F16 ? 2e-3 : 1e-2;
}

static float rnd(uint64_t *s)
{
	return (float)((kvtest_rand(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* n random elements of dt in [-scale, scale), on the host */
static void *rnd_buf(uint64_t *s, size_t n, float scale, enum kvk_dtype dt)
{
	float *f = malloc(n * sizeof(float) + 4);
	void *b = malloc(n * kvk_dtype_size(dt) + 4);

	ck_assert(f && b);
	for (size_t i = 0; i < n; i++)
		f[i] = rnd(s) * scale;
	kvk_convert_from_f32(b, f, n, dt);
	free(f);
	return b;
}

static void *dev_from(const void *h, size_t bytes)
{
	void *d;

	CK_CUDA(cudaMalloc(&d, bytes + 4));
	CK_CUDA(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
	return d;
}

static void *dev_poison(size_t bytes)
{
	void *d;

	CK_CUDA(cudaMalloc(&d, bytes + 4));
	CK_CUDA(cudaMemset(d, 0xff, bytes));
	return d;
}

static void *host_from(const void *d, size_t bytes)
{
	void *h = malloc(bytes + 4);

	ck_assert_ptr_nonnull(h);
	CK_CUDA(cudaDeviceSynchronize());
	CK_CUDA(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
	return h;
}

static double elt(const void *p, size_t i, enum kvk_dtype dt)
{
	float f;

	kvk_convert_to_f32(&f, (const char *)p + i * kvk_dtype_size(dt), 1, dt);
	return f;
}

/*
 * Normalised error of the GPU's n elements against the CPU's; a NaN where
 * the CPU has a number counts as infinite error. The first mismatches are
 * printed.
 */
static void expect_close(const void *gpu, const void *cpu, size_t n,
			 enum kvk_dtype dt, const char *what)
{
	double num = 0, den = 0, err, bound = bound_of(dt);
	int shown = 0, nans = 0;

	for (size_t i = 0; i < n; i++) {
		double g = elt(gpu, i, dt), c = elt(cpu, i, dt);

		if (isnan(g) && !isnan(c)) {
			if (shown++ < 5)
				printf("# %s: [%zu] gpu NaN (unwritten?), "
				       "cpu %.9g\n",
				       what, i, c);
			nans++;
			continue;
		}
		if (isnan(c))
			continue;
		num += (g - c) * (g - c);
		den += c * c;
	}
	err = den > 0 ? sqrt(num / den) : sqrt(num);
	if (!(err <= bound) || nans) {
		for (size_t i = 0; i < n && shown < 10; i++) {
			double g = elt(gpu, i, dt), c = elt(cpu, i, dt);

			if (fabs(g - c) > bound * fabs(c) + 1e-6) {
				printf("# %s: [%zu] gpu %.9g cpu %.9g\n", what,
				       i, g, c);
				shown++;
			}
		}
		fflush(stdout);
	}
	ck_assert_msg(!nans, "%s: %d elements NaN on the GPU only", what, nans);
	ck_assert_msg(err <= bound, "%s: ||gpu-cpu||/||cpu|| = %g > %g", what,
		      err, bound);
}

static void expect_ids(const int32_t *gpu, const int32_t *cpu, int rows,
		       const float *u, const char *what)
{
	int bad = 0;

	for (int r = 0; r < rows; r++)
		if (gpu[r] != cpu[r] && bad++ < 5)
			printf("# %s: row %d (u %.9g): gpu %d cpu %d\n", what,
			       r, u ? u[r] : 0.0f, gpu[r], cpu[r]);
	fflush(stdout);
	ck_assert_msg(!bad, "%s: %d of %d rows differ", what, bad, rows);
}

START_TEST(test_rmsnorm_cuda)
{
	static const struct {
		int rows, dim;
	} shapes[] = {
		{1, 1}, {3, 7}, {17, 4096}, {5, 5120}, {2, 8195}, {300, 128},
	};
	uint64_t seed = kvtest_seed("rmsnorm_cuda");

	for (size_t i = 0; i < ARRAY_SIZE(shapes); i++)
		for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++) {
			enum kvk_dtype dt = all_dt[t];
			int rows = shapes[i].rows, dim = shapes[i].dim;
			size_t n = (size_t)rows * dim, es = kvk_dtype_size(dt);
			void *x = rnd_buf(&seed, n, 4.0f, dt);
			void *w = rnd_buf(&seed, dim, 2.0f, dt);
			void *ref = malloc(n * es), *got;
			void *dx = dev_from(x, n * es),
			     *dw = dev_from(w, dim * es);
			void *dout = dev_poison(n * es);
			char what[80];

			snprintf(what, sizeof(what), "rmsnorm %s %dx%d",
				 kvk_dtype_name(dt), rows, dim);
			ck_assert_int_eq(kvk_rmsnorm_cpu(ref, x, w, rows, dim,
							 1e-5f, dt, NULL),
					 0);
			ck_assert_int_eq(kvk_rmsnorm_cuda(dout, dx, dw, rows,
							  dim, 1e-5f, dt, NULL),
					 0);
			got = host_from(dout, n * es);
			expect_close(got, ref, n, dt, what);
			free(got);
			/* in place */
			ck_assert_int_eq(kvk_rmsnorm_cuda(dx, dx, dw, rows, dim,
							  1e-5f, dt, NULL),
					 0);
			got = host_from(dx, n * es);
			expect_close(got, ref, n, dt, what);
			free(got), free(x), free(w), free(ref);
			cudaFree(dx), cudaFree(dw), cudaFree(dout);
		}
}
END_TEST

START_TEST(test_elementwise_cuda)
{
	uint64_t seed = kvtest_seed("elementwise_cuda");
	size_t sizes[] = {1, 31, 4096, 1000003,
			  1 + kvtest_rand(&seed) % 3000000};

	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
		for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++) {
			enum kvk_dtype dt = all_dt[t];
			size_t n = sizes[i], es = kvk_dtype_size(dt);
			void *a = rnd_buf(&seed, n, 12.0f, dt);
			void *b = rnd_buf(&seed, n, 3.0f, dt);
			void *ref = malloc(n * es), *got;
			void *da = dev_from(a, n * es),
			     *db = dev_from(b, n * es);
			void *dout = dev_poison(n * es);
			char what[80];

			snprintf(what, sizeof(what), "silu_mul %s n %zu",
				 kvk_dtype_name(dt), n);
			ck_assert_int_eq(
				kvk_silu_mul_cpu(ref, a, b, n, dt, NULL), 0);
			ck_assert_int_eq(
				kvk_silu_mul_cuda(dout, da, db, n, dt, NULL),
				0);
			got = host_from(dout, n * es);
			expect_close(got, ref, n, dt, what);
			free(got);

			snprintf(what, sizeof(what), "add %s n %zu",
				 kvk_dtype_name(dt), n);
			CK_CUDA(cudaMemset(dout, 0xff, n * es));
			ck_assert_int_eq(kvk_add_cpu(ref, a, b, n, dt, NULL),
					 0);
			ck_assert_int_eq(
				kvk_add_cuda(dout, da, db, n, dt, NULL), 0);
			got = host_from(dout, n * es);
			expect_close(got, ref, n, dt, what);
			free(got);
			/* residual in place: a += b */
			ck_assert_int_eq(kvk_add_cuda(da, da, db, n, dt, NULL),
					 0);
			got = host_from(da, n * es);
			expect_close(got, ref, n, dt, what);
			free(got), free(a), free(b), free(ref);
			cudaFree(da), cudaFree(db), cudaFree(dout);
		}
}
END_TEST

START_TEST(test_embed_cuda)
{
	uint64_t seed = kvtest_seed("embed_cuda");

	for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++) {
		enum kvk_dtype dt = all_dt[t];
		int vocab = 1 + kvtest_rand(&seed) % 50000;
		int dim = 1 + kvtest_rand(&seed) % 4100, ntok = 257;
		size_t es = kvk_dtype_size(dt), bytes = (size_t)ntok * dim * es;
		void *table = rnd_buf(&seed, (size_t)vocab * dim, 1.0f, dt);
		void *dtable = dev_from(table, (size_t)vocab * dim * es);
		int32_t *ids = malloc(ntok * sizeof(int32_t)), *dids;
		void *ref = malloc(bytes), *got, *dout = dev_poison(bytes);

		for (int i = 0; i < ntok; i++)
			ids[i] = (int32_t)(kvtest_rand(&seed) % vocab);
		ids[1] = -5;
		ids[2] = vocab;
		ids[3] = vocab - 1;
		dids = dev_from(ids, ntok * sizeof(int32_t));
		ck_assert_int_eq(kvk_embed_cpu(ref, table, ids, ntok, dim,
					       vocab, dt, NULL),
				 0);
		ck_assert_int_eq(kvk_embed_cuda(dout, dtable, dids, ntok, dim,
						vocab, dt, NULL),
				 0);
		got = host_from(dout, bytes);
		for (size_t b = 0; b < bytes; b++)
			ck_assert_msg(((char *)got)[b] == ((char *)ref)[b],
				      "embed %s: byte %zu (token %zu) differs",
				      kvk_dtype_name(dt), b, b / (dim * es));
		free(got), free(ref), free(table), free(ids);
		cudaFree(dtable), cudaFree(dids), cudaFree(dout);
	}
}
END_TEST

static const struct kvk_rope_cfg llama31 = {500000.0f, 8.0f, 1.0f, 4.0f, 8192};
static const struct kvk_rope_cfg llama2 = {10000.0f, 0, 0, 0, 0};

/*
 * RoPE works in place, so the output cannot be poisoned: an element left
 * unwritten keeps its unrotated value, which the error bound catches
 * (positions are random up to 128K, so almost no angle is near 0).
 */
START_TEST(test_rope_cuda)
{
	static const int hds[] = {64, 128, 256};
	uint64_t seed = kvtest_seed("rope_cuda");

	for (size_t h = 0; h < ARRAY_SIZE(hds); h++)
		for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++)
			for (int c = 0; c < 2; c++) {
				enum kvk_dtype dt = all_dt[t];
				const struct kvk_rope_cfg *cfg =
					c ? &llama2 : &llama31;
				int hd = hds[h], nq = 32, nkv = 8;
				int ntok = 1 + kvtest_rand(&seed) % 300;
				size_t es = kvk_dtype_size(dt);
				size_t qb = (size_t)ntok * nq * hd * es;
				size_t kb = (size_t)ntok * nkv * hd * es;
				void *q = rnd_buf(&seed, qb / es, 2.0f, dt);
				void *k = rnd_buf(&seed, kb / es, 2.0f, dt);
				void *dq = dev_from(q, qb),
				     *dk = dev_from(k, kb);
				int32_t *pos = malloc(ntok * 4), *dpos;
				void *gq, *gk;
				char what[80];

				for (int i = 0; i < ntok; i++)
					pos[i] =
						1 + kvtest_rand(&seed) % 131071;
				dpos = dev_from(pos, ntok * 4);
				snprintf(what, sizeof(what),
					 "rope %s hd %d ntok %d %s",
					 kvk_dtype_name(dt), hd, ntok,
					 c ? "theta 1e4" : "llama3.1");
				ck_assert_int_eq(kvk_rope_cpu(q, k, pos, ntok,
							      nq, nkv, hd, cfg,
							      dt, NULL),
						 0);
				ck_assert_int_eq(
					kvk_rope_cuda(dq, dk, dpos, ntok, nq,
						      nkv, hd, cfg, dt, NULL),
					0);
				gq = host_from(dq, qb);
				gk = host_from(dk, kb);
				expect_close(gq, q, qb / es, dt, what);
				expect_close(gk, k, kb / es, dt, what);
				free(gq), free(gk), free(q), free(k), free(pos);
				cudaFree(dq), cudaFree(dk), cudaFree(dpos);
			}
}
END_TEST

/*
 * Logits for the samplers: flat random rows (more tokens within reach of
 * the maximum than the kernel stages in shared memory, at large
 * vocabularies), peaked rows (a few hundred within reach: the staged path),
 * rows on a coarse grid (many ties), NaN and -inf entries, a row of equal
 * values and a row of NaN.
 */
static void *sample_logits(uint64_t *s, int rows, int vocab, enum kvk_dtype dt)
{
	size_t n = (size_t)rows * vocab;
	float *f = malloc(n * sizeof(float));
	void *b = malloc(n * kvk_dtype_size(dt) + 4);

	for (int r = 0; r < rows; r++) {
		float *l = f + (size_t)r * vocab;
		float scale = 1.0f + (float)(kvtest_rand(s) % 12);

		for (int i = 0; i < vocab; i++) {
			l[i] = rnd(s) * scale;
			if (r % 4 == 1)
				l[i] = roundf(l[i]); /* ties */
		}
		if (r % 4 == 3) { /* peaked, as an LM's: few candidates */
			for (int i = 0; i < vocab; i++)
				l[i] = rnd(s) * 3.0f - 40.0f;
			for (int i = 0; i < 300; i++)
				l[kvtest_rand(s) % vocab] = rnd(s) * 5.0f;
		}
		if (r % 4 == 2 && vocab > 3) {
			l[kvtest_rand(s) % vocab] = NAN;
			l[kvtest_rand(s) % vocab] = -INFINITY;
		}
		if (r == rows - 2)
			for (int i = 0; i < vocab; i++)
				l[i] = 0.25f;
		if (r == rows - 1 && rows > 8)
			for (int i = 0; i < vocab; i++)
				l[i] = NAN;
	}
	kvk_convert_from_f32(b, f, n, dt);
	free(f);
	return b;
}

START_TEST(test_argmax_cuda)
{
	static const int vocabs[] = {1, 5, 1000, 32000, 128256};
	uint64_t seed = kvtest_seed("argmax_cuda");

	for (size_t v = 0; v < ARRAY_SIZE(vocabs); v++)
		for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++) {
			enum kvk_dtype dt = all_dt[t];
			int rows = 37, vocab = vocabs[v];
			size_t bytes =
				(size_t)rows * vocab * kvk_dtype_size(dt);
			void *l = sample_logits(&seed, rows, vocab, dt);
			void *dl = dev_from(l, bytes);
			int32_t ref[37], *got, *dids = dev_poison(sizeof(ref));
			char what[80];

			snprintf(what, sizeof(what), "argmax %s vocab %d",
				 kvk_dtype_name(dt), vocab);
			ck_assert_int_eq(
				kvk_argmax_cpu(ref, l, rows, vocab, dt, NULL),
				0);
			ck_assert_int_eq(kvk_argmax_cuda(dids, dl, rows, vocab,
							 dt, NULL),
					 0);
			got = host_from(dids, sizeof(ref));
			expect_ids(got, ref, rows, NULL, what);
			free(got), free(l);
			cudaFree(dl), cudaFree(dids);
		}
}
END_TEST

START_TEST(test_sample_cuda)
{
	static const int vocabs[] = {1, 7, 1000, 32000, 128256};
	static const struct kvk_sample_cfg cfgs[] = {
		{1.0f, 0, 1.0f},   {0.7f, 50, 1.0f},   {1.0f, 0, 0.9f},
		{0.6f, 40, 0.95f}, {1.5f, 1000, 0.5f}, {1.0f, 1, 1.0f},
		{0.8f, 0, 1e-6f},  {0.0f, 0, 1.0f},
	};
	uint64_t seed = kvtest_seed("sample_cuda");
	enum { ROWS = 24 };

	for (size_t v = 0; v < ARRAY_SIZE(vocabs); v++)
		for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++) {
			enum kvk_dtype dt = all_dt[t];
			int vocab = vocabs[v];
			size_t bytes =
				(size_t)ROWS * vocab * kvk_dtype_size(dt);
			void *l = sample_logits(&seed, ROWS, vocab, dt);
			void *dl = dev_from(l, bytes);
			int32_t ref[ROWS], *got,
				*dids = dev_poison(sizeof(ref));
			float u[ROWS], *du;

			for (int r = 0; r < ROWS; r++)
				u[r] = kvk_rand_uniform(seed, r);
			u[0] = 0.0f;
			u[1] = 0.99999994f;
			du = dev_from(u, sizeof(u));
			for (size_t c = 0; c < ARRAY_SIZE(cfgs); c++) {
				char what[96];

				snprintf(what, sizeof(what),
					 "sample %s vocab %d T %g k %d p %g",
					 kvk_dtype_name(dt), vocab,
					 cfgs[c].temperature, cfgs[c].top_k,
					 cfgs[c].top_p);
				CK_CUDA(cudaMemset(dids, 0xff, sizeof(ref)));
				ck_assert_int_eq(kvk_sample_cpu(ref, l, u, ROWS,
								vocab, &cfgs[c],
								dt, NULL),
						 0);
				ck_assert_int_eq(kvk_sample_cuda(dids, dl, du,
								 ROWS, vocab,
								 &cfgs[c], dt,
								 NULL),
						 0);
				got = host_from(dids, sizeof(ref));
				expect_ids(got, ref, ROWS, u, what);
				free(got);
			}
			free(l);
			cudaFree(dl), cudaFree(dids), cudaFree(du);
		}
}
END_TEST

/* the launchers refuse what the references refuse; zero rows is a no-op */
START_TEST(test_bad_args_cuda)
{
	struct kvk_sample_cfg sc = {1.0f, 0, 0.0f};
	enum kvk_dtype bad = (enum kvk_dtype)7;
	int32_t pos = 0;
	float *d;

	CK_CUDA(cudaMalloc((void **)&d, 4096));
	ck_assert_int_eq(kvk_rmsnorm_cuda(d, d, d, 1, 0, 1e-5f, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_rmsnorm_cuda(d, d, d, 1, 4, 1e-5f, bad, NULL),
			 -EINVAL);
	ck_assert_int_eq(
		kvk_rmsnorm_cuda(NULL, NULL, NULL, 0, 4, 0, KVK_F32, NULL), 0);
	ck_assert_int_eq(kvk_silu_mul_cuda(d, d, NULL, 4, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(kvk_add_cuda(d, d, d, 4, bad, NULL), -EINVAL);
	ck_assert_int_eq(kvk_add_cuda(NULL, NULL, NULL, 0, KVK_F32, NULL), 0);
	ck_assert_int_eq(
		kvk_embed_cuda(d, d, (int32_t *)d, 1, 4, 0, KVK_F32, NULL),
		-EINVAL);
	ck_assert_int_eq(
		kvk_rope_cuda(d, d, &pos, 1, 1, 1, 7, &llama2, KVK_F32, NULL),
		-EINVAL);
	ck_assert_int_eq(
		kvk_rope_cuda(d, d, &pos, 1, 1, 1, 512, &llama2, KVK_F32, NULL),
		-EINVAL);
	ck_assert_int_eq(kvk_argmax_cuda((int32_t *)d, d, 1, 0, KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(
		kvk_sample_cuda((int32_t *)d, d, d, 1, 4, &sc, KVK_F32, NULL),
		-EINVAL);
	sc.top_p = 1.0f;
	ck_assert_int_eq(kvk_sample_cuda((int32_t *)d, d, NULL, 1, 4, &sc,
					 KVK_F32, NULL),
			 -EINVAL);
	ck_assert_int_eq(
		kvk_sample_cuda(NULL, NULL, NULL, 0, 4, &sc, KVK_F32, NULL), 0);
	CK_CUDA(cudaDeviceSynchronize());
	cudaFree(d);
}
END_TEST

/* a kernel launched on a stream of the caller's runs on that stream */
START_TEST(test_stream_cuda)
{
	uint64_t seed = kvtest_seed("stream_cuda");
	size_t n = 1 << 20;
	void *a = rnd_buf(&seed, n, 1.0f, KVK_F32);
	void *b = rnd_buf(&seed, n, 1.0f, KVK_F32);
	void *ref = malloc(n * 4), *got;
	void *da = dev_from(a, n * 4), *db = dev_from(b, n * 4);
	void *dout = dev_poison(n * 4);
	cudaStream_t s;

	CK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
	ck_assert_int_eq(kvk_add_cpu(ref, a, b, n, KVK_F32, NULL), 0);
	ck_assert_int_eq(kvk_add_cuda(dout, da, db, n, KVK_F32, s), 0);
	CK_CUDA(cudaStreamSynchronize(s));
	got = host_from(dout, n * 4);
	ck_assert(!memcmp(got, ref, n * 4));
	CK_CUDA(cudaStreamDestroy(s));
	free(a), free(b), free(ref), free(got);
	cudaFree(da), cudaFree(db), cudaFree(dout);
}
END_TEST

/*
 * the Hadamard rotation, in place, rows x dims of every dtype; in fp32
 * the two do the same operations, so they agree to rounding
 */
START_TEST(test_hadamard_cuda)
{
	uint64_t seed = kvtest_seed("hadamard_cuda");
	static const uint32_t dims[] = { 2, 64, 128, 256 };

	for (size_t i = 0; i < ARRAY_SIZE(dims); i++)
		for (size_t t = 0; t < ARRAY_SIZE(all_dt); t++) {
			enum kvk_dtype dt = all_dt[t];
			size_t rows = 1 + kvtest_rand(&seed) % 5000;
			size_t n = rows * dims[i], es = kvk_dtype_size(dt);
			void *x = rnd_buf(&seed, n, 4.0f, dt);
			void *dx = dev_from(x, n * es), *got;
			char what[80];

			snprintf(what, sizeof(what), "hadamard %s rows %zu "
				 "dim %u", kvk_dtype_name(dt), rows, dims[i]);
			ck_assert_int_eq(kvk_hadamard_cpu(x, dt, rows, dims[i],
							  NULL), 0);
			ck_assert_int_eq(kvk_hadamard_cuda(dx, dt, rows,
							   dims[i], NULL), 0);
			got = host_from(dx, n * es);
			expect_close(got, x, n, dt, what);
			free(got), free(x);
			cudaFree(dx);
		}
	{
		void *d = dev_poison(64 * 4);

		ck_assert_int_eq(kvk_hadamard_cuda(d, KVK_F32, 1, 48, NULL),
				 -EINVAL);
		ck_assert_int_eq(kvk_hadamard_cuda(NULL, KVK_F32, 1, 64, NULL),
				 -EINVAL);
		cudaFree(d);
	}
}
END_TEST

#else /* !KVMM_HAVE_CUDA: the runner never runs GPU suites here */

#define NO_CUDA_TEST(name)                                                     \
	START_TEST(name)                                                       \
	{                                                                      \
		ck_abort_msg("built without CUDA: this suite cannot run");     \
	}                                                                      \
	END_TEST

NO_CUDA_TEST(test_rmsnorm_cuda)
NO_CUDA_TEST(test_elementwise_cuda)
NO_CUDA_TEST(test_embed_cuda)
NO_CUDA_TEST(test_rope_cuda)
NO_CUDA_TEST(test_argmax_cuda)
NO_CUDA_TEST(test_sample_cuda)
NO_CUDA_TEST(test_bad_args_cuda)
NO_CUDA_TEST(test_stream_cuda)
NO_CUDA_TEST(test_hadamard_cuda)

#endif

Suite *suite_kernels_gpu(void)
{
	Suite *s = suite_create("kernels_gpu");
	TCase *tc = tcase_create("cuda_vs_cpu");

	tcase_set_timeout(tc, 120);
	KV_ADD(tc, test_rmsnorm_cuda);
	KV_ADD(tc, test_elementwise_cuda);
	KV_ADD(tc, test_embed_cuda);
	KV_ADD(tc, test_rope_cuda);
	KV_ADD(tc, test_argmax_cuda);
	KV_ADD(tc, test_sample_cuda);
	KV_ADD(tc, test_bad_args_cuda);
	KV_ADD(tc, test_stream_cuda);
	KV_ADD(tc, test_hadamard_cuda);
	suite_add_tcase(s, tc);
	return s;
}
