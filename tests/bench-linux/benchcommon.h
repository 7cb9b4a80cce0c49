/*
 * benchcommon.h: what blkbench.c and mmbench.c share, included by both (one
 * program each, so everything here is static).
 *
 *   fail()/diag()       the running benchmark's KTAP directive and the
 *                       "    # kbench: " diagnostics inside the subtest
 *   mono_ns()           CLOCK_MONOTONIC in ns
 *   rng_next()          xorshift64*, seeded by the program's BENCH_RNG_SEED
 *   pin()/unpin()       binding the calling thread to one CPU and back
 *   read_line()         the first line of a sysfs or proc file
 *   struct disk         a virtio-blk disk found by its serial, opened with
 *                       the program's flags (blkbench adds O_DIRECT)
 *   report_latency()    "# bench: NAME median_ns= p99_ns= n=" and
 *   report_rate()       "# bench: NAME items_per_s= n=", as kbench.ko
 *   bench_main()        the options (--select, --set, --only, --plan and,
 *                       for mmbench, --num), the selection by set= and only=
 *                       as kbench.ko's, and the KTAP subtest around the table
 *
 * Before including it a program defines _GNU_SOURCE and BENCH_RNG_SEED.
 */

#ifndef BENCHCOMMON_H
#define BENCHCOMMON_H

#ifndef BENCH_RNG_SEED
#error "define BENCH_RNG_SEED before including benchcommon.h"
#endif

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define DISK_WAIT_MS 10000

#define SERIAL_MAIN "kblk-main"

/* -------------------------------------------------------- KTAP directives */

/* Why the running benchmark failed or was skipped (its KTAP directive). */
static char why[256];

static __attribute__((format(printf, 1, 2))) int fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return -1;
}

/* What a benchmark returns, with why[] set, to be reported "# SKIP". */
#define SKIPPED 1

