// SPDX-License-Identifier: GPL-2.0
/*
 * kbench: the project's benchmarks, measured inside Linux.
 *
 * Each benchmark here is the Linux counterpart of one in the project's suite
 * (tests/suite/src/{kthread,kthread_worker,workqueue,bench_scale}.rs and
 * testkernel/src/tests/sched.rs) and prints the same "# bench: NAME ..." line
 * under the same name, measured the same way (docs/benchmarks.md):
 *
 *  - samples are "lfence; rdtsc" cycle counts, converted to ns with a factor
 *    calibrated once against the kernel clock (ktime) over 20 ms;
 *  - the measuring thread is a kthread bound to CPU 0; "cross" puts the other
 *    end on CPU 1;
 *  - WARMUP (100) iterations are discarded (10 for thread create/stop), then
 *    ITERATIONS (10 000) samples are kept (2 000 for thread create/stop);
 *  - the samples are sorted; the median is element n/2, the 99th percentile
 *    element n*99/100.
 *
 * The output is KTAP, as the project's guest prints it, on the console at
 * KERN_NOTICE (the init script boots with loglevel=6, so the kernel's own
 * KERN_INFO chatter stays off the serial line). module_init runs the
 * selected set and returns only when it is done; the init script then ends
 * the machine through isa-debug-exit.
 *
 * Parameters: set=main|scale|tput (default main: the make bench set and the
 * extra Linux figures; scale: the scale cases of the suite's explicit
 * "scale" suite; tput: only the two throughput cases, for make bench-scale),
 * only=NAME[,NAME...] (run only these benchmarks of the set), ktap_num=N
 * (default 1; above 1 the init script ran blkbench first, which printed the
 * KTAP header and a plan for both, and this subtest is result N).
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/workqueue.h>
#include <linux/interrupt.h>
#include <linux/irq_work.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/sort.h>
#include <linux/delay.h>
#include <linux/completion.h>
#include <linux/smp.h>
#include <linux/cpumask.h>
#include <linux/timekeeping.h>
#include <linux/utsname.h>
#include <linux/string.h>
#include <linux/sizes.h>
#include <asm/div64.h>

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("The project's benchmarks measured inside Linux, printed as KTAP");

static char *set = "main";
module_param(set, charp, 0444);
MODULE_PARM_DESC(set, "main, scale or tput");
static char *only = "";
module_param(only, charp, 0444);
MODULE_PARM_DESC(only, "comma list of benchmark names (default: the whole set)");
static int ktap_num = 1;
module_param(ktap_num, int, 0444);
MODULE_PARM_DESC(ktap_num, "top-level KTAP number of this subtest (above 1: header and plan printed before)");

#define ITERATIONS 10000
#define THREAD_ITERATIONS 2000
#define WARMUP 100
#define TPUT_TOTAL 100000

/* ------------------------------------------------------------------ clock */

static u64 tsc_hz;

static __always_inline u64 cycles(void)
{
	u32 lo, hi;

	asm volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
	return ((u64)hi << 32) | lo;
}

static u64 cycles_to_ns(u64 c)
{
	return mul_u64_u64_div_u64(c, NSEC_PER_SEC, tsc_hz);
}

/* The TSC against the kernel clock over 20 ms, as the testkernel calibrates
 * it against the PIT over 20 ms. */
static void calibrate(void)
{
	u64 c0, c1, t0, t1;

	t0 = ktime_get_ns();
	c0 = cycles();
	mdelay(20);
	t1 = ktime_get_ns();
	c1 = cycles();
	tsc_hz = mul_u64_u64_div_u64(c1 - c0, NSEC_PER_SEC, t1 - t0);
}

/* ----------------------------------------------------------------- output */

static __printf(1, 2) void line(const char *fmt, ...)
{
	struct va_format vaf;
	va_list args;

	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	printk(KERN_NOTICE "%pV\n", &vaf);
	va_end(args);
}

static int cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

static void report_latency(const char *name, u64 *s, int n)
{
	u64 med = 0, p99 = 0;

	if (n > 0) {
		sort(s, n, sizeof(*s), cmp_u64, NULL);
		med = cycles_to_ns(s[n / 2]);
		p99 = cycles_to_ns(s[min(n * 99 / 100, n - 1)]);
	}
	line("    # bench: %s median_ns=%llu p99_ns=%llu n=%d", name, med, p99, n);
}

static void report_throughput(const char *name, u64 items, u64 elapsed_ns)
{
	u64 per_s = elapsed_ns ? mul_u64_u64_div_u64(items, NSEC_PER_SEC, elapsed_ns) : 0;

	line("    # bench: %s items_per_s=%llu n=%llu", name, per_s, items);
}

static void report_count(const char *name, u64 count)
{
	line("    # bench: %s count=%llu", name, count);
}

static void report_bytes(const char *name, u64 bytes, u64 n)
{
	line("    # bench: %s bytes=%llu n=%llu", name, bytes, n);
}

static u64 *samples_alloc(int n)
{
	return kvmalloc_array(n, sizeof(u64), GFP_KERNEL);
}

/* ---------------------------------------------------------------- helpers */

/* Yield until @t has really left its CPU asleep (bench::wait_asleep). */
static void wait_asleep(struct task_struct *t)
{
	while (READ_ONCE(t->__state) == TASK_RUNNING || READ_ONCE(t->on_cpu))
		yield();
}

/* Sleep until kthread_stop (a thread's tail, outside any measurement). */
static void sleep_until_stop(void)
{
	for (;;) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (kthread_should_stop())
			break;
		schedule();
	}
	__set_current_state(TASK_RUNNING);
}

static int sleeper_fn(void *unused)
{
	sleep_until_stop();
	return 0;
}

/* port_api::wait_for: poll @cond every millisecond for up to @ms. */
#define wait_for(ms, cond)                                                   \
	({                                                                   \
		u64 __end = ktime_get_ns() + (u64)(ms) * NSEC_PER_MSEC;      \
		bool __ok = true;                                            \
		while (!(cond)) {                                            \
			if (ktime_get_ns() > __end) {                        \
				__ok = false;                                \
				break;                                       \
			}                                                    \
			usleep_range(1000, 1000);                            \
		}                                                            \
		__ok;                                                        \
	})

