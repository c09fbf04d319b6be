//! `bench`: smart-joiner's fault-injection run and benchmarks. Every subcommand builds its own
//! environment (a fresh Postgres database, a private redis-server, tgsim in-process) and prints
//! its figures; BENCHMARKS.md lists the commands and the results.

mod cpu;
mod env;
mod faults;
mod history;
mod idle;
mod join_script;
mod pacing;
mod pick;
mod producer_mem;
mod proxy;
mod redis_stats;
mod scale;
mod throughput;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Fault-injection run and benchmarks of smart-joiner")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Real producer and workers against tgsim under injected faults; checks every invariant.
    Faults(faults::FaultArgs),
    /// Settle time of a batch against the pacing bound (M/N)·p, and against M·p.
    Pacing(pacing::PacingArgs),
    /// End-to-end joins/s with zero pacing (fake and tgsim), next to pgbench.
    Throughput(throughput::ThroughputArgs),
    /// Producer enqueue rate and peak memory for 1,000,000 targets.
    Producer(producer_mem::ProducerArgs),
    /// Worker memory per leased, connected account (tgsim).
    WorkerMem(producer_mem::WorkerMemArgs),
    /// Cost of picking an account with 1,000 accounts, before and after 1,000,000 targets.
    Pick(pick::PickArgs),
    /// Cost of the pick and of a whole join at 10 and at 10,000 joins per account.
    History(history::HistoryArgs),
    /// What workers spend while every account rests: statements, Redis commands, CPU.
    Idle(idle::IdleArgs),
    /// `accounts sync` and `targets import` at scale (time, peak memory), the pick's p99.
    Scale(scale::ScaleArgs),
    /// Runs a command and prints its peak memory (used by `bench scale`).
    #[command(hide = true)]
    Rusage {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Faults(args) => faults::run(args).await,
        Cmd::Pacing(args) => pacing::run(args).await,
        Cmd::Throughput(args) => throughput::run(args).await,
        Cmd::Producer(args) => producer_mem::run(args).await,
        Cmd::WorkerMem(args) => producer_mem::worker_mem(args).await,
        Cmd::Pick(args) => pick::run(args).await,
        Cmd::History(args) => history::run(args).await,
        Cmd::Idle(args) => idle::run(args).await,
        Cmd::Scale(args) => scale::run(args).await,
        Cmd::Rusage { cmd } => scale::rusage(&cmd),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