/* A diagnostic line inside the subtest, "    # kbench: ...". */
static __attribute__((format(printf, 1, 2))) void diag(const char *fmt, ...)
{
	va_list ap;

	fputs("    # kbench: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

/* ------------------------------------------------------------ clock, rng */

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: the choices only need to be spread, not strong. */
static uint64_t rng_state = BENCH_RNG_SEED;

static uint64_t rng_next(void)
{
	uint64_t x = rng_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* ------------------------------------------------------------------ CPUs */

static int online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : (int)n;
}

/* Bind the calling thread to @cpu and check that it runs there. */
static int pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		return fail("sched_setaffinity(CPU %d): %s", cpu, strerror(errno));
	for (int i = 0; i < 1000 && sched_getcpu() != cpu; i++)
		sched_yield();
	if (sched_getcpu() != cpu)
		return fail("pinned to CPU %d but running on CPU %d", cpu, sched_getcpu());
	return 0;
}

static void unpin(void)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	for (int c = 0; c < online_cpus() && c < CPU_SETSIZE; c++)
		CPU_SET(c, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

/* ------------------------------------------------------------------ disks */

/* The first line of @path without trailing blanks, or false. */
static bool read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	bool ok;
	size_t n;

	if (!f)
		return false;
	ok = fgets(buf, (int)len, f) != NULL;
	fclose(f);
	if (!ok)
		return false;
	n = strlen(buf);
	while (n > 0 && isspace((unsigned char)buf[n - 1]))
		buf[--n] = '\0';
	return true;
}

struct disk {
	char name[32];   /* vdX */
	char virtio[64]; /* virtioN, the virtio device under the disk */
	uint64_t size;   /* bytes */
	int fd;
	char *map; /* mmbench: the device mapped shared, for mincore */
};

/* Look for the disk whose serial is @serial among /sys/block/vd*. */
static bool lookup_disk(const char *serial, struct disk *d)
{
	DIR *dir = opendir("/sys/block");
	struct dirent *e;
	bool found = false;

	if (!dir)
		return false;
	while (!found && (e = readdir(dir))) {
		char path[PATH_MAX], buf[128], link[PATH_MAX];
		ssize_t n;
		const char *base;

		if (strncmp(e->d_name, "vd", 2) || strlen(e->d_name) >= sizeof(d->name))
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/serial", e->d_name);
		if (!read_line(path, buf, sizeof(buf)) || strcmp(buf, serial))
			continue;
		snprintf(d->name, sizeof(d->name), "%s", e->d_name);
		snprintf(path, sizeof(path), "/sys/block/%s/device", e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		link[n < 0 ? 0 : n] = '\0';
		base = strrchr(link, '/');
		snprintf(d->virtio, sizeof(d->virtio), "%.63s", base ? base + 1 : link);
		snprintf(path, sizeof(path), "/sys/block/%s/size", e->d_name);
		d->size = read_line(path, buf, sizeof(buf)) ? strtoull(buf, NULL, 10) * 512 : 0;
		found = true;
	}
	closedir(dir);
	return found;
}

/* Until when a disk may still appear: DISK_WAIT_MS after the start. */
static uint64_t disk_deadline;

/* Find the disk @serial (waiting until disk_deadline for it to appear) and
 * open its device node with @flags (blkbench's include O_DIRECT). */
static int open_disk(const char *serial, int flags, struct disk *d)
{
	char dev[64];
	uint64_t bytes;

	memset(d, 0, sizeof(*d));
	d->fd = -1;
	while (!lookup_disk(serial, d)) {
		if (mono_ns() > disk_deadline)
			return fail("no virtio-blk disk with serial %s in /sys/block", serial);
		usleep(10000);
	}
	snprintf(dev, sizeof(dev), "/dev/%s", d->name);
	while ((d->fd = open(dev, flags | O_CLOEXEC)) < 0) {
		if (errno != ENOENT || mono_ns() > disk_deadline)
			return fail("open %s (%s): %s", dev, serial, strerror(errno));
		usleep(10000);
	}
	if (ioctl(d->fd, BLKGETSIZE64, &bytes) == 0)
		d->size = bytes;
	return 0;
}

static void close_disk(struct disk *d)
{
	if (d->map)
		munmap(d->map, d->size);
	if (d->fd >= 0)
		close(d->fd);
	d->map = NULL;
	d->fd = -1;
}

/* ------------------------------------------------------------- reporting */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sort the @n samples @s and print their median and p99; @to_ns converts
 * a sample to ns (mmbench's are TSC cycles), NULL when they are ns. */
static void report_latency(const char *name, uint64_t *s, int n, uint64_t (*to_ns)(uint64_t))
{
	int p = n * 99 / 100;
	uint64_t med, p99;

	qsort(s, (size_t)n, sizeof(*s), cmp_u64);
	if (p > n - 1)
		p = n - 1;
	med = to_ns ? to_ns(s[n / 2]) : s[n / 2];
	p99 = to_ns ? to_ns(s[p]) : s[p];
	printf("    # bench: %s median_ns=%" PRIu64 " p99_ns=%" PRIu64 " n=%d\n", name, med, p99, n);
}

static void report_rate(const char *name, uint64_t items, uint64_t ns)
{
	uint64_t rate = ns ? (uint64_t)((unsigned __int128)items * 1000000000ULL / ns) : 0;

	printf("    # bench: %s items_per_s=%" PRIu64 " n=%" PRIu64 "\n", name, rate, items);
}

/* ------------------------------------------------------- table, KTAP main */

struct bench {
	const char *name; /* case name, as the suite's: bench_<benchmark> */
	int (*fn)(void);
};

/* What `--select` prints after "1 " or "0 " (one of these benchmarks is
 * selected or not). */
enum select_rest {
	/* blkbench: "1" when kbench.ko has something left to run (only=
	 * empty or naming a benchmark that is not one of these), else "0". */
	SELECT_OTHERS_FLAG,
	/* mmbench: the only= list without these benchmarks' names. */
	SELECT_REST_LIST,
};

struct program {
	const char *name;     /* in the usage line */
	const char *subtest;  /* the KTAP subtest's name */
	const struct bench *benches;
	int nbench;
	bool takes_num;       /* --num K: top-level result K (else 1) */
	enum select_rest select;
	void (*prepare)(void); /* before the KTAP header, or NULL */
	void (*banner)(void);  /* the first diagnostic of the subtest */
};

static const char *opt_set = "main";
static const char *opt_only = "";

/* Does the word @w (length @len) of an only= list name the case @name,
 * with or without its bench_ prefix? */
static bool names(const char *w, size_t len, const char *name)
{
	const char *bare = name + strlen("bench_");

	return (len == strlen(name) && !strncmp(w, name, len)) || (len == strlen(bare) && !strncmp(w, bare, len));
}

/* Is the word @w (length @len) one of @p's benchmarks? */
static bool ours(const struct program *p, const char *w, size_t len)
{
	for (int i = 0; i < p->nbench; i++)
		if (names(w, len, p->benches[i].name))
			return true;
	return false;
}

/* These benchmarks all belong to the set "main". */
static bool selected(const struct bench *b)
{
	const char *p = opt_only;

	if (strcmp(opt_set, "main"))
		return false;
	if (!*p)
		return true;
	while (*p) {
		size_t len = strcspn(p, ",");

		if (names(p, len, b->name))
			return true;
		p += len + (p[len] == ',');
	}
	return false;
}

/* Print what --select prints after the first flag (enum select_rest). */
static void print_rest(const struct program *prog)
{
	const char *p = opt_only;
	bool first = true, others = !*p;

	while (*p) {
		size_t len = strcspn(p, ",");

		if (len && !ours(prog, p, len)) {
			if (prog->select == SELECT_REST_LIST)
				printf("%s%.*s", first ? "" : ",", (int)len, p);
			first = false;
			others = true;
		}
		p += len + (p[len] == ',');
	}
	if (prog->select == SELECT_OTHERS_FLAG)
		printf("%d", others);
}

static int usage(const struct program *prog)
{
	fprintf(stderr, "usage: %s [--select] [--set SET] [--only LIST] [--plan N]%s\n", prog->name,
		prog->takes_num ? " [--num K]" : "");
	return 2;
}

/* The whole of main(): run @prog's selected benchmarks as the KTAP subtest
 * @prog->subtest, top-level result K of N (--num K, --plan N). */
static int bench_main(const struct program *prog, int argc, char **argv)
{
	bool select_only = false;
	int plan = 1, num = 1, n = 0, k = 0, failed = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--select"))
			select_only = true;
		else if (!strcmp(a, "--set") && i + 1 < argc)
			opt_set = argv[++i];
		else if (!strcmp(a, "--only") && i + 1 < argc)
			opt_only = argv[++i];
		else if (!strcmp(a, "--plan") && i + 1 < argc)
			plan = atoi(argv[++i]);
		else if (prog->takes_num && !strcmp(a, "--num") && i + 1 < argc)
			num = atoi(argv[++i]);
		else
			return usage(prog);
	}
	for (int i = 0; i < prog->nbench; i++)
		n += selected(&prog->benches[i]);
	if (select_only) {
		printf("%d ", n > 0);
		print_rest(prog);
		putchar('\n');
		return 0;
	}
	if (plan < 1 || num < 1 || num > plan)
		return usage(prog);
	setvbuf(stdout, NULL, _IOLBF, 0);
	disk_deadline = mono_ns() + DISK_WAIT_MS * 1000000ULL;
	if (prog->prepare)
		prog->prepare();
	if (num == 1)
		printf("KTAP version 1\n1..%d\n", plan);
	printf("    KTAP version 1\n    # Subtest: %s\n    1..%d\n", prog->subtest, n);
	prog->banner();
	for (int i = 0; i < prog->nbench; i++) {
		const struct bench *b = &prog->benches[i];
		int r;

		if (!selected(b))
			continue;
		k++;
		why[0] = '\0';
		r = b->fn();
		if (r == SKIPPED) {
			printf("    ok %d %s # SKIP %s\n", k, b->name, why);
		} else if (r) {
			printf("    not ok %d %s # %s\n", k, b->name, why);
			failed++;
		} else {
			printf("    ok %d %s\n", k, b->name);
		}
	}
	printf("%s %d %s\n", failed || !n ? "not ok" : "ok", num, prog->subtest);
	fflush(stdout);
	return failed || !n ? 1 : 0;
}

#endif /* BENCHCOMMON_H */
