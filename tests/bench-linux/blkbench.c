/*
 * blkbench: the project's five block benchmarks (tests/suite/src/block.rs),
 * measured on Linux's own virtio-blk driver from user space.
 *
 * The runner gives the guest the same four virtio-blk disks as the
 * testkernel (tests/runner/src/disks.rs); they are found by the serial
 * number the device reports (/sys/block/vdX/serial). Every request goes to
 * the raw block device opened with O_DIRECT, so the page cache stays out of
 * the way and each read or write is one trip through blk-mq and virtio-blk.
 *
 *   blk_read_4k_qd1         4 KiB reads one at a time, random 4 KiB-aligned
 *                           offsets in the first 8 MiB of kblk-main, CPU 0
 *   blk_write_4k_qd1        the same with writes, in bytes 14..16 MiB
 *   blk_read_4k_qd32        32 reads in flight through Linux native AIO
 *                           (io_setup/io_submit/io_getevents), CPU 0:
 *                           256 completions of warm-up, 8192 counted
 *   blk_read_seq_mib_s      1 MiB reads one at a time over the whole of
 *                           kblk-main twice after a 1 MiB warm-up, in MiB/s
 *   blk_complete_cross_cpu  4 KiB reads one at a time on kblk-ro (one
 *                           queue) from the last CPU the disk's interrupt
 *                           does not go to (Linux keeps its managed
 *                           interrupt where it chose; we ask for CPU 0)
 *
 * Latencies: 100 warm-up requests, then 2000 samples of CLOCK_MONOTONIC
 * around the system call; sorted, median = element n/2, p99 = element
 * n*99/100, as the suite and kbench.ko report them.
 *
 * The output is KTAP on stdout (the console), one subtest "block" that is
 * result 1 of the top level; blkbench runs before kbench.ko and prints the
 * top-level header and plan (--plan N: kbench.ko's subtest, if any, is
 * result 2 and is told so with ktap_num=2).
 *
 * Usage (from tests/bench-linux/init):
 *   blkbench --select [--set SET] [--only LIST]
 *       prints "B K": B = 1 when some block benchmark is selected, K = 1
 *       when kbench.ko has something to run (LIST empty or naming a
 *       benchmark that is not one of these);
 *   blkbench [--set SET] [--only LIST] [--plan N]
 *       runs the selected benchmarks; exit 0 when all passed or were
 *       skipped, 1 when one failed (its "not ok" line says why).
 * SET and LIST are kbench.ko's set= and only= (names with or without the
 * bench_ prefix); the block benchmarks belong to the set "main".
 *
 * What it shares with mmbench.c (KTAP, selection, disks, reporting) is in
 * benchcommon.h. Built static by scripts/bench-linux.sh: gcc -static -O2
 * -pthread.
 */

#define _GNU_SOURCE
#define BENCH_RNG_SEED 0x9e3779b97f4a7c15ULL
#include "benchcommon.h"
#include <linux/aio_abi.h>
#include <sys/syscall.h>

#define BLOCK (4 * KIB)
#define WARMUP 100
#define SAMPLES 2000
#define QD 32
#define QD_WARMUP 256
#define QD_COUNTED 8192
#define SEQ_PASSES 2
#define MAX_CPUS 1024

#define SERIAL_RO "kblk-ro"

/* Only the block benchmarks skip (benchcommon.h's SKIPPED). */
static __attribute__((format(printf, 1, 2))) int skip(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return SKIPPED;
}

/* ------------------------------------------------------------------ rng */

/* A random BLOCK-aligned byte offset in [first, first + span). */
static uint64_t random_block(uint64_t first, uint64_t span)
{
	return first + (rng_next() % (span / BLOCK)) * BLOCK;
}

/* ------------------------------------------------------------------ CPUs */

/* Parse a CPU list ("0", "0-1", "0,2-3") into @cpus; false if malformed. */
static bool parse_cpulist(const char *s, bool *cpus, int max)
{
	bool any = false;

	memset(cpus, 0, (size_t)max * sizeof(*cpus));
	while (*s && !isspace((unsigned char)*s)) {
		char *end;
		long a = strtol(s, &end, 10), b;

		if (end == s || a < 0 || a >= max)
			return false;
		b = a;
		s = end;
		if (*s == '-') {
			b = strtol(s + 1, &end, 10);
			if (end == s + 1 || b < a || b >= max)
				return false;
			s = end;
		}
		for (long c = a; c <= b; c++)
			cpus[c] = true;
		any = true;
		if (*s == ',')
			s++;
	}
	return any;
}

/* ------------------------------------------------------------ sysfs, proc */

static void *aligned(size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, len))
		return NULL;
	memset(p, 0x5a, len);
	return p;
}

