//! The `sandbox-operator` binary: `run`, `crd`, `version`.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "sandbox-operator", version, about = "Warm-pool sandboxes for AI agents on Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print every CRD as YAML on stdout.
    Crd,
    /// Print the version.
    Version,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", sandbox_operator::api::crds_yaml()),
        Command::Version => println!("sandbox-operator {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
