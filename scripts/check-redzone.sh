#!/bin/sh
# Interrupts in kernel mode push onto the current stack, so any use of the
# red zone (the 128 bytes below %rsp) in the kernel image is a latent
# corruption. The kernel is built with -C no-redzone=yes, but the precompiled
# core/alloc are not: this fails if the final image reads or writes below %rsp.
set -eu
for elf in "$@"; do
    [ -f "$elf" ] || { echo "check-redzone: $elf not found (build it first)" >&2; exit 1; }
    hits=$(objdump -d --no-show-raw-insn "$elf" | grep -E -- '-0x[0-9a-f]+\(%rsp\)' || true)
    if [ -n "$hits" ]; then
        echo "check-redzone: $elf uses the red zone:" >&2
        echo "$hits" | head -20 >&2
        exit 1
    fi
    echo "check-redzone: $elf: no red-zone access"
done