/* The number of the interrupt named @name in /proc/interrupts (a word of
 * the line equal to it), or -1. */
static int irq_named(const char *name)
{
	FILE *f = fopen("/proc/interrupts", "re");
	char line[4096];
	int irq = -1;

	if (!f)
		return -1;
	while (irq < 0 && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':'), *w, *save = NULL;
		char *end;
		long n;

		if (!colon)
			continue;
		n = strtol(line, &end, 10);
		if (end == line || end != colon)
			continue;
		for (w = strtok_r(colon + 1, " \t\n,", &save); w; w = strtok_r(NULL, " \t\n,", &save)) {
			if (!strcmp(w, name)) {
				irq = (int)n;
				break;
			}
		}
	}
	fclose(f);
	return irq;
}

/* Per-CPU counts of interrupt @irq from /proc/interrupts into @counts. */
static bool irq_counts(int irq, uint64_t *counts, int ncpus)
{
	FILE *f = fopen("/proc/interrupts", "re");
	char line[4096];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *end, *p;
		long n = strtol(line, &end, 10);

		if (end == line || *end != ':' || n != irq)
			continue;
		p = end + 1;
		for (int c = 0; c < ncpus; c++) {
			counts[c] = strtoull(p, &end, 10);
			if (end == p)
				break;
			p = end;
		}
		found = true;
	}
	fclose(f);
	return found;
}

/* ------------------------------------------------------------ benchmarks */

/* Latencies of SAMPLES one-at-a-time BLOCK requests at random offsets in
 * [first, first + span) of @d, after WARMUP of them. */
static int qd1(const struct disk *d, bool write, uint64_t first, uint64_t span, uint64_t *samples)
{
	char *buf = aligned(BLOCK);

	if (!buf)
		return fail("out of memory");
	if (first + span > d->size) {
		free(buf);
		return fail("%s has %" PRIu64 " bytes, %" PRIu64 " needed", d->name, d->size, first + span);
	}
	for (int i = 0; i < WARMUP + SAMPLES; i++) {
		uint64_t off = random_block(first, span), t0, t1;
		ssize_t r;

		t0 = mono_ns();
		r = write ? pwrite(d->fd, buf, BLOCK, (off_t)off) : pread(d->fd, buf, BLOCK, (off_t)off);
		t1 = mono_ns();
		if (r != (ssize_t)BLOCK) {
			int e = errno;

			free(buf);
			return fail("%s of %s at byte %" PRIu64 ": %s", write ? "pwrite" : "pread", d->name, off,
				    r < 0 ? strerror(e) : "short transfer");
		}
		if (i >= WARMUP)
			samples[i - WARMUP] = t1 - t0;
	}
	free(buf);
	return 0;
}

static int latency_case(const char *name, const char *serial, int cpu, bool write, uint64_t first, uint64_t span)
{
	static uint64_t samples[SAMPLES];
	struct disk d;
	int err;

	err = open_disk(serial, (write ? O_RDWR : O_RDONLY) | O_DIRECT, &d);
	if (!err)
		err = pin(cpu);
	if (!err)
		err = qd1(&d, write, first, span, samples);
	unpin();
	close_disk(&d);
	if (!err)
		report_latency(name, samples, SAMPLES, NULL);
	return err;
}

static int b_read_4k_qd1(void)
{
	return latency_case("blk_read_4k_qd1", SERIAL_MAIN, 0, false, 0, 8 * MIB);
}

static int b_write_4k_qd1(void)
{
	/* The last 2 MiB, as the suite's: no case reads them back. */
	return latency_case("blk_write_4k_qd1", SERIAL_MAIN, 0, true, 14 * MIB, 2 * MIB);
}

/* Native AIO through the raw system calls (<linux/aio_abi.h>, no libaio). */
static long sys_io_setup(unsigned nr, aio_context_t *ctx)
{
	return syscall(SYS_io_setup, nr, ctx);
}

static long sys_io_destroy(aio_context_t ctx)
{
	return syscall(SYS_io_destroy, ctx);
}

static long sys_io_submit(aio_context_t ctx, long n, struct iocb **cbs)
{
	return syscall(SYS_io_submit, ctx, n, cbs);
}

static long sys_io_getevents(aio_context_t ctx, long min, long max, struct io_event *ev)
{
	return syscall(SYS_io_getevents, ctx, min, max, ev, NULL);
}

/* Submit all of @cbs[0..n), however many io_submit takes at a time. */
static int submit_all(aio_context_t ctx, struct iocb **cbs, long n)
{
	while (n > 0) {
		long r = sys_io_submit(ctx, n, cbs);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return fail("io_submit: %s", r < 0 ? strerror(errno) : "took nothing");
		cbs += r;
		n -= r;
	}
	return 0;
}

