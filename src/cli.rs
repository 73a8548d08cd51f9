//! Command-line parsing and dispatch for the `plexus` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

/// plexus: a datacenter operating-system kernel built on distributed actors.
#[derive(Debug, Parser)]
#[command(name = "plexus", version, about, long_about = None)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,plexus_actors=debug`).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the cluster CA and node certificates for mutual TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// `plexus certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a new cluster CA (ca.pem, ca.key) in DIR.
    Init {
        /// Directory for the CA files (created if missing).
        dir: PathBuf,
        /// Cluster name recorded in the CA's subject.
        #[arg(long, default_value = "plexus")]
        cluster: String,
    },
    /// Issue a certificate for NODE signed by the CA in DIR (writes NODE.pem, NODE.key).
    Issue {
        /// Directory holding ca.pem and ca.key.
        dir: PathBuf,
        /// Node name the certificate names (must match the node's `name` setting).
        node: String,
        /// Where to write the node's files (default: DIR).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("bad --log filter {filter:?}"))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(cli.log_format, &cli.log)?;
    match cli.command {
        Command::Certs(CertsCommand::Init { dir, cluster }) => {
            let p = plexus_net::tls::init_ca(&dir, &cluster)?;
            println!("created cluster CA {}", p.display());
        }
        Command::Certs(CertsCommand::Issue { dir, node, out }) => {
            let out = out.unwrap_or_else(|| dir.clone());
            let (c, k) = plexus_net::tls::issue(&dir, &out, &node)?;
            println!("issued {} and {}", c.display(), k.display());
        }
    }
    Ok(())
}

/// Parses arguments, runs the command, and maps errors to a non-zero exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexus: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
