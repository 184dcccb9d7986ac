// SPDX-License-Identifier: MIT
/*
 * io.c - file reads through io_uring (liburing), with pread where the
 * kernel or a sandbox refuses io_uring; swap files (O_DIRECT, staged
 * through registered buffers or zero-copy at the pages).
 */
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvrt.h"

#define KVRT_IO_DEPTH 8
#define KVRT_IO_CHUNK (1U << 20)

static int io_engine = -1; /* -1 unknown, 0 pread, 1 io_uring */

static int read_pread(int fd, uint64_t off, char *dst, size_t bytes)
{
	while (bytes) {
		ssize_t n = pread(fd, dst, bytes, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA; /* file shorter than asked */
		dst += n, off += n, bytes -= n;
	}
	return 0;
}

/* Keep up to KVRT_IO_DEPTH chunk reads in flight; resubmit short reads. */
static int read_uring(struct io_uring *ring, int fd, uint64_t off, char *dst,
		      size_t bytes)
{
	size_t next = 0, done = 0;
	unsigned int inflight = 0;
	int ret = 0;

	while (done < bytes) {
		struct io_uring_cqe *cqe;
		struct io_uring_sqe *sqe;

		while (!ret && next < bytes && inflight < KVRT_IO_DEPTH) {
			size_t len = bytes - next;

			if (len > KVRT_IO_CHUNK)
				len = KVRT_IO_CHUNK;
			sqe = io_uring_get_sqe(ring);
			if (!sqe)
				break;
			io_uring_prep_read(sqe, fd, dst + next, len, off + next);
			io_uring_sqe_set_data64(sqe, next | (uint64_t)len << 40);
			next += len;
			inflight++;
		}
		if (!inflight)
			break;
		if (io_uring_submit_and_wait(ring, 1) < 0)
			return -EIO;
		while (io_uring_peek_cqe(ring, &cqe) == 0) {
			uint64_t data = io_uring_cqe_get_data64(cqe);
			size_t at = data & ((1ULL << 40) - 1);
			size_t len = data >> 40;
			int res = cqe->res;

			io_uring_cqe_seen(ring, cqe);
			inflight--;
			if (res < 0) {
				ret = ret ?: res;
			} else if (res == 0) {
				ret = ret ?: -ENODATA;
			} else if ((size_t)res < len) {
				/* short read: finish this chunk with pread */
				int r = read_pread(fd, off + at + res,
						   dst + at + res, len - res);

				ret = ret ?: r;
				done += len;
			} else {
				done += len;
			}
		}
		if (ret && !inflight)
			break;
	}
	return ret;
}

/**
 * kvrt_file_read() - read @bytes at @off of @fd into host memory @dst
 * @fd: open file
 * @off: file offset
 * @dst: destination
 * @bytes: length
 *
 * Chunks of 1 MiB are kept in flight on an io_uring; where io_uring cannot be
 * set up (old kernel, sandbox) the read falls back to pread().
 *
 * Return: 0; -ENODATA when the file ends before @off + @bytes; -errno.
 */
int kvrt_file_read(int fd, uint64_t off, void *dst, size_t bytes)
{
	struct io_uring ring;
	int ret;

	if (fd < 0 || (!dst && bytes))
		return -EINVAL;
	if (!bytes)
		return 0;
	if (io_engine != 0 && io_uring_queue_init(KVRT_IO_DEPTH, &ring, 0) == 0) {
		io_engine = 1;
		ret = read_uring(&ring, fd, off, dst, bytes);
		io_uring_queue_exit(&ring);
		return ret;
	}
	io_engine = 0;
	return read_pread(fd, off, dst, bytes);
}

/**
 * kvrt_file_read_engine() - which engine kvrt_file_read() used
 *
 * Return: "io_uring", "pread", or "unused" before the first read.
 */
const char *kvrt_file_read_engine(void)
{
	return io_engine < 0 ? "unused" : io_engine ? "io_uring" : "pread";
}

/**
 * DOC: swap files
 *
 * A swap file holds pages written out of a KV space. kvrt_swapfile_open()
 * opens it with O_DIRECT (bypassing the page cache; where the file system
 * refuses O_DIRECT, as tmpfs does, without it, and
 * kvrt_swapfile_direct() says so), reads the file's O_DIRECT alignments
 * (statx STATX_DIOALIGN; 4 KiB where the kernel does not say), sets up an
 * io_uring of @depth entries and registers @depth buffers of @chunk bytes
 * each. A transfer is a list of segments (the pages of a sequence in file
 * order, or one host buffer) cut into chunks of at most @chunk bytes, up
 * to @depth in flight, each submitted as soon as it is ready and each
 * completion's slot refilled before the next is looked at. Two paths:
 *
 * - staged (the default, and the only one for device pages): a chunk is
 *   gathered into a free registered buffer (a host buffer by memcpy,
 *   pages through the runtime: kvrt_memcpy_from(), a memcpy on the host
 *   backend, a copy from the device on CUDA) and written with
 *   io_uring_prep_write_fixed(); a read completes into the buffer with
 *   _read_fixed() and is scattered to its segments. One copy each way,
 *   pipelined with the I/O; the buffers were pinned once at registration.
 * - zero-copy (KVRT_SWAP_ZEROCOPY, where the memory allows): every segment
 *   is host memory the CPU reaches (a host buffer, or a page of a context
 *   whose memory the CPU maps: kvrt_host_ptr()), its length a multiple of
 *   the file's O_DIRECT length alignment (the logical block size, 512 on
 *   the development machine's disk) and its address of the memory
 *   alignment. A chunk is one IORING_OP_WRITEV / _READV whose iovecs point
 *   at the segments (adjacent ones merged, at most IOV_MAX), the pad to
 *   KVRT_SWAP_ALIGN from a zero block or into a sink. Elsewhere the call
 *   is staged; kvrt_swapfile_path() says which path the last call took.
 *
 * Why staged is the default: the kernel pins every 4 KiB page of every
 * iovec on each O_DIRECT request (get_user_pages) and builds a segment per
 * page run, which on the host backend's 4 KiB shmem granules and scattered
 * 7-8 KiB KV pages costs more than one memcpy at memory speed into
 * buffers pinned once (Documentation/placement/index.rst, "kvmm bench
 * swap": staged 1.2-2x the zero-copy rate in the same run). Zero-copy
 * pays where the memory is huge-page backed and the runs are long
 * (measured with THP on 120 KiB runs: 4.5 against 4.0 GB/s writing).
 *
 * Where io_uring is refused (or KVRT_SWAP_SYNC) the same chunks run on
 * pwritev()/preadv().
 *
 * A call returns 0 only when every chunk completed in full. A chunk that
 * completes short is resubmitted for the rest once; short twice, or any
 * error, fails the call with -EIO (-ENODATA for a read) or the error: the
 * caller keeps its copy of the data. Offsets are multiples of
 * KVRT_SWAP_ALIGN; so are the lengths of kvrt_swapfile_write()/_read(); a
 * page list is padded to the alignment (zeros written, the pad read into
 * nothing).
 */

#define KVRT_SWAP_IOV_MAX 1024	/* IOV_MAX: vectors per request */

/*
 * struct kvrt_swapfile - one open swap file.
 * Owner: the caller of kvrt_swapfile_open(); calls on one file are
 * serialised by the caller (the ring and the buffers are not locked).
 */
struct kvrt_swapfile {
	int fd;
	int direct;			/* opened with O_DIRECT */
	int uring;			/* 1: io_uring, 0: pwritev/preadv */
	struct io_uring ring;
	uint32_t chunk;			/* bytes per request */
	uint32_t depth;			/* requests in flight, buffers */
	uint32_t iov_cap;		/* vectors per request */
	uint32_t mem_align;		/* O_DIRECT: memory address, bytes */
	uint32_t len_align;		/* O_DIRECT: vector length, bytes */
	void *zero;			/* KVRT_SWAP_ALIGN zero bytes: pads */
	void **buf;			/* [depth] registered buffers */
	struct iovec *iov;		/* [depth][iov_cap] request vectors */
	unsigned int flags;		/* KVRT_SWAP_ZEROCOPY, _SYNC */
	int last;			/* -1 none yet, 0 staged, 1 zero-copy */
	uint64_t fault_nth;		/* chunks until the fault */
	int fault_mode;
};

/*
 * One transfer: @n segments of @seg bytes each, back to back in the file,
 * then a pad to KVRT_SWAP_ALIGN. An address is device-visible (@ctx set)
 * or a host pointer (@ctx NULL); 0 reads into nothing.
 */
struct swap_xfer {
	struct kvrt_ctx *ctx;
	const uint64_t *addr;		/* [n], or NULL: @one */
	uint64_t one;			/* the address when @addr is NULL */
	uint64_t n;
	uint64_t seg;			/* bytes per segment */
	uint64_t data;			/* n * seg */
	uint64_t total;			/* data rounded up to the align */
	char *sink;			/* zero-copy reads of address 0 and
					 * of the pad: max(seg, align) */
	const char *zero;		/* zero-copy writes of the pad */
};

static uint64_t xfer_addr(const struct swap_xfer *x, uint64_t i)
{
	return x->addr ? x->addr[i] : x->one;
}

/**
 * kvrt_host_ptr() - the CPU's pointer to a mapped address, where it has one
 * @ctx: context
 * @addr: device-visible address inside a mapped granule
 *
 * The host backend maps every granule (device-emulating and host-NUMA
 * alike) into the process at its address. The CUDA backend grants access
 * to the device only (cuMemSetAccess() for the device location), so none
 * of its memory, host-NUMA granules included, is the CPU's to touch.
 *
 * Return: the pointer, or NULL where the CPU cannot reach @addr.
 */
void *kvrt_host_ptr(struct kvrt_ctx *ctx, uint64_t addr)
{
	if (!ctx || !addr || kvrt_ctx_backend(ctx) != KVRT_BACKEND_HOST)
		return NULL;
	return (void *)(uintptr_t)addr;
}

/*
 * Whether @x can go straight from/to its segments: host memory, segment
 * lengths (and so the pad, and every chunk split) multiples of the file's
 * O_DIRECT length alignment, addresses of its memory alignment.
 */
static int xfer_zero_copy(const struct kvrt_swapfile *sf,
			  const struct swap_xfer *x)
{
	if (!(sf->flags & KVRT_SWAP_ZEROCOPY) || x->seg % sf->len_align)
		return 0;
	for (uint64_t i = 0; i < x->n; i++) {
		uint64_t a = xfer_addr(x, i);

		if (!a)
			continue;	/* a read into the sink */
		if (a % sf->mem_align ||
		    (x->ctx && !kvrt_host_ptr(x->ctx, a)))
			return 0;
	}
	return 1;
}

/*
 * The vectors of [@at, @at + up to @max) of a zero-copy transfer, adjacent
 * segments merged, at most @cap of them. Return: the bytes they cover.
 */
static uint64_t xfer_iov(const struct swap_xfer *x, uint64_t at, uint64_t max,
			 struct iovec *iov, uint32_t cap, uint32_t *nr)
{
	uint64_t got = 0;
	uint32_t k = 0;

	while (got < max && at + got < x->total) {
		uint64_t i = (at + got) / x->seg, o = (at + got) % x->seg;
		uint64_t len = x->seg - o;
		uint64_t a = at + got < x->data ? xfer_addr(x, i) : 0;
		char *p = a ? (char *)(uintptr_t)a + o : x->sink + o;

		if (at + got >= x->data) {	/* the pad */
			o = at + got - x->data;
			len = x->total - (at + got);
			p = (x->zero ? (char *)x->zero : x->sink) + o;
		}

		if (len > max - got)
			len = max - got;
		if (k && (char *)iov[k - 1].iov_base + iov[k - 1].iov_len == p) {
			iov[k - 1].iov_len += len;
		} else {
			if (k == cap)
				break;
			iov[k].iov_base = p;
			iov[k].iov_len = len;
			k++;
		}
		got += len;
	}
	*nr = k;
	return got;
}

/* copy [@at, @at + @len) of the transfer into @buf (write: the gather) */
static int xfer_gather(const struct swap_xfer *x, uint64_t at, uint64_t len,
		       char *buf)
{
	while (len) {
		uint64_t i = at / x->seg, o = at % x->seg, part = x->seg - o;
		int ret = 0;

		if (at >= x->data) {	/* the pad */
			memset(buf, 0, len);
			return 0;
		}
		if (part > len)
			part = len;
		if (!xfer_addr(x, i))
			return -EINVAL;
		if (x->ctx)
			ret = kvrt_memcpy_from(x->ctx, buf,
					       xfer_addr(x, i) + o, part);
		else
			memcpy(buf, (char *)(uintptr_t)xfer_addr(x, i) + o,
			       part);
		if (ret)
			return ret;
		buf += part, at += part, len -= part;
	}
	return 0;
}

/* copy @buf to [@at, @at + @len) of the transfer (read: the scatter) */
static int xfer_scatter(const struct swap_xfer *x, uint64_t at, uint64_t len,
			const char *buf)
{
	while (len && at < x->data) {
		uint64_t i = at / x->seg, o = at % x->seg, part = x->seg - o;
		uint64_t a = xfer_addr(x, i);
		int ret = 0;

		if (part > len)
			part = len;
		if (a && x->ctx)
			ret = kvrt_memcpy_to(x->ctx, a + o, buf, part);
		else if (a)
			memcpy((char *)(uintptr_t)a + o, buf, part);
		if (ret)
			return ret;
		buf += part, at += part, len -= part;
	}
	return 0;
}

/*
 * The O_DIRECT alignments of @sf's file (statx STATX_DIOALIGN: memory
 * address; file offset and vector length, the logical block size), or
 * KVRT_SWAP_ALIGN where the kernel does not say; none without O_DIRECT.
 */
static void dio_align(struct kvrt_swapfile *sf)
{
#ifdef STATX_DIOALIGN
	struct statx st;
#endif

	sf->mem_align = sf->len_align = sf->direct ? KVRT_SWAP_ALIGN : 1;
#ifdef STATX_DIOALIGN
	if (sf->direct &&
	    !statx(sf->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) &&
	    (st.stx_mask & STATX_DIOALIGN) && st.stx_dio_mem_align &&
	    st.stx_dio_offset_align) {
		sf->mem_align = st.stx_dio_mem_align;
		sf->len_align = st.stx_dio_offset_align;
	}
#endif
	/* chunks split at KVRT_SWAP_ALIGN multiples: keep the rule simple */
	if (KVRT_SWAP_ALIGN % sf->len_align || sf->len_align % sf->mem_align)
		sf->mem_align = sf->len_align = KVRT_SWAP_ALIGN;
}

/**
 * kvrt_swapfile_open() - open (create) a swap file
 * @path: file; created if absent, not truncated
 * @chunk: bytes per request, a multiple of KVRT_SWAP_ALIGN (0: 1 MiB)
 * @depth: requests in flight, 1..64 (0: 8)
 * @out: the swap file
 *
 * Return: 0; -EINVAL for a bad size; -ENOMEM; open()'s error.
 */
int kvrt_swapfile_open(const char *path, uint32_t chunk, uint32_t depth,
		       struct kvrt_swapfile **out)
{
	struct kvrt_swapfile *sf;
	struct iovec *iov;
	int ret = -ENOMEM;

	if (!path || !out)
		return -EINVAL;
	chunk = chunk ? chunk : KVRT_IO_CHUNK;
	depth = depth ? depth : KVRT_IO_DEPTH;
	if (chunk % KVRT_SWAP_ALIGN || depth > 64)
		return -EINVAL;
	sf = calloc(1, sizeof(*sf));
	if (!sf)
		return -ENOMEM;
	sf->chunk = chunk;
	sf->depth = depth;
	sf->last = -1;
	/* a chunk of 4 KiB segments, plus one split at each end */
	sf->iov_cap = chunk / KVRT_SWAP_ALIGN + 2 < KVRT_SWAP_IOV_MAX ?
			      chunk / KVRT_SWAP_ALIGN + 2 :
			      KVRT_SWAP_IOV_MAX;
	sf->direct = 1;
	sf->fd = open(path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
	if (sf->fd < 0 && errno == EINVAL) {
		sf->direct = 0;
		sf->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	}
	if (sf->fd < 0) {
		ret = -errno;
		goto out_free;
	}
	dio_align(sf);
	if (posix_memalign(&sf->zero, KVRT_SWAP_ALIGN, KVRT_SWAP_ALIGN)) {
		sf->zero = NULL;
		goto out_iov_nofree;
	}
	memset(sf->zero, 0, KVRT_SWAP_ALIGN);
	sf->buf = calloc(depth, sizeof(void *));
	sf->iov = calloc((size_t)depth * sf->iov_cap, sizeof(*sf->iov));
	iov = calloc(depth, sizeof(*iov));
	if (!sf->buf || !sf->iov || !iov)
		goto out_iov;
	for (uint32_t i = 0; i < depth; i++) {
		if (posix_memalign(&sf->buf[i], KVRT_SWAP_ALIGN, chunk))
			goto out_iov;
		iov[i].iov_base = sf->buf[i];
		iov[i].iov_len = chunk;
	}
	if (io_uring_queue_init(depth, &sf->ring, 0) == 0) {
		if (io_uring_register_buffers(&sf->ring, iov, depth) == 0)
			sf->uring = 1;
		else
			io_uring_queue_exit(&sf->ring);
	}
	free(iov);
	*out = sf;
	return 0;

out_iov:
	free(iov);
out_iov_nofree:
	kvrt_swapfile_close(sf);
	return ret;
out_free:
	free(sf);
	return ret;
}

/**
 * kvrt_swapfile_close() - close a swap file (the file stays)
 * @sf: swap file, or NULL
 */
void kvrt_swapfile_close(struct kvrt_swapfile *sf)
{
	if (!sf)
		return;
	if (sf->uring) {
		io_uring_unregister_buffers(&sf->ring);
		io_uring_queue_exit(&sf->ring);
	}
	for (uint32_t i = 0; sf->buf && i < sf->depth; i++)
		free(sf->buf[i]);
	free(sf->buf);
	free(sf->iov);
	free(sf->zero);
	if (sf->fd >= 0)
		close(sf->fd);
	free(sf);
}

/**
 * kvrt_swapfile_fault() - make a later chunk fail (tests)
 * @sf: swap file
 * @nth: 1 for the next chunk; 0 turns it off
 * @mode: KVRT_SWAP_FAULT_EIO or KVRT_SWAP_FAULT_SHORT (a short transfer
 *	that stays short: the file gets part of the chunk and the call
 *	fails), counting chunk writes; with KVRT_SWAP_FAULT_READ or'ed in,
 *	chunk reads instead
 */
void kvrt_swapfile_fault(struct kvrt_swapfile *sf, uint64_t nth, int mode)
{
	sf->fault_nth = nth;
	sf->fault_mode = mode;
}

/* the length the next chunk is submitted with, or -EIO */
static int64_t fault_len(struct kvrt_swapfile *sf, int wr, uint64_t len)
{
	int rd = (sf->fault_mode & KVRT_SWAP_FAULT_READ) != 0;

	if (!sf->fault_nth || rd == wr || --sf->fault_nth)
		return (int64_t)len;
	if ((sf->fault_mode & ~KVRT_SWAP_FAULT_READ) == KVRT_SWAP_FAULT_EIO)
		return -EIO;
	sf->fault_nth = 1;	/* short again on the retry: it stays short */
	return (int64_t)(len / 2 / KVRT_SWAP_ALIGN * KVRT_SWAP_ALIGN);
}

/* cut @iov[@nr] after @bytes; *@was: the cut vector's length, or 0 */
static uint32_t iov_cut(struct iovec *iov, uint32_t nr, uint64_t bytes,
			size_t *was)
{
	uint32_t i = 0;

	while (i < nr && bytes > iov[i].iov_len)
		bytes -= iov[i++].iov_len;
	if (i == nr) {
		*was = 0;
		return nr;
	}
	*was = iov[i].iov_len;
	iov[i].iov_len = bytes;
	return i + 1;
}

/* @len bytes at @off from/to @iov[@nr], synchronously, the fault applied */
static int sync_vec(struct kvrt_swapfile *sf, int wr, uint64_t off,
		    struct iovec *iov, uint32_t nr, uint64_t len)
{
	uint64_t done = 0;
	int tries = 0;

	while (done < len) {
		int64_t want = fault_len(sf, wr, len - done);
		uint32_t k;
		size_t was;
		ssize_t n;

		if (want < 0)
			return (int)want;
		k = iov_cut(iov, nr, want, &was);
		n = wr ? pwritev(sf->fd, iov, k, off + done)
		       : preadv(sf->fd, iov, k, off + done);
		if (was)
			iov[k - 1].iov_len = was;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0 || ((uint64_t)n < (uint64_t)want && ++tries > 1) ||
		    (n == want && (uint64_t)want < len - done && ++tries > 1))
			return wr ? -EIO : -ENODATA;
		done += n;
		while (nr && (size_t)n >= iov->iov_len) {
			n -= iov->iov_len;
			iov++, nr--;
		}
		if (n) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= n;
		}
	}
	return 0;
}

