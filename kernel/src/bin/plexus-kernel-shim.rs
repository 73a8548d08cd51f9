//! `plexus-kernel-shim`: the task shim as a standalone program of this crate (see
//! `plexus_kernel::containerizer::shim`), for agents embedded without the `plexus`
//! package, whose own copy of the program is `plexus-shim`.

fn main() {
    std::process::exit(plexus_kernel::containerizer::shim::main_with(
        std::env::args_os().skip(1),
    ));
}
