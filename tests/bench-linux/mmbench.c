/*
 * mmbench: the project's page-cache and reclaim benchmarks
 * (tests/suite/src/{pagecache,writeback,kswapd}.rs, docs/benchmarks.md,
 * "Page cache and reclaim"), measured on Linux from user space through its
 * own interfaces: buffered pread/pwrite and fsync on the raw block device of
 * kblk-main (found by its serial, /sys/block/vdX/serial), the vm sysctls in
 * /proc/sys/vm, /proc/zoneinfo, /proc/buddyinfo and /proc/vmstat, and an
 * anonymous mmap that is touched page by page as the memory hog (the guest
 * has no swap, so only the page cache can be reclaimed).
 *
 *   cache_read_hit_4k         4 KiB pread of one of 256 cached pages (the
 *                             first MiB of kblk-main), chosen at random
 *   cache_write_seq_mib_s     2 MiB of pwrite at 14 MiB, then fsync (the
 *                             pages and a FLUSH); a warm-up round, 8 timed
 *   writeback_expire_latency  dirty_expire_centisecs=10 and
 *                             dirty_writeback_centisecs=1: pwrite of one page
 *                             near the end of kblk-main until the disk's
 *                             completed-write count (/sys/block/vdX/stat)
 *                             moves, no sync; 2 warm-up, 30 samples
 *   kswapd_reclaim_mib_s      the cache filled with kblk-main's pages,
 *                             watermark_scale_factor set for a low-high gap
 *                             of 3/4 of them, a hog down to low until one of
 *                             its allocations wakes kswapd, then the time
 *                             until a zone is at high again and
 *                             pgsteal_kswapd over that time; 5 rounds
 *                             summed, MiB/s
 *   direct_reclaim_latency    the cache filled, kswapd0 held back (bound to
 *                             CPU 0 with SCHED_IDLE: Linux cannot park it), a
 *                             hog down to min; then each touch of the hog
 *                             timed, kept when the hog entered direct
 *                             reclaim during it, until a quarter of the
 *                             cache is left
 *
 * Clock: "lfence; rdtsc" around the operation, converted to ns with a factor
 * calibrated once against CLOCK_MONOTONIC over 20 ms, as kbench.ko does
 * against ktime (under TCG this Linux keeps its clock on the HPET, which the
 * vDSO cannot read: CLOCK_MONOTONIC is a system call there). Every benchmark
 * runs pinned to CPU 0. Latencies: sorted, median = element n/2, p99 =
 * element n*99/100, as the suite reports them.
 *
 * The output is KTAP on stdout, one subtest "mm". Usage (from
 * tests/bench-linux/init):
 *   mmbench --select [--set SET] [--only LIST]
 *       prints "M REST": M = 1 when one of these benchmarks is selected,
 *       REST = LIST without the names that are these benchmarks (what is
 *       left for blkbench and kbench.ko; empty when nothing is);
 *   mmbench [--set SET] [--only LIST] [--plan N] [--num K]
 *       runs the selected benchmarks as top-level result K of N; when K is
 *       1 it prints the top-level header and plan itself. Exit 0 when all
 *       passed or were skipped, 1 when one failed.
 * SET and LIST are kbench.ko's set= and only= (names with or without the
 * bench_ prefix); these benchmarks belong to the set "main".
 *
 * What it shares with blkbench.c (KTAP, selection, disks, reporting) is in
 * benchcommon.h. Built static by scripts/bench-linux.sh: gcc -static -O2
 * -pthread.
 */

#define _GNU_SOURCE
#define BENCH_RNG_SEED 0x2545f4914f6cdd1dULL
#include "benchcommon.h"
#include <linux/perf_event.h>
#include <sys/mount.h>
#include <sys/syscall.h>

#define PAGE 4096ULL
#define WARMUP 100
#define SAMPLES 10000
#define HIT_PAGES 256
#define SEQ_AT (14 * MIB)
#define SEQ_ROUNDS 9
#define EXPIRE_WARMUP 2
#define EXPIRE_SAMPLES 30
#define EXPIRE_WAIT_MS 10000
#define RECLAIM_ROUNDS 5
#define CACHE_MAX_PAGES 4096
#define KSWAPD_WAIT_MS 30000
#define WAKE_SLACK 256
#define DIRECT_MIN_SAMPLES 10
#define MAX_ZONES 8

/* ----------------------------------------------------------------- clock */

static inline uint64_t cycles(void)
{
	uint32_t lo, hi;

	__asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
	return ((uint64_t)hi << 32) | lo;
}

/* TSC ticks per second, from calibrate(). */
static uint64_t tsc_hz;

static uint64_t cycles_to_ns(uint64_t c)
{
	return tsc_hz ? (uint64_t)((unsigned __int128)c * 1000000000ULL / tsc_hz) : 0;
}

