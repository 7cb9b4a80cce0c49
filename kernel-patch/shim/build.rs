//! Link the shim as a static ELF at its fixed physical address (linker.ld).

fn main() {
    bootproto::link::freestanding_bins("linker.ld");
}
