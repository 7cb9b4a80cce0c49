#!/usr/bin/env bash
# One command for a Redox developer: apply this project's series to a Redox kernel checkout,
# build it with the `ktests` feature, boot it under QEMU through the project's shim and run the
# suites with the project's runner (make redox-test / make redox-bench).
#
#   kernel-patch/redox-test.sh REDOX_KERNEL=<redox-os/kernel checkout> [KEY=VALUE ...]
#
# The checkout is copied to a scratch directory and never modified. What happens, in order:
#   1. the checkout is checked (a Redox kernel?) and copied, working tree as it is;
#   2. each patch of kernel-patch/series is checked, then applied with `patch -p1` (what the
#      cookbook does); a patch that does not apply is named with its hunk, and the commit the
#      series is made for;
#   3. this project is placed where the kernel recipe puts it, subsys/kthreads (git archive of
#      HEAD, or PROJECT_SOURCE=worktree);
#   4. the kernel's git dependencies: local checkouts (REDOX_SYSCALL=, REDOX_FDT=) or their
#      remotes; a cargo configuration in the scratch directory patches them in;
#   5. the kernel is built the way Redox builds it (its own Makefile, the toolchain its
#      rust-toolchain.toml pins, its soft-float x86_64-unknown-kernel target with -Zbuild-std),
#      or, where rustup cannot get that toolchain, for the host target with SSE off;
#   6. the kernel's Cargo.lock is checked for model-checking crates (loom);
#   7. the user program (tests/redox-user) is built for x86_64-unknown-redox, if that target
#      can be had, as the bootstrap image, and the suite redox_user is added;
#   8. the shim and the runner (this working tree's) boot it and report as `make test` does.
# See kernel-patch/README.md ("One command").
set -euo pipefail

me=redox-test
say() { printf '%s: %s\n' "$me" "$*"; }
die() {
    printf '%s: error: %s\n' "$me" "$*" >&2
    exit 1
}
usage_error() {
    printf '%s: %s\n' "$me" "$*" >&2
    printf '%s: usage: %s\n' "$me" "make redox-test REDOX_KERNEL=<redox-os/kernel checkout> [REDOX_SYSCALL=<dir>] \
[REDOX_FDT=<dir>] [SMP=1,2,4] [TESTS=...] [APPEND=\"k=v ...\"] [PREEMPT=none] [USERSPACE=auto|0|1] [KERNEL_BUILD=auto|redox|host] \
[PROJECT_SOURCE=head|worktree] [REDOX_WORK=<dir>] [OUT=<dir>] [TIMEOUT=<s>] [PREPARE_ONLY=1] (kernel-patch/README.md)" >&2
    exit 2
}

repo=$(cd "$(dirname "$0")/.." && pwd)
series_dir="$repo/kernel-patch"
# The Redox commit the series is made for: mkseries.sh's BASE.
series_base=$(sed -n 's/^BASE=\([0-9a-f]\{40\}\)$/\1/p' "$series_dir/mkseries.sh")
# Where the recipe puts this project inside the kernel source.
subsys=subsys/kthreads
# The fw_cfg file the shim hands over as the bootstrap image (kernel-patch/shim/src/fwcfg.rs).
bootstrap_fw_cfg=opt/redox/bootstrap
redox_user_target=x86_64-unknown-redox

MODE=test
REDOX_KERNEL=
REDOX_SYSCALL=
REDOX_FDT=
SMP=
PREEMPT=none
TESTS=
APPEND=
USERSPACE=auto
KERNEL_BUILD=auto
PROJECT_SOURCE=head
REDOX_WORK=
OUT=
TIMEOUT=600
PREPARE_ONLY=0
HOST_TOOLCHAIN=nightly
for arg in "$@"; do
    case "$arg" in
    MODE=* | REDOX_KERNEL=* | REDOX_SYSCALL=* | REDOX_FDT=* | SMP=* | PREEMPT=* | TESTS=* | APPEND=* | USERSPACE=* | \
        KERNEL_BUILD=* | PROJECT_SOURCE=* | REDOX_WORK=* | OUT=* | TIMEOUT=* | PREPARE_ONLY=* | HOST_TOOLCHAIN=*)
        printf -v "${arg%%=*}" '%s' "${arg#*=}"
        ;;
    *) usage_error "unknown argument '$arg'" ;;
    esac