/* kworker threads of CPU 0's normal pool ("kworker/0:N", not "kworker/0:NH"). */
static int cpu0_workers(void)
{
	struct task_struct *p;
	int n = 0;

	rcu_read_lock();
	for_each_process(p) {
		if (!(p->flags & PF_WQ_WORKER) || strncmp(p->comm, "kworker/0:", 10))
			continue;
		if (!strchr(p->comm, 'H'))
			n++;
	}
	rcu_read_unlock();
	return n;
}

static u64 free_now(void)
{
	struct sysinfo si;

	si_meminfo(&si);
	return (u64)si.freeram * si.mem_unit;
}

/* Free memory once memory freed earlier has come back (exited threads'
 * task_structs after RCU, their stacks through deferred vfree): four
 * 250 ms windows in a row in which it moved by at most 64 KiB, or the last
 * reading of 60. */
static u64 free_bytes(void)
{
	u64 last, now;
	int i, quiet = 0;

	rcu_barrier();
	last = free_now();
	for (i = 0; i < 60 && quiet < 4; i++) {
		msleep(250);
		rcu_barrier();
		now = free_now();
		quiet = (now > last ? now - last : last - now) <= SZ_64K ? quiet + 1 : 0;
		last = now;
	}
	return last;
}

/* ------------------------------------------------------ kthread benchmarks */

struct create_run {
	u64 first;
	struct completion ran;
};

static int first_fn(void *d)
{
	struct create_run *c = d;

	WRITE_ONCE(c->first, cycles());
	complete(&c->ran);
	return 0;
}

/* kthread_create_on_cpu(0) + wake -> the function's first instruction. Like
 * the suite's thread, this one returns at once; the untimed kthread_stop
 * reaps it (holding a reference, as kthread_stop's comment asks). */
static int create_run(const char *name)
{
	int total = THREAD_ITERATIONS + WARMUP / 10, n = 0, i;
	u64 *v = samples_alloc(THREAD_ITERATIONS);
	struct create_run c;

	if (!v)
		return -ENOMEM;
	for (i = 0; i < total; i++) {
		struct task_struct *t;
		u64 t0;

		init_completion(&c.ran);
		t0 = cycles();
		t = kthread_create_on_cpu(first_fn, &c, 0, "bench/%u");
		if (IS_ERR(t)) {
			kvfree(v);
			return PTR_ERR(t);
		}
		get_task_struct(t);
		wake_up_process(t);
		wait_for_completion(&c.ran);
		if (i >= WARMUP / 10)
			v[n++] = READ_ONCE(c.first) - t0;
		kthread_stop(t);
		put_task_struct(t);
	}
	report_latency(name, v, n);
	kvfree(v);
	return 0;
}

static int b_kthread_create_run(void)
{
	return create_run("kthread_create_run");
}

/* kthread_stop of a thread sleeping on CPU 0, from CPU 0: round trip. */
static int b_kthread_stop(void)
{
	int total = THREAD_ITERATIONS + WARMUP / 10, n = 0, i;
	u64 *v = samples_alloc(THREAD_ITERATIONS);

	if (!v)
		return -ENOMEM;
	for (i = 0; i < total; i++) {
		struct task_struct *t = kthread_create_on_cpu(sleeper_fn, NULL, 0, "bstop/%u");
		u64 t0;

		if (IS_ERR(t)) {
			kvfree(v);
			return PTR_ERR(t);
		}
		wake_up_process(t);
		wait_asleep(t);
		t0 = cycles();
		kthread_stop(t);
		if (i >= WARMUP / 10)
			v[n++] = cycles() - t0;
	}
	report_latency("kthread_stop", v, n);
	kvfree(v);
	return 0;
}

/* spawn + wake + exit + join (testkernel's context_create_exit): the thread
 * returns at once and kthread_stop waits for its exit. */
static int b_context_create_exit(void)
{
	int total = THREAD_ITERATIONS + WARMUP, n = 0, i;
	u64 *v = samples_alloc(THREAD_ITERATIONS);
	struct create_run c;

	if (!v)
		return -ENOMEM;
	for (i = 0; i < total; i++) {
		struct task_struct *t;
		u64 t0 = cycles();

		init_completion(&c.ran);
		t = kthread_create_on_cpu(first_fn, &c, 0, "bench-cycle/%u");
		if (IS_ERR(t)) {
			kvfree(v);
			return PTR_ERR(t);
		}
		get_task_struct(t);
		wake_up_process(t);
		wait_for_completion(&c.ran);
		kthread_stop(t);
		if (i >= WARMUP)
			v[n++] = cycles() - t0;
		put_task_struct(t);
	}
	report_latency("context_create_exit", v, n);
	kvfree(v);
	return 0;
}

struct wakeup {
	u64 stamp;
	atomic_t seq;
	u64 *v;
	int total;
};

static int wakee_fn(void *d)
{
	struct wakeup *w = d;
	int i;

	for (i = 0; i < w->total; i++) {
		u64 dt;

		for (;;) {
			set_current_state(TASK_INTERRUPTIBLE);
			if (atomic_read(&w->seq) == 2 * i + 1)
				break;
			schedule();
		}
		__set_current_state(TASK_RUNNING);
		dt = cycles() - READ_ONCE(w->stamp);
		if (i >= WARMUP)
			w->v[i - WARMUP] = dt;
		atomic_set_release(&w->seq, 2 * i + 2);
	}
	sleep_until_stop();
	return 0;
}

/* Wake a thread sleeping on @cpu from CPU 0 -> it runs (the waker yields at
 * once when both share CPU 0). */
static int wakeup_latency(const char *name, int cpu)
{
	struct wakeup w = { .total = ITERATIONS + WARMUP };
	struct task_struct *t;
	int i;

	w.v = samples_alloc(ITERATIONS);
	if (!w.v)
		return -ENOMEM;
	atomic_set(&w.seq, 0);
	t = kthread_create_on_cpu(wakee_fn, &w, cpu, "wakee/%u");
	if (IS_ERR(t)) {
		kvfree(w.v);
		return PTR_ERR(t);
	}
	wake_up_process(t);
	for (i = 0; i < w.total; i++) {
		wait_asleep(t);
		WRITE_ONCE(w.stamp, cycles());
		atomic_set_release(&w.seq, 2 * i + 1);
		wake_up_process(t);
		while (atomic_read_acquire(&w.seq) != 2 * i + 2) {
			if (cpu == 0)
				yield();
			else
				cpu_relax();
		}
	}
	kthread_stop(t);
	report_latency(name, w.v, ITERATIONS);
	kvfree(w.v);
	return 0;
}

