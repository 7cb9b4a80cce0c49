# The two commands of the README, and the helpers they use.
#   make qemu   build the testkernel, boot it in QEMU with 4 CPUs, run the whole suite
#   make test   every host test, then the in-guest suite with 1, 2 and 4 CPUs under
#               preempt=full and preempt=none, and the port suite on an SMT machine
# Everything runs under TCG; pass KVM=1 to use -accel kvm where KVM works.

CARGO ?= cargo
RUNNER = $(CARGO) run -q -p ktest-runner --release --
KVM_FLAG = $(if $(KVM),--kvm,)
KERNEL_ELF = target/x86_64-unknown-linux-gnu/release/testkernel
# Freestanding binaries: their test targets would pull std in (the host port's
# feature unifies across --all-targets), so they are linted without them.
KERNEL_EXCLUDES = --exclude testkernel
SMP ?= 1,2,4
PREEMPT ?= full,none

.PHONY: qemu test host-test loom guest-test bench torture check fmt clippy redzone deps kernel

deps:
	@scripts/ensure-deps.sh

kernel:
	cd testkernel && $(CARGO) build --release

qemu: deps
	$(RUNNER) run --smp 4 --preempt full $(KVM_FLAG)

test: deps host-test loom guest-test

host-test:
	$(CARGO) test --workspace

# Model checks (loom explores every interleaving up to a preemption bound)
# of the crates' own code: the `loom` feature swaps their protocol atomics
# for loom's and adds a mock port. A separate target dir keeps the feature
# build apart from the normal one.
loom:
	$(CARGO) test -p kthreadd --features loom --test loom_kthread --release --target-dir target/loom
	$(CARGO) test -p workqueue --features loom --test loom_workqueue --release --target-dir target/loom

# The whole suite with each CPU count and preemption model (QEMU's pc machine:
# PCI through ports 0xCF8/0xCFC), then the port suite once more on a machine
# with SMT siblings and two NUMA nodes (1 socket x 2 cores x 2 threads), where
# the testkernel checks that it finds them (reports in target/ktest/smt), and
# the port and block suites on QEMU's q35, whose MCFG gives PCI's ECAM window
# (reports in target/ktest/q35). Then the pagecache, writeback and kswapd suites
# again in a 64 MiB guest, where reclaim has little room (target/ktest/mem64).
# Last, the restart test: for each preemption model two boots on the same disk
# images, the second reading back what the first wrote through the page cache
# and synced (reports in target/ktest/restart).
guest-test:
	$(RUNNER) run --smp $(SMP) --preempt $(PREEMPT) --append expect_pci=ports --quiet $(KVM_FLAG)
	$(RUNNER) run --smp 4 --preempt none --tests port --topology sockets=1,cores=2,threads=2 --numa 2 \
		--no-build --out target/ktest/smt --quiet $(KVM_FLAG)
	$(RUNNER) run --smp 2 --preempt full,none --tests port,block --append expect_pci=ecam \
		--qemu-arg=-machine --qemu-arg=q35 --no-build --out target/ktest/q35 --quiet $(KVM_FLAG)
	$(RUNNER) run --smp $(SMP) --preempt $(PREEMPT) --mem 64 --tests pagecache,writeback,kswapd \
		--no-build --out target/ktest/mem64 --quiet $(KVM_FLAG)
	$(RUNNER) restart --smp 2 --preempt full,none --no-build --out target/ktest/restart --quiet $(KVM_FLAG)

bench: deps
	$(RUNNER) bench $(KVM_FLAG)

# The benchmarks beside Linux (docs/benchmarks.md): Debian's own kernel (linux-image-amd64) in
# the same QEMU configuration, running the kbench module of tests/bench-linux. The script
# installs the packages (root or sudo) and builds the module; none of this is part of make test.
#   make bench-linux                    Linux's figures in target/ktest/bench-linux.json
#   make bench-compare [N=3]            N alternating rounds of Linux and make bench, one table
#                                       (target/ktest/bench-compare.{md,json,svg}); with
#                                       REDOX_KERNEL=<checkout> a Redox column (make redox-bench)
#   make bench-scale [NO_LINUX=1]       throughput at 1, 2, 4 and 8 CPUs and the scale suite
N ?= 3
REDOX_SIDE = $(if $(REDOX_KERNEL),--side 'redox=$(MAKE) --no-print-directory redox-bench REDOX_KERNEL="$(REDOX_KERNEL)" OUT="$$KTEST_SIDE_OUT"',)

bench-linux: deps
	scripts/bench-linux.sh
	$(RUNNER) bench-linux $(KVM_FLAG)