/*
 * One chunk, [@at, @at + *@len), into request slot @b's vectors: zero-copy
 * points them at the segments (and may shorten *@len to what @cap vectors
 * cover), staged at buffer @b (filled first for a write).
 */
static int chunk_prep(struct kvrt_swapfile *sf, const struct swap_xfer *x,
		      int zc, int wr, uint32_t b, uint64_t at, uint64_t *len,
		      uint32_t *nr)
{
	struct iovec *iov = sf->iov + (size_t)b * sf->iov_cap;

	if (zc) {
		*len = xfer_iov(x, at, *len, iov, sf->iov_cap, nr);
		return 0;
	}
	iov->iov_base = sf->buf[b];
	iov->iov_len = *len;
	*nr = 1;
	return wr ? xfer_gather(x, at, *len, sf->buf[b]) : 0;
}

/* the transfer without io_uring: chunk by chunk on pwritev/preadv */
static int swap_sync(struct kvrt_swapfile *sf, int wr, int zc, uint64_t off,
		     const struct swap_xfer *x)
{
	int ret = 0;

	for (uint64_t at = 0; at < x->total && !ret;) {
		uint64_t len = x->total - at < sf->chunk ? x->total - at :
							   sf->chunk;
		uint32_t nr;

		ret = chunk_prep(sf, x, zc, wr, 0, at, &len, &nr);
		if (!ret)
			ret = sync_vec(sf, wr, off + at, sf->iov, nr, len);
		if (!ret && !wr && !zc)
			ret = xfer_scatter(x, at, len, sf->buf[0]);
		at += len;
	}
	return ret;
}