static int b_kthread_wakeup_same_cpu(void)
{
	return wakeup_latency("kthread_wakeup_same_cpu", 0);
}

static int b_kthread_wakeup_cross_cpu(void)
{
	return wakeup_latency("kthread_wakeup_cross_cpu", 1);
}

/* The testkernel's scheduler-level wake: in Linux the same wake_up_process. */
static int b_sched_wakeup_cross_cpu(void)
{
	return wakeup_latency("sched_wakeup_cross_cpu", 1);
}

struct pingpong {
	u64 stamp;
	spinlock_t lock;
	u64 *v;
	int n;
	struct completion done;
};

static int ping_fn(void *d)
{
	struct pingpong *p = d;
	int i;

	for (i = 0; i < ITERATIONS + WARMUP; i++) {
		u64 dt;

		WRITE_ONCE(p->stamp, cycles());
		yield();
		dt = cycles() - READ_ONCE(p->stamp);
		if (i >= WARMUP) {
			spin_lock(&p->lock);
			p->v[p->n++] = dt;
			spin_unlock(&p->lock);
		}
	}
	complete(&p->done);
	sleep_until_stop();
	return 0;
}

/* Two threads on CPU 0 yielding to each other; a sample runs from one side's
 * yield to the other side running. */
static int b_sched_yield_pingpong_same_cpu(void)
{
	struct pingpong p = { .n = 0 };
	struct task_struct *a, *b;

	spin_lock_init(&p.lock);
	init_completion(&p.done);
	p.v = samples_alloc(2 * ITERATIONS);
	if (!p.v)
		return -ENOMEM;
	a = kthread_create_on_cpu(ping_fn, &p, 0, "ping/%u");
	b = kthread_create_on_cpu(ping_fn, &p, 0, "pong/%u");
	if (IS_ERR(a) || IS_ERR(b)) {
		if (!IS_ERR(a))
			kthread_stop(a);
		if (!IS_ERR(b))
			kthread_stop(b);
		kvfree(p.v);
		return -ENOMEM;
	}
	wake_up_process(a);
	wake_up_process(b);
	wait_for_completion(&p.done);
	wait_for_completion(&p.done);
	kthread_stop(a);
	kthread_stop(b);
	report_latency("sched_yield_pingpong_same_cpu", p.v, p.n);
	kvfree(p.v);
	return 0;
}

/* ----------------------------------------------- kthread_worker benchmark */

struct kw_item {
	struct kthread_work work;
	u64 stamp;
	u64 started;
};

static void kw_fn(struct kthread_work *work)
{
	struct kw_item *k = container_of(work, struct kw_item, work);

	WRITE_ONCE(k->started, cycles() - READ_ONCE(k->stamp));
}

/* kthread_queue_work on a worker bound to CPU 0 -> the item starts. */
static int b_kthread_worker_queue_run(void)
{
	struct kthread_worker *w = kthread_create_worker_on_cpu(0, 0, "kw-bench/%d", 0);
	struct kw_item k;
	u64 *v;
	int i;

	if (IS_ERR(w))
		return PTR_ERR(w);
	v = samples_alloc(ITERATIONS);
	if (!v) {
		kthread_destroy_worker(w);
		return -ENOMEM;
	}
	kthread_init_work(&k.work, kw_fn);
	for (i = 0; i < ITERATIONS + WARMUP; i++) {
		WRITE_ONCE(k.stamp, cycles());
		kthread_queue_work(w, &k.work);
		kthread_flush_work(&k.work);
		if (i >= WARMUP)
			v[i - WARMUP] = READ_ONCE(k.started);
	}
	kthread_destroy_worker(w);
	report_latency("kthread_worker_queue_run", v, ITERATIONS);
	kvfree(v);
	return 0;
}

/* ----------------------------------------------------- workqueue benchmarks */

struct qr_item {
	struct work_struct work;
	u64 stamp;
	u64 started;
	struct task_struct *worker; /* the worker that ran it last (referenced) */
};

static void qr_fn(struct work_struct *work)
{
	struct qr_item *q = container_of(work, struct qr_item, work);

	WRITE_ONCE(q->started, cycles() - READ_ONCE(q->stamp));
	if (q->worker != current) {
		if (q->worker)
			put_task_struct(q->worker);
		get_task_struct(current);
		q->worker = current;
	}
}

/*
 * queue_work_on(@target) -> the item starts, from CPU 0. From a cold start,
 * as the suite's: before each iteration the worker that ran the item last has
 * gone back to sleep (the suite waits for every worker of the target pool;
 * Linux's pools are private, and its other workers are idle and asleep).
 * @target < 0: queue_work (the local CPU's choice) and flush.
 */
static int queue_run(const char *name, struct workqueue_struct *wq, int target, bool roundtrip)
{
	struct qr_item q = { .worker = NULL };
	u64 *v = samples_alloc(ITERATIONS);
	int i;

	if (!v)
		return -ENOMEM;
	INIT_WORK_ONSTACK(&q.work, qr_fn);
	for (i = 0; i < ITERATIONS + WARMUP; i++) {
		u64 t0;

		if (q.worker)
			wait_asleep(q.worker);
		WRITE_ONCE(q.started, 0);
		t0 = cycles();
		WRITE_ONCE(q.stamp, t0);
		smp_mb();
		if (target < 0) {
			queue_work(wq, &q.work);
		} else {
			queue_work_on(target, wq, &q.work);
			if (target != 0)
				while (!READ_ONCE(q.started))
					cpu_relax();
		}
		flush_work(&q.work);
		if (i >= WARMUP)
			v[i - WARMUP] = roundtrip ? cycles() - t0 : READ_ONCE(q.started);
	}
	destroy_work_on_stack(&q.work);
	if (q.worker)
		put_task_struct(q.worker);
	report_latency(name, v, ITERATIONS);
	kvfree(v);
	return 0;
}

static int b_wq_queue_run_same_cpu(void)
{
	return queue_run("wq_queue_run_same_cpu", system_wq, 0, false);
}

static int b_wq_queue_run_cross_cpu(void)
{
	return queue_run("wq_queue_run_cross_cpu", system_wq, 1, false);
}

