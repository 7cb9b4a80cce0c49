//! Link the testkernel as a static, higher-half ELF with its own linker script.

fn main() {
    bootproto::link::freestanding_bins("linker.ld");
}