/*
 * Move a transfer between memory and the file at @off, chunk by chunk, up
 * to depth in flight; staged chunks are gathered into their buffer before
 * submission (write) or scattered from it after completion (read).
 */
static int swap_io(struct kvrt_swapfile *sf, int wr, uint64_t off,
		   struct swap_xfer *x)
{
	uint64_t next = 0;
	uint32_t inflight = 0, freeb = sf->depth;
	uint32_t *free_ids = NULL;
	struct {
		uint64_t at, len;	/* the chunk */
		uint32_t tries;		/* resubmissions */
	} *req = NULL;
	int zc, ret = 0;

	if (off % KVRT_SWAP_ALIGN)
		return -EINVAL;
	zc = xfer_zero_copy(sf, x);
	sf->last = zc;
	if (zc && wr) {
		x->zero = sf->zero;
	} else if (zc) {
		int sink = x->total > x->data;

		for (uint64_t i = 0; i < x->n && !sink; i++)
			sink = !xfer_addr(x, i);
		if (sink && posix_memalign((void **)&x->sink, KVRT_SWAP_ALIGN,
					   x->seg > KVRT_SWAP_ALIGN ?
						   x->seg :
						   KVRT_SWAP_ALIGN))
			return -ENOMEM;
	}
	if (!sf->uring || (sf->flags & KVRT_SWAP_SYNC))
		return swap_sync(sf, wr, zc, off, x);
	free_ids = malloc(sf->depth * sizeof(*free_ids));
	req = calloc(sf->depth, sizeof(*req));
	if (!free_ids || !req) {
		free(free_ids);
		free(req);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < sf->depth; i++)
		free_ids[i] = i;
	for (;;) {
		struct io_uring_cqe *cqe;

		while (!ret && next < x->total && freeb) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&sf->ring);
			uint32_t b = free_ids[freeb - 1], nr;
			uint64_t len = x->total - next < sf->chunk ?
					       x->total - next :
					       sf->chunk;
			struct iovec *iov = sf->iov + (size_t)b * sf->iov_cap;
			int64_t sub;
			size_t was;

