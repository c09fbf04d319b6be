//! The one settings struct of every smart-joiner binary, read from flags and environment
//! variables and validated at start.
//!
//! [`SettingsArgs`] is the raw surface (a `--flag` and an environment variable per field, for
//! `#[command(flatten)]` in a binary's parser); [`SettingsArgs::into_settings`] checks every
//! field and returns either a complete [`Settings`] or one [`ConfigError`] listing every
//! problem, each naming its variable and flag. Values arrive as text and are parsed here rather
//! than by clap, so that one run reports all problems instead of stopping at the first.
//!
//! Secrets (database and Redis URLs, the Postgres password) are held in [`Secret`], whose
//! `Debug` and `Display` print `[redacted]`, and their environment values are hidden from
//! `--help`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser};

use crate::domain::Pacing;

/// A value that must never reach a log or a `Debug` print: a password, a URL with
/// credentials, an API hash.
///
/// `Debug` and `Display` print `[redacted]`; [`expose`](Secret::expose) is the one way to read
/// the value, which keeps every use easy to find.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Reads the secret. Call it only where the value is handed to the library that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event, in SmartJoiner's shape
    /// (`2026-01-12 10:00:01 - INFO - ...`).
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`, ignoring ASCII case.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("text") {
            Some(Self::Text)
        } else if s.eq_ignore_ascii_case("json") {
            Some(Self::Json)
        } else {
            None
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

mod flags;

pub use flags::{
    ConsoleArgs, ExporterArgs, ProducerArgs, RedisArgs, TelegramArgs, WorkerArgs, parse_duration,
};

/// Database used when neither `DATABASE_URL` nor any `POSTGRES_*` variable is set: a SQLite
/// file in the working directory, created if missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://smart_joiner.db?mode=rwc";
/// Redis used when `REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Accounts file used when `ACCOUNTS_CONFIG` is not set.
pub const DEFAULT_ACCOUNTS_CONFIG: &str = "accounts_config.json";
/// Postgres port used with `POSTGRES_HOST` when `POSTGRES_PORT` is not set.
pub const DEFAULT_POSTGRES_PORT: u16 = 5432;
/// Default daily join cap per account.
pub const DEFAULT_DAILY_JOIN_CAP: u32 = 20;
/// Default upper bound on the groups and channels an account may be bound to: Telegram's
/// limit for Premium accounts. Each account is held to its own limit below it, read from
/// Telegram when it connects (500 for a free account, and until read).
pub const DEFAULT_CHANNEL_LIMIT: u32 = 1000;
/// Default lifetime of an account lease.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);
/// Default timeout of one Telegram call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default directory of the log file.
pub const DEFAULT_LOG_DIR: &str = "logs";
/// Account pool used when `POOL` is not set.
pub const DEFAULT_POOL: &str = "default";
/// Prefix of the deployment's Redis keys when `REDIS_PREFIX` is not set.
pub const DEFAULT_REDIS_PREFIX: &str = "smart_joiner:";
/// Longest duration any setting accepts. Far beyond any sensible value, it keeps later time
/// arithmetic (`now + duration`) from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The raw configuration surface: every field is a `--flag` and an environment variable (the
/// flag wins). Flatten it into a binary's parser with `#[command(flatten)]`, then call
/// [`into_settings`](Self::into_settings).
///
/// Values are kept as text so that [`into_settings`](Self::into_settings) can report every
/// problem at once. An empty value counts as unset, as `VAR=` in a compose file usually means.
/// Durations are human durations with a unit: `500ms`, `90s`, `10m`, `24h`, `1h 30m`.
#[derive(Args, Debug, Clone, Default)]
pub struct SettingsArgs {
    /// Database URL: postgres://, postgresql:// or sqlite:. Wins over POSTGRES_*. Default, when
    /// no POSTGRES_* variable is set either: sqlite://smart_joiner.db?mode=rwc
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true, value_parser = secret)]
    pub database_url: Option<Secret<String>>,

    /// Postgres host, used to build the database URL when DATABASE_URL is not set (as
    /// SmartJoiner's lexus_db did). Needs POSTGRES_USER and POSTGRES_DB.
    #[arg(long, env = "POSTGRES_HOST", value_name = "HOST")]
    pub postgres_host: Option<String>,

    /// Postgres port, with POSTGRES_HOST. Default: 5432
    #[arg(long, env = "POSTGRES_PORT", value_name = "PORT")]
    pub postgres_port: Option<String>,

    /// Postgres user, with POSTGRES_HOST.
    #[arg(long, env = "POSTGRES_USER", value_name = "USER")]
    pub postgres_user: Option<String>,

    /// Postgres password, with POSTGRES_HOST (optional: trust and peer authentication need
    /// none). Any characters; it is percent-encoded into the URL.
    #[arg(long, env = "POSTGRES_PASSWORD", value_name = "PASSWORD", hide_env_values = true, value_parser = secret)]
    pub postgres_password: Option<Secret<String>>,

    /// Postgres database name, with POSTGRES_HOST.
    #[arg(long, env = "POSTGRES_DB", value_name = "NAME")]
    pub postgres_db: Option<String>,

    /// Redis URL (redis://, rediss://, redis+unix:// or unix://), for the job queue and the
    /// account leases of the producer and the worker. Default: redis://127.0.0.1:6379
    #[arg(long, env = "REDIS_URL", value_name = "URL", hide_env_values = true, value_parser = secret)]
    pub redis_url: Option<Secret<String>>,

    /// Path of SmartJoiner's accounts file (a JSON array of accounts with Telethon session
    /// strings). Default: accounts_config.json
    #[arg(long, env = "ACCOUNTS_CONFIG", value_name = "PATH", value_parser = path_parser())]
    pub accounts_config: Option<PathBuf>,

    /// Shortest pause of an account after a join; the pause is drawn uniformly between this
    /// and JOIN_PAUSE_MAX. Default: 5m
    #[arg(long, env = "JOIN_PAUSE_MIN", value_name = "DURATION")]
    pub join_pause_min: Option<String>,

    /// Longest pause of an account after a join. Default: 10m
    #[arg(long, env = "JOIN_PAUSE_MAX", value_name = "DURATION")]
    pub join_pause_max: Option<String>,

    /// Pause of an account after a join that failed on the target's side (invalid link,
    /// private channel, ...). Default: 60s
    #[arg(long, env = "ERROR_PAUSE", value_name = "DURATION")]
    pub error_pause: Option<String>,

    /// FloodWaits up to this long rest the account; longer ones cool it down and move the
    /// target to another account. Default: 600s
    #[arg(long, env = "FLOOD_WAIT_THRESHOLD", value_name = "DURATION")]
    pub flood_wait_threshold: Option<String>,

    /// How long a joined group warms up before the operator's system may post in it.
    /// Default: 24h
    #[arg(long, env = "WARMUP", value_name = "DURATION")]
    pub warmup: Option<String>,

    /// Cooldown of an account after PEER_FLOOD, which carries no duration. Default: 24h
    #[arg(long, env = "PEER_FLOOD_COOLDOWN", value_name = "DURATION")]
    pub peer_flood_cooldown: Option<String>,

    /// In-doubt answers (timeout, I/O error, 5xx) tolerated for one target, all retried with
    /// the same account, before the target is given up as an error. Default: 3
    #[arg(long, env = "IN_DOUBT_MAX_TRIES", value_name = "N")]
    pub in_doubt_max_tries: Option<String>,

    /// Most joins one account makes in 24 hours. Default: 20
    #[arg(long, env = "DAILY_JOIN_CAP", value_name = "N")]
    pub daily_join_cap: Option<String>,

    /// Most groups and channels one account may be bound to, an upper bound on each account's
    /// own limit that Telegram gives it (500, 1000 with Premium; read when it connects, 500
    /// until then). Set it lower to keep every account below. Default: 1000
    #[arg(long, env = "CHANNEL_LIMIT", value_name = "N")]
    pub channel_limit: Option<String>,

    /// Lifetime of an account lease in Redis; renewed while a job runs. Must be at least
    /// twice CALL_TIMEOUT. Default: 60s
    #[arg(long, env = "LEASE_TTL", value_name = "DURATION")]
    pub lease_ttl: Option<String>,

    /// Timeout of every single Telegram call (connect, resolve, join). Default: 30s
    #[arg(long, env = "CALL_TIMEOUT", value_name = "DURATION")]
    pub call_timeout: Option<String>,

    /// Daily windows in which the accounts this process works may join, for accounts without
    /// their own (`accounts hours`): an IANA time zone, one or more HH:MM-HH:MM windows and
    /// an optional `+DURATION` by which each account's start is staggered per day, like
    /// `Europe/Kyiv 09:00-13:00,14:00-22:00 +30m`. Default: none (around the clock)
    #[arg(long, env = "ACTIVE_HOURS", value_name = "HOURS")]
    pub active_hours: Option<String>,

    /// Log line format: text or json. Default: text
    #[arg(long, env = "LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Directory of the log file smart_joiner.log (created if missing). Default: logs
    #[arg(long, env = "LOG_DIR", value_name = "DIR", value_parser = path_parser())]
    pub log_dir: Option<PathBuf>,
}

