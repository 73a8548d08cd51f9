//! The `plexus` command line.

#[path = "../benches/mod.rs"]
mod bench;
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