			if (!sqe)
				break;
			ret = chunk_prep(sf, x, zc, wr, b, next, &len, &nr);
			if (ret) {	/* the runtime's copy: as if submitted */
				io_uring_prep_nop(sqe);
				sqe->user_data = b | (2ULL << 32);
				len = x->total - next;	/* nothing after */
			} else if ((sub = fault_len(sf, wr, len)) < 0) {
				/* injected: as if it completed so */
				io_uring_prep_nop(sqe);
				sqe->user_data = b | (1ULL << 32);
			} else if (zc) {
				nr = iov_cut(iov, nr, sub, &was);
				if (wr)
					io_uring_prep_writev(sqe, sf->fd, iov,
							     nr, off + next);
				else
					io_uring_prep_readv(sqe, sf->fd, iov,
							    nr, off + next);
				sqe->user_data = b;
			} else if (wr) {
				io_uring_prep_write_fixed(sqe, sf->fd,
							  sf->buf[b], sub,
							  off + next, b);
				sqe->user_data = b;
			} else {
				io_uring_prep_read_fixed(sqe, sf->fd,
							 sf->buf[b], sub,
							 off + next, b);
				sqe->user_data = b;
			}
			freeb--;
			req[b].at = next;
			req[b].len = len;
			req[b].tries = 0;
			next += len;
			inflight++;
			/* at once: the file works while the next is gathered */
			if (io_uring_submit(&sf->ring) < 0) {
				ret = ret ?: -EIO;
				goto out;
			}
		}
		if (!inflight)
			break;
		/*
		 * One completion at a time, its buffer refilled and
		 * resubmitted before the next is looked at: the queue stays
		 * @depth deep while the scatters and gathers run.
		 */
		if (io_uring_wait_cqe(&sf->ring, &cqe) < 0) {
			ret = ret ?: -EIO;
			break;
		}
		{
			uint32_t b = (uint32_t)cqe->user_data;
			uint32_t why = cqe->user_data >> 32;
			int res = why ? -EIO : cqe->res;

			io_uring_cqe_seen(&sf->ring, cqe);
			inflight--;
			if (why == 2) {
				/* the gather failed: ret holds its error */
			} else if (res < 0) {
				ret = ret ?: res;
			} else if ((uint64_t)res < req[b].len) {
				/* short: the rest once more, synchronously */
				uint64_t got = (uint64_t)res;
				int r = ++req[b].tries > 1 ? -EIO : 0;
				uint32_t nr;

				if (!r && got % KVRT_SWAP_ALIGN)
					r = -EIO; /* O_DIRECT cannot resume */
				if (!r && zc) {
					uint64_t left = req[b].len - got;

					xfer_iov(x, req[b].at + got, left,
						 sf->iov + (size_t)b *
								 sf->iov_cap,
						 sf->iov_cap, &nr);
				} else if (!r) {
					sf->iov[(size_t)b * sf->iov_cap] =
						(struct iovec){
							(char *)sf->buf[b] +
								got,
							req[b].len - got
						};
					nr = 1;
				}
				if (!r)
					r = sync_vec(sf, wr,
						     off + req[b].at + got,
						     sf->iov + (size_t)b *
								     sf->iov_cap,
						     nr, req[b].len - got);
				ret = ret ?: r;
			}
			if (!ret && !wr && !zc)
				ret = xfer_scatter(x, req[b].at, req[b].len,
						   sf->buf[b]);
			free_ids[freeb++] = b;
		}
	}