bench-compare: deps
	scripts/bench-linux.sh
	$(RUNNER) bench-compare --rounds $(N) $(KVM_FLAG) $(REDOX_SIDE)

bench-scale: deps
	$(if $(NO_LINUX),,scripts/bench-linux.sh)
	$(RUNNER) bench-scale $(if $(NO_LINUX),--no-linux,) $(KVM_FLAG)

.PHONY: bench-linux bench-compare bench-scale

# Long stress runs (docs/torture.md): each case of the explicit torture suite runs DURATION
# seconds (default 300), with 2 and 4 CPUs (SMP= on the command line overrides) under both
# preemption models. SEED=S replays a run (the runner prints the seed it picked); FAULT=P is the
# fault-injection mode (torture_fault=P: the fault attributes switched on and off at random,
# P percent of eligible calls failing while on). A 10-minute soak: make torture DURATION=600.
DURATION ?= 300
FAULT ?= 0
TORTURE_SMP = $(if $(filter command line environment,$(origin SMP)),$(SMP),2,4)
torture: deps
	$(RUNNER) run --tests torture --smp $(TORTURE_SMP) --preempt $(PREEMPT) \
		--append "torture_s=$(DURATION)$(if $(filter-out 0,$(FAULT)), torture_fault=$(FAULT),)" \
		$(if $(SEED),--seed $(SEED),) --timeout $$(( $(DURATION) * 3 + 600 )) $(KVM_FLAG)

check: fmt clippy redzone

fmt:
	@scripts/ensure-deps.sh --check --no-qemu
	$(CARGO) fmt --all -- --check
	$(MAKE) --no-print-directory fmt-glue
	rustfmt --check --edition 2024 tests/redox-user/src/*.rs tests/redox-user/build.rs

clippy:
	@scripts/ensure-deps.sh --check --no-qemu
	$(CARGO) clippy --workspace -- -D warnings
	$(CARGO) clippy --workspace $(KERNEL_EXCLUDES) --all-targets -- -D warnings
	$(CARGO) clippy -p kport -p kthreadd -p workqueue --features loom --all-targets --target-dir target/loom -- -D warnings
	cd testkernel && $(CARGO) clippy --release -- -D warnings

redzone: kernel
	@scripts/check-redzone.sh $(KERNEL_ELF)

# The Redox glue (kernel-patch/glue/) is compiled as Redox kernel code, not as part of this
# workspace: rustfmt checks it with its own rustfmt.toml (Redox's kernel style).
fmt-glue:
	rustfmt --check --edition 2024 --config-path kernel-patch/glue/rustfmt.toml kernel-patch/glue/*.rs

# Regenerate kernel-patch/*.patch and series from a Redox kernel checkout with the series
# committed on top of the commit it targets: make redox-series REDOX_KERNEL=<path> [BRANCH=<rev>]
redox-series:
	kernel-patch/mkseries.sh REDOX_KERNEL="$(REDOX_KERNEL)" $(if $(BRANCH),BRANCH="$(BRANCH)",)

# One command for a Redox developer (kernel-patch/redox-test.sh, kernel-patch/README.md): copy a
# Redox kernel checkout to a scratch directory, apply the series, place this project at
# subsys/kthreads, build the kernel with `ktests` the way Redox builds it, boot it through the
# shim and run the suites (redox-bench: the benchmarks, -smp 2 -m 512M, bench.json).
#   make redox-test REDOX_KERNEL=<checkout> [REDOX_SYSCALL=<dir>] [REDOX_FDT=<dir>] [SMP=] [TESTS=]
#                   [APPEND="k=v ..."] (extra guest words, e.g. TESTS=torture APPEND=torture_s=60)
# Only the variables given on the command line or in the environment are passed on: SMP and
# PREEMPT above are the testkernel's defaults, the script has Redox's.
REDOX_TEST_VARS = REDOX_SYSCALL REDOX_FDT SMP PREEMPT TESTS APPEND USERSPACE KERNEL_BUILD PROJECT_SOURCE \
	REDOX_WORK OUT TIMEOUT PREPARE_ONLY HOST_TOOLCHAIN
redox_test_args = $(strip REDOX_KERNEL="$(REDOX_KERNEL)" $(foreach v,$(REDOX_TEST_VARS),\
	$(if $(filter command line environment environment override,$(origin $(v))),$(v)="$($(v))")))

redox-test: deps
	kernel-patch/redox-test.sh MODE=test $(redox_test_args)

redox-bench: deps
	kernel-patch/redox-test.sh MODE=bench $(redox_test_args)

.PHONY: fmt-glue redox-series redox-test redox-bench