static int b_wq_queue_run_highpri(void)
{
	return queue_run("wq_queue_run_highpri", system_highpri_wq, 0, false);
}

static int b_wq_queue_run_unbound(void)
{
	return queue_run("wq_queue_run_unbound", system_unbound_wq, -1, false);
}

static int b_wq_queue_flush_roundtrip(void)
{
	return queue_run("wq_queue_flush_roundtrip", system_wq, 0, true);
}

struct dl_item {
	struct delayed_work dw;
	u64 stamp;
	u64 started;
};

static void dl_fn(struct work_struct *work)
{
	struct dl_item *d = container_of(to_delayed_work(work), struct dl_item, dw);

	WRITE_ONCE(d->started, cycles() - READ_ONCE(d->stamp));
}

/* queue_delayed_work(system_wq, 0) -> the item starts. */
static int b_wq_delayed_zero(void)
{
	struct dl_item d;
	u64 *v = samples_alloc(ITERATIONS);
	int i;

	if (!v)
		return -ENOMEM;
	INIT_DELAYED_WORK_ONSTACK(&d.dw, dl_fn);
	for (i = 0; i < ITERATIONS + WARMUP; i++) {
		WRITE_ONCE(d.stamp, cycles());
		queue_delayed_work(system_wq, &d.dw, 0);
		flush_work(&d.dw.work);
		if (i >= WARMUP)
			v[i - WARMUP] = READ_ONCE(d.started);
	}
	destroy_delayed_work_on_stack(&d.dw);
	report_latency("wq_delayed_zero", v, ITERATIONS);
	kvfree(v);
	return 0;
}

static void noop_fn(struct work_struct *work)
{
}

struct tput {
	struct workqueue_struct *wq;
	int per;
	atomic_t ready;
	int go;
	atomic_t left;
	struct completion done;
};

struct producer {
	struct tput *tp;
	int cpu;
	struct work_struct *items;
};

static int producer_fn(void *d)
{
	struct producer *p = d;
	struct tput *tp = p->tp;
	int i;

	for (i = 0; i < tp->per; i++)
		INIT_WORK(&p->items[i], noop_fn);
	atomic_inc(&tp->ready);
	while (!READ_ONCE(tp->go))
		yield();
	for (i = 0; i < tp->per; i++)
		queue_work_on(p->cpu, tp->wq, &p->items[i]);
	for (i = 0; i < tp->per; i++)
		flush_work(&p->items[i]);
	if (atomic_dec_and_test(&tp->left))
		complete(&tp->done);
	sleep_until_stop();
	return 0;
}

/* 100 000 no-op items in all: one producer per CPU queues its share on its
 * own CPU, then flushes it; from a common start to the last producer's end. */
static int throughput(const char *name, struct workqueue_struct *wq)
{
	int n = num_online_cpus(), cpu, err = 0;
	struct tput tp = { .wq = wq, .per = TPUT_TOTAL / n, .go = 0 };
	struct producer *p = kcalloc(n, sizeof(*p), GFP_KERNEL);
	struct task_struct **t = kcalloc(n, sizeof(*t), GFP_KERNEL);
	u64 t0, dt;

	if (!p || !t) {
		err = -ENOMEM;
		goto out;
	}
	atomic_set(&tp.ready, 0);
	atomic_set(&tp.left, n);
	init_completion(&tp.done);
	for (cpu = 0; cpu < n; cpu++) {
		p[cpu].tp = &tp;
		p[cpu].cpu = cpu;
		p[cpu].items = kvmalloc_array(tp.per, sizeof(struct work_struct), GFP_KERNEL);
		if (!p[cpu].items) {
			err = -ENOMEM;
			goto out;
		}
	}
	for (cpu = 0; cpu < n; cpu++) {
		t[cpu] = kthread_create_on_cpu(producer_fn, &p[cpu], cpu, "tput/%u");
		if (IS_ERR(t[cpu])) {
			err = PTR_ERR(t[cpu]);
			t[cpu] = NULL;
			goto out;
		}
	}
	for (cpu = 0; cpu < n; cpu++)
		wake_up_process(t[cpu]);
	if (!wait_for(60000, atomic_read(&tp.ready) == n)) {
		line("    # kbench: producers not ready");
		err = -ETIMEDOUT;
		WRITE_ONCE(tp.go, 1);
		wait_for_completion(&tp.done);
		goto out;
	}
	t0 = ktime_get_ns();
	WRITE_ONCE(tp.go, 1);
	wait_for_completion(&tp.done);
	dt = ktime_get_ns() - t0;
	report_throughput(name, (u64)tp.per * n, dt);
out:
	if (t)
		for (cpu = 0; cpu < n; cpu++)
			if (t[cpu])
				kthread_stop(t[cpu]);
	if (p)
		for (cpu = 0; cpu < n; cpu++)
			kvfree(p[cpu].items);
	kfree(p);
	kfree(t);
	return err;
}

static int b_wq_throughput_bound(void)
{
	return throughput("wq_throughput_bound", system_wq);
}

static int b_wq_throughput_unbound(void)
{
	return throughput("wq_throughput_unbound", system_unbound_wq);
}

/* flush_work / cancel_work_sync of an idle (never queued) item, from CPU 0. */
static int idle_op(const char *name, bool cancel)
{
	struct work_struct w;
	u64 *v = samples_alloc(ITERATIONS);
	int i;

	if (!v)
		return -ENOMEM;
	INIT_WORK_ONSTACK(&w, noop_fn);
	for (i = 0; i < ITERATIONS + WARMUP; i++) {
		u64 t0 = cycles();

		if (cancel)
			cancel_work_sync(&w);
		else
			flush_work(&w);
		if (i >= WARMUP)
			v[i - WARMUP] = cycles() - t0;
	}
	destroy_work_on_stack(&w);
	report_latency(name, v, ITERATIONS);
	kvfree(v);
	return 0;
}

static int b_wq_flush_idle(void)
{
	return idle_op("wq_flush_idle", false);
}

static int b_wq_cancel_sync_idle(void)
{
	return idle_op("wq_cancel_sync_idle", true);
}