out:
	free(free_ids);
	free(req);
	return ret;
}

static int swap_buf(struct kvrt_swapfile *sf, int wr, uint64_t off,
		    const void *mem, size_t bytes)
{
	struct swap_xfer x = { .one = (uintptr_t)mem, .n = 1, .seg = bytes,
			       .data = bytes, .total = bytes };

	if (bytes % KVRT_SWAP_ALIGN || (!mem && bytes))
		return -EINVAL;
	if (!bytes)
		return off % KVRT_SWAP_ALIGN ? -EINVAL : 0;
	return swap_io(sf, wr, off, &x);
}

/**
 * kvrt_swapfile_write() - write @bytes at @off, confirmed
 * @sf: swap file
 * @off: file offset, a multiple of KVRT_SWAP_ALIGN
 * @src: data; zero-copy when aligned to KVRT_SWAP_ALIGN
 * @bytes: length, a multiple of KVRT_SWAP_ALIGN
 *
 * Returns once every chunk has completed. Not a barrier against power
 * loss: kvrt_swapfile_sync() is (O_DIRECT skips the page cache, not the
 * device's).
 *
 * Return: 0 when all of it is in the file; -EINVAL for unaligned sizes;
 * -EIO for a chunk that failed or stayed short; the I/O error. On error
 * the file's contents in the range are undefined: keep the data.
 */
