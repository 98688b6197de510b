//! The `weir` binary: the broker (`weir serve`) and its command-line tools.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

mod cli;

fn main() {
    std::process::exit(cli::run());
}
