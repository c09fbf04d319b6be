//! Logging and tracing setup.
//!
//! By default every event is one line in SmartJoiner's shape, on stdout and appended to
//! `logs/smart_joiner.log`: `2026-01-12 10:00:01 - INFO - [1/5] group @autobazar_com_ua`,
//! followed by the event's fields (`account=acc_1 target=@name`). `LOG_FORMAT=json` writes one
//! JSON object per line instead, for clusters. `RUST_LOG` filters as usual (default `info`).
//! When the log file cannot be opened, one warning names it and the lines go to the console
//! only.
//!
//! OpenTelemetry: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) is set, spans
//! (one `join` span per job, with target, account and outcome) and the metrics of
//! [`crate::telemetry::metrics`] are exported over OTLP/HTTP with protobuf bodies. The exporters read the
//! standard variables themselves: `OTEL_EXPORTER_OTLP_HEADERS` (e.g. an API key),
//! `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s), `OTEL_BSP_*`; `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` name the process. `OTEL_SDK_DISABLED=true` turns export off. The
//! [`Telemetry`] guard returned by [`init`] flushes both at exit.

pub mod metrics;

use std::fmt;
use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing::{Event, Subscriber};

use crate::telemetry::metrics::Metrics;

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
    /// Log to stderr instead of stdout (commands whose stdout is their answer).
    pub stderr: bool,
    /// Level filter when `RUST_LOG` is not set.
    pub default_filter: &'static str,
}

/// What can stop telemetry from starting.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Not fatal: [`init`] logs it as a warning and goes on with the console only.
    #[error("cannot open the log file {}: {message}", path.display())]
    LogFile { path: std::path::PathBuf, message: String },
    #[error(
        "{variable}={value:?} is not supported: only http/protobuf is (unset it or set http/protobuf)"
    )]
    Protocol { variable: &'static str, value: String },
    #[error("cannot build the OTLP {signal} exporter: {message}")]
    Exporter { signal: &'static str, message: String },
}

/// Whether and how to export over OTLP, from the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// `service.name` of the exported resource.
    pub service_name: String,
}

impl OtlpSettings {
    /// `None` when no OTLP endpoint is configured or `OTEL_SDK_DISABLED=true`.
    /// `default_service` names the process when `OTEL_SERVICE_NAME` is not set.
    pub fn from_env_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        default_service: &str,
    ) -> Result<Option<Self>, TelemetryError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoints = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ];
        if !endpoints.iter().any(|e| var(e).is_some()) {
            return Ok(None);
        }
        for variable in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ] {
            if let Some(value) = var(variable).filter(|v| v.trim() != "http/protobuf") {
                return Err(TelemetryError::Protocol { variable, value });
            }
        }
        let service_name = var("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned());
        Ok(Some(Self { service_name }))
    }
}

/// Keeps the exporters alive; [`shutdown`](Self::shutdown) flushes them. Hold it until exit.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    metrics: &'static Metrics,
}

impl Telemetry {
    /// Whether spans and metrics go out over OTLP.
    pub fn exporting(&self) -> bool {
        self.tracer.is_some()
    }

    /// The process's metrics (also served on the worker's `/metrics`).
    pub fn metrics(&self) -> &'static Metrics {
        self.metrics
    }

    /// Exports every finished span and the last metric values, then stops the exporters.
    pub async fn shutdown(self) {
        let Telemetry { tracer, metrics } = self;
        // The SDK's shutdown blocks until the export tasks (on this runtime) are done.
        let flush = tokio::task::spawn_blocking(move || {
            if let Some(Err(e)) = tracer.map(|t| t.shutdown()) {
                eprintln!("telemetry: flushing spans failed: {e}");
            }
            metrics.shutdown();
        });
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), flush).await;
    }
}

/// Installs the global subscriber and the metrics, and starts OTLP export when the `OTEL_*`
/// variables ask for it. Call once, first thing in a binary, inside the Tokio runtime.
/// `service` is the default `service.name` (the binary's name).
pub fn init(settings: &LogSettings, service: &str) -> Result<Telemetry, TelemetryError> {
    let otlp = OtlpSettings::from_env_lookup(|k| std::env::var(k).ok(), service)?;
    let (tracer, metrics) = match &otlp {
        Some(otlp) => {
            let resource = resource(&otlp.service_name);
            let spans = SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .build()
                .map_err(|e| TelemetryError::Exporter {
                    signal: "trace",
                    message: e.to_string(),
                })?;
            let tracer = SdkTracerProvider::builder()
                .with_resource(resource.clone())
                .with_span_processor(BatchSpanProcessor::builder(spans, Tokio).build())
                .build();
            let exporter = MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .build()
                .map_err(|e| TelemetryError::Exporter {
                    signal: "metrics",
                    message: e.to_string(),
                })?;
            let reader = PeriodicReader::builder(exporter, Tokio).build();
            (Some(tracer), Metrics::with_push_reader(resource, reader))
        }
        None => (None, Metrics::new(resource(service))),
    };
    let metrics = metrics.install();
    install_subscriber(settings, tracer.as_ref());
    Ok(Telemetry { tracer, metrics })
}