/* flush_workqueue of an empty per-CPU workqueue. */
static int b_wq_flush_workqueue_empty(void)
{
	struct workqueue_struct *wq = alloc_workqueue("kbench_empty", 0, 0);
	u64 *v;
	int i;

	if (!wq)
		return -ENOMEM;
	v = samples_alloc(ITERATIONS);
	if (!v) {
		destroy_workqueue(wq);
		return -ENOMEM;
	}
	for (i = 0; i < ITERATIONS + WARMUP; i++) {
		u64 t0 = cycles();

		flush_workqueue(wq);
		if (i >= WARMUP)
			v[i - WARMUP] = cycles() - t0;
	}
	destroy_workqueue(wq);
	report_latency("wq_flush_workqueue_empty", v, ITERATIONS);
	kvfree(v);
	return 0;
}

struct blocking {
	struct work_struct work;
	atomic_t *now, *max, *left;
};

static void blocking_fn(struct work_struct *work)
{
	struct blocking *b = container_of(work, struct blocking, work);
	int n = atomic_inc_return(b->now), m;

	while ((m = atomic_read(b->max)) < n && atomic_cmpxchg(b->max, m, n) != m)
		;
	msleep(10);
	atomic_dec(b->now);
	atomic_dec(b->left);
}

/* @items items that sleep 10 ms, queued at once on CPU 0's pool: how many
 * workers concurrency management brings in (peak minus before; with
 * @absolute, the peak itself and "before=" beside it). */
static int blocking_load(const char *name, int items, bool absolute)
{
	struct blocking *b = kvcalloc(items, sizeof(*b), GFP_KERNEL);
	atomic_t now = ATOMIC_INIT(0), max = ATOMIC_INIT(0), left = ATOMIC_INIT(items);
	int before = cpu0_workers(), peak = before, i;
	u64 t0;
	bool ok;

	if (!b)
		return -ENOMEM;
	for (i = 0; i < items; i++) {
		INIT_WORK(&b[i].work, blocking_fn);
		b[i].now = &now;
		b[i].max = &max;
		b[i].left = &left;
	}
	t0 = ktime_get_ns();
	for (i = 0; i < items; i++)
		queue_work_on(0, system_wq, &b[i].work);
	ok = wait_for(600000, ({ peak = max(peak, cpu0_workers()); atomic_read(&left) == 0; }));
	for (i = 0; i < items; i++)
		flush_work(&b[i].work);
	kvfree(b);
	if (!ok)
		return -ETIMEDOUT;
	if (absolute)
		line("    # bench: %s count=%d before=%d", name, peak, before);
	else
		report_count(name, peak - before);
	line("    # workers before=%d peak=%d concurrent items peak=%d elapsed_ms=%llu", before, peak,
	     atomic_read(&max), (ktime_get_ns() - t0) / NSEC_PER_MSEC);
	return 0;
}

static int b_wq_workers_blocking_load(void)
{
	return blocking_load("wq_workers_blocking_load", 32, false);
}

/* -------------------------------------------------------- IPIs, interrupts */

static void nop_ipi(void *unused)
{
}

/* smp_call_function_single(1, wait) from CPU 0: round trip. */
static int b_ipi_roundtrip(void)
{
	u64 *v = samples_alloc(ITERATIONS);
	int i, err;

	if (!v)
		return -ENOMEM;
	for (i = 0; i < ITERATIONS + WARMUP; i++) {
		u64 t0 = cycles();

		err = smp_call_function_single(1, nop_ipi, NULL, 1);
		if (err) {
			kvfree(v);
			return err;
		}
		if (i >= WARMUP)
			v[i - WARMUP] = cycles() - t0;
	}
	report_latency("ipi_roundtrip", v, ITERATIONS);
	kvfree(v);
	return 0;
}

struct stamp {
	u64 t0;
	u64 d;
	int done;
};

static void stamp_ipi(void *d)
{
	struct stamp *s = d;

	s->d = cycles() - READ_ONCE(s->t0);
}

/* smp_call_function_single(1) -> the function starts on CPU 1. */
static int b_ipi_start_cross_cpu(void)
{
	u64 *v = samples_alloc(ITERATIONS);
	struct stamp s;
	int i, err;

	if (!v)
		return -ENOMEM;
	for (i = 0; i < ITERATIONS + WARMUP; i++) {
		s.t0 = cycles();
		err = smp_call_function_single(1, stamp_ipi, &s, 1);
		if (err) {
			kvfree(v);
			return err;
		}
		if (i >= WARMUP)
			v[i - WARMUP] = s.d;
	}
	report_latency("ipi_start_cross_cpu", v, ITERATIONS);
	kvfree(v);
	return 0;
}

struct iw_item {
	struct irq_work iw;
	struct stamp s;
};

static void iw_fn(struct irq_work *iw)
{
	struct iw_item *it = container_of(iw, struct iw_item, iw);

	it->s.d = cycles() - READ_ONCE(it->s.t0);
	WRITE_ONCE(it->s.done, 1);
}

/* irq_work_queue on this CPU -> it runs (self-IPI). */
static int b_irq_work_run_same_cpu(void)
{
	u64 *v = samples_alloc(ITERATIONS);
	struct iw_item it;
	int i;

	if (!v)
		return -ENOMEM;
	init_irq_work(&it.iw, iw_fn);
	for (i = 0; i < ITERATIONS + WARMUP; i++) {
		WRITE_ONCE(it.s.done, 0);
		it.s.t0 = cycles();
		irq_work_queue(&it.iw);
		while (!READ_ONCE(it.s.done))
			cpu_relax();
		if (i >= WARMUP)
			v[i - WARMUP] = it.s.d;
	}
	irq_work_sync(&it.iw);
	report_latency("irq_work_run_same_cpu", v, ITERATIONS);
	kvfree(v);
	return 0;
}

struct tl_item {
	struct tasklet_struct t;
	struct stamp s;
};

static void tl_fn(struct tasklet_struct *t)
{
	struct tl_item *it = from_tasklet(it, t, t);

	it->s.d = cycles() - READ_ONCE(it->s.t0);
	WRITE_ONCE(it->s.done, 1);
}

/* tasklet_schedule from a thread -> the tasklet runs (ksoftirqd/0 or the next
 * interrupt exit); with @bh_off, scheduled with BH disabled -> it runs at
 * local_bh_enable. */
