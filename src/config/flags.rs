//! The flag groups of the processes, beside the settings every process shares
//! ([`SettingsArgs`](super::SettingsArgs), [`PoolArg`], [`RedisPrefixArg`]): the Telegram
//! choice, the Redis side of the distributed mode, the console, the worker and the producer.
//! Each binary flattens the groups it needs; a variable is declared in one group only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{DEFAULT_REDIS_PREFIX, PoolArg, RedisPrefixArg};
use crate::queue::QueueSettings;

/// Parses a human duration (`500ms`, `90s`, `10m`, `24h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Flags choosing the Telegram implementation. The fake exists for tests and benchmarks of the
/// real binaries; it is hidden from `--help`.
#[derive(Debug, Clone, Default, Args)]
pub struct TelegramArgs {
    /// Use the scripted fake Telegram with this JSON script instead of real Telegram.
    #[arg(long, env = "SMART_JOINER_FAKE_TELEGRAM", hide = true)]
    pub fake_telegram: Option<PathBuf>,
    /// Append the fake's events (JSON lines) to this file.
    #[arg(long, env = "SMART_JOINER_FAKE_TELEGRAM_LOG", hide = true, requires = "fake_telegram")]
    pub fake_telegram_log: Option<PathBuf>,
}

/// Flags of the Redis side, shared by producer and worker.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    #[command(flatten)]
    pub prefix: RedisPrefixArg,
    #[command(flatten)]
    pub pool: PoolArg,
    /// Worker heartbeat; a worker silent for 6 heartbeats has its jobs handed to others.
    #[arg(long, env = "QUEUE_HEARTBEAT", default_value = "10s", value_parser = parse_duration)]
    pub queue_heartbeat: Duration,
}

impl RedisArgs {
    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            name: format!("{}join:v1:{}", self.prefix.value, self.pool.name),
            heartbeat: self.queue_heartbeat,
            ..QueueSettings::default()
        }
    }
}

/// The console's settings (the tokens come from the environment, never from flags, so they do
/// not show in a process list).
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Address to listen on. Anything but loopback needs CONSOLE_TOKEN.
    #[arg(long = "addr", env = "CONSOLE_ADDR", default_value = crate::ops::console::DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Also show each pool's Redis queue (ready, scheduled) from REDIS_URL; without it the
    /// console needs only the database.
    #[arg(long = "queue", env = "CONSOLE_QUEUE")]
    pub queue: bool,
    /// Prefix of the deployment's Redis keys (as the workers').
    #[arg(long = "redis-prefix", env = "REDIS_PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,
}

/// The `worker` binary's own flags.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Jobs this process runs at once (each holds at most one account).
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Worker name (default: the host name); a unique suffix is added per start.
    #[arg(long, env = "WORKER_NAME")]
    pub name: Option<String>,
    /// How often an idle worker looks for due jobs.
    #[arg(long, env = "POLL_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How long in-flight joins may take to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Port of /healthz, /readyz and /metrics (all interfaces); 0 picks a free port and logs it.
    #[arg(long, env = "METRICS_PORT", default_value_t = 9090)]
    pub metrics_port: u16,
    /// How often the state gauges (accounts, leases, queue depth) are refreshed for OTLP;
    /// a Prometheus scrape always refreshes them.
    #[arg(long, env = "METRICS_SAMPLE_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub metrics_sample_interval: Duration,
}

/// The `producer` binary's own arguments and flags.
#[derive(Debug, Args)]
pub struct ProducerArgs {
    /// Niche of the targets to queue.
    #[arg(default_value = "ukraine_cars")]
    pub niche: String,
    /// How many new targets one run queues.
    #[arg(default_value_t = 5)]
    pub batch_size: u64,
    /// A target this long past due is presumed to have lost its job and is pushed again.
    #[arg(long, env = "RECOVER_AFTER", default_value = "10m", value_parser = parse_duration)]
    pub recover_after: Duration,
}

/// `smart-joiner exporter`'s flags.
#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// Port of /healthz, /readyz, /metrics and /scaling/POOL (all interfaces); 0 picks one.
    #[arg(long, env = "METRICS_PORT", default_value_t = 9090)]
    pub port: u16,
    /// Pools reported even while no account is in them (comma-separated); every pool of
    /// the database is reported anyway.
    #[arg(long, env = "EXPORTER_POOLS", value_delimiter = ',', value_parser = super::not_blank)]
    pub pools: Vec<String>,
    #[command(flatten)]
    pub redis_prefix: RedisPrefixArg,
    /// How often the gauges are refreshed for OTLP; a scrape always refreshes them.
    #[arg(long, env = "METRICS_SAMPLE_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub sample_interval: Duration,
}