/// `--pool` (`POOL`), declared once for every process and command that works on one pool.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct PoolArg {
    /// The account pool: the one this process serves (each pool has its own queue and
    /// workers), and the one new accounts join.
    #[arg(id = "pool", long = "pool", env = "POOL", value_name = "POOL", default_value = DEFAULT_POOL, value_parser = not_blank)]
    pub name: String,
}

/// `--redis-prefix` (`REDIS_PREFIX`), declared once: every process of a deployment uses the
/// same one.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct RedisPrefixArg {
    /// Prefix of every Redis key of the deployment (account leases and job queues).
    #[arg(id = "redis_prefix", long = "redis-prefix", env = "REDIS_PREFIX", value_name = "PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    pub value: String,
}

/// clap value parser for a name that must not be blank; the value is trimmed.
pub fn not_blank(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() { Err("must not be empty".to_owned()) } else { Ok(t.to_owned()) }
}

/// Every setting of `cmd` and its subcommands (an argument read from an environment variable)
/// that lacks a flag, help text, or a row of `readme`'s tables naming the variable in
/// backquotes: one line each. Each binary's tests call it on its own parser, so a setting
/// cannot be added without its documentation. Hidden arguments (the scripted fake Telegram of
/// tests and benchmarks) are not settings an operator sets, and are left out.
pub fn undocumented_settings(cmd: &clap::Command, readme: &str) -> Vec<String> {
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with('|')).collect();
    let mut problems = Vec::new();
    let mut commands = vec![(cmd.get_name().to_owned(), cmd)];
    while let Some((path, cmd)) = commands.pop() {
        for sub in cmd.get_subcommands() {
            commands.push((format!("{path} {}", sub.get_name()), sub));
        }
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(var) = arg.get_env().map(|v| v.to_string_lossy().into_owned()) else {
                continue;
            };
            if arg.get_long().is_none() {
                problems.push(format!("{path}: {var} has no --flag"));
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                problems.push(format!("{path}: {var} has no help text"));
            }
            let quoted = format!("`{var}`");
            if !rows.iter().any(|row| row.contains(&quoted)) {
                problems.push(format!("{path}: {var} has no row in the README's table"));
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

/// clap value parser for secrets: wraps the value at once, so `SettingsArgs`' `Debug` is safe.
fn secret(s: &str) -> Result<Secret<String>, std::convert::Infallible> {
    Ok(Secret::new(s.to_owned()))
}

/// clap value parser for paths that, unlike clap's own, lets an empty value through (to be
/// read as unset, like every other empty value).
fn path_parser() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser as _;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

/// Validated settings. Build them with [`SettingsArgs::into_settings`] or
/// [`Settings::from_env_lookup`]; every field is then known to be usable.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the system of record lives: `postgres://`, `postgresql://` or `sqlite:`.
    pub database_url: Secret<String>,
    /// The Redis of the job queue and the account leases (producer and worker only).
    pub redis_url: Secret<String>,
    /// Path of the accounts file (loaded by `crate::accounts_config`).
    pub accounts_config: PathBuf,
    /// Pauses, thresholds and cooldowns of the decision policy.
    pub pacing: Pacing,
    /// Most joins one account makes in 24 hours; at least 1.
    pub daily_join_cap: u32,
    /// Most groups and channels one account may be bound to, whatever Telegram allows it; at
    /// least 1.
    pub channel_limit: u32,
    /// The active hours of the accounts of the pool served that have none of their own.
    pub active_hours: Option<crate::domain::ActiveHours>,
    /// Lifetime of an account lease. Always at least twice [`call_timeout`](Self::call_timeout):
    /// a call that hangs until its timeout must not outlive the lease, and a renewal that
    /// comes just after the call must still find the lease alive; otherwise a slow but legal
    /// call lets the lease lapse and another worker may connect the same account (two
    /// connections kill the session with AUTH_KEY_DUPLICATED). The defaults (60 s and 30 s)
    /// sit exactly on this bound.
    pub lease_ttl: Duration,
    /// Timeout of every single Telegram call; not zero.
    pub call_timeout: Duration,
    /// Format of log lines.
    pub log_format: LogFormat,
    /// Directory of the log file.
    pub log_dir: PathBuf,
}

/// Every problem found in the configuration, each naming its environment variable and flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    /// The problems, one message each, in field order.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A parser with no arguments of its own: reads [`SettingsArgs`] from the environment only.
#[derive(Parser)]
#[command(name = "smart-joiner", no_binary_name = true)]
struct EnvOnly {
    #[command(flatten)]
    args: SettingsArgs,
}

impl Settings {
    /// Reads and validates the settings from `lookup` instead of the process environment:
    /// `lookup("DATABASE_URL")` gives that variable's value, if set. For tests and embedders.
    pub fn from_env_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        SettingsArgs::from_env_lookup(lookup)?.into_settings()
    }

    /// Scrubs the passwords of the database and Redis URLs from any text, for the places a
    /// binary prints an error (a password from POSTGRES_PASSWORD is inside the database URL).
    pub fn redactor(&self) -> crate::redact::Redactor {
        crate::redact::Redactor::default()
            .url(self.database_url.expose())
            .url(self.redis_url.expose())
    }
}