int kvrt_swapfile_write(struct kvrt_swapfile *sf, uint64_t off,
			const void *src, size_t bytes)
{
	return swap_buf(sf, 1, off, src, bytes);
}

/**
 * kvrt_swapfile_read() - read @bytes at @off
 * @sf: swap file
 * @off: file offset, a multiple of KVRT_SWAP_ALIGN
 * @dst: destination; zero-copy when aligned to KVRT_SWAP_ALIGN
 * @bytes: length, a multiple of KVRT_SWAP_ALIGN
 *
 * Return: 0; -EINVAL; -ENODATA past the end; the I/O error. On error
 * @dst's contents are undefined.
 */
int kvrt_swapfile_read(struct kvrt_swapfile *sf, uint64_t off, void *dst,
		       size_t bytes)
{
	return swap_buf(sf, 0, off, dst, bytes);
}

static int swap_pages(struct kvrt_swapfile *sf, int wr, struct kvrt_ctx *ctx,
		      uint64_t off, const uint64_t *addr, uint64_t n,
		      uint32_t page_bytes)
{
	struct swap_xfer x = { .ctx = ctx, .addr = addr, .n = n,
			       .seg = page_bytes };
	int ret;

	if (!sf || !ctx || !page_bytes || (!addr && n) ||
	    off % KVRT_SWAP_ALIGN)
		return -EINVAL;
	for (uint64_t i = 0; wr && i < n; i++)
		if (!addr[i])
			return -EINVAL;
	x.data = n * page_bytes;
	x.total = kvmm_round_up(x.data, KVRT_SWAP_ALIGN);
	if (!n)
		return 0;
	ret = swap_io(sf, wr, off, &x);
	free(x.sink);
	return ret;
}

