//! Logging and tracing setup.
//!
//! By default every event is one line in SmartJoiner's shape, on stdout and appended to
//! `logs/smart_joiner.log`: `2026-01-12 10:00:01 - INFO - [1/5] group @autobazar_com_ua`,
//! followed by the event's fields (`account=acc_1 target=@name`). `LOG_FORMAT=json` writes one
//! JSON object per line instead, for clusters. `RUST_LOG` filters as usual (default `info`).

use std::fmt;
use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use tracing::{Event, Subscriber};

pub use crate::config::LogFormat;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// SmartJoiner's line format.
pub struct SmartJoinerFormat;

impl<S, N> FormatEvent<S, N> for SmartJoinerFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        write!(writer, "{now} - {} - ", event.metadata().level())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Where and how to log.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// Directory of `smart_joiner.log`; `None` logs to stdout only.
    pub dir: Option<std::path::PathBuf>,
}

/// Installs the global subscriber. Call once, first thing in a binary.
pub fn init(settings: &LogSettings) -> std::io::Result<()> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let file = match &settings.dir {
        Some(dir) => Some(open_log_file(dir)?),
        None => None,
    };
    let registry = tracing_subscriber::registry();
    match settings.format {
        LogFormat::Text => {
            let stdout = tracing_subscriber::fmt::layer()
                .event_format(SmartJoinerFormat)
                .with_ansi(std::io::stdout().is_terminal())
                .with_filter(filter());
            let file = file.map(|f| {
                tracing_subscriber::fmt::layer()
                    .event_format(SmartJoinerFormat)
                    .with_ansi(false)
                    .with_writer(f)
                    .with_filter(filter())
            });
            registry.with(stdout).with(file).try_init().ok();
        }
        LogFormat::Json => {
            let stdout = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_filter(filter());
            let file = file.map(|f| {
                tracing_subscriber::fmt::layer().json().with_writer(f).with_filter(filter())
            });
            registry.with(stdout).with(file).try_init().ok();
        }
    }
    Ok(())
}

/// An append-only log file shared by the writer threads.
#[derive(Clone)]
struct LogFile(Arc<std::fs::File>);

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = &'a std::fs::File;
    fn make_writer(&'a self) -> Self::Writer {
        &self.0
    }
}

fn open_log_file(dir: &Path) -> std::io::Result<LogFile> {
    std::fs::create_dir_all(dir)?;
    let file = OpenOptions::new().create(true).append(true).open(dir.join("smart_joiner.log"))?;
    Ok(LogFile(Arc::new(file)))
}

impl LogSettings {
    /// Stdout plus `logs/smart_joiner.log` (or the configured directory), in the configured
    /// format.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self { format: settings.log_format, dir: Some(settings.log_dir.clone()) }
    }
}