impl SettingsArgs {
    /// Reads the raw arguments from `lookup` (variable name to value) instead of the process
    /// environment, which it never consults.
    pub fn from_env_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let cmd = EnvOnly::command();
        let mut argv = Vec::new();
        for arg in cmd.get_arguments() {
            let (Some(var), Some(long)) = (arg.get_env().and_then(|v| v.to_str()), arg.get_long())
            else {
                continue;
            };
            if let Some(value) = lookup(var) {
                argv.push(format!("--{long}={value}"));
            }
        }
        // The variables were read through `lookup`; stop clap from also reading the process's.
        let cmd = cmd.mut_args(|a| a.env(None));
        let matches = cmd.try_get_matches_from(argv).map_err(clap_error)?;
        EnvOnly::from_arg_matches(&matches).map(|p| p.args).map_err(clap_error)
    }

    /// Validates every field and builds [`Settings`], or lists every problem found.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let mut v = Validator::default();
        let defaults = Pacing::default();

        let database_url = v.database_url(&self);
        let redis_url = v.redis_url(self.redis_url.as_ref());
        let accounts_config = non_empty_path(self.accounts_config)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ACCOUNTS_CONFIG));

        let join_pause_min =
            v.duration("join_pause_min", self.join_pause_min.as_deref(), defaults.join_pause_min);
        let join_pause_max =
            v.duration("join_pause_max", self.join_pause_max.as_deref(), defaults.join_pause_max);
        let error_pause =
            v.duration("error_pause", self.error_pause.as_deref(), defaults.error_pause);
        let flood_wait_threshold = v.duration(
            "flood_wait_threshold",
            self.flood_wait_threshold.as_deref(),
            defaults.flood_wait_threshold,
        );
        let warmup = v.duration("warmup", self.warmup.as_deref(), defaults.warmup);
        let peer_flood_cooldown = v.duration(
            "peer_flood_cooldown",
            self.peer_flood_cooldown.as_deref(),
            defaults.peer_flood_cooldown,
        );
        let in_doubt_max_tries = v.count(
            "in_doubt_max_tries",
            self.in_doubt_max_tries.as_deref(),
            defaults.in_doubt_max_tries,
        );
        let daily_join_cap =
            v.count("daily_join_cap", self.daily_join_cap.as_deref(), DEFAULT_DAILY_JOIN_CAP);
        let channel_limit =
            v.count("channel_limit", self.channel_limit.as_deref(), DEFAULT_CHANNEL_LIMIT);
        let active_hours = match self.active_hours.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => match crate::domain::ActiveHours::parse(text) {
                Ok(hours) => Some(hours),
                Err(e) => {
                    v.problem("active_hours", e.to_string());
                    None
                }
            },
        };
        let lease_ttl = v.duration("lease_ttl", self.lease_ttl.as_deref(), DEFAULT_LEASE_TTL);
        let call_timeout =
            v.duration("call_timeout", self.call_timeout.as_deref(), DEFAULT_CALL_TIMEOUT);
        let log_format = v.log_format(self.log_format.as_deref());
        let log_dir =
            non_empty_path(self.log_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_DIR));

        // Rules across fields, checked only when both sides parsed (a parse error is reported
        // once, not again as a consequence).
        if let (Some(min), Some(max)) = (join_pause_min, join_pause_max)
            && min > max
        {
            v.problem(
                "join_pause_min",
                format!(
                    "must not exceed {} ({}), got {} > {}",
                    env_name("join_pause_max"),
                    humantime::format_duration(max),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
        }
        if let Some(timeout) = call_timeout
            && timeout.is_zero()
        {
            v.problem("call_timeout", "must not be zero".to_owned());
        }
        if let (Some(ttl), Some(timeout)) = (lease_ttl, call_timeout)
            && !timeout.is_zero()
            && ttl < timeout.saturating_mul(2)
        {
            v.problem(
                "lease_ttl",
                format!(
                    "must be at least twice {} ({}) so a lease outlives a call with room to \
                     renew it, got {}",
                    env_name("call_timeout"),
                    humantime::format_duration(timeout),
                    humantime::format_duration(ttl)
                ),
            );
        }

        if !v.problems.is_empty() {
            return Err(ConfigError { problems: v.problems });
        }
        // A parser returns `None` only after recording a problem: with none recorded, every
        // value is here.
        let settings = || {
            Some(Settings {
                database_url: database_url?,
                redis_url: redis_url?,
                accounts_config,
                pacing: Pacing {
                    join_pause_min: join_pause_min?,
                    join_pause_max: join_pause_max?,
                    error_pause: error_pause?,
                    flood_wait_threshold: flood_wait_threshold?,
                    warmup: warmup?,
                    peer_flood_cooldown: peer_flood_cooldown?,
                    in_doubt_max_tries: in_doubt_max_tries?,
                },
                daily_join_cap: daily_join_cap?,
                channel_limit: channel_limit?,
                active_hours,
                lease_ttl: lease_ttl?,
                call_timeout: call_timeout?,
                log_format: log_format?,
                log_dir,
            })
        };
        settings().ok_or_else(|| ConfigError {
            problems: vec![
                "a setting was refused without a reason (a bug: please report it)".to_owned(),
            ],
        })
    }
}