/* The TSC against CLOCK_MONOTONIC over 20 ms of busy waiting. */
static void calibrate(void)
{
	uint64_t t0 = mono_ns(), c0 = cycles(), t1, c1;

	do
		t1 = mono_ns();
	while (t1 - t0 < 20000000ULL);
	c1 = cycles();
	tsc_hz = (uint64_t)((unsigned __int128)(c1 - c0) * 1000000000ULL / (t1 - t0));
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ------------------------------------------------------- files, settings */

/* The whole of a small file into @buf (NUL-terminated); its length or -1. */
static ssize_t slurp(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return -1;
	while (got + 1 < len) {
		ssize_t r = read(fd, buf + got, len - 1 - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	buf[got] = '\0';
	return (ssize_t)got;
}

static bool read_num(const char *path, long long *v)
{
	char buf[64], *end;

	if (slurp(path, buf, sizeof(buf)) <= 0)
		return false;
	*v = strtoll(buf, &end, 10);
	return end != buf;
}

static bool write_num(const char *path, long long v)
{
	char buf[32];
	int fd = open(path, O_WRONLY | O_CLOEXEC), n;
	bool ok;

	if (fd < 0)
		return false;
	n = snprintf(buf, sizeof(buf), "%lld\n", v);
	ok = write(fd, buf, (size_t)n) == n;
	close(fd);
	return ok;
}

/* A vm sysctl changed by a benchmark and put back afterwards. */
struct knob {
	const char *path;
	long long saved;
	bool changed;
};

static int knob_set(struct knob *k, long long v)
{
	if (!k->changed) {
		if (!read_num(k->path, &k->saved))
			return fail("cannot read %s: %s", k->path, strerror(errno));
		k->changed = true;
	}
	if (!write_num(k->path, v))
		return fail("cannot write %lld to %s: %s", v, k->path, strerror(errno));
	return 0;
}

static void knob_restore(struct knob *k)
{
	if (k->changed && !write_num(k->path, k->saved))
		diag("warning: could not put %s back to %lld", k->path, k->saved);
	k->changed = false;
}

#define VM "/proc/sys/vm/"

/* Free every clean page-cache page (Linux's drop_caches 1). */
static int drop_caches(void)
{
	sync();
	if (!write_num(VM "drop_caches", 1))
		return fail("cannot write " VM "drop_caches: %s", strerror(errno));
	return 0;
}

static char big[65536];

/* The value of the line "@name N" of /proc/vmstat, or -1. */
static long long vmstat(const char *name)
{
	size_t len = strlen(name);

	if (slurp("/proc/vmstat", big, sizeof(big)) <= 0)
		return -1;
	for (char *l = big; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
		if (!strncmp(l, name, len) && l[len] == ' ')
			return strtoll(l + len + 1, NULL, 10);
	}
	return -1;
}

/* The sum of the /proc/vmstat lines whose name starts with @prefix. */
static long long vmstat_sum(const char *prefix)
{
	size_t len = strlen(prefix);
	long long sum = 0;

	if (slurp("/proc/vmstat", big, sizeof(big)) <= 0)
		return -1;
	for (char *l = big; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
		char *sp = strchr(l, ' ');

		if (!strncmp(l, prefix, len) && sp)
			sum += strtoll(sp + 1, NULL, 10);
	}
	return sum;
}

/* ----------------------------------------------------------------- zones */

/* One zone of node 0 as /proc/zoneinfo shows it (pages). */
struct zone {
	char name[16];
	long long free, min, low, high, managed;
	/* The largest entry of its "protection:" (lowmem_reserve) array: what
	 * an allocation that may use higher zones must leave in this one. */
	long long prot;
};

struct zones {
	struct zone z[MAX_ZONES];
	int n;
};

/* The zones of node 0 that have managed pages, from /proc/zoneinfo. */
static int read_zones(struct zones *zs)
{
	struct zone *cur = NULL;
	char *save = NULL;

	memset(zs, 0, sizeof(*zs));
	if (slurp("/proc/zoneinfo", big, sizeof(big)) <= 0)
		return fail("cannot read /proc/zoneinfo: %s", strerror(errno));
	for (char *l = strtok_r(big, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char key[32];
		long long v;

		if (!strncmp(l, "Node ", 5)) {
			const char *z = strstr(l, "zone");

			cur = NULL;
			if (strncmp(l, "Node 0,", 7) || !z || zs->n == MAX_ZONES)
				continue;
			cur = &zs->z[zs->n++];
			memset(cur, 0, sizeof(*cur));
			sscanf(z + 4, "%15s", cur->name);
			continue;
		}
		if (!cur)
			continue;
		while (isspace((unsigned char)*l))
			l++;
		if (!strncmp(l, "protection: (", 13)) {
			for (char *p = l + 13; *p && *p != ')';) {
				char *end;

				v = strtoll(p, &end, 10);
				if (end == p)
					break;
				if (v > cur->prot)
					cur->prot = v;
				p = end + (*end == ',');
			}
			continue;
		}
		if (sscanf(l, "pages free %lld", &v) == 1) {
			cur->free = v;
			continue;
		}
		if (sscanf(l, "%31s %lld", key, &v) != 2)
			continue;
		if (!strcmp(key, "min"))
			cur->min = v;
		else if (!strcmp(key, "low"))
			cur->low = v;
		else if (!strcmp(key, "high"))
			cur->high = v;
		else if (!strcmp(key, "managed"))
			cur->managed = v;
	}
	for (int i = 0; i < zs->n;) {
		if (zs->z[i].managed > 0) {
			i++;
			continue;
		}
		memmove(&zs->z[i], &zs->z[i + 1], (size_t)(zs->n - i - 1) * sizeof(zs->z[0]));
		zs->n--;
	}
	if (!zs->n)
		return fail("no zone with managed pages in /proc/zoneinfo");
	return 0;
}

/* The zone with the most managed pages (DMA32 in a 512 MiB guest). */
static struct zone *main_zone(struct zones *zs)
{
	struct zone *m = &zs->z[0];

	for (int i = 1; i < zs->n; i++)
		if (zs->z[i].managed > m->managed)
			m = &zs->z[i];
	return m;
}

/* Refresh the free pages of @zs from /proc/buddyinfo: the buddy lists'
 * counts, what the allocator's watermark checks compare (pages on per-CPU
 * lists are not free there either). Returns the total. */
static long long read_free(struct zones *zs)
{
	static char buf[4096];
	long long total = 0;
	char *save = NULL;

	if (slurp("/proc/buddyinfo", buf, sizeof(buf)) <= 0)
		return -1;
	for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char name[16];
		const char *z = strstr(l, "zone");
		char *p;
		long long pages = 0;
		int n = 0;

		if (strncmp(l, "Node 0,", 7) || !z || sscanf(z + 4, "%15s%n", name, &n) != 1)
			continue;
		p = (char *)z + 4 + n;
		for (int order = 0;; order++) {
			char *end;
			long long c = strtoll(p, &end, 10);

			if (end == p)
				break;
			pages += c << order;
			p = end;
		}
		for (int i = 0; i < zs->n; i++)
			if (!strcmp(zs->z[i].name, name))
				zs->z[i].free = pages;
		total += pages;
	}
	return total;
}

/* Pages the hog still has to take before every zone it may allocate from
 * is at or below @mark (min or low) plus its reserve: the point where the
 * allocator's check at that mark fails everywhere. 0 once there. */
static long long above_mark(const struct zones *zs, bool low)
{
	long long over = 0;

	for (int i = 0; i < zs->n; i++) {
		const struct zone *z = &zs->z[i];
		long long mark = (low ? z->low : z->min) + z->prot;

		if (z->free > mark)
			over += z->free - mark;
	}
	return over;
}

/* Has some zone reached its high watermark (plus reserve)? kswapd stops
 * balancing there (pgdat_balanced). */
static bool some_zone_high(const struct zones *zs)
{
	for (int i = 0; i < zs->n; i++)
		if (zs->z[i].free >= zs->z[i].high + zs->z[i].prot)
			return true;
	return false;
}

/* ------------------------------------------------------------------ disk */

/* Open kblk-main for buffered I/O (benchcommon.h's open_disk, without
 * O_DIRECT); the benchmarks need its first 16 MiB. */
static int open_main(int flags, struct disk *d)
{
	int err = open_disk(SERIAL_MAIN, flags, d);

	if (!err && d->size < 16 * MIB)
		return fail("%s has %" PRIu64 " bytes, 16 MiB needed", d->name, d->size);
	return err;
}

/* Field @field (0-based) of /sys/block/<disk>/stat: 0 reads completed,
 * 4 writes completed, 15 flushes completed. -1 if unreadable. */
static long long disk_stat(const struct disk *d, int field)
{
	char path[96], buf[512], *p = buf;
	long long v = -1;

	snprintf(path, sizeof(path), "/sys/block/%s/stat", d->name);
	if (slurp(path, buf, sizeof(buf)) <= 0)
		return -1;
	for (int i = 0; i <= field; i++) {
		char *end;

		v = strtoll(p, &end, 10);
		if (end == p)
			return -1;
		p = end;
	}
	return v;
}

/* How many pages of the first @bytes of the disk are in the page cache
 * (mincore on a shared mapping of the device: it looks, it does not touch). */
static long long cached_pages(struct disk *d, uint64_t bytes)
{
	static unsigned char vec[16 * MIB / PAGE];
	long long n = 0;

	if (bytes > 16 * MIB)
		bytes = 16 * MIB;
	if (!d->map) {
		void *m = mmap(NULL, d->size, PROT_READ, MAP_SHARED, d->fd, 0);

		if (m == MAP_FAILED)
			return -1;
		d->map = m;
	}
	if (mincore(d->map, bytes, vec))
		return -1;
	for (uint64_t i = 0; i < bytes / PAGE; i++)
		n += vec[i] & 1;
	return n;
}

/* Read the first @bytes of the disk through the cache, 64 KiB at a time. */
static int fill_cache(struct disk *d, uint64_t bytes)
{
	static char buf[64 * KIB];

	for (uint64_t at = 0; at < bytes; at += sizeof(buf))
		if (pread(d->fd, buf, sizeof(buf), (off_t)at) != (ssize_t)sizeof(buf))
			return fail("fill read at byte %" PRIu64 ": %s", at, strerror(errno));
	return 0;
}

/* ------------------------------------------------------------------- hog */

/* Anonymous memory touched one page at a time. Transparent huge pages are
 * off for it, so that each touch is one order-0 allocation. */
struct hog {
	char *base;
	uint64_t pages, touched;
};

static int hog_map(struct hog *h, uint64_t pages)
{
	h->touched = 0;
	h->pages = pages;
	h->base = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
		       0);
	if (h->base == MAP_FAILED) {
		h->base = NULL;
		return fail("mmap of %" PRIu64 " pages: %s", pages, strerror(errno));
	}
	if (madvise(h->base, pages * PAGE, MADV_NOHUGEPAGE))
		diag("madvise(MADV_NOHUGEPAGE): %s", strerror(errno));
	return 0;
}

static inline bool hog_touch(struct hog *h)
{
	if (h->touched == h->pages)
		return false;
	((volatile char *)h->base)[h->touched * PAGE] = 1;
	h->touched++;
	return true;
}

static void hog_free(struct hog *h)
{
	if (h->base)
		munmap(h->base, h->pages * PAGE);
	h->base = NULL;
}

/* Touch pages until every zone is within @slack pages of its low (or min)
 * watermark plus reserve, rereading the exact free counts as it gets close. */
static int hog_down_to(struct hog *h, struct zones *zs, bool low, long long slack)
{
	for (;;) {
		long long over;

		if (read_free(zs) < 0)
			return fail("cannot read /proc/buddyinfo: %s", strerror(errno));
		over = above_mark(zs, low);
		if (over <= slack)
			return 0;
		over -= slack;
		for (long long k = over > 64 ? over / 2 : 1; k > 0; k--)
			if (!hog_touch(h))
				return fail("the hog ran out of its %" PRIu64 " pages above %s", h->pages,
					    low ? "low" : "min");
	}
}

/* ------------------------------------------------------------ benchmarks */

static uint64_t samples[SAMPLES + WARMUP];

static int b_cache_read_hit_4k(void)
{
	static char buf[PAGE];
	struct disk d;
	long long reads0, reads1;
	int err = open_main(O_RDONLY, &d);

	if (!err)
		err = pin(0);
	/* No readahead: the warm reads bring in exactly these pages, and no
	 * page is left marked for an asynchronous readahead that a timed hit
	 * would start (ours has no readahead). */
	if (!err && posix_fadvise(d.fd, 0, 0, POSIX_FADV_RANDOM) != 0)
		err = fail("posix_fadvise(RANDOM) failed");
	for (uint64_t i = 0; !err && i < HIT_PAGES; i++)
		if (pread(d.fd, buf, PAGE, (off_t)(i * PAGE)) != (ssize_t)PAGE)
			err = fail("warm read of page %" PRIu64 ": %s", i, strerror(errno));
	reads0 = disk_stat(&d, 0);
	for (int k = 0; !err && k < WARMUP + SAMPLES; k++) {
		off_t at = (off_t)((rng_next() % HIT_PAGES) * PAGE);
		uint64_t t0, t1;
		ssize_t r;

		t0 = cycles();
		r = pread(d.fd, buf, PAGE, at);
		t1 = cycles();
		if (r != (ssize_t)PAGE)
			err = fail("read %d at byte %lld: %s", k, (long long)at, r < 0 ? strerror(errno) : "short");
		else if (k >= WARMUP)
			samples[k - WARMUP] = t1 - t0;
	}
	reads1 = disk_stat(&d, 0);
	if (!err && reads1 != reads0)
		err = fail("%lld device reads while reading cached pages", reads1 - reads0);
	unpin();
	close_disk(&d);
	if (!err)
		report_latency("cache_read_hit_4k", samples, SAMPLES, cycles_to_ns);
	return err;
}

static int b_cache_write_seq_mib_s(void)
{
	static char data[MIB];
	struct disk d;
	uint64_t ns = 0, mib = 0;
	long long flush0 = -1, writes0 = -1;
	int err = open_main(O_RDWR, &d);

	for (size_t i = 0; i < sizeof(data); i += 8) {
		uint64_t x = rng_next();

		memcpy(data + i, &x, 8);
	}
	if (!err)
		err = pin(0);
	/* A warm-up round (the pages come into the cache), then timed ones:
	 * 2 MiB written through the cache, then fsync (the dirty pages, then
	 * a FLUSH of the device's cache). */
	for (int round = 0; !err && round < SEQ_ROUNDS; round++) {
		uint64_t t0, t1;

		if (round == 1) {
			flush0 = disk_stat(&d, 15);
			writes0 = disk_stat(&d, 4);
		}
		t0 = cycles();
		for (uint64_t m = 0; !err && m < 2; m++)
			if (pwrite(d.fd, data, MIB, (off_t)(SEQ_AT + m * MIB)) != (ssize_t)MIB)
				err = fail("pwrite of 1 MiB at %" PRIu64 " MiB: %s", 14 + m, strerror(errno));
		if (!err && fsync(d.fd))
			err = fail("fsync: %s", strerror(errno));
		t1 = cycles();
		if (round > 0) {
			ns += cycles_to_ns(t1 - t0);
			mib += 2;
		}
	}
	if (!err)
		diag("cache_write_seq_mib_s disk=%s timed_rounds=%d device_writes=%lld flushes=%lld", d.name,
		     SEQ_ROUNDS - 1, disk_stat(&d, 4) - writes0, disk_stat(&d, 15) - flush0);
	unpin();
	close_disk(&d);
	if (!err)
		report_rate("cache_write_seq_mib_s", mib, ns);
	return err;
}

static int b_writeback_expire_latency(void)
{
	static char page[PAGE];
	struct knob expire = { VM "dirty_expire_centisecs", 0, false };
	struct knob period = { VM "dirty_writeback_centisecs", 0, false };
	struct disk d;
	int n = 0, err = open_main(O_RDWR, &d);

	memset(page, 0x3c, sizeof(page));
	if (!err)
		err = pin(0);
	/* Nothing dirty from before (the suite waits for the dirty count to
	 * drain; fsync and sync write it out). */
	if (!err && fsync(d.fd))
		err = fail("fsync: %s", strerror(errno));
	sync();
	/* Expiry 100 ms, a flusher pass every 10 ms. */
	if (!err)
		err = knob_set(&expire, 10);
	if (!err)
		err = knob_set(&period, 1);
	for (int k = 0; !err && k < EXPIRE_WARMUP + EXPIRE_SAMPLES; k++) {
		/* The last 64 KiB of kblk-main, in the block write benchmark's area. */
		off_t at = (off_t)(16 * MIB - 64 * KIB + (uint64_t)(k % 16) * PAGE);
		long long before = disk_stat(&d, 4), now = before;
		uint64_t t0, t1;

		if (before < 0) {
			err = fail("cannot read /sys/block/%s/stat", d.name);
			break;
		}
		t0 = cycles();
		if (pwrite(d.fd, page, PAGE, at) != (ssize_t)PAGE) {
			err = fail("pwrite at byte %lld: %s", (long long)at, strerror(errno));
			break;
		}
		/* Until the disk has completed a write (the flusher's, of this
		 * page: nothing else writes to it now), looking every 1 ms as the
		 * suite's wait_for does. */
		while ((now = disk_stat(&d, 4)) == before && cycles_to_ns(cycles() - t0) < EXPIRE_WAIT_MS * 1000000ULL)
			sleep_ms(1);
		t1 = cycles();
		if (now == before) {
			err = fail("page at byte %lld not written back in %d s", (long long)at, EXPIRE_WAIT_MS / 1000);
			break;
		}
		if (k >= EXPIRE_WARMUP)
			samples[n++] = t1 - t0;
	}
	knob_restore(&period);
	knob_restore(&expire);
	unpin();
	close_disk(&d);
	if (!err)
		report_latency("writeback_expire_latency", samples, n, cycles_to_ns);
	return err;
}

/* Both reclaim benchmarks turn watermark boosting off (ours has none: it
 * raises the watermarks for a while after fragmentation events and wakes
 * kswapd by itself). */
static struct knob boost = { VM "watermark_boost_factor", 0, false };
static struct knob scale = { VM "watermark_scale_factor", 0, false };

/* Drop the cache and fill it with kblk-main's pages, as much as the suite
 * does: a quarter of free memory, at most 16 MiB. Pages cached in @pages. */
static int refill(struct disk *d, struct zones *zs, long long *pages)
{
	long long free_total, want;
	int err = drop_caches();

	if (!err && (free_total = read_free(zs)) < 0)
		err = fail("cannot read /proc/buddyinfo: %s", strerror(errno));
	if (err)
		return err;
	want = free_total / 4 < CACHE_MAX_PAGES ? free_total / 4 : CACHE_MAX_PAGES;
	err = fill_cache(d, (uint64_t)want * PAGE);
	if (!err && (*pages = cached_pages(d, (uint64_t)want * PAGE)) < 0)
		err = fail("mincore on %s: %s", d->name, strerror(errno));
	return err;
}

/* A perf counter, for this task only, of the tracepoint vmscan:@event: one
 * read() tells whether the last touch of the hog got there, where
 * /proc/vmstat would cost a whole table per touch. -1 if not available.
 *   mm_vmscan_wakeup_kswapd         wakeup_kswapd() is about to wake kswapd
 *                                   (it was asleep and the node unbalanced)
 *   mm_vmscan_direct_reclaim_begin  try_to_free_pages() starts a direct
 *                                   reclaim, just before it counts allocstall */
static int tracepoint_counter(const char *event)
{
	static const char *const roots[] = { "/sys/kernel/tracing", "/sys/kernel/debug/tracing" };
	struct perf_event_attr a;
	long long id = -1;
	char path[160];

	for (int i = 0; i < 2 && id < 0; i++) {
		snprintf(path, sizeof(path), "%s/events/vmscan/%s/id", roots[i], event);
		if (!read_num(path, &id))
			id = -1;
		if (id < 0 && i == 0 && !mount("tracefs", roots[0], "tracefs", 0, NULL) && !read_num(path, &id))
			id = -1;
	}
	if (id < 0)
		return -1;
	memset(&a, 0, sizeof(a));
	a.type = PERF_TYPE_TRACEPOINT;
	a.size = sizeof(a);
	a.config = (uint64_t)id;
	return (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
}

static uint64_t counter(int fd)
{
	uint64_t v = 0;

	if (read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		return UINT64_MAX;
	return v;
}

static int b_kswapd_reclaim_mib_s(void)
{
	struct disk d;
	struct zones zs;
	uint64_t stolen = 0, ns = 0;
	int wake = -1, err = open_main(O_RDONLY, &d);

	if (!err)
		err = pin(0);
	if (!err)
		err = knob_set(&boost, 0);
	if (!err && (wake = tracepoint_counter("mm_vmscan_wakeup_kswapd")) < 0)
		err = fail("perf_event_open of vmscan:mm_vmscan_wakeup_kswapd: %s", strerror(errno));
	for (int round = 0; !err && round < RECLAIM_ROUNDS; round++) {
		struct hog h = { 0 };
		long long in_cache = 0, s0, s1, factor, free_total;
		struct zone *mz;
		uint64_t t0, t1, c;

		err = read_zones(&zs);
		if (!err)
			err = refill(&d, &zs, &in_cache);
		if (err)
			break;
		/* A low-high gap of about three quarters of the cache, in the
		 * zone that holds it: kswapd, woken below low, reclaims that
		 * much to reach high. */
		mz = main_zone(&zs);
		factor = in_cache * 3 / 4 * 10000 / mz->managed;
		factor = factor < 1 ? 1 : factor > 3000 ? 3000 : factor;
		err = knob_set(&scale, factor);
		if (!err)
			err = read_zones(&zs);
		if (!err && (free_total = read_free(&zs)) < 0)
			err = fail("cannot read /proc/buddyinfo");
		if (!err)
			err = hog_map(&h, (uint64_t)free_total + 4096);
		/* Close to low (more than the allocator's free count can drift
		 * from the exact one), the wake-up not yet due. */
		c = counter(wake);
		if (!err)
			err = hog_down_to(&h, &zs, true, WAKE_SLACK);
		if (!err && counter(wake) != c)
			err = fail("kswapd woken %d pages above low", WAKE_SLACK);
		if (!err && round == 0) {
			mz = main_zone(&zs);
			diag("kswapd_reclaim_mib_s zone=%s managed=%lld cached=%lld watermark_scale_factor=%lld "
			     "min=%lld low=%lld high=%lld hog_pages=%" PRIu64 " zones=%d",
			     mz->name, mz->managed, in_cache, factor, mz->min, mz->low, mz->high, h.touched, zs.n);
		}
		if (err) {
			hog_free(&h);
			break;
		}
		/* Then one page at a time until an allocation of the hog wakes
		 * kswapd, which it does once the allocator's own free count fails
		 * low in every zone. That touch starts the time; it is the last. */
		s0 = vmstat("pgsteal_kswapd");
		t0 = 0;
		for (uint64_t extra = 0; !err; extra++) {
			if (extra == 4096 + WAKE_SLACK || c == UINT64_MAX) {
				err = fail("kswapd not woken %d pages past low", 4096);
				break;
			}
			t0 = cycles();
			if (!hog_touch(&h)) {
				err = fail("the hog ran out of its %" PRIu64 " pages before kswapd woke", h.pages);
				break;
			}
			if (counter(wake) != c)
				break;
		}
		while (!err) {
			if (read_free(&zs) < 0) {
				err = fail("cannot read /proc/buddyinfo");
				break;
			}
			if (some_zone_high(&zs))
				break;
			if (cycles_to_ns(cycles() - t0) > KSWAPD_WAIT_MS * 1000000ULL) {
				mz = main_zone(&zs);
				err = fail("kswapd did not reach high: %s free %lld high %lld", mz->name, mz->free,
					   mz->high);
				break;
			}
			sleep_ms(1);
		}
		t1 = cycles();
		s1 = vmstat("pgsteal_kswapd");
		hog_free(&h);
		knob_restore(&scale);
		if (!err && !t0)
			err = fail("no time taken");
		if (!err && (s0 < 0 || s1 < 0))
			err = fail("no pgsteal_kswapd in /proc/vmstat");
		if (!err) {
			stolen += (uint64_t)(s1 - s0);
			ns += cycles_to_ns(t1 - t0);
		}
	}
	if (wake >= 0)
		close(wake);
	knob_restore(&scale);
	knob_restore(&boost);
	drop_caches();
	unpin();
	close_disk(&d);
	if (!err) {
		uint64_t bytes = stolen * PAGE;

		printf("    # bench: kswapd_reclaim_mib_s items_per_s=%" PRIu64 " n=%" PRIu64 "\n",
		       ns ? (uint64_t)((unsigned __int128)bytes * 1000000000ULL / ((unsigned __int128)ns * MIB)) : 0,
		       (uint64_t)(bytes / MIB));
	}
	return err;
}

/* kswapd0, held back for direct_reclaim_latency. Linux cannot park it, but
 * it is an ordinary kthread to the scheduler: bound to the hog's CPU with
 * SCHED_IDLE it only runs when CPU 0 has nothing else to do (about 0.3 %
 * of it beside a busy nice-0 task), so the hog's allocations below min
 * reclaim for themselves, as ours do with kswapd parked. */
struct held {
	pid_t pid;
	cpu_set_t mask;
	int policy;
	struct sched_param param;
	bool held;
};

static pid_t find_kswapd0(void)
{
	DIR *dir = opendir("/proc");
	struct dirent *e;
	pid_t pid = -1;

	while (dir && pid < 0 && (e = readdir(dir))) {
		char path[300], comm[32];

		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
		if (slurp(path, comm, sizeof(comm)) > 0 && !strcmp(comm, "kswapd0\n"))
			pid = (pid_t)atoi(e->d_name);
	}
	if (dir)
		closedir(dir);
	return pid;
}

static int hold_kswapd(struct held *k)
{
	struct sched_param idle = { .sched_priority = 0 };
	cpu_set_t cpu0;

	memset(k, 0, sizeof(*k));
	k->pid = find_kswapd0();
	if (k->pid < 0)
		return fail("no kswapd0 in /proc");
	if (sched_getaffinity(k->pid, sizeof(k->mask), &k->mask) || (k->policy = sched_getscheduler(k->pid)) < 0 ||
	    sched_getparam(k->pid, &k->param))
		return fail("reading kswapd0's scheduling: %s", strerror(errno));
	CPU_ZERO(&cpu0);
	CPU_SET(0, &cpu0);
	k->held = true;
	if (sched_setaffinity(k->pid, sizeof(cpu0), &cpu0))
		return fail("binding kswapd0 (pid %d) to CPU 0: %s", k->pid, strerror(errno));
	if (sched_setscheduler(k->pid, SCHED_IDLE, &idle))
		return fail("SCHED_IDLE for kswapd0 (pid %d): %s", k->pid, strerror(errno));
	return 0;
}

static void release_kswapd(struct held *k)
{
	if (!k->held)
		return;
	if (sched_setscheduler(k->pid, k->policy, &k->param) ||
	    sched_setaffinity(k->pid, sizeof(k->mask), &k->mask))
		diag("warning: could not give kswapd0 back its scheduling: %s", strerror(errno));
	k->held = false;
}

static int b_direct_reclaim_latency(void)
{
	struct disk d;
	struct zones zs;
	struct hog h = { 0 };
	struct held ks = { 0 };
	long long in_cache = 0, left = 0, free_total, stall0 = 0, dsteal0 = 0, ksteal0 = 0;
	uint64_t touches = 0, reclaims = 0;
	int n = 0, fd = -1, err = open_main(O_RDONLY, &d);

	if (!err)
		err = pin(0);
	if (!err)
		err = knob_set(&boost, 0);
	if (!err)
		err = read_zones(&zs);
	if (!err)
		err = refill(&d, &zs, &in_cache);
	if (!err && (free_total = read_free(&zs)) < 0)
		err = fail("cannot read /proc/buddyinfo");
	if (!err && (fd = tracepoint_counter("mm_vmscan_direct_reclaim_begin")) < 0)
		err = fail("perf_event_open of vmscan:mm_vmscan_direct_reclaim_begin: %s", strerror(errno));
	if (!err)
		err = hold_kswapd(&ks);
	if (!err)
		err = hog_map(&h, (uint64_t)(free_total + in_cache) + 4096);
	/* Down to min untimed, then every touch timed until the cache is
	 * down to a quarter; a touch counts when the hog entered direct
	 * reclaim during it. */
	if (!err)
		err = hog_down_to(&h, &zs, false, 0);
	if (!err) {
		stall0 = vmstat_sum("allocstall_");
		dsteal0 = vmstat("pgsteal_direct");
		ksteal0 = vmstat("pgsteal_kswapd");
	}
	while (!err) {
		uint64_t t0, t1, c0, c1;

		if (touches % 256 == 0 && (left = cached_pages(&d, 16 * MIB)) <= in_cache / 4)
			break;
		/* Read just before, so that a reclaim of the untimed work in
		 * between (mincore's buffer) is not the touch's. */
		c0 = counter(fd);
		t0 = cycles();
		if (!hog_touch(&h)) {
			err = fail("the hog ran out of its %" PRIu64 " pages", h.pages);
			break;
		}
		t1 = cycles();
		touches++;
		c1 = counter(fd);
		if (c0 == UINT64_MAX || c1 == UINT64_MAX) {
			err = fail("read of the perf counter: %s", strerror(errno));
			break;
		}
		if (c1 != c0 && n < SAMPLES + WARMUP) {
			samples[n++] = t1 - t0;
			reclaims += c1 - c0;
		}
	}
	/* allocstall counts every direct reclaim of the guest (the hog's
	 * page tables, mincore's buffer and the counters' reads included);
	 * reclaims= those inside the counted touches. */
	if (!err)
		diag("direct_reclaim_latency kswapd0=pid%d,cpu0,SCHED_IDLE cached=%lld left=%lld timed_touches=%" PRIu64
		     " reclaiming_touches=%d reclaims=%" PRIu64
		     " allocstall=+%lld pgsteal_direct=+%lld pgsteal_kswapd=+%lld",
		     ks.pid, in_cache, left, touches, n, reclaims, vmstat_sum("allocstall_") - stall0,
		     vmstat("pgsteal_direct") - dsteal0, vmstat("pgsteal_kswapd") - ksteal0);
	hog_free(&h);
	release_kswapd(&ks);
	if (fd >= 0)
		close(fd);
	knob_restore(&boost);
	drop_caches();
	unpin();
	close_disk(&d);
	if (err)
		return err;
	if (n < DIRECT_MIN_SAMPLES)
		return fail("only %d of %" PRIu64 " touches entered direct reclaim", n, touches);
	report_latency("direct_reclaim_latency", samples, n, cycles_to_ns);
	return 0;
}

/* ----------------------------------------------------------------- table */

static const struct bench benches[] = {
	{ "bench_cache_read_hit_4k", b_cache_read_hit_4k },
	{ "bench_cache_write_seq_mib_s", b_cache_write_seq_mib_s },
	{ "bench_writeback_expire_latency", b_writeback_expire_latency },
	{ "bench_kswapd_reclaim_mib_s", b_kswapd_reclaim_mib_s },
	{ "bench_direct_reclaim_latency", b_direct_reclaim_latency },
};

static char clocksource[64] = "?";

/* The TSC's calibration, before the KTAP header as it always was. */
static void prepare(void)
{
	calibrate();
	if (slurp("/sys/devices/system/clocksource/clocksource0/current_clocksource", clocksource,
		  sizeof(clocksource)) > 0)
		clocksource[strcspn(clocksource, "\n")] = '\0';
}

static void banner(void)
{
	diag("mmbench cpus=%d clock=rdtsc tsc_hz=%" PRIu64 " clocksource=%s io=buffered", online_cpus(), tsc_hz,
	     clocksource);
}

static const struct program mmbench = {
	.name = "mmbench",
	.subtest = "mm",
	.benches = benches,
	.nbench = (int)(sizeof(benches) / sizeof(benches[0])),
	.takes_num = true,
	.select = SELECT_REST_LIST,
	.prepare = prepare,
	.banner = banner,
};

int main(int argc, char **argv)
{
	return bench_main(&mmbench, argc, argv);
}
