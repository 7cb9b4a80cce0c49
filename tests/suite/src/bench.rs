//! Benchmark reporting (see `docs/benchmarks.md`): samples are cycle counts
//! from the port's `cycles()` (rdtsc with a fence), converted to ns with the
//! factor calibrated at boot; the median and the 99th percentile are printed
//! as a KTAP diagnostic. Nothing here asserts a time.

use kport::{CpuMask, TaskRef, port};

/// Iterations of a latency benchmark (BENCH.md: 10 000).
pub const ITERATIONS: usize = 10_000;
/// Iterations of thread creation and stop benchmarks (BENCH.md: 2 000).
pub const THREAD_ITERATIONS: usize = 2_000;
/// Warm-up iterations before measuring.
pub const WARMUP: usize = 100;

/// Median and 99th percentile of `samples` (in cycles), in ns.
pub fn percentiles_ns(samples: &mut [u64]) -> (u64, u64) {
    if samples.is_empty() {
        return (0, 0);
    }
    samples.sort_unstable();
    let p = port();
    let med = samples[samples.len() / 2];
    let p99 = samples[((samples.len() * 99) / 100).min(samples.len() - 1)];
    (p.cycles_to_ns(med), p.cycles_to_ns(p99))
}

/// Print `# bench: NAME median_ns=… p99_ns=… n=…` for `samples` (cycles).
pub fn report_latency(name: &str, samples: &mut [u64]) {
    let (med, p99) = percentiles_ns(samples);
    crate::harness::diag_line(&alloc::format!("bench: {name} median_ns={med} p99_ns={p99} n={}", samples.len()));
}

/// Print `# bench: NAME items_per_s=… n=…`.
pub fn report_throughput(name: &str, items: u64, elapsed_ns: u64) {
    report_throughput_with(name, items, elapsed_ns, "");
}

/// Print `# bench: NAME items_per_s=… n=…` followed by `extra` (further
/// ` key=value` fields, each with its leading space).
pub fn report_throughput_with(name: &str, items: u64, elapsed_ns: u64, extra: &str) {
    let per_s = if elapsed_ns == 0 { 0 } else { (items as u128 * 1_000_000_000 / elapsed_ns as u128) as u64 };
    crate::harness::diag_line(&alloc::format!("bench: {name} items_per_s={per_s} n={items}{extra}"));
}

/// Print `# bench: NAME count=…`.
pub fn report_count(name: &str, count: u64) {
    crate::harness::diag_line(&alloc::format!("bench: {name} count={count}"));
}

/// Binds the calling context to one CPU for a benchmark (BENCH.md: the
/// measuring thread runs on CPU 0) and restores its affinity when dropped.
pub struct Pinned {
    task: TaskRef,
    before: CpuMask,
}

impl Pinned {
    /// Move the calling context to `cpu`.
    pub fn to(cpu: usize) -> Self {
        let p = port();
        let task = p.current();
        let before = task.affinity();
        let _ = task.set_affinity(CpuMask::one(cpu));
        while p.cpu_id() != cpu {
            p.yield_now();
        }
        Pinned { task, before }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = self.task.set_affinity(self.before);
    }
}

/// Spin (yielding) until `t` has really left its CPU asleep.
pub fn wait_asleep(t: &TaskRef) {
    let p = port();
    while t.is_running() || t.state() == kport::TaskState::Running {
        p.yield_now();
    }
}