/// Turns a clap error (only possible for non-UTF-8 values or a broken arg list) into a
/// [`ConfigError`], without the usage banner.
fn clap_error(e: clap::Error) -> ConfigError {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("could not read the arguments");
    ConfigError { problems: vec![first.trim_start_matches("error: ").to_owned()] }
}

/// `Some` when the path is set and not empty.
fn non_empty_path(p: Option<PathBuf>) -> Option<PathBuf> {
    p.filter(|p| !p.as_os_str().is_empty())
}

/// `Some` when the value is set and not empty.
fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// The environment variable of a field, from the clap definition (one source of truth).
fn env_name(field: &str) -> String {
    EnvOnly::command()
        .get_arguments()
        .find(|a| a.get_id() == field)
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| field.to_owned())
}

/// `VAR (--flag)` for a field, as problems name it.
fn label(field: &str) -> String {
    let cmd = EnvOnly::command();
    match cmd.get_arguments().find(|a| a.get_id() == field) {
        Some(arg) => match (arg.get_env(), arg.get_long()) {
            (Some(env), Some(long)) => format!("{} (--{long})", env.to_string_lossy()),
            _ => field.to_owned(),
        },
        None => field.to_owned(),
    }
}

/// Collects problems while parsing fields; each parser returns `None` after recording one.
#[derive(Default)]
struct Validator {
    problems: Vec<String>,
}