static void prep_read(struct iocb *cb, int fd, void *buf, uint64_t off)
{
	uint64_t data = cb->aio_data;

	memset(cb, 0, sizeof(*cb));
	cb->aio_data = data;
	cb->aio_lio_opcode = IOCB_CMD_PREAD;
	cb->aio_fildes = (uint32_t)fd;
	cb->aio_buf = (uint64_t)(uintptr_t)buf;
	cb->aio_nbytes = BLOCK;
	cb->aio_offset = (int64_t)off;
}

static int qd32(const struct disk *d, uint64_t *elapsed)
{
	static struct iocb cbs[QD];
	struct iocb *ptrs[QD];
	struct io_event ev[QD];
	aio_context_t ctx = 0;
	char *bufs = aligned(QD * BLOCK);
	const long total = QD_WARMUP + QD_COUNTED;
	long issued = 0, done = 0, failed = 0;
	uint64_t t0 = 0;
	int err = 0;

	if (!bufs)
		return fail("out of memory");
	if (sys_io_setup(QD, &ctx)) {
		free(bufs);
		return fail("io_setup(%d): %s", QD, strerror(errno));
	}
	for (int k = 0; k < QD; k++) {
		cbs[k].aio_data = (uint64_t)k;
		prep_read(&cbs[k], d->fd, bufs + k * BLOCK, random_block(0, 8 * MIB));
		ptrs[k] = &cbs[k];
	}
	err = submit_all(ctx, ptrs, QD);
	issued = QD;
	while (!err && done < total) {
		/* Take no more than the warm-up's remainder, so the counted
		 * interval starts exactly at completion QD_WARMUP. */
		long max = done < QD_WARMUP && QD_WARMUP - done < QD ? QD_WARMUP - done : QD;
		long n = sys_io_getevents(ctx, 1, max, ev), again = 0;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = fail("io_getevents: %s", strerror(errno));
			break;
		}
		for (long i = 0; i < n; i++) {
			struct iocb *cb = (struct iocb *)(uintptr_t)ev[i].obj;

			if (ev[i].res != (int64_t)BLOCK)
				failed++;
			done++;
			if (issued < total) {
				prep_read(cb, d->fd, bufs + cb->aio_data * BLOCK, random_block(0, 8 * MIB));
				ptrs[again++] = cb;
				issued++;
			}
		}
		if (done == QD_WARMUP && !t0)
			t0 = mono_ns();
		if (again)
			err = submit_all(ctx, ptrs, again);
	}
	*elapsed = mono_ns() - t0;
	sys_io_destroy(ctx);
	free(bufs);
	if (!err && failed)
		err = fail("%ld of %ld reads failed", failed, total);
	return err;
}

static int b_read_4k_qd32(void)
{
	struct disk d;
	uint64_t ns = 0;
	int err;

	err = open_disk(SERIAL_MAIN, O_RDONLY | O_DIRECT, &d);
	if (!err && d.size < 8 * MIB)
		err = fail("%s has %" PRIu64 " bytes, 8 MiB needed", d.name, d.size);
	if (!err)
		err = pin(0);
	if (!err)
		err = qd32(&d, &ns);
	unpin();
	close_disk(&d);
	if (!err)
		report_rate("blk_read_4k_qd32", QD_COUNTED, ns);
	return err;
}

static int b_read_seq_mib_s(void)
{
	struct disk d;
	char *buf = NULL;
	uint64_t n = 0, t0, ns;
	int err;

	err = open_disk(SERIAL_MAIN, O_RDONLY | O_DIRECT, &d);
	if (!err && (d.size < MIB || d.size % MIB))
		err = fail("%s has %" PRIu64 " bytes, not a multiple of 1 MiB", d.name, d.size);
	if (!err && !(buf = aligned(MIB)))
		err = fail("out of memory");
	if (!err)
		err = pin(0);
	if (!err && pread(d.fd, buf, MIB, 0) != (ssize_t)MIB)
		err = fail("warm-up pread of 1 MiB: %s", strerror(errno));
	t0 = mono_ns();
	for (int pass = 0; !err && pass < SEQ_PASSES; pass++) {
		for (uint64_t off = 0; !err && off < d.size; off += MIB) {
			ssize_t r = pread(d.fd, buf, MIB, (off_t)off);

			if (r != (ssize_t)MIB)
				err = fail("pread of 1 MiB at byte %" PRIu64 ": %s", off,
					   r < 0 ? strerror(errno) : "short transfer");
			n++;
		}
	}
	ns = mono_ns() - t0;
	unpin();
	close_disk(&d);
	free(buf);
	if (!err)
		report_rate("blk_read_seq_mib_s", n, ns);
	return err;
}