done

case "$MODE" in
test) : "${SMP:=1,2,4}" "${TESTS:=port,kthread,kthread_worker,workqueue,might_sleep,softirq,tasklet,bh_workqueue,threaded_irq,redox_bh,block,redox_blk,pagecache,writeback,kswapd,observe,fault_inject,misuse,hotplug}" ;;
bench) : "${SMP:=2}" "${TESTS:=port,kthread,kthread_worker,workqueue,softirq,tasklet,bh_workqueue,threaded_irq,block}" ;;
*) usage_error "MODE must be test or bench, not '$MODE'" ;;
esac
[ -n "$REDOX_KERNEL" ] || usage_error "give REDOX_KERNEL=<path to a redox-os/kernel checkout>"
[[ "$SMP" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || usage_error "SMP must be a comma list of CPU counts, not '$SMP'"
[[ "$TESTS" =~ ^[a-z_0-9]+(,[a-z_0-9]+)*$ ]] || usage_error "TESTS must be a comma list of suites, not '$TESTS'"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || usage_error "TIMEOUT must be a number of seconds, not '$TIMEOUT'"
for word in $APPEND; do
    [[ "$word" =~ ^[a-z_][a-z_0-9.]*=[^[:space:]]*$ ]] || usage_error "APPEND takes key=value words (the guest's command line), not '$word'"
done
case "$PREEMPT" in
none) ;;
*) usage_error "PREEMPT=$PREEMPT: Redox never preempts kernel code; only PREEMPT=none runs inside Redox" ;;
esac
case "$USERSPACE" in auto | 0 | 1) ;; *) usage_error "USERSPACE must be auto, 0 or 1, not '$USERSPACE'" ;; esac
case "$KERNEL_BUILD" in auto | redox | host) ;; *) usage_error "KERNEL_BUILD must be auto, redox or host, not '$KERNEL_BUILD'" ;; esac
case "$PROJECT_SOURCE" in head | worktree) ;; *) usage_error "PROJECT_SOURCE must be head or worktree, not '$PROJECT_SOURCE'" ;; esac
case "$PREPARE_ONLY" in 0 | 1) ;; *) usage_error "PREPARE_ONLY must be 0 or 1, not '$PREPARE_ONLY'" ;; esac
if [ "$MODE" = bench ] && [ "$SMP" != 2 ]; then
    usage_error "redox-bench runs the benchmark configuration (-smp 2 -m 512M); SMP=$SMP is not for it"
fi

abspath() { (cd "$1" && pwd -P); }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else return 1
    fi
}

# ---------------------------------------------------------------- 1. the checkout

[ -e "$REDOX_KERNEL" ] || die "REDOX_KERNEL=$REDOX_KERNEL does not exist"
[ -d "$REDOX_KERNEL" ] || die "REDOX_KERNEL=$REDOX_KERNEL is not a directory"
kernel_src=$(abspath "$REDOX_KERNEL")
for f in Cargo.toml Makefile rust-toolchain.toml src/context/switch.rs src/startup/mod.rs \
    targets/x86_64-unknown-kernel.json linkers/x86_64.ld; do
    [ -f "$kernel_src/$f" ] || die "$kernel_src is not a Redox kernel checkout (no $f; expected a clone of https://gitlab.redox-os.org/redox-os/kernel)"
done
grep -q '^name = "kernel"$' "$kernel_src/Cargo.toml" ||
    die "$kernel_src is not a Redox kernel checkout (its Cargo.toml is not the package \"kernel\")"

# Is directory $1 the top of a git work tree (not just somewhere inside one)?
git_top() { [ "$(git -C "$1" rev-parse --show-toplevel 2>/dev/null)" = "$1" ]; }

kernel_commit=unknown
kernel_dirty=
if git_top "$kernel_src"; then
    kernel_commit=$(git -C "$kernel_src" rev-parse HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git -C "$kernel_src" status --porcelain --untracked-files=no)" ]; then
        kernel_dirty=", with uncommitted changes (copied as they are)"
    fi
    kernel_is_git=1