impl Validator {
    fn problem(&mut self, field: &str, message: String) {
        self.problems.push(format!("{}: {message}", label(field)));
    }

    fn duration(
        &mut self,
        field: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Option<Duration> {
        let Some(text) = non_empty(value) else { return Some(default) };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d > MAX_DURATION => {
                self.problem(field, format!("{text:?} is longer than the maximum of 365 days"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(
                    field,
                    format!(
                        "expected a duration with a unit, like 500ms, 90s, 10m or 24h, got \
                         {text:?} ({e})"
                    ),
                );
                None
            }
        }
    }

    /// A positive integer: the caps and counts, where zero would silently stop all work.
    fn count(&mut self, field: &str, value: Option<&str>, default: u32) -> Option<u32> {
        let Some(text) = non_empty(value) else { return Some(default) };
        match text.trim().parse::<u32>() {
            Ok(0) => {
                self.problem(field, "must be at least 1, got 0".to_owned());
                None
            }
            Ok(n) => Some(n),
            Err(_) => {
                self.problem(field, format!("expected a positive integer, got {text:?}"));
                None
            }
        }
    }

    fn log_format(&mut self, value: Option<&str>) -> Option<LogFormat> {
        let Some(text) = non_empty(value) else { return Some(LogFormat::default()) };
        let parsed = LogFormat::parse(text.trim());
        if parsed.is_none() {
            self.problem("log_format", format!("expected text or json, got {text:?}"));
        }
        parsed
    }

    fn redis_url(&mut self, value: Option<&Secret<String>>) -> Option<Secret<String>> {
        let Some(url) = non_empty(value.map(|s| s.expose().as_str())) else {
            return Some(Secret::new(DEFAULT_REDIS_URL.to_owned()));
        };
        match scheme_of(url) {
            Some(s) if ["redis", "rediss", "redis+unix", "unix"].contains(&s.as_str()) => {
                Some(Secret::new(url.to_owned()))
            }
            // The URL itself may hold a password: name only its scheme.
            Some(s) => {
                self.problem(
                    "redis_url",
                    format!(
                        "unsupported scheme {s:?}; expected redis://, rediss://, redis+unix:// \
                         or unix://"
                    ),
                );
                None
            }
            None => {
                self.problem("redis_url", "is not a URL (expected redis://host:port)".to_owned());
                None
            }
        }
    }

    /// DATABASE_URL, else a Postgres URL built from POSTGRES_*, else the SQLite default.
    fn database_url(&mut self, args: &SettingsArgs) -> Option<Secret<String>> {
        if let Some(url) = non_empty(args.database_url.as_ref().map(|s| s.expose().as_str())) {
            return match scheme_of(url) {
                Some(s) if s == "postgres" || s == "postgresql" => {
                    if url[s.len()..].starts_with("://") {
                        Some(Secret::new(url.to_owned()))
                    } else {
                        self.problem("database_url", format!("a {s} URL must start with {s}://"));
                        None
                    }
                }
                Some(s) if s == "sqlite" => Some(Secret::new(url.to_owned())),
                Some(s) => {
                    self.problem(
                        "database_url",
                        format!(
                            "unsupported scheme {s:?}; expected postgres://, postgresql:// or \
                             sqlite:"
                        ),
                    );
                    None
                }
                None => {
                    self.problem(
                        "database_url",
                        "is not a URL (expected postgres://user:password@host:port/db or \
                         sqlite://path)"
                            .to_owned(),
                    );
                    None
                }
            };
        }

        let host = non_empty(args.postgres_host.as_deref());
        let user = non_empty(args.postgres_user.as_deref());
        let db = non_empty(args.postgres_db.as_deref());
        let password = args.postgres_password.as_ref().map(|p| p.expose().as_str());
        let password = non_empty(password);
        if host.is_none() && user.is_none() && db.is_none() && password.is_none() {
            return Some(Secret::new(DEFAULT_DATABASE_URL.to_owned()));
        }

        let before = self.problems.len();
        for (field, value) in
            [("postgres_host", host), ("postgres_user", user), ("postgres_db", db)]
        {
            if value.is_none() {
                self.problem(
                    field,
                    "is required to build the database URL when DATABASE_URL is not set and \
                     another POSTGRES_* variable is"
                        .to_owned(),
                );
            }
        }
        let port = match non_empty(args.postgres_port.as_deref()) {
            None => Some(DEFAULT_POSTGRES_PORT),
            Some(text) => match text.trim().parse::<u16>() {
                Ok(p) if p != 0 => Some(p),
                _ => {
                    self.problem(
                        "postgres_port",
                        format!("expected a port number from 1 to 65535, got {text:?}"),
                    );
                    None
                }
            },
        };
        if let Some(h) = host
            && (h.chars().any(|c| c.is_whitespace() || "/@?#".contains(c))
                || (h.contains(':')
                    && !h.starts_with('[')
                    && h.parse::<std::net::Ipv6Addr>().is_err()))
        {
            self.problem("postgres_host", format!("{h:?} is not a host name or IP address"));
        }
        let (Some(host), Some(user), Some(db), Some(port)) = (host, user, db, port) else {
            return None;
        };
        if self.problems.len() > before {
            return None;
        }
        match postgres_url(host, port, user, password, db) {
            Ok(url) => Some(Secret::new(url)),
            Err(why) => {
                self.problem("postgres_host", format!("{host:?} cannot be used in a URL: {why}"));
                None
            }
        }
    }
}

/// `postgres://user:password@host:port/db`, assembled by the `url` crate. The user name,
/// password and database name are percent-encoded first, every byte but RFC 3986's unreserved
/// characters (the `url` setters leave `%` alone, reading it as an escape already made), so
/// any of them decodes back unchanged.
fn postgres_url(
    host: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
    db: &str,
) -> Result<String, url::ParseError> {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const COMPONENT: &AsciiSet =
        &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    let encode = |s: &str| utf8_percent_encode(s, COMPONENT).to_string();
    // An IPv6 literal needs brackets inside a URL.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let mut url = url::Url::parse(&format!("postgres://{host}"))?;
    // Setting these cannot fail on a URL that has a host, as this one has.
    let _ = url.set_port(Some(port));
    let _ = url.set_username(&encode(user));
    let _ = url.set_password(password.map(encode).as_deref());
    url.set_path(&encode(db));
    Ok(url.into())
}

/// The lower-cased scheme of `url` (the text before the first `:`), if it looks like one.
fn scheme_of(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then(|| scheme.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The help texts say the defaults in words; this keeps the words equal to the values
    /// applied when a setting is unset (the constants and `Pacing::default()`).
    #[test]
    fn every_default_the_help_states_is_the_one_applied() {
        let s = Settings::from_env_lookup(|_| None).unwrap();
        let p = &s.pacing;
        let durations = [
            ("join_pause_min", p.join_pause_min),
            ("join_pause_max", p.join_pause_max),
            ("error_pause", p.error_pause),
            ("flood_wait_threshold", p.flood_wait_threshold),
            ("warmup", p.warmup),
            ("peer_flood_cooldown", p.peer_flood_cooldown),
            ("lease_ttl", s.lease_ttl),
            ("call_timeout", s.call_timeout),
        ];
        let texts = [
            ("postgres_port", DEFAULT_POSTGRES_PORT.to_string()),
            ("redis_url", s.redis_url.expose().clone()),
            ("accounts_config", s.accounts_config.display().to_string()),
            ("in_doubt_max_tries", p.in_doubt_max_tries.to_string()),
            ("daily_join_cap", s.daily_join_cap.to_string()),
            ("channel_limit", s.channel_limit.to_string()),
            ("active_hours", s.active_hours.as_ref().map_or("none".to_owned(), |h| h.to_string())),
            ("log_format", s.log_format.to_string()),
            ("log_dir", s.log_dir.display().to_string()),
        ];
        let mut checked = 0;
        for arg in EnvOnly::command().get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let Some((_, stated)) = help.split_once("Default: ") else { continue };
            let stated = stated.split_whitespace().next().unwrap_or_default();
            let id = arg.get_id().as_str();
            if let Some((_, applied)) = durations.iter().find(|(f, _)| *f == id) {
                assert_eq!(humantime::parse_duration(stated).ok(), Some(*applied), "{id}");
            } else if let Some((_, applied)) = texts.iter().find(|(f, _)| *f == id) {
                assert_eq!(stated, applied, "{id}");
            } else {
                panic!("{id} states a default this test does not know: {stated}");
            }
            checked += 1;
        }
        assert_eq!(checked, durations.len() + texts.len(), "a stated default was not found");
    }

    #[test]
    fn a_variable_without_a_readme_row_is_named() {
        let cmd = EnvOnly::command();
        let problems = undocumented_settings(&cmd, "| `DATABASE_URL` | x | y |\n");
        assert!(
            problems
                .iter()
                .any(|p| p == "smart-joiner: REDIS_URL has no row in the README's table")
        );
        assert!(!problems.iter().any(|p| p.contains("DATABASE_URL")), "{problems:?}");
        let all = cmd.get_arguments().filter(|a| a.get_env().is_some()).count();
        assert_eq!(problems.len(), all - 1, "{problems:?}");
    }

    /// Settings from a fixed set of variables; the process environment is never read.
    fn from_vars(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::from_env_lookup(|k| vars.get(k).cloned())
    }

    /// Raw arguments from an explicit flag list, with clap's reading of the process
    /// environment switched off so the test cannot be disturbed by it.
    fn from_flags(flags: &[&str]) -> SettingsArgs {
        let cmd = EnvOnly::command().mut_args(|a| a.env(None));
        let matches = cmd.try_get_matches_from(flags).unwrap();
        EnvOnly::from_arg_matches(&matches).unwrap().args
    }

    fn problems_of(result: Result<Settings, ConfigError>) -> Vec<String> {
        result.unwrap_err().problems().to_vec()
    }

    #[test]
    fn nothing_set_gives_smartjoiners_defaults_and_a_local_sqlite_database() {
        let s = from_vars(&[]).unwrap();
        assert_eq!(s.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(s.redis_url.expose(), "redis://127.0.0.1:6379");
        assert_eq!(s.accounts_config, PathBuf::from("accounts_config.json"));
        assert_eq!(s.pacing, Pacing::default());
        assert_eq!(s.pacing.join_pause_min, Duration::from_secs(300));
        assert_eq!(s.pacing.join_pause_max, Duration::from_secs(600));
        assert_eq!(s.pacing.error_pause, Duration::from_secs(60));
        assert_eq!(s.pacing.flood_wait_threshold, Duration::from_secs(600));
        assert_eq!(s.pacing.warmup, Duration::from_secs(24 * 3600));
        assert_eq!(s.pacing.peer_flood_cooldown, Duration::from_secs(24 * 3600));
        assert_eq!(s.pacing.in_doubt_max_tries, 3);
        assert_eq!(s.daily_join_cap, 20);
        assert_eq!(s.channel_limit, 1000);
        assert_eq!(s.lease_ttl, Duration::from_secs(60));
        assert_eq!(s.call_timeout, Duration::from_secs(30));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.log_dir, PathBuf::from("logs"));
    }

    #[test]
    fn no_flags_give_the_same_settings_as_no_variables() {
        let s = from_flags(&[]).into_settings().unwrap();
        assert_eq!(s.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(s.pacing, Pacing::default());
    }

    #[test]
    fn human_durations_are_read_for_every_duration_setting() {
        let s = from_vars(&[
            ("JOIN_PAUSE_MIN", "90s"),
            ("JOIN_PAUSE_MAX", "10m"),
            ("ERROR_PAUSE", "500ms"),
            ("FLOOD_WAIT_THRESHOLD", "1h 30m"),
            ("WARMUP", "24h"),
            ("PEER_FLOOD_COOLDOWN", "2days"),
            ("LEASE_TTL", "2m"),
            ("CALL_TIMEOUT", "45s"),
        ])
        .unwrap();
        assert_eq!(s.pacing.join_pause_min, Duration::from_secs(90));
        assert_eq!(s.pacing.join_pause_max, Duration::from_secs(600));
        assert_eq!(s.pacing.error_pause, Duration::from_millis(500));
        assert_eq!(s.pacing.flood_wait_threshold, Duration::from_secs(5400));
        assert_eq!(s.pacing.warmup, Duration::from_secs(86400));
        assert_eq!(s.pacing.peer_flood_cooldown, Duration::from_secs(2 * 86400));
        assert_eq!(s.lease_ttl, Duration::from_secs(120));
        assert_eq!(s.call_timeout, Duration::from_secs(45));
    }

    #[test]
    fn flags_are_read_like_their_variables() {
        let s = from_flags(&[
            "--database-url=postgres://u@db/x",
            "--join-pause-min=1s",
            "--join-pause-max",
            "2s",
            "--daily-join-cap=7",
            "--log-format=JSON",
            "--log-dir=/var/log/sj",
            "--accounts-config=conf/accounts.json",
        ])
        .into_settings()
        .unwrap();
        assert_eq!(s.database_url.expose(), "postgres://u@db/x");
        assert_eq!(s.pacing.join_pause_min, Duration::from_secs(1));
        assert_eq!(s.pacing.join_pause_max, Duration::from_secs(2));
        assert_eq!(s.daily_join_cap, 7);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_dir, PathBuf::from("/var/log/sj"));
        assert_eq!(s.accounts_config, PathBuf::from("conf/accounts.json"));
    }

    #[test]
    fn database_url_wins_over_postgres_variables() {
        let s = from_vars(&[
            ("DATABASE_URL", "postgresql://a:b@h/d"),
            ("POSTGRES_HOST", "other"),
            ("POSTGRES_USER", "u"),
            ("POSTGRES_DB", "d"),
        ])
        .unwrap();
        assert_eq!(s.database_url.expose(), "postgresql://a:b@h/d");
    }

    #[test]
    fn postgres_variables_build_a_url_with_special_characters_percent_encoded() {
        let s = from_vars(&[
            ("POSTGRES_HOST", "db.internal"),
            ("POSTGRES_USER", "joiner@corp"),
            ("POSTGRES_PASSWORD", "p@ss:w/rd?#% é"),
            ("POSTGRES_DB", "smart_joiner"),
        ])
        .unwrap();
        assert_eq!(
            s.database_url.expose(),
            "postgres://joiner%40corp:p%40ss%3Aw%2Frd%3F%23%25%20%C3%A9@db.internal:5432/smart_joiner"
        );
    }

    #[test]
    fn postgres_port_and_an_ipv6_host_are_honoured_and_the_password_is_optional() {
        let s = from_vars(&[
            ("POSTGRES_HOST", "::1"),
            ("POSTGRES_PORT", "6543"),
            ("POSTGRES_USER", "u"),
            ("POSTGRES_DB", "d"),
        ])
        .unwrap();
        assert_eq!(s.database_url.expose(), "postgres://u@[::1]:6543/d");
    }

    #[test]
    fn an_incomplete_postgres_set_names_each_missing_variable() {
        let problems = problems_of(from_vars(&[
            ("POSTGRES_PASSWORD", "secret-pw"),
            ("POSTGRES_PORT", "99999"),
        ]));
        let all = problems.join("\n");
        for name in
            ["POSTGRES_HOST (--postgres-host)", "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PORT"]
        {
            assert!(all.contains(name), "{name} missing from {all}");
        }
        assert!(!all.contains("secret-pw"));
    }

    #[test]
    fn a_database_url_of_an_unsupported_scheme_is_rejected_without_echoing_it() {
        let problems = problems_of(from_vars(&[("DATABASE_URL", "mysql://root:hunter2@h/db")]));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("DATABASE_URL (--database-url): unsupported scheme"));
        assert!(!problems[0].contains("hunter2"));
        assert!(from_vars(&[("DATABASE_URL", "sqlite::memory:")]).is_ok());
        assert!(from_vars(&[("DATABASE_URL", "not a url")]).is_err());
        assert!(from_vars(&[("DATABASE_URL", "postgres:oops")]).is_err());
    }

    #[test]
    fn a_redis_url_of_another_scheme_is_rejected() {
        let problems = problems_of(from_vars(&[("REDIS_URL", "http://x:hunter2@h")]));
        assert!(problems[0].starts_with("REDIS_URL (--redis-url)"), "{problems:?}");
        assert!(!problems[0].contains("hunter2"));
        assert!(from_vars(&[("REDIS_URL", "rediss://h:6380/0")]).is_ok());
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let err = from_vars(&[
            ("DATABASE_URL", "mysql://x"),
            ("REDIS_URL", "nope"),
            ("JOIN_PAUSE_MIN", "ten minutes"),
            ("ERROR_PAUSE", "600"),
            ("WARMUP", "1000years"),
            ("IN_DOUBT_MAX_TRIES", "0"),
            ("DAILY_JOIN_CAP", "-1"),
            ("CHANNEL_LIMIT", "0"),
            ("CALL_TIMEOUT", "0s"),
            ("LOG_FORMAT", "xml"),
        ])
        .unwrap_err();
        let expected = [
            "DATABASE_URL (--database-url)",
            "REDIS_URL (--redis-url)",
            "JOIN_PAUSE_MIN (--join-pause-min)",
            "ERROR_PAUSE (--error-pause)",
            "WARMUP (--warmup)",
            "IN_DOUBT_MAX_TRIES (--in-doubt-max-tries)",
            "DAILY_JOIN_CAP (--daily-join-cap)",
            "CHANNEL_LIMIT (--channel-limit)",
            "LOG_FORMAT (--log-format)",
            // Checked with the rules across fields, after every field parsed.
            "CALL_TIMEOUT (--call-timeout)",
        ];
        assert_eq!(err.problems().len(), expected.len(), "{err}");
        for (problem, name) in err.problems().iter().zip(expected) {
            assert!(problem.starts_with(name), "{problem} should start with {name}");
        }
        let text = err.to_string();
        assert!(text.starts_with("invalid configuration (10 problems):"), "{text}");
    }

    #[test]
    fn a_minimum_pause_above_the_maximum_is_rejected() {
        let problems =
            problems_of(from_vars(&[("JOIN_PAUSE_MIN", "11m"), ("JOIN_PAUSE_MAX", "10m")]));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("must not exceed JOIN_PAUSE_MAX"), "{problems:?}");
        assert!(from_vars(&[("JOIN_PAUSE_MIN", "10m"), ("JOIN_PAUSE_MAX", "10m")]).is_ok());
    }