fn resource(service_name: &str) -> Resource {
    Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A log file that cannot be opened (a read-only directory, a full disk, a path that is a
/// file) does not stop the process: losing the file copy of the log is better than not
/// running, and the console still gets every line. One warning says so.
fn install_subscriber(settings: &LogSettings, tracer: Option<&SdkTracerProvider>) {
    let default = settings.default_filter;
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let (file, file_problem) = match &settings.dir {
        Some(dir) => match open_log_file(dir) {
            Ok(file) => (Some(file), None),
            Err(problem) => (None, Some(problem)),
        },
        None => (None, None),
    };
    let console = if settings.stderr { Console::Stderr } else { Console::Stdout };
    let otel = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t.tracer("smart-joiner"))
            // The span field `target` (the group) must not meet tracing's own `target` (the
            // module path) in one attribute list.
            .with_target(false)
            .with_threads(false)
            .with_filter(filter())
    });
    let registry = tracing_subscriber::registry().with(otel);
    match settings.format {
        LogFormat::Text => {
            let stdout = tracing_subscriber::fmt::layer()
                .event_format(SmartJoinerFormat)
                .with_ansi(console.is_terminal())
                .with_writer(console)
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
                .with_writer(console)
                .with_filter(filter());
            let file = file.map(|f| {
                tracing_subscriber::fmt::layer().json().with_writer(f).with_filter(filter())
            });
            registry.with(stdout).with(file).try_init().ok();
        }
    }
    if let Some(problem) = file_problem {
        tracing::warn!("{problem}; logging to {} only", console.name());
    }
}

/// Where console log lines go.
#[derive(Debug, Clone, Copy)]
enum Console {
    Stdout,
    Stderr,
}

impl Console {
    fn name(self) -> &'static str {
        match self {
            Console::Stdout => "stdout",
            Console::Stderr => "stderr",
        }
    }

    fn is_terminal(self) -> bool {
        match self {
            Console::Stdout => std::io::stdout().is_terminal(),
            Console::Stderr => std::io::stderr().is_terminal(),
        }
    }
}

impl<'a> MakeWriter<'a> for Console {
    type Writer = Box<dyn std::io::Write + 'a>;
    fn make_writer(&'a self) -> Self::Writer {
        match self {
            Console::Stdout => Box::new(std::io::stdout()),
            Console::Stderr => Box::new(std::io::stderr()),
        }
    }
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

/// Opens `dir/smart_joiner.log` for appending, creating the directory if needed; the error
/// names the file.
fn open_log_file(dir: &Path) -> Result<LogFile, TelemetryError> {
    let path = dir.join("smart_joiner.log");
    let fail =
        |e: std::io::Error| TelemetryError::LogFile { path: path.clone(), message: e.to_string() };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let file = OpenOptions::new().create(true).append(true).open(&path).map_err(fail)?;
    Ok(LogFile(Arc::new(file)))
}

impl LogSettings {
    /// Stdout plus `logs/smart_joiner.log` (or the configured directory), in the configured
    /// format.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            format: settings.log_format,
            dir: Some(settings.log_dir.clone()),
            stderr: false,
            default_filter: "info",
        }
    }

    /// For admin commands: stdout is the command's answer (a table, JSON), so log lines go to
    /// stderr and only warnings and errors appear unless `RUST_LOG` asks for more.
    pub fn for_admin_command(mut self) -> Self {
        self.stderr = true;
        self.default_filter = "warn";
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otlp(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>, TelemetryError> {
        let vars: Vec<(String, String)> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        OtlpSettings::from_env_lookup(
            |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            "worker",
        )
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert_eq!(otlp(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        assert_eq!(otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(), None);
    }

    #[test]
    fn an_endpoint_turns_export_on_with_the_service_name_or_the_default() {
        let on = otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).unwrap();
        assert_eq!(on, Some(OtlpSettings { service_name: "worker".into() }));
        let named = otlp(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces"),
            ("OTEL_SERVICE_NAME", "joiner-eu"),
        ])
        .unwrap();
        assert_eq!(named, Some(OtlpSettings { service_name: "joiner-eu".into() }));
    }

    #[test]
    fn sdk_disabled_wins_over_an_endpoint() {
        let off = otlp(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert_eq!(off.unwrap(), None);
    }

    #[test]
    fn grpc_is_refused_by_name() {
        let err = otlp(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\""), "{err}");
    }
}