else
    kernel_is_git=0
fi
say "Redox kernel: $kernel_src at ${kernel_commit}${kernel_dirty}"
if [ "$kernel_commit" != "$series_base" ]; then
    say "note: the series is made for redox-os/kernel $series_base; trying it on ${kernel_commit}"
fi

case "${REDOX_WORK:-}" in
"") work="$repo/target/redox" ;;
/*) work="$REDOX_WORK" ;;
*) work="$PWD/$REDOX_WORK" ;;
esac
case "$work/" in
"$kernel_src"/*) die "REDOX_WORK=$work is inside the checkout; the checkout is never written to" ;;
esac
mkdir -p "$work"
work=$(abspath "$work")
case "$repo/" in
"$work"/*) die "REDOX_WORK=$work contains this repository: the cargo configuration written there would apply to this repository's builds" ;;
esac
tree="$work/kernel"
build="$work/build"
rm -rf "$tree" "$build"
mkdir -p "$tree" "$build"
if [ "$kernel_is_git" = 1 ]; then
    # The working tree as it is: tracked files and untracked ones git does not ignore.
    (cd "$kernel_src" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) |
        tar -xf - -C "$tree"
else
    tar -C "$kernel_src" --exclude=./target --exclude=./build --exclude=./.git -cf - . | tar -xf - -C "$tree"
fi
say "copied to $tree"

# ---------------------------------------------------------------- 2. the series

need patch "install GNU patch (Debian/Ubuntu: apt-get install patch)"
# The hunk header of hunk $2 of file $3 in patch file $1.
hunk_header() {
    awk -v file="$3" -v n="$2" '
        /^diff --git / { inside = ($3 == "a/" file); count = 0; next }
        inside && /^@@ / { if (++count == n) { print; exit } }' "$1"
}
applied=()
while IFS= read -r p || [ -n "$p" ]; do
    case "$p" in "" | "#"*) continue ;; esac
    file="$series_dir/$p"
    [ -f "$file" ] || die "kernel-patch/series lists $p, which is missing"
    if ! out=$(cd "$tree" && LC_ALL=C patch -p1 --dry-run --batch --forward --no-backup-if-mismatch <"$file" 2>&1); then
        why=()
        current=
        while IFS= read -r line; do
            case "$line" in
            "checking file "*) current=${line#checking file } ;;
            "Hunk #"*" FAILED at "*)
                n=${line#Hunk #}
                n=${n%% *}
                why+=("hunk #$n of $current ($(hunk_header "$file" "$n" "$current")) does not match")
                ;;
            "Reversed (or previously applied) patch detected"*)
                why+=("$current already has it (a checkout with the series applied? give an unpatched one)")
                ;;
            esac
        done <<<"$out"
        for f in $(sed -n 's|^+++ b/||p' "$file"); do
            [ -f "$tree/$f" ] || why+=("$f does not exist in the checkout")
        done
        [ ${#why[@]} -gt 0 ] || why=("patch says: $(printf '%s' "$out" | tail -n 1)")
        msg="kernel-patch/$p does not apply to $kernel_src (at $kernel_commit): $(
            IFS=';'
            printf '%s' "${why[*]}" | sed 's/;/; /g'
        )"
        die "$msg. The series is made for redox-os/kernel $series_base: check that commit out, or rebase the series on yours (kernel-patch/README.md, \"Changing the glue or the hooks\")"
    fi
    notes=$(printf '%s\n' "$out" | sed -n 's/^Hunk #\([0-9]*\) succeeded at \([0-9]*\) \(.*\)\.$/hunk #\1 at line \2 \3/p' | paste -sd ';' -)
    (cd "$tree" && patch -p1 --batch --forward --no-backup-if-mismatch -s <"$file") ||
        die "kernel-patch/$p passed its check but did not apply"
    applied+=("$p")
    say "applied $p${notes:+ (${notes//;/, })}"
done <"$series_dir/series"
[ ${#applied[@]} -gt 0 ] || die "kernel-patch/series lists no patch"

# ---------------------------------------------------------------- 3. this project

project_commit=$(git -C "$repo" rev-parse HEAD)
mkdir -p "$tree/$subsys"
dirty=$(git -C "$repo" status --porcelain -- . ':(exclude)target' | wc -l)
case "$PROJECT_SOURCE" in
head)
    git -C "$repo" archive HEAD ':(exclude)cookbook-recipe' | tar -x -C "$tree/$subsys"
    say "this project at $subsys: git archive of HEAD $project_commit"
    if [ "$dirty" -gt 0 ]; then
        say "warning: this repository has $dirty uncommitted change(s); they are NOT in the build (PROJECT_SOURCE=worktree builds the working tree)"
    fi
    ;;
worktree)
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard -- . ':(exclude)cookbook-recipe' |
        tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$tree/$subsys"
    say "this project at $subsys: the working tree (HEAD $project_commit with $dirty uncommitted change(s))"
    ;;
esac

# ---------------------------------------------------------------- 4. git dependencies

# "<url> <rev>" of the kernel's git dependency $1, from its Cargo.lock.
locked_git() {
    awk -v name="$1" '
        $1 == "name" && $3 == "\"" name "\"" { found = 1; next }
        found && $1 == "source" { print $3; exit }
        /^\[\[package\]\]/ { found = 0 }' "$tree/Cargo.lock" |
        sed -n 's/^"git+\([^?#]*\)[^#]*#\([0-9a-f]*\)"$/\1 \2/p'
}
[ -f "$tree/Cargo.lock" ] || die "$kernel_src has no Cargo.lock: the kernel's git dependencies cannot be found"
config="$work/.cargo/config.toml"
rm -f "$config"
mkdir -p "$work/.cargo"
missing=()
patches=()
for dep in redox_syscall:REDOX_SYSCALL fdt:REDOX_FDT; do
    name=${dep%%:*}
    var=${dep#*:}
    read -r url rev <<<"$(locked_git "$name")" || true
    [ -n "${url:-}" ] || die "the kernel's Cargo.lock has no git source for $name"
    local_path=${!var}
    if [ -n "$local_path" ]; then
        [ -d "$local_path" ] || die "$var=$local_path is not a directory"
        local_path=$(abspath "$local_path")
        grep -q "^name = \"$name\"" "$local_path/Cargo.toml" 2>/dev/null ||
            die "$var=$local_path is not a checkout of $name (its Cargo.toml is not the package \"$name\")"
        have=unknown
        git_top "$local_path" && have=$(git -C "$local_path" rev-parse HEAD 2>/dev/null || echo unknown)
        if [ "$have" != "$rev" ]; then
            say "warning: $var=$local_path is at $have; the kernel's Cargo.lock pins $name at $rev"
        fi
        patches+=("[patch.\"$url\"]" "$name = { path = \"$local_path\" }")
        # Cargo does not chain patches: crates.io's redox_syscall (which this project's crates
        # name, and which the series patches to the git one) must point at the checkout too.
        if [ "$name" = redox_syscall ]; then patches+=("[patch.crates-io]" "$name = { path = \"$local_path\" }"); fi
        say "$name: $local_path ($var, at $have)"
    elif GIT_TERMINAL_PROMPT=0 timeout 30 git ls-remote --exit-code "$url" HEAD >/dev/null 2>&1; then
        say "$name: $url (reachable; cargo fetches rev $rev)"
    else
        missing+=("$name from $url at $rev: give $var=<a checkout of it at that commit>")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    die "the kernel's git dependencies are not reachable from here: $(
        IFS='|'
        printf '%s' "${missing[*]}" | sed 's/|/; /g'
    )"
fi
if [ ${#patches[@]} -gt 0 ]; then
    {
        echo "# Written by kernel-patch/redox-test.sh for the scratch build in $work only."
        printf '%s\n' "${patches[@]}"
    } >"$config"
    say "cargo configuration: $config (read by the builds under $work only)"
fi
# Cargo reads every .cargo/config.toml from the build's directory up to /: say which others apply.
d=$(dirname "$work")
while :; do
    for c in "$d/.cargo/config.toml" "$d/.cargo/config"; do
        [ -f "$c" ] && say "warning: cargo also reads $c for the kernel build"
    done
    [ "$d" = / ] && break
    d=$(dirname "$d")
done

if [ "$PREPARE_ONLY" = 1 ]; then
    say "PREPARE_ONLY=1: the patched tree is $tree; nothing built"
    exit 0
fi

# ---------------------------------------------------------------- 5. the kernel

need objcopy "install binutils (Debian/Ubuntu: apt-get install binutils)"
if ! command -v nasm >/dev/null 2>&1; then
    say "nasm not found: installing the OS package nasm"
    { command -v apt-get >/dev/null 2>&1 && as_root apt-get install -y -qq nasm >/dev/null 2>&1; } ||
        die "nasm not found (the kernel's build assembles its AP trampoline with it): install it (Debian/Ubuntu: apt-get install nasm)"
fi
channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$tree/rust-toolchain.toml")
[ -n "$channel" ] || die "$kernel_src/rust-toolchain.toml names no channel"
# The pinned toolchain with rust-src, installed through rustup if it is missing.
redox_toolchain() {
    command -v rustup >/dev/null 2>&1 || return 1
    if ! rustup run "$channel" rustc --version >/dev/null 2>&1 ||
        ! rustup component list --toolchain "$channel" --installed 2>/dev/null | grep -q '^rust-src'; then
        say "installing the kernel's toolchain: rustup toolchain install $channel --profile minimal -c rust-src"
        rustup toolchain install "$channel" --profile minimal -c rust-src >"$work/rustup.log" 2>&1 || return 1
    fi
    rustup component list --toolchain "$channel" --installed 2>/dev/null | grep -q '^rust-src'
}
way=$KERNEL_BUILD
if [ "$way" != host ]; then
    if redox_toolchain; then
        way=redox
    elif [ "$way" = redox ]; then
        die "KERNEL_BUILD=redox needs the kernel's toolchain $channel with rust-src, which rustup could not install (see $work/rustup.log)"
    else
        say "rustup cannot provide $channel with rust-src (see $work/rustup.log): falling back to the host-target build"
        way=host
    fi
fi
kernel_log="$work/kernel-build.log"
# One line for a failed build: the first compiler error, and where the whole log is.
build_failed() {
    first=$(grep -m1 -E '^error(\[E[0-9]+\])?:' "$kernel_log" || true)
    die "the kernel build failed${first:+: $first} (whole log: $kernel_log)"
}
# Keep the caller's compiler settings out of the kernel build.
clean_env=(env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u RUSTUP_TOOLCHAIN -u RUSTC -u RUSTC_WRAPPER
    -u CARGO_BUILD_TARGET -u CARGO_TARGET_DIR -u RUSTDOCFLAGS "CARGO_TARGET_DIR=$work/cargo-target")
case "$way" in
redox)
    say "building the kernel the way Redox does: its Makefile, toolchain $channel, target x86_64-unknown-kernel (soft float, -Zbuild-std), features ktests"
    (cd "$tree" && "${clean_env[@]}" make OBJCOPY=objcopy KERNEL_CARGO_FEATURES=ktests BUILD="$build") \
        >"$kernel_log" 2>&1 || build_failed
    ;;
host)
    rustup run "$HOST_TOOLCHAIN" rustc --version >/dev/null 2>&1 ||
        die "neither the kernel's toolchain $channel (with rust-src) nor a $HOST_TOOLCHAIN toolchain for the host-target fallback is available: rustup toolchain install $channel --profile minimal -c rust-src"
    say "building the kernel for the host target (fallback): toolchain $HOST_TOOLCHAIN, x86_64-unknown-linux-gnu with SSE off, features ktests, this project's runtime symbols (testkernel/bootproto/src/rt.rs)"
    kflags=(-C relocation-model=static -C code-model=kernel -C no-redzone=yes -C target-feature=-sse,-sse2)
    # The runtime symbols as one object: bootproto's rt.rs, whose halting path calls two
    # one-instruction functions of the x86 crate, given here inline so that the object needs
    # nothing else.
    printf '%s\n' '#![no_std]' \
        'pub mod irq {' '    #[inline(always)]' '    pub unsafe fn disable() {' \
        '        unsafe { core::arch::asm!("cli", options(nomem, nostack)) }' '    }' '}' \
        '#[inline(always)]' 'pub unsafe fn halt() {' '    unsafe { core::arch::asm!("hlt", options(nomem, nostack)) }' '}' \
        >"$build/x86.rs"
    printf '#![no_std]\n#[path = "%s"]\npub mod rt;\n' "$tree/$subsys/testkernel/bootproto/src/rt.rs" >"$build/hostrt.rs"
    { "${clean_env[@]}" RUSTUP_TOOLCHAIN="$HOST_TOOLCHAIN" rustc --edition 2024 --crate-name x86 --crate-type rlib \
        --out-dir "$build" -C panic=abort -O "${kflags[@]}" "$build/x86.rs" &&
        "${clean_env[@]}" RUSTUP_TOOLCHAIN="$HOST_TOOLCHAIN" rustc --edition 2024 --crate-type lib \
            --extern "x86=$build/libx86.rlib" --emit "obj=$build/hostrt.o" -C panic=abort -O "${kflags[@]}" \
            "$build/hostrt.rs"; } >"$kernel_log" 2>&1 || build_failed
    (cd "$tree" && "${clean_env[@]}" RUSTUP_TOOLCHAIN="$HOST_TOOLCHAIN" \
        RUSTFLAGS="${kflags[*]} -C force-frame-pointers=yes" \
        cargo rustc --bin kernel --release --features ktests --target x86_64-unknown-linux-gnu -- \
        -C link-arg=-nostartfiles -C link-arg=-nostdlib -C link-arg=-static -C link-arg=-no-pie \
        -C link-arg=-T -C link-arg=linkers/x86_64.ld -C link-arg=-z -C link-arg=max-page-size=0x1000 \
        -C "link-arg=$build/hostrt.o" --emit "link=$build/kernel.all") >>"$kernel_log" 2>&1 || build_failed
    objcopy --strip-debug "$build/kernel.all" "$build/kernel" || die "objcopy --strip-debug $build/kernel.all failed"
    ;;
esac
[ -f "$build/kernel" ] || die "the kernel build made no $build/kernel (whole log: $kernel_log)"
say "kernel: $build/kernel (log: $kernel_log)"

# ---------------------------------------------------------------- 6. the kernel's lock file

if grep -q '^name = "loom"$' "$tree/Cargo.lock"; then
    die "loom is in the kernel's Cargo.lock ($tree/Cargo.lock): model-checking crates must stay out of what the kernel resolves (the loom features of kport, kthreadd and workqueue are optional)"
fi
added=$(comm -13 <(sed -n 's/^name = "\(.*\)"$/\1/p' "$kernel_src/Cargo.lock" | sort -u) \
    <(sed -n 's/^name = "\(.*\)"$/\1/p' "$tree/Cargo.lock" | sort -u) | paste -sd ' ' -)
say "the build added to the kernel's Cargo.lock: ${added:-nothing}; no loom"

# ---------------------------------------------------------------- 7. the user program

runner_args=()
tests=$TESTS
user_dir="$tree/$subsys/tests/redox-user"
if [ "$MODE" = test ] && [ "$USERSPACE" != 0 ]; then
    user_why=
    if [ ! -f "$user_dir/Cargo.toml" ]; then
        user_why="the project copy has no tests/redox-user"
    elif ! (cd "$repo" && [ -d "$(rustc --print target-libdir --target "$redox_user_target" 2>/dev/null)" ]); then
        if command -v rustup >/dev/null 2>&1 && (cd "$repo" && rustup target add "$redox_user_target" >"$work/rustup-target.log" 2>&1); then
            say "installed the Rust target $redox_user_target (rustup target add)"
        else
            user_why="the Rust target $redox_user_target is not installed (rustup target add $redox_user_target)"
        fi
    fi
    if [ -z "$user_why" ]; then
        user_log="$work/user-build.log"
        user_cfg=()
        [ -f "$config" ] && user_cfg=(--config "$config")
        # From the repository (its toolchain, not the kernel's), with the scratch configuration.
        if (cd "$repo" && env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET \
            cargo build --release --manifest-path "$user_dir/Cargo.toml" --target "$redox_user_target" \
            --target-dir "$work/user-target" "${user_cfg[@]}" \
            --config "target.$redox_user_target.linker=\"rust-lld\"" \
            --config "target.$redox_user_target.rustflags=[\"-C\",\"linker-flavor=ld.lld\",\"-C\",\"relocation-model=static\",\"-C\",\"target-feature=+crt-static\"]") \
            >"$user_log" 2>&1; then
            objcopy -O binary "$work/user-target/$redox_user_target/release/ktests-redox-user" "$build/bootstrap.bin" ||
                die "objcopy -O binary of the user program failed"
            say "user program: $build/bootstrap.bin ($(wc -c <"$build/bootstrap.bin") bytes), handed over as fw_cfg $bootstrap_fw_cfg; suite redox_user added"
            runner_args+=(--qemu-arg=-fw_cfg "--qemu-arg=name=$bootstrap_fw_cfg,file=$build/bootstrap.bin")
            case ",$tests," in *,redox_user,*) ;; *) tests="$tests,redox_user" ;; esac
        else
            first=$(grep -m1 -E '^error(\[E[0-9]+\])?:' "$user_log" || true)
            user_why="its build failed${first:+: $first} (log: $user_log)"
        fi
    fi
    if [ -n "$user_why" ]; then
        [ "$USERSPACE" = 1 ] && die "USERSPACE=1: cannot build the user program: $user_why"
        say "note: no user-space checks (suite redox_user): $user_why"
    fi
fi

# ---------------------------------------------------------------- 8. boot and run

# The block suite drives the runner's virtio-blk disks with the in-kernel driver, which Redox's
# env word kblk=virtio turns on (kernel-patch/glue/bus.rs).
case ",$tests," in *,block,* | *,redox_blk,* | *,pagecache,* | *,writeback,* | *,kswapd,* | *,torture,*) runner_args+=(--append kblk=virtio) ;; esac
# Extra guest words (APPEND="torture_s=60 torture_fault=10"): the runner appends them to the
# command line, which the shim hands to Redox's kernel as its env.
for word in $APPEND; do runner_args+=(--append "$word"); done

say "building the shim and the runner (this working tree)"
(cd "$repo/kernel-patch/shim" && env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS cargo build --release -q) ||
    die "the shim's build failed (cd kernel-patch/shim && cargo build --release)"
shim=$(cd "$repo" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/x86_64-unknown-linux-gnu/release/redox-pvh-shim
[ -f "$shim" ] || die "no shim at $shim after its build"
out_dir=${OUT:-$repo/target/ktest/redox}
case "$MODE" in
test)
    say "booting through the shim: SMP=$SMP PREEMPT=none TESTS=$tests (whole-run time-out ${TIMEOUT} s per boot)"
    set -- run --smp "$SMP" --preempt none --tests "$tests" --timeout "$TIMEOUT"
    ;;
bench)
    say "benchmarks through the shim: -smp 2 -m 512M bench=only, TESTS=$tests (time-out ${TIMEOUT} s)"
    set -- bench --preempt none --tests "$tests" --timeout "$TIMEOUT"
    ;;
esac
cd "$repo"
# With the page cache in the run: first the restart test (two boots on the same disk images, the
# second reading back what the first synced through the page cache; reports in restart/).
if [ "$MODE" = test ]; then
    case ",$tests," in
    *,pagecache,*)
        say "the restart test: two boots on the same disk images (-smp 2)"
        cargo run -q -p ktest-runner --release -- restart --smp 2 --preempt none --timeout "$TIMEOUT" \
            --kernel "$shim" --initrd "$build/kernel" --no-build --out "$out_dir/restart" \
            "${runner_args[@]}" || die "the restart test failed (reports in $out_dir/restart)"
        ;;
    esac
fi
exec cargo run -q -p ktest-runner --release -- "$@" --kernel "$shim" --initrd "$build/kernel" --no-build \
    --out "$out_dir" "${runner_args[@]}"
