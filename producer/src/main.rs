//! `producer [niche] [batch_size]`: one cron run. Recovers lost jobs, turns up to `batch_size`
//! `new` targets of the niche into jobs, prints one summary line and exits.

use std::process::ExitCode;

use clap::Parser;
use smart_joiner::config::{ProducerArgs, Settings, SettingsArgs};
use smart_joiner::modes::producer::{ProduceOptions, produce};
use smart_joiner::modes::wiring::{self, Backends, RedisArgs};
use smart_joiner::telemetry;
use tracing::Instrument as _;

#[derive(Debug, Parser)]
#[command(version, about = "Turns new targets of a niche into join jobs (run it from cron)")]
struct Cli {
    #[command(flatten)]
    produce: ProducerArgs,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.settings.clone().into_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("producer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry =
        match telemetry::init(&telemetry::LogSettings::from_settings(&settings), "producer") {
            Ok(t) => t,
            Err(e) => {
                eprintln!("producer: {e}");
                return ExitCode::FAILURE;
            }
        };
    let redactor = settings.redactor();
    let result = run(cli, settings).await;
    // The run's spans go out before the process ends.
    telemetry.shutdown().await;
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(3),
        Err(e) => {
            // Errors are built without secrets; scrubbing the final text too is the backstop.
            eprintln!("producer: {}", redactor.scrub(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, settings: Settings) -> anyhow::Result<usize> {
    let Backends { store, locks, queue } = wiring::connect_backends(&settings, &cli.redis).await?;
    let opts = ProduceOptions {
        niche: cli.produce.niche,
        batch_size: cli.produce.batch_size,
        pool: cli.redis.pool.name.clone(),
        recover_after: cli.produce.recover_after,
    };
    // One span per run, so a trace viewer shows each cron run with its niche and pool.
    let span = tracing::info_span!("produce", niche = %opts.niche, pool = %opts.pool);
    let report = produce(&store, &queue, &locks, &opts).instrument(span).await?;
    println!("producer: niche {} pool {}: {report}", opts.niche, opts.pool);
    Ok(report.push_failures)
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
