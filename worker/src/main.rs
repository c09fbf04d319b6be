//! `worker`: leases accounts of one pool and runs join jobs from Redis until SIGTERM, serving
//! `/healthz`, `/readyz` and `/metrics` on the operations port meanwhile.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use smart_joiner::config::{SettingsArgs, WorkerArgs};
use smart_joiner::modes::wiring::{self, Backends, RedisArgs, TelegramArgs};
use smart_joiner::modes::worker::{self, WorkerOptions};
use smart_joiner::ops::health::{self, Liveness, Probes};
use smart_joiner::telemetry;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(version, about = "Runs join jobs of one account pool from Redis")]
struct Cli {
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    telegram: TelegramArgs,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// A join allocates and frees many small buffers on tokio's threads (statements, rows,
/// futures): glibc's allocator spent a fifth of a worker's CPU on them, mimalloc about half
/// that (BENCHMARKS.md, session 12).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.settings.clone().into_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry =
        match telemetry::init(&telemetry::LogSettings::from_settings(&settings), "worker") {
            Ok(t) => t,
            Err(e) => {
                eprintln!("worker: {e}");
                return ExitCode::FAILURE;
            }
        };
    let redactor = settings.redactor();
    let result = run(cli, settings, telemetry.metrics()).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, each cause once (returning the error from main would print its Debug
            // form, with a backtrace when RUST_BACKTRACE is set); scrubbed as a backstop.
            eprintln!("worker: {}", redactor.scrub(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

async fn run(
    cli: Cli,
    settings: smart_joiner::config::Settings,
    metrics: &'static smart_joiner::telemetry::metrics::Metrics,
) -> anyhow::Result<()> {
    let accounts = wiring::load_accounts_for_running(&settings.accounts_config)?;
    let Backends { store, locks, queue } = wiring::connect_backends(&settings, &cli.redis).await?;
    let listener = health::bind(cli.worker.metrics_port).await.with_context(|| {
        format!("cannot listen on the metrics port {}", cli.worker.metrics_port)
    })?;

    let liveness = Liveness::default();
    let probes = Probes {
        liveness: liveness.clone(),
        store: store.clone(),
        locks: locks.clone(),
        queue: queue.clone(),
        pool: cli.redis.pool.name.clone(),
        metrics,
    };
    let stop_ops = CancellationToken::new();
    let ops =
        tokio::spawn(health::serve(listener, probes.clone(), stop_ops.clone().cancelled_owned()));
    let sampler = tokio::spawn(probes.sample_every(cli.worker.metrics_sample_interval));

    let name = cli.worker.name.unwrap_or_else(default_name);
    let telegram = wiring::telegram(&cli.telegram, &settings)?;
    let service = wiring::join_service(
        &settings,
        store,
        std::sync::Arc::new(locks),
        telegram,
        accounts,
        name.clone(),
    );
    let opts = WorkerOptions {
        name,
        concurrency: cli.worker.concurrency,
        poll_interval: cli.worker.poll_interval,
        shutdown_timeout: cli.worker.shutdown_timeout,
    };
    liveness.set_running(true);
    let result = worker::run(service, queue, opts, wiring::shutdown_signal()).await;
    liveness.set_running(false);
    sampler.abort();
    stop_ops.cancel();
    let _ = ops.await;
    // apalis' errors may repeat their source in their own text: flattened, each cause once.
    result.map_err(|e| anyhow::anyhow!(smart_joiner::redact::flatten(e.as_ref())))
}

fn default_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("worker-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn every_setting_has_a_flag_a_variable_help_text_and_a_readme_row() {
        let readme = include_str!("../../README.md");
        let problems = smart_joiner::config::undocumented_settings(&super::Cli::command(), readme);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
