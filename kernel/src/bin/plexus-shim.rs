//! `plexus-shim`: the task shim as a standalone program (see
//! `plexus_kernel::containerizer::shim`).

fn main() {
    std::process::exit(plexus_kernel::containerizer::shim::main_with(
        std::env::args_os().skip(1),
    ));
}