    #[test]
    fn a_lease_shorter_than_two_call_timeouts_is_rejected() {
        let problems = problems_of(from_vars(&[("LEASE_TTL", "59s")]));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("LEASE_TTL (--lease-ttl): must be at least twice"));
        let problems = problems_of(from_vars(&[("LEASE_TTL", "2m"), ("CALL_TIMEOUT", "61s")]));
        assert_eq!(problems.len(), 1);
        // Exactly twice is the default pair and is accepted.
        assert!(from_vars(&[("LEASE_TTL", "60s"), ("CALL_TIMEOUT", "30s")]).is_ok());
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s =
            from_vars(&[("DATABASE_URL", ""), ("JOIN_PAUSE_MIN", ""), ("LOG_DIR", "")]).unwrap();
        assert_eq!(s.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(s.pacing.join_pause_min, Duration::from_secs(300));
        assert_eq!(s.log_dir, PathBuf::from("logs"));
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let s = from_vars(&[
            ("DATABASE_URL", "postgres://u:db-hunter2@h/d"),
            ("REDIS_URL", "redis://:redis-hunter2@h:6379"),
        ])
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("[redacted]"));

        let args = from_flags(&["--postgres-password=pg-hunter2", "--database-url=x://hunter2"]);
        assert!(!format!("{args:?}").contains("hunter2"));
        assert_eq!(format!("{}", Secret::new("hunter2")), "[redacted]");
    }

    #[test]
    fn help_hides_the_values_of_secret_variables() {
        let cmd = EnvOnly::command();
        for id in ["database_url", "postgres_password", "redis_url"] {
            let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert!(arg.is_hide_env_values_set(), "{id}");
        }
    }

    #[test]
    fn every_setting_has_a_flag_a_variable_and_help() {
        for arg in EnvOnly::command().get_arguments() {
            assert!(arg.get_long().is_some(), "{} has no flag", arg.get_id());
            assert!(arg.get_env().is_some(), "{} has no variable", arg.get_id());
            assert!(arg.get_help().is_some(), "{} has no help", arg.get_id());
        }
    }

    #[test]
    fn lookup_reads_only_the_given_variables() {
        // PATH is set in every process; a lookup that knows nothing must not see it, nor any
        // DATABASE_URL the test runner may have.
        let args = SettingsArgs::from_env_lookup(|_| None).unwrap();
        assert!(args.database_url.is_none());
        assert!(args.postgres_host.is_none());
    }
}