/**
 * kvrt_swapfile_write_pages() - write pages of a context, back to back
 * @sf: swap file
 * @ctx: the context the pages live in
 * @off: file offset, a multiple of KVRT_SWAP_ALIGN
 * @addr: [@n] device-visible page addresses, in file order
 * @n: pages
 * @page_bytes: bytes per page
 *
 * Writes @n * @page_bytes bytes, then zeros to KVRT_SWAP_ALIGN: straight
 * from the pages where the CPU maps them and they are aligned (zero-copy),
 * else gathered chunk by chunk into the registered buffers through the
 * runtime. Confirmed as kvrt_swapfile_write() is.
 *
 * Return: 0; -EINVAL for a bad argument (an address 0 among them); the
 * runtime's copy error; -EIO for a chunk that failed or stayed short; the
 * I/O error. On error the range's contents are undefined; the pages are
 * untouched.
 */
int kvrt_swapfile_write_pages(struct kvrt_swapfile *sf, struct kvrt_ctx *ctx,
			      uint64_t off, const uint64_t *addr, uint64_t n,
			      uint32_t page_bytes)
{
	return swap_pages(sf, 1, ctx, off, addr, n, page_bytes);
}

/**
 * kvrt_swapfile_read_pages() - read pages of a context, back to back
 * @sf: swap file
 * @ctx: the context the pages live in
 * @off: file offset, a multiple of KVRT_SWAP_ALIGN
 * @addr: [@n] device-visible page addresses in file order; 0 skips a page
 *	(its bytes are read into nothing)
 * @n: pages
 * @page_bytes: bytes per page
 *
 * The counterpart of kvrt_swapfile_write_pages() (the pad is read and
 * dropped). A read lands in the pages as its chunks complete: on error
 * some pages may hold new bytes, so read only into pages whose contents
 * the caller can drop.
 *
 * Return: 0; -EINVAL; -ENODATA past the end of the file; the runtime's
 * copy error; the I/O error.
 */
