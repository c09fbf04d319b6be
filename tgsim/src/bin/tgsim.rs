//! `tgsim`: run the loopback Telegram data centre from a scenario file, or write a sample one.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tgsim::{Scenario, Server};

#[derive(Parser)]
#[command(name = "tgsim", about = "A loopback Telegram data centre for tests and demos")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Scenario JSON file (see `tgsim generate`).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write SmartJoiner's accounts_config.json (Telethon sessions pointing here) to this file.
    #[arg(long)]
    write_accounts: Option<PathBuf>,
    /// Print every request and the counters at the end, not only the violations.
    #[arg(long)]
    verbose: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Write a sample scenario (random keys) to FILE, or to stdout.
    Generate { file: Option<PathBuf> },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tgsim=info".into()),
        )
        .init();
    let cli = Cli::parse();

    if let Some(Command::Generate { file }) = cli.command {
        let json = Scenario::sample().to_json();
        match file {
            Some(path) => std::fs::write(&path, json + "\n")
                .with_context(|| format!("writing {}", path.display()))?,
            None => println!("{json}"),
        }
        return Ok(());
    }

    let path = cli.scenario.context("--scenario FILE is required (or use `tgsim generate`)")?;
    let scenario =
        Scenario::from_file(&path).with_context(|| format!("loading {}", path.display()))?;
    let server = Server::start(scenario, cli.listen).await?;
    println!("tgsim listening on {}", server.addr());

    if let Some(out) = &cli.write_accounts {
        let json = serde_json::to_string_pretty(&server.accounts_config_json())?;
        std::fs::write(out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
        println!("accounts config written to {}", out.display());
    }

    wait_for_signal().await?;

    if cli.verbose {
        for request in server.requests() {
            println!("{}", serde_json::to_string(&request)?);
        }
        println!("counters: {}", serde_json::to_string(&server.counters())?);
    }
    let violations = server.violations();
    println!("{} violation(s)", violations.len());
    for v in &violations {
        println!("{}", serde_json::to_string(v)?);
    }
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
