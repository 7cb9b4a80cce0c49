#!/bin/sh
# Make sure what the guest runs need is present: QEMU's x86-64 system emulator
# and GNU patch (installed from the OS packages when possible) and, for `make check`, the
# rustfmt/clippy components and objdump. Prints exactly what is missing
# otherwise, and fails.
set -eu

need_qemu=1
need_check=0
for a in "$@"; do
    case "$a" in
        --check) need_check=1 ;;
        --no-qemu) need_qemu=0 ;;
    esac
done

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

# Disk: a clean clone's `make test` writes about 2.5 GB under target/ (debug host tests,
# loom, the release runner and kernels). A full disk otherwise shows up half-way through as
# rustc's "No space left on device"; say it at once, with what is free where.
need_mb=${KTEST_NEED_DISK_MB:-3072}
target_dir=${CARGO_TARGET_DIR:-target}
probe_dir=$target_dir
[ -d "$probe_dir" ] || probe_dir=.
free_kb=$(df -Pk "$probe_dir" 2>/dev/null | awk 'NR == 2 { print $4 }')
if [ -n "${free_kb:-}" ] && [ "$free_kb" -lt $((need_mb * 1024)) ]; then
    echo "error: only $((free_kb / 1024)) MB free on the file system of $probe_dir; the build and tests need about $need_mb MB" >&2
    echo "  free space there (old target/ directories, cargo clean), or set KTEST_NEED_DISK_MB to override" >&2
    exit 1
fi

if [ "$need_qemu" -eq 1 ] && ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "qemu-system-x86_64 not found: installing the Debian/Ubuntu package qemu-system-x86" >&2
        if ! { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends qemu-system-x86; } >/dev/null; then
            echo "error: could not install qemu-system-x86; run as root: apt-get install qemu-system-x86" >&2
            exit 1
        fi
    else
        echo "error: qemu-system-x86_64 not found. Install QEMU's x86 system emulator:" >&2
        echo "  Debian/Ubuntu: apt-get install qemu-system-x86" >&2
        echo "  Fedora: dnf install qemu-system-x86    Arch: pacman -S qemu-system-x86" >&2
        exit 1
    fi
    command -v qemu-system-x86_64 >/dev/null 2>&1 || { echo "error: qemu-system-x86_64 still not on PATH" >&2; exit 1; }
fi

# GNU patch: the Redox series is applied with it (patch -p1, as Redox's cookbook does), by
# make redox-test and by the runner's tests of that command on a fake kernel checkout.
if [ "$need_qemu" -eq 1 ] && ! command -v patch >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && as_root apt-get install -y -qq --no-install-recommends patch >/dev/null; then :; else
        echo "error: patch not found (Debian/Ubuntu: apt-get install patch)" >&2
        exit 1
    fi
fi

if [ "$need_check" -eq 1 ]; then
    for comp in rustfmt clippy; do
        if ! cargo "$( [ "$comp" = rustfmt ] && echo fmt || echo clippy )" --version >/dev/null 2>&1; then
            if command -v rustup >/dev/null 2>&1; then
                rustup component add "$comp" >/dev/null 2>&1 || { echo "error: rustup component add $comp failed" >&2; exit 1; }
            else
                echo "error: cargo $comp is missing (install the $comp component of your Rust toolchain)" >&2
                exit 1
            fi
        fi
    done
    if ! command -v objdump >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && as_root apt-get install -y -qq binutils >/dev/null; then :; else
            echo "error: objdump not found (Debian/Ubuntu: apt-get install binutils)" >&2
            exit 1
        fi
    fi
fi