int kvrt_swapfile_read_pages(struct kvrt_swapfile *sf, struct kvrt_ctx *ctx,
			     uint64_t off, const uint64_t *addr, uint64_t n,
			     uint32_t page_bytes)
{
	return swap_pages(sf, 0, ctx, off, addr, n, page_bytes);
}

/**
 * kvrt_swapfile_sync() - make what was written durable (fdatasync)
 * @sf: swap file
 *
 * Return: 0 or -errno.
 */
int kvrt_swapfile_sync(struct kvrt_swapfile *sf)
{
	return fdatasync(sf->fd) ? -errno : 0;
}

/**
 * kvrt_swapfile_set_flags() - choose the path of later transfers
 * @sf: swap file
 * @flags: KVRT_SWAP_ZEROCOPY: straight from and to the memory where it
 *	allows (see DOC: swap files), else staged; KVRT_SWAP_SYNC:
 *	pwritev()/preadv(), as where io_uring is refused (tests); 0, the
 *	default: staged through the registered buffers, on io_uring
 *
 * Return: 0; -EINVAL for unknown flags.
 */
int kvrt_swapfile_set_flags(struct kvrt_swapfile *sf, unsigned int flags)
{
	if (flags & ~(KVRT_SWAP_ZEROCOPY | KVRT_SWAP_SYNC))
		return -EINVAL;
	sf->flags = flags;
	return 0;
}

/**
 * kvrt_swapfile_path() - the path the last transfer took
 * @sf: swap file
 *
 * Return: "zero-copy", "staged", or "none" before the first.
 */
const char *kvrt_swapfile_path(const struct kvrt_swapfile *sf)
{
	return sf->last < 0 ? "none" : sf->last ? "zero-copy" : "staged";
}

/**
 * kvrt_swapfile_dio_align() - the alignment zero-copy needs of a page
 * @sf: swap file
 *
 * Return: bytes a segment's length must be a multiple of (the file's
 * O_DIRECT offset alignment, its logical block size; its memory alignment
 * divides it), 1 without O_DIRECT.
 */
uint32_t kvrt_swapfile_dio_align(const struct kvrt_swapfile *sf)
{
	return sf->len_align;
}

/**
 * kvrt_swapfile_engine() - "io_uring" or "pwrite" (the fallback)
 * @sf: swap file
 *
 * Return: a static string.
 */
const char *kvrt_swapfile_engine(const struct kvrt_swapfile *sf)
{
	return sf->uring && !(sf->flags & KVRT_SWAP_SYNC) ? "io_uring" :
							   "pwrite";
}

/**
 * kvrt_swapfile_direct() - whether the file was opened with O_DIRECT
 * @sf: swap file
 *
 * Return: 1 or 0 (the file system refused O_DIRECT: the page cache is
 * used).
 */
int kvrt_swapfile_direct(const struct kvrt_swapfile *sf)
{
	return sf->direct;
}
