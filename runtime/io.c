// SPDX-License-Identifier: MIT
/*
 * io.c - file reads through io_uring (liburing), with pread where the
 * kernel or a sandbox refuses io_uring.
 */
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
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
 * kvrt_swapfile_direct() says so), sets up an io_uring of @depth entries
 * and registers @depth buffers of @chunk bytes each (aligned for
 * O_DIRECT). A write or read is cut into chunks, each staged in a free
 * registered buffer and submitted with io_uring_prep_write_fixed() /
 * _read_fixed(), up to @depth in flight. Where io_uring is refused the
 * same calls run on pwrite()/pread().
 *
 * A call returns 0 only when every chunk completed in full. A chunk that
 * completes short is resubmitted for the rest once; short twice, or any
 * error, fails the call with -EIO (or the error): the caller keeps its
 * copy of the data. Offsets and lengths are multiples of KVRT_SWAP_ALIGN.
 */

struct kvrt_swapfile {
	int fd;
	int direct;			/* opened with O_DIRECT */
	int uring;			/* 1: io_uring, 0: pwrite/pread */
	struct io_uring ring;
	uint32_t chunk;			/* bytes per request */
	uint32_t depth;			/* requests in flight, buffers */
	void **buf;			/* [depth] registered buffers */
	uint64_t fault_nth;		/* chunk writes until the fault */
	int fault_mode;
};

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
	sf->buf = calloc(depth, sizeof(void *));
	iov = calloc(depth, sizeof(*iov));
	if (!sf->buf || !iov)
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
	if (sf->fd >= 0)
		close(sf->fd);
	free(sf);
}

/**
 * kvrt_swapfile_fault() - make a later chunk write fail (tests)
 * @sf: swap file
 * @nth: 1 for the next chunk written; 0 turns it off
 * @mode: KVRT_SWAP_FAULT_EIO or KVRT_SWAP_FAULT_SHORT (a short write that
 *	stays short: the file gets part of the chunk and the call fails)
 */
void kvrt_swapfile_fault(struct kvrt_swapfile *sf, uint64_t nth, int mode)
{
	sf->fault_nth = nth;
	sf->fault_mode = mode;
}

/* the length the next chunk write is submitted with, or -EIO */
static int64_t fault_len(struct kvrt_swapfile *sf, uint32_t len)
{
	if (!sf->fault_nth || --sf->fault_nth)
		return len;
	if (sf->fault_mode == KVRT_SWAP_FAULT_EIO)
		return -EIO;
	sf->fault_nth = 1;	/* short again on the retry: it stays short */
	return len / 2 / KVRT_SWAP_ALIGN * KVRT_SWAP_ALIGN;
}

static int sync_io(struct kvrt_swapfile *sf, int wr, uint64_t off, char *buf,
		   uint32_t len)
{
	uint32_t done = 0;
	int tries = 0;

	while (done < len) {
		int64_t want = wr ? fault_len(sf, len - done) : len - done;
		ssize_t n;

		if (want < 0)
			return (int)want;
		n = wr ? pwrite(sf->fd, buf + done, want, off + done)
		       : pread(sf->fd, buf + done, want, off + done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0 || (n < want && ++tries > 1) || (n == want &&
							   want < len - done &&
							   ++tries > 1))
			return wr ? -EIO : -ENODATA;
		done += n;
	}
	return 0;
}

/*
 * Move @bytes between @user and the file, chunk by chunk, up to depth in
 * flight; a chunk's buffer is filled (write) before submission or emptied
 * (read) after completion.
 */
