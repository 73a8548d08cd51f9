//! The `plexus` command line.

#[path = "../benches/mod.rs"]
mod bench;
mod cli;

/// jemalloc: nodes free most messages on another thread than the one that allocated them
/// (where mimalloc cut remote cast throughput from 1.8 to 1.0 M msgs/s), and the master's
/// allocation cycles make many small allocations on one (where the system allocator takes
/// 70% longer); jemalloc does both as well as the better of the two.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Started by an agent as an executor: host the benchmark's actors (never returns).
    plexus::executor::run_if_requested(|types| {
        types.register(bench::placed::ECHO, || bench::placed::EchoActor)
    });
    // `plexus __shim ...`: the per-task shim the agent starts (not a user command).
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "__shim") {
        let code = plexus_kernel::containerizer::shim::main_with(args);
        return std::process::ExitCode::from(code.clamp(0, 255) as u8);
    }
    cli::main()
}