/* Steer kblk-ro's request interrupt to CPU 0 if Linux lets us, and return
 * where it is really delivered (in @eff); the interrupt's number in @irq. */
static int steer_irq(const struct disk *d, bool *eff, int *irq)
{
	char name[80], path[128], list[256];
	int fd;

	snprintf(name, sizeof(name), "%s-req.0", d->virtio);
	*irq = irq_named(name);
	if (*irq < 0) {
		/* Without MSI-X, one INTx line named after the device. */
		*irq = irq_named(d->virtio);
		snprintf(name, sizeof(name), "%s", d->virtio);
	}
	if (*irq < 0)
		return fail("no interrupt of %s (%s) in /proc/interrupts", SERIAL_RO, d->virtio);
	snprintf(path, sizeof(path), "/proc/irq/%d/smp_affinity", *irq);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "1\n", 2) != 2)
		diag("blk_complete_cross_cpu irq=%d name=%s smp_affinity write of 1 (CPU 0) failed: %s", *irq,
		     name, strerror(errno));
	else
		diag("blk_complete_cross_cpu irq=%d name=%s smp_affinity set to 1 (CPU 0)", *irq, name);
	if (fd >= 0)
		close(fd);
	snprintf(path, sizeof(path), "/proc/irq/%d/smp_affinity_list", *irq);
	if (read_line(path, list, sizeof(list)))
		diag("blk_complete_cross_cpu irq=%d affinity_cpus=%s", *irq, list);
	snprintf(path, sizeof(path), "/proc/irq/%d/effective_affinity_list", *irq);
	if (!read_line(path, list, sizeof(list)) || !parse_cpulist(list, eff, MAX_CPUS))
		return fail("cannot read %s", path);
	diag("blk_complete_cross_cpu irq=%d effective_cpus=%s", *irq, list);
	return 0;
}

static int b_complete_cross_cpu(void)
{
	static uint64_t samples[SAMPLES];
	static bool eff[MAX_CPUS];
	uint64_t before[MAX_CPUS] = { 0 }, after[MAX_CPUS] = { 0 };
	int ncpus = online_cpus(), last = ncpus - 1, irq = -1, err;
	bool counted;
	struct disk d;

	if (ncpus < 2)
		return skip("needs 2 CPUs");
	if (ncpus > MAX_CPUS)
		return fail("more than %d CPUs", MAX_CPUS);
	err = open_disk(SERIAL_RO, O_RDONLY | O_DIRECT, &d);
	if (!err)
		err = steer_irq(&d, eff, &irq);
	/* The submitter: the highest CPU the interrupt does not go to (the
	 * last CPU unless Linux kept the managed interrupt there). */
	while (!err && last >= 0 && eff[last])
		last--;
	if (!err && last < 0) {
		close_disk(&d);
		return skip("the interrupt of %s (IRQ %d) goes to every CPU", SERIAL_RO, irq);
	}
	if (!err)
		err = pin(last);
	counted = !err && irq_counts(irq, before, ncpus);
	if (!err)
		err = qd1(&d, false, 0, d.size, samples);
	unpin();
	close_disk(&d);
	if (err)
		return err;
	if (counted && irq_counts(irq, after, ncpus)) {
		char text[512] = "";
		size_t len = 0;

		for (int c = 0; c < ncpus && len < sizeof(text) - 24; c++)
			len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%" PRIu64, c ? "," : "",
						after[c] - before[c]);
		diag("blk_complete_cross_cpu irq=%d interrupts_per_cpu=%s submitter_cpu=%d", irq, text,
		     last);
	}
	report_latency("blk_complete_cross_cpu", samples, SAMPLES, NULL);
	return 0;
}

/* ----------------------------------------------------------------- table */

static const struct bench benches[] = {
	{ "bench_blk_read_4k_qd1", b_read_4k_qd1 },
	{ "bench_blk_write_4k_qd1", b_write_4k_qd1 },
	{ "bench_blk_read_4k_qd32", b_read_4k_qd32 },
	{ "bench_blk_read_seq_mib_s", b_read_seq_mib_s },
	{ "bench_blk_complete_cross_cpu", b_complete_cross_cpu },
};

static void banner(void)
{
	diag("blkbench cpus=%d clock=CLOCK_MONOTONIC io=O_DIRECT qd32=linux-aio", online_cpus());
}

static const struct program blkbench = {
	.name = "blkbench",
	.subtest = "block",
	.benches = benches,
	.nbench = (int)(sizeof(benches) / sizeof(benches[0])),
	.takes_num = false,
	.select = SELECT_OTHERS_FLAG,
	.banner = banner,
};

int main(int argc, char **argv)
{
	return bench_main(&blkbench, argc, argv);
}