static int swap_io(struct kvrt_swapfile *sf, int wr, uint64_t off, char *user,
		   size_t bytes)
{
	size_t next = 0, done = 0;
	uint32_t inflight = 0, freeb = sf->depth;
	uint32_t *free_ids = NULL;
	struct {
		size_t at;
		uint32_t len, sub, tries;
	} *req = NULL;
	int ret = 0;

	if (off % KVRT_SWAP_ALIGN || bytes % KVRT_SWAP_ALIGN || (!user && bytes))
		return -EINVAL;
	if (!sf->uring) {
		for (size_t at = 0; at < bytes && !ret; at += sf->chunk) {
			uint32_t len = bytes - at < sf->chunk ? bytes - at :
								sf->chunk;

			ret = sync_io(sf, wr, off + at, user + at, len);
		}
		return ret;
	}
	free_ids = malloc(sf->depth * sizeof(*free_ids));
	req = calloc(sf->depth, sizeof(*req));
	if (!free_ids || !req) {
		free(free_ids);
		free(req);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < sf->depth; i++)
		free_ids[i] = i;
	while (done < bytes) {
		struct io_uring_cqe *cqe;

		while (!ret && next < bytes && freeb) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&sf->ring);
			uint32_t b = free_ids[--freeb];
			uint32_t len = bytes - next < sf->chunk ? bytes - next :
								  sf->chunk;
			int64_t sub = len;

			if (!sqe) {
				freeb++;
				break;
			}
			req[b].at = next;
			req[b].len = len;
			req[b].tries = 0;
			if (wr) {
				memcpy(sf->buf[b], user + next, len);
				sub = fault_len(sf, len);
			}
			if (sub < 0) {	/* injected: as if it completed so */
				io_uring_prep_nop(sqe);
				sqe->user_data = b | (1ULL << 32);
			} else {
				req[b].sub = (uint32_t)sub;
				if (wr)
					io_uring_prep_write_fixed(sqe, sf->fd,
								  sf->buf[b],
								  sub,
								  off + next,
								  b);
				else
					io_uring_prep_read_fixed(sqe, sf->fd,
								 sf->buf[b],
								 len,
								 off + next,
								 b);
				sqe->user_data = b;
			}
			next += len;
			inflight++;
		}
		if (!inflight)
			break;
		if (io_uring_submit_and_wait(&sf->ring, 1) < 0) {
			ret = ret ?: -EIO;
			break;
		}
		while (io_uring_peek_cqe(&sf->ring, &cqe) == 0) {
			uint32_t b = (uint32_t)cqe->user_data;
			int res = cqe->user_data >> 32 ? -EIO : cqe->res;

			io_uring_cqe_seen(&sf->ring, cqe);
			inflight--;
			if (res < 0) {
				ret = ret ?: res;
			} else if ((uint32_t)res < req[b].len) {
				/* short: the rest once more, synchronously */
				uint32_t got = (uint32_t)res;
				int r = ++req[b].tries > 1 ? -EIO : 0;

				if (!r && got % KVRT_SWAP_ALIGN)
					r = -EIO; /* O_DIRECT cannot resume */
				if (!r)
					r = sync_io(sf, wr,
						    off + req[b].at + got,
						    (char *)sf->buf[b] + got,
						    req[b].len - got);
				ret = ret ?: r;
				if (!r && !wr)
					memcpy(user + req[b].at, sf->buf[b],
					       req[b].len);
				done += req[b].len;
			} else {
				if (!wr)
					memcpy(user + req[b].at, sf->buf[b],
					       req[b].len);
				done += req[b].len;
			}
			free_ids[freeb++] = b;
		}
		if (ret && !inflight)
			break;
	}
	free(free_ids);
	free(req);
	return ret;
}

/**
 * kvrt_swapfile_write() - write @bytes at @off, confirmed
 * @sf: swap file
 * @off: file offset, a multiple of KVRT_SWAP_ALIGN
 * @src: data
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
	return swap_io(sf, 1, off, (char *)src, bytes);
}

/**
 * kvrt_swapfile_read() - read @bytes at @off
 * @sf: swap file
 * @off: file offset, a multiple of KVRT_SWAP_ALIGN
 * @dst: destination
 * @bytes: length, a multiple of KVRT_SWAP_ALIGN
 *
 * Return: 0; -EINVAL; -ENODATA past the end; the I/O error.
 */
int kvrt_swapfile_read(struct kvrt_swapfile *sf, uint64_t off, void *dst,
		       size_t bytes)
{
	return swap_io(sf, 0, off, dst, bytes);
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
 * kvrt_swapfile_engine() - "io_uring" (registered buffers) or "pwrite"
 * @sf: swap file
 *
 * Return: a static string.
 */
const char *kvrt_swapfile_engine(const struct kvrt_swapfile *sf)
{
	return sf->uring ? "io_uring" : "pwrite";
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