static int tasklet_run(const char *name, bool bh_off)
{
	u64 *v = samples_alloc(ITERATIONS);
	struct tl_item it;
	int i;

	if (!v)
		return -ENOMEM;
	tasklet_setup(&it.t, tl_fn);
	for (i = 0; i < ITERATIONS + WARMUP; i++) {
		WRITE_ONCE(it.s.done, 0);
		if (bh_off)
			local_bh_disable();
		it.s.t0 = cycles();
		tasklet_schedule(&it.t);
		if (bh_off)
			local_bh_enable();
		while (!READ_ONCE(it.s.done))
			yield();
		if (i >= WARMUP)
			v[i - WARMUP] = it.s.d;
	}
	tasklet_kill(&it.t);
	report_latency(name, v, ITERATIONS);
	kvfree(v);
	return 0;
}

static int b_tasklet_schedule_run(void)
{
	return tasklet_run("tasklet_schedule_run", false);
}

static int b_softirq_raise_run(void)
{
	return tasklet_run("softirq_raise_run", true);
}

/* --------------------------------------------------------- scale benchmarks */

/* kthread_create_run with @alive sleeping kernel threads already alive. */
static int create_run_alive(int alive)
{
	struct task_struct **t = kvcalloc(alive, sizeof(*t), GFP_KERNEL);
	u64 t0 = ktime_get_ns(), t1, t2;
	char name[48];
	int i, made = 0, err = 0;

	if (!t)
		return -ENOMEM;
	for (i = 0; i < alive; i++) {
		t[i] = kthread_create(sleeper_fn, NULL, "alive/%d", i);
		if (IS_ERR(t[i])) {
			err = PTR_ERR(t[i]);
			break;
		}
		wake_up_process(t[i]);
		made++;
	}
	t1 = ktime_get_ns();
	if (!err) {
		snprintf(name, sizeof(name), "kthread_create_run_alive_%d", alive);
		err = create_run(name);
	}
	t2 = ktime_get_ns();
	for (i = 0; i < made; i++)
		kthread_stop(t[i]);
	line("    # creating the %d threads took %llu ms, stopping them %llu ms", alive, (t1 - t0) / NSEC_PER_MSEC,
	     (ktime_get_ns() - t2) / NSEC_PER_MSEC);
	kvfree(t);
	return err;
}

static int b_kthread_create_run_alive_10(void)
{
	return create_run_alive(10);
}

static int b_kthread_create_run_alive_1000(void)
{
	return create_run_alive(1000);
}

static int b_kthread_create_run_alive_10000(void)
{
	return create_run_alive(10000);
}

/* Wait (polling every millisecond, up to 60 s) until each thread is asleep. */
static bool all_asleep(struct task_struct **t, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (!wait_for(60000, READ_ONCE(t[i]->__state) != TASK_RUNNING && !READ_ONCE(t[i]->on_cpu)))
			return false;
	return true;
}

/* Bytes per kernel thread: free memory before and after 1 000 sleeping
 * kthreads (stack, task_struct and everything else they took). */
static int b_mem_kthread(void)
{
	const int n = 1000;
	struct task_struct **t = kvcalloc(n, sizeof(*t), GFP_KERNEL);
	int i, made = 0, err = 0;
	u64 before, after;

	if (!t)
		return -ENOMEM;
	before = free_bytes();
	for (i = 0; i < n; i++) {
		t[i] = kthread_create(sleeper_fn, NULL, "mem/%d", i);
		if (IS_ERR(t[i])) {
			err = PTR_ERR(t[i]);
			break;
		}
		wake_up_process(t[i]);
		made++;
	}
	if (!err && !all_asleep(t, made))
		err = -ETIMEDOUT;
	after = free_bytes();
	if (!err) {
		report_bytes("mem_kthread", before > after ? (before - after) / n : 0, n);
		line("    # stack (THREAD_SIZE)=%lu sizeof(struct task_struct)=%zu", (unsigned long)THREAD_SIZE,
		     sizeof(struct task_struct));
	}
	for (i = 0; i < made; i++)
		kthread_stop(t[i]);
	kvfree(t);
	return err;
}

static int b_mem_work_item(void)
{
	report_bytes("mem_work_item", sizeof(struct work_struct), 1);
	report_bytes("mem_delayed_work_item", sizeof(struct delayed_work), 1);
	return 0;
}

struct idle_item {
	struct work_struct work;
	struct completion *gate;
	atomic_t *started;
};

static void idle_item_fn(struct work_struct *work)
{
	struct idle_item *it = container_of(work, struct idle_item, work);

	atomic_inc(it->started);
	wait_for_completion(it->gate);
}

/* Bytes per idle worker: 128 items that block together on CPU 0's pool make
 * it bring in workers; once they are done and idle, free memory and the
 * worker count against before. */
static int b_mem_idle_worker(void)
{
	const int n = 128;
	struct idle_item *it = kcalloc(n, sizeof(*it), GFP_KERNEL);
	DECLARE_COMPLETION_ONSTACK(gate);
	atomic_t started = ATOMIC_INIT(0);
	int before_w, after_w, i;
	u64 before, after;
	bool ok;

	if (!it)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		INIT_WORK(&it[i].work, idle_item_fn);
		it[i].gate = &gate;
		it[i].started = &started;
	}
	before_w = cpu0_workers();
	before = free_bytes();
	for (i = 0; i < n; i++)
		queue_work_on(0, system_wq, &it[i].work);
	ok = wait_for(60000, atomic_read(&started) == n);
	complete_all(&gate);
	for (i = 0; i < n; i++)
		flush_work(&it[i].work);
	after_w = cpu0_workers();
	after = free_bytes();
	kfree(it);
	if (!ok)
		return -ETIMEDOUT;
	line("    # free before=%llu after=%llu, workers before=%d after=%d", before, after, before_w, after_w);
	if (after_w > before_w)
		report_bytes("mem_idle_worker", before > after ? (before - after) / (after_w - before_w) : 0,
			     after_w - before_w);
	else
		line("    # kbench: no worker was added (before=%d after=%d)", before_w, after_w);
	return 0;
}

