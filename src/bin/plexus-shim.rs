//! `plexus-shim`: the per-task shim the agent starts (see
//! `plexus_kernel::containerizer::shim`). A separate, small program so that starting one
//! per task costs less than starting the whole `plexus` binary.

fn main() {
    std::process::exit(plexus_kernel::containerizer::shim::main_with(
        std::env::args_os().skip(1),
    ));
}
