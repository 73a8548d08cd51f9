//! The `plexus` command line.

#[path = "../benches/mod.rs"]
mod bench;
mod cli;

fn main() -> std::process::ExitCode {
    // `plexus __shim ...`: the per-task shim the agent starts (not a user command).
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "__shim") {
        let code = plexus_kernel::containerizer::shim::main_with(args);
        return std::process::ExitCode::from(code.clamp(0, 255) as u8);
    }
    cli::main()
}