/* Bytes per workqueue: 100 alloc_workqueue(0, 0) against free memory. */
static int b_mem_workqueue(void)
{
	const int n = 100;
	struct workqueue_struct **q = kcalloc(n, sizeof(*q), GFP_KERNEL);
	int i, made = 0;
	u64 before, after;

	if (!q)
		return -ENOMEM;
	before = free_bytes();
	for (i = 0; i < n; i++) {
		q[i] = alloc_workqueue("kbm%d", 0, 0, i);
		if (!q[i])
			break;
		made++;
	}
	after = free_bytes();
	if (made == n)
		report_bytes("mem_workqueue", before > after ? (before - after) / n : 0, n);
	for (i = 0; i < made; i++)
		destroy_workqueue(q[i]);
	kfree(q);
	return made == n ? 0 : -ENOMEM;
}

/* A gated ordered queue: the first item blocks on @gate, @depth items wait
 * behind it. */
struct depth {
	struct workqueue_struct *wq;
	struct work_struct gate_work, probe;
	struct completion gate;
	int gate_started;
	struct work_struct *items;
	int n;
	atomic_t ran;
	u64 last_end;
	u64 released;
	struct task_struct *flusher;
};

static void gate_fn(struct work_struct *w)
{
	struct depth *d = container_of(w, struct depth, gate_work);

	WRITE_ONCE(d->gate_started, 1);
	wait_for_completion(&d->gate);
}

static struct depth *current_depth;

static void depth_item_fn(struct work_struct *w)
{
	struct depth *d = current_depth;

	if (atomic_inc_return(&d->ran) == d->n)
		WRITE_ONCE(d->last_end, cycles());
}

static int release_fn(void *p)
{
	struct depth *d = p;

	wait_asleep(d->flusher);
	WRITE_ONCE(d->released, cycles());
	complete(&d->gate);
	sleep_until_stop();
	return 0;
}

static void depth_fill(struct depth *d)
{
	int i;

	reinit_completion(&d->gate);
	WRITE_ONCE(d->gate_started, 0);
	atomic_set(&d->ran, 0);
	queue_work(d->wq, &d->gate_work);
	wait_for(60000, READ_ONCE(d->gate_started));
	for (i = 0; i < d->n; i++)
		queue_work(d->wq, &d->items[i]);
}

/*
 * With @n items in flight on an ordered queue (held behind a blocked first
 * item): wq_queue_depth_N, the latency of queueing one more (cancelled,
 * untimed, after each sample); then, @reps times, a flush_workqueue started
 * with the @n items in flight, released by a thread on CPU 1 once the
 * flusher sleeps: wq_flush_depth_N is the time from the last item's end to
 * flush_workqueue's return, wq_drain_depth_N the rate the items ran at.
 */
static int depth_case(int n, int reps)
{
	struct depth *d = kzalloc(sizeof(*d), GFP_KERNEL);
	u64 *v = samples_alloc(ITERATIONS), *f = samples_alloc(reps), drain_ns = 0;
	char name[48];
	int i, r, err = 0;

	if (!d || !v || !f) {
		err = -ENOMEM;
		goto out;
	}
	d->n = n;
	d->flusher = current;
	d->items = kvmalloc_array(n, sizeof(struct work_struct), GFP_KERNEL);
	d->wq = alloc_ordered_workqueue("kbench_depth", 0);
	if (!d->items || !d->wq) {
		err = -ENOMEM;
		goto out;
	}
	current_depth = d;
	init_completion(&d->gate);
	INIT_WORK(&d->gate_work, gate_fn);
	INIT_WORK(&d->probe, noop_fn);
	for (i = 0; i < n; i++)
		INIT_WORK(&d->items[i], depth_item_fn);
	for (r = 0; r < reps; r++) {
		struct task_struct *rel;
		u64 ret;

		depth_fill(d);
		if (r == 0) {
			for (i = 0; i < ITERATIONS + WARMUP; i++) {
				u64 t0 = cycles();

				queue_work(d->wq, &d->probe);
				if (i >= WARMUP)
					v[i - WARMUP] = cycles() - t0;
				cancel_work(&d->probe);
			}
			snprintf(name, sizeof(name), "wq_queue_depth_%d", n);
			report_latency(name, v, ITERATIONS);
		}
		rel = kthread_create_on_cpu(release_fn, d, 1, "release/%u");
		if (IS_ERR(rel)) {
			complete(&d->gate);
			flush_workqueue(d->wq);
			err = PTR_ERR(rel);
			goto out;
		}
		wake_up_process(rel);
		flush_workqueue(d->wq);
		ret = cycles();
		kthread_stop(rel);
		f[r] = ret - READ_ONCE(d->last_end);
		drain_ns += cycles_to_ns(READ_ONCE(d->last_end) - READ_ONCE(d->released));
	}
	snprintf(name, sizeof(name), "wq_flush_depth_%d", n);
	report_latency(name, f, reps);
	snprintf(name, sizeof(name), "wq_drain_depth_%d", n);
	report_throughput(name, (u64)n * reps, drain_ns);
out:
	current_depth = NULL;
	if (d) {
		if (d->wq)
			destroy_workqueue(d->wq);
		kvfree(d->items);
	}
	kfree(d);
	kvfree(v);
	kvfree(f);
	return err;
}

static int b_wq_depth_10(void)
{
	return depth_case(10, 200);
}

static int b_wq_depth_1000(void)
{
	return depth_case(1000, 20);
}

static int b_wq_depth_100000(void)
{
	return depth_case(100000, 3);
}

static int b_wq_workers_blocking_10000(void)
{
	return blocking_load("wq_workers_blocking_10000", 10000, true);
}

/* ------------------------------------------------------------------ table */

struct bench {
	const char *name; /* case name, as the suite's: bench_<benchmark> */
	int (*fn)(void);
	int min_cpus;
	const char *set;
};

