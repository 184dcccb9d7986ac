// SPDX-License-Identifier: MIT
/*
 * io.c - file reads through io_uring (liburing), with pread where the
 * kernel or a sandbox refuses io_uring.
 */
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
