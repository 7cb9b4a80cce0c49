#!/bin/sh
# Prepare what `make bench-linux`, `make bench-compare` and `make bench-scale`
# boot (docs/benchmarks.md, "Linux side by side"):
#
#   - Debian's own kernel and its headers (linux-image-amd64,
#     linux-headers-amd64), a static busybox (busybox-static), the module
#     build tools (make, gcc) and the static C library (libc6-dev), installed
#     from the OS packages as root or through sudo when missing; otherwise it
#     prints exactly what to install and fails;
#   - the kbench module of tests/bench-linux, built against those headers in
#     target/bench-linux/build;
#   - blkbench, the block benchmarks' user-space program
#     (tests/bench-linux/blkbench.c, static), and mmbench, the page-cache
#     and reclaim benchmarks' (tests/bench-linux/mmbench.c, static), both
#     with what they share in tests/bench-linux/benchcommon.h;
#   - Linux's virtio-blk modules of that kernel (virtio_ring, virtio,
#     virtio_pci_modern_dev, virtio_pci_legacy_dev, virtio_pci, virtio_blk),
#     copied to target/bench-linux/modules/;
#   - target/bench-linux/vmlinuz and kbench.ko, which the runner boots (it
#     writes the initramfs itself: busybox, tests/bench-linux/init, kbench.ko,
#     blkbench, mmbench and the modules, which it takes from beside kbench.ko).
#
# Nothing here is part of `make test`. Usage: scripts/bench-linux.sh [--check]
# (--check: report what is missing, install nothing).
set -eu

cd "$(dirname "$0")/.."
out=target/bench-linux
check_only=0
[ "${1:-}" = "--check" ] && check_only=1

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "error: make bench-linux boots Debian's linux-image-amd64 and builds a module against" >&2
    echo "  linux-headers-amd64; this machine has no dpkg. On Debian/Ubuntu:" >&2
    echo "  apt-get install linux-image-amd64 linux-headers-amd64 busybox-static make gcc libc6-dev" >&2
    exit 1
fi

packages="linux-image-amd64 linux-headers-amd64 busybox-static make gcc libc6-dev"
missing=""
for p in $packages; do
    installed "$p" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$check_only" -eq 1 ]; then
        echo "missing:$missing (apt-get install --no-install-recommends$missing)" >&2
        exit 1
    fi
    echo "bench-linux: installing the Debian packages$missing" >&2
    if ! { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends $missing; } >/dev/null; then
        echo "error: could not install$missing; run as root: apt-get install --no-install-recommends$missing" >&2
        exit 1
    fi
fi

# The kernel the metapackage points at, e.g. linux-image-6.1.0-57-amd64 (= 6.1.192-3).
image=$(dpkg-query -W -f='${Depends}' linux-image-amd64 | sed -n 's/^\(linux-image-[^ ,]*\).*/\1/p')
release=${image#linux-image-}
headers=/usr/src/linux-headers-$release
if [ -z "$release" ] || [ ! -r "/boot/vmlinuz-$release" ]; then
    echo "error: cannot find the kernel of linux-image-amd64 (${image:-no dependency}): /boot/vmlinuz-$release missing or unreadable" >&2
    exit 1
fi
if [ ! -d "$headers" ]; then
    echo "error: $headers missing: install linux-headers-$release (apt-get install linux-headers-amd64)" >&2
    exit 1
fi
[ "$check_only" -eq 1 ] && { echo "bench-linux: ready ($release)"; exit 0; }

mkdir -p "$out/build"
for f in kbench.c Kbuild; do
    cmp -s "tests/bench-linux/$f" "$out/build/$f" || cp "tests/bench-linux/$f" "$out/build/$f"
done
if [ "$(cat "$out/build/release" 2>/dev/null)" != "$release" ]; then
    make -s -C "$headers" M="$PWD/$out/build" clean >/dev/null 2>&1 || true
    echo "$release" > "$out/build/release"
fi
if ! make -s -C "$headers" M="$PWD/$out/build" modules > "$out/build/make.log" 2>&1; then
    cat "$out/build/make.log" >&2
    echo "error: building tests/bench-linux/kbench.c against $headers failed (log: $out/build/make.log)" >&2
    exit 1
fi
cp "$out/build/kbench.ko" "$out/kbench.ko"

# blkbench and mmbench: static, so the initramfs needs no C library. Both
# include tests/bench-linux/benchcommon.h from beside them.
for prog in blkbench mmbench; do
    if ! gcc -static -O2 -pthread -Wall -Wextra -o "$out/$prog.new" "tests/bench-linux/$prog.c" 2> "$out/build/$prog.log"; then
        cat "$out/build/$prog.log" >&2
        echo "error: building tests/bench-linux/$prog.c (gcc -static) failed (log: $out/build/$prog.log)" >&2
        exit 1
    fi
    mv "$out/$prog.new" "$out/$prog"
done

# Linux's virtio-blk modules of this kernel, in the order the init script
# loads them; each may only depend on those before it.
kmods=/lib/modules/$release/kernel/drivers
order="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk"
mkdir -p "$out/modules"
loaded=""
for m in $order; do
    case $m in
        virtio_blk) src=$kmods/block/$m.ko ;;
        *) src=$kmods/virtio/$m.ko ;;
    esac
    if [ -r "$src" ]; then
        cmp -s "$src" "$out/modules/$m.ko" || cp "$src" "$out/modules/$m.ko"
    elif [ -r "$src.xz" ] && command -v xz >/dev/null 2>&1; then
        xz -dc "$src.xz" > "$out/modules/$m.ko"
    else
        echo "error: $src missing (part of linux-image-$release)" >&2
        exit 1
    fi
    if command -v modinfo >/dev/null 2>&1; then
        for dep in $(modinfo -F depends "$out/modules/$m.ko" | tr ',' ' '); do
            case " $loaded " in
                *" $dep "*) ;;
                *) echo "error: $m.ko needs $dep, which the init script loads after it" >&2; exit 1 ;;
            esac
        done
    fi
    loaded="$loaded $m"
done
cmp -s "/boot/vmlinuz-$release" "$out/vmlinuz" || cp "/boot/vmlinuz-$release" "$out/vmlinuz"
echo "$release" > "$out/release"
echo "bench-linux: Linux $release, kbench.ko, blkbench, mmbench and the virtio-blk modules ready in $out" >&2