static const struct bench benches[] = {
	/* The make bench set, in the suite's order. */
	{ "bench_kthread_create_run", b_kthread_create_run, 1, "main" },
	{ "bench_kthread_stop", b_kthread_stop, 1, "main" },
	{ "bench_kthread_wakeup_same_cpu", b_kthread_wakeup_same_cpu, 1, "main" },
	{ "bench_kthread_wakeup_cross_cpu", b_kthread_wakeup_cross_cpu, 2, "main" },
	{ "bench_kthread_worker_queue_run", b_kthread_worker_queue_run, 1, "main" },
	{ "bench_wq_queue_run_same_cpu", b_wq_queue_run_same_cpu, 1, "main" },
	{ "bench_wq_queue_run_cross_cpu", b_wq_queue_run_cross_cpu, 2, "main" },
	{ "bench_wq_delayed_zero", b_wq_delayed_zero, 1, "main" },
	{ "bench_wq_throughput_bound", b_wq_throughput_bound, 1, "main" },
	{ "bench_wq_throughput_unbound", b_wq_throughput_unbound, 1, "main" },
	{ "bench_wq_flush_idle", b_wq_flush_idle, 1, "main" },
	{ "bench_wq_cancel_sync_idle", b_wq_cancel_sync_idle, 1, "main" },
	{ "bench_wq_workers_blocking_load", b_wq_workers_blocking_load, 1, "main" },
	{ "bench_sched_yield_pingpong_same_cpu", b_sched_yield_pingpong_same_cpu, 1, "main" },
	{ "bench_sched_wakeup_cross_cpu", b_sched_wakeup_cross_cpu, 2, "main" },
	{ "bench_ipi_roundtrip", b_ipi_roundtrip, 2, "main" },
	{ "bench_context_create_exit", b_context_create_exit, 1, "main" },
	/* Targets of benchmarks the project does not have yet. */
	{ "bench_tasklet_schedule_run", b_tasklet_schedule_run, 1, "main" },
	{ "bench_softirq_raise_run", b_softirq_raise_run, 1, "main" },
	{ "bench_wq_queue_run_highpri", b_wq_queue_run_highpri, 1, "main" },
	{ "bench_wq_queue_run_unbound", b_wq_queue_run_unbound, 1, "main" },
	{ "bench_irq_work_run_same_cpu", b_irq_work_run_same_cpu, 1, "main" },
	{ "bench_ipi_start_cross_cpu", b_ipi_start_cross_cpu, 2, "main" },
	{ "bench_wq_flush_workqueue_empty", b_wq_flush_workqueue_empty, 1, "main" },
	{ "bench_wq_queue_flush_roundtrip", b_wq_queue_flush_roundtrip, 1, "main" },
	/* The suite's explicit "scale" suite. */
	{ "bench_kthread_create_run_alive_10", b_kthread_create_run_alive_10, 1, "scale" },
	{ "bench_kthread_create_run_alive_1000", b_kthread_create_run_alive_1000, 1, "scale" },
	{ "bench_kthread_create_run_alive_10000", b_kthread_create_run_alive_10000, 1, "scale" },
	{ "bench_wq_depth_10", b_wq_depth_10, 2, "scale" },
	{ "bench_wq_depth_1000", b_wq_depth_1000, 2, "scale" },
	{ "bench_wq_depth_100000", b_wq_depth_100000, 2, "scale" },
	{ "bench_mem_kthread", b_mem_kthread, 1, "scale" },
	{ "bench_mem_work_item", b_mem_work_item, 1, "scale" },
	{ "bench_mem_idle_worker", b_mem_idle_worker, 1, "scale" },
	{ "bench_mem_workqueue", b_mem_workqueue, 1, "scale" },
	{ "bench_wq_workers_blocking_10000", b_wq_workers_blocking_10000, 1, "scale" },
	/* The throughput cases alone, per CPU count (make bench-scale). */
	{ "bench_wq_throughput_bound", b_wq_throughput_bound, 1, "tput" },
	{ "bench_wq_throughput_unbound", b_wq_throughput_unbound, 1, "tput" },
};

/* Is @name (without its bench_ prefix, or with it) in the comma list @list? */
static bool listed(const char *list, const char *name)
{
	const char *bare = name + strlen("bench_");
	size_t len = strlen(bare);
	const char *p = list;

	while (*p) {
		const char *end = strchrnul(p, ',');
		size_t l = end - p;

		if ((l == len && !strncmp(p, bare, l)) || (l == strlen(name) && !strncmp(p, name, l)))
			return true;
		p = *end ? end + 1 : end;
	}
	return false;
}

static bool selected(const struct bench *b)
{
	return !strcmp(b->set, set) && (!*only || listed(only, b->name));
}

struct runner {
	struct completion done;
	int failed;
};

static int runner_fn(void *d)
{
	struct runner *r = d;
	int i, n = 0, k = 0, passed = 0, skipped = 0;

	for (i = 0; i < ARRAY_SIZE(benches); i++)
		n += selected(&benches[i]);
	if (ktap_num <= 1) {
		line("KTAP version 1");
		line("1..1");
	}
	line("    KTAP version 1");
	line("    # Subtest: linux");
	line("    1..%d", n);
	for (i = 0; i < ARRAY_SIZE(benches); i++) {
		const struct bench *b = &benches[i];
		int err;

		if (!selected(b))
			continue;
		k++;
		if (num_online_cpus() < b->min_cpus) {
			line("    ok %d %s # SKIP needs %d CPUs", k, b->name, b->min_cpus);
			skipped++;
			continue;
		}
		err = b->fn();
		if (err) {
			line("    not ok %d %s # error %d", k, b->name, err);
			r->failed++;
		} else {
			line("    ok %d %s", k, b->name);
			passed++;
		}
	}
	line("%s %d linux", r->failed ? "not ok" : "ok", max(ktap_num, 1));
	line("# ktest: done passed=%d failed=%d skipped=%d", passed, r->failed, skipped);
	complete(&r->done);
	sleep_until_stop();
	return 0;
}

static int __init kbench_init(void)
{
	struct runner r = { .failed = 0 };
	struct task_struct *t;
	int i, n = 0;

	for (i = 0; i < ARRAY_SIZE(benches); i++)
		n += selected(&benches[i]);
	if (!n) {
		pr_err("kbench: nothing selected (set=%s only=%s)\n", set, only);
		return -EINVAL;
	}
	calibrate();
	line("# kbench: linux %s cpus=%u hz=%d tsc_hz=%llu tsc_khz=%u set=%s", init_utsname()->release,
	     num_online_cpus(), HZ, tsc_hz, tsc_khz, set);
	init_completion(&r.done);
	t = kthread_create_on_cpu(runner_fn, &r, 0, "kbench/%u");
	if (IS_ERR(t))
		return PTR_ERR(t);
	wake_up_process(t);
	wait_for_completion(&r.done);
	kthread_stop(t);
	return r.failed ? -EIO : 0;
}

static void __exit kbench_exit(void)
{
}

module_init(kbench_init);
module_exit(kbench_exit);
