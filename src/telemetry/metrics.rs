//! The metrics an operator graphs, recorded once and read two ways: scraped as Prometheus text
//! from the worker's `/metrics`, and pushed over OTLP when an endpoint is configured.
//!
//! One OpenTelemetry meter provider holds every instrument. A [`ManualReader`] behind it renders
//! the Prometheus text on demand; an optional OTLP reader exports the same data periodically.
//! Nothing is recorded until a binary calls [`Metrics::install`], so library code and tests may
//! call the recording functions ([`join_finished`], [`job_rescheduled`], ...) freely.
//!
//! Event metrics (joins, FloodWaits, reschedules) are recorded where they happen; state metrics
//! (accounts by status, leases held, queue depth) are sampled by the worker (see
//! [`crate::ops::health`]) shortly before each scrape and periodically for OTLP.

use std::fmt::{Display, Write as _};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, MeterProviderBuilder, Pipeline, SdkMeterProvider, Temporality,
};

use crate::domain::{AccountStatus, JoinOutcome};

/// Buckets of the join latency histogram, in seconds (a join is one or two RPCs).
const LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets of the reschedule delay histogram, in seconds (pacing is minutes, cooldowns hours).
const DELAY_BUCKETS: &[f64] =
    &[1.0, 10.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 3.0 * 3600.0, 12.0 * 3600.0, 86400.0];

/// The process's instruments and the readers behind them.
pub struct Metrics {
    provider: SdkMeterProvider,
    prometheus: Arc<ManualReader>,
    joins: Counter<u64>,
    join_duration: Histogram<f64>,
    flood_wait_seconds: Counter<u64>,
    rescheduled: Counter<u64>,
    reschedule_delay: Histogram<f64>,
    accounts: Gauge<u64>,
    leases_held: Gauge<u64>,
    queue_depth: Gauge<u64>,
    queue_due: Gauge<u64>,
    accounts_workable: Gauge<u64>,
    accounts_busy: Gauge<u64>,
    scaling_slots: Gauge<u64>,
    targets_in_doubt: Gauge<u64>,
    dependency_up: Gauge<u64>,
    worker_running: Gauge<u64>,
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// The metrics installed by this process, if any.
pub fn global() -> Option<&'static Metrics> {
    GLOBAL.get()
}

impl Metrics {
    /// Instruments read only by `/metrics`.
    pub fn new(resource: Resource) -> Self {
        Self::build(resource, |b| b)
    }

    /// Instruments read by `/metrics` and also by `push` (the OTLP exporter's reader).
    pub fn with_push_reader(resource: Resource, push: impl MetricReader) -> Self {
        Self::build(resource, |b| b.with_reader(push))
    }

    fn build(
        resource: Resource,
        add: impl FnOnce(MeterProviderBuilder) -> MeterProviderBuilder,
    ) -> Self {
        let prometheus = Arc::new(ManualReader::builder().build());
        let builder = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(SharedReader(prometheus.clone()));
        let provider = add(builder).build();
        let meter = provider.meter("smart-joiner");
        Metrics {
            joins: meter
                .u64_counter("smart_joiner.joins")
                .with_description("Join attempts by outcome (joined, flood_wait, in_doubt, ...)")
                .build(),
            join_duration: meter
                .f64_histogram("smart_joiner.join.duration")
                .with_unit("s")
                .with_description("Time of one join attempt: connect, resolve, join, disconnect")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            flood_wait_seconds: meter
                .u64_counter("smart_joiner.flood_wait")
                .with_unit("s")
                .with_description("FloodWait seconds received from Telegram")
                .build(),
            rescheduled: meter
                .u64_counter("smart_joiner.jobs.rescheduled")
                .with_description(
                    "Jobs pushed back to run later (pacing, FloodWait, busy accounts)",
                )
                .build(),
            reschedule_delay: meter
                .f64_histogram("smart_joiner.jobs.reschedule_delay")
                .with_unit("s")
                .with_description("How far in the future rescheduled jobs run")
                .with_boundaries(DELAY_BUCKETS.to_vec())
                .build(),
            accounts: meter
                .u64_gauge("smart_joiner.accounts")
                .with_description("Accounts by pool and status")
                .build(),
            leases_held: meter
                .u64_gauge("smart_joiner.leases.held")
                .with_description("Account leases held now, by any worker of the deployment")
                .build(),
            queue_depth: meter
                .u64_gauge("smart_joiner.queue.depth")
                .with_description("Jobs in the pool's queue: ready to run, or scheduled for later")
                .build(),
            queue_due: meter
                .u64_gauge("smart_joiner.queue.due")
                .with_description(
                    "Jobs of the pool's queue due now: ready, or scheduled at or before now",
                )
                .build(),
            accounts_workable: meter
                .u64_gauge("smart_joiner.accounts.workable")
                .with_description(
                    "Accounts of the pool that could start a join now (free, rested, below the caps)",
                )
                .build(),
            accounts_busy: meter
                .u64_gauge("smart_joiner.accounts.busy")
                .with_description("Accounts of the pool held by a join in flight")
                .build(),
            scaling_slots: meter
                .u64_gauge("smart_joiner.scaling.slots")
                .with_description(
                    "Job slots the pool can use now: busy + min(due jobs, workable accounts)",
                )
                .build(),
            targets_in_doubt: meter
                .u64_gauge("smart_joiner.targets.in_doubt")
                .with_description(
                    "Open targets whose last join got no clear answer, waiting for a retry",
                )
                .build(),
            dependency_up: meter
                .u64_gauge("smart_joiner.dependency.up")
                .with_description("1 when the dependency (database, redis) answered the last check")
                .build(),
            worker_running: meter
                .u64_gauge("smart_joiner.worker.running")
                .with_description("1 while this worker process runs its job monitor")
                .build(),
            provider,
            prometheus,
        }
    }

    /// Makes these the process's metrics. Later calls keep the first.
    pub fn install(self) -> &'static Metrics {
        let _ = GLOBAL.set(self);
        GLOBAL.get().expect("just set")
    }

    /// Exports what is pending and stops the exporters. Blocks: call it from a blocking context.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }

    pub fn record_join(&self, outcome: &JoinOutcome, elapsed: Duration) {
        let kind = [KeyValue::new("outcome", outcome.kind().as_str())];
        self.joins.add(1, &kind);
        self.join_duration.record(elapsed.as_secs_f64(), &kind);
        if let JoinOutcome::FloodWait { seconds } = outcome {
            self.flood_wait_seconds.add(u64::from(*seconds), &[]);
        }
    }

    pub fn record_reschedule(&self, delay: Duration) {
        self.rescheduled.add(1, &[]);
        self.reschedule_delay.record(delay.as_secs_f64(), &[]);
    }

    /// Sets the account gauge of `pool`: every status gets a value, zero when absent.
    pub fn set_accounts(&self, pool: &str, counts: &[(AccountStatus, u64)]) {
        for status in AccountStatus::ALL {
            let n = counts.iter().filter(|(s, _)| s == status).map(|(_, n)| *n).sum();
            self.accounts.record(
                n,
                &[KeyValue::new("pool", pool.to_owned()), KeyValue::new("status", status.as_str())],
            );
        }
    }

    pub fn set_leases_held(&self, n: u64) {
        self.leases_held.record(n, &[]);
    }

    pub fn set_queue_depth(&self, pool: &str, ready: u64, scheduled: u64) {
        let pool = KeyValue::new("pool", pool.to_owned());
        self.queue_depth.record(ready, &[pool.clone(), KeyValue::new("state", "ready")]);
        self.queue_depth.record(scheduled, &[pool, KeyValue::new("state", "scheduled")]);
    }

    /// Sets the scaling gauges of `pool` (see [`crate::ops::exporter`]).
    pub fn set_pool_scaling(&self, s: &crate::ops::exporter::PoolScaling) {
        let pool = [KeyValue::new("pool", s.pool.clone())];
        self.queue_due.record(s.due, &pool);
        self.accounts_workable.record(s.workable, &pool);
        self.accounts_busy.record(s.busy, &pool);
        self.scaling_slots.record(s.slots(), &pool);
    }

    pub fn set_targets_in_doubt(&self, n: u64) {
        self.targets_in_doubt.record(n, &[]);
    }

    /// `dependency` is `database` or `redis`.
    pub fn set_dependency_up(&self, dependency: &'static str, up: bool) {
        self.dependency_up.record(u64::from(up), &[KeyValue::new("dependency", dependency)]);
    }

    pub fn set_worker_running(&self, pool: &str, running: bool) {
        self.worker_running.record(u64::from(running), &[KeyValue::new("pool", pool.to_owned())]);
    }

    /// Everything recorded so far, in the Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut rm = ResourceMetrics::default();
        if self.prometheus.collect(&mut rm).is_err() {
            return String::new();
        }
        let mut out = String::new();
        for scope in rm.scope_metrics() {
            for metric in scope.metrics() {
                let name = prometheus_name(metric.name(), metric.unit());
                match metric.data() {
                    AggregatedMetrics::U64(d) => render(&mut out, &name, metric.description(), d),
                    AggregatedMetrics::I64(d) => render(&mut out, &name, metric.description(), d),
                    AggregatedMetrics::F64(d) => render(&mut out, &name, metric.description(), d),
                }
            }
        }
        out
    }
}

/// Records one finished Telegram attempt (no-op until metrics are installed).
pub fn join_finished(outcome: &JoinOutcome, started: DateTime<Utc>, finished: DateTime<Utc>) {
    if let Some(m) = global() {
        m.record_join(outcome, (finished - started).to_std().unwrap_or_default());
    }
}

/// Records one job pushed back with `delay` (no-op until metrics are installed).
pub fn job_rescheduled(delay: Duration) {
    if let Some(m) = global() {
        m.record_reschedule(delay);
    }
}

/// `smart_joiner.join.duration` + `s` -> `smart_joiner_join_duration_seconds`.
fn prometheus_name(name: &str, unit: &str) -> String {
    let mut n: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if unit == "s" && !n.ends_with("_seconds") {
        n.push_str("_seconds");
    }
    n
}

fn labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> =
        attrs.map(|kv| format!("{}=\"{}\"", kv.key.as_str(), escape(&kv.value.as_str()))).collect();
    parts.sort();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn render<T: Display + Copy>(out: &mut String, name: &str, help: &str, data: &MetricData<T>) {
    match data {
        MetricData::Gauge(g) => {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for p in g.data_points() {
                let _ = writeln!(out, "{name}{} {}", labels(p.attributes(), None), p.value());
            }
        }
        MetricData::Sum(s) => {
            let (full, kind) = if s.is_monotonic() {
                (format!("{name}_total"), "counter")
            } else {
                (name.to_owned(), "gauge")
            };
            let _ = writeln!(out, "# HELP {full} {help}\n# TYPE {full} {kind}");
            for p in s.data_points() {
                let _ = writeln!(out, "{full}{} {}", labels(p.attributes(), None), p.value());
            }
        }
        MetricData::Histogram(h) => {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for p in h.data_points() {
                let mut cumulative = 0;
                for (bound, count) in p.bounds().zip(p.bucket_counts()) {
                    cumulative += count;
                    let l = labels(p.attributes(), Some(("le", bound.to_string())));
                    let _ = writeln!(out, "{name}_bucket{l} {cumulative}");
                }
                let l = labels(p.attributes(), Some(("le", "+Inf".to_owned())));
                let _ = writeln!(out, "{name}_bucket{l} {}", p.count());
                let l = labels(p.attributes(), None);
                let _ = writeln!(out, "{name}_sum{l} {}\n{name}_count{l} {}", p.sum(), p.count());
            }
        }
        // Not used by any instrument here.
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// Lets the provider own a reader that `/metrics` also reads.
#[derive(Debug)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(Resource::builder_empty().build())
    }

    #[test]
    fn a_join_shows_up_as_counter_histogram_and_flood_wait_seconds() {
        let m = metrics();
        m.record_join(&JoinOutcome::FloodWait { seconds: 42 }, Duration::from_millis(300));
        m.record_join(&JoinOutcome::FloodWait { seconds: 8 }, Duration::from_millis(30));
        let text = m.render_prometheus();
        assert!(text.contains("# TYPE smart_joiner_joins_total counter"), "{text}");
        assert!(text.contains("smart_joiner_joins_total{outcome=\"flood_wait\"} 2"), "{text}");
        assert!(text.contains("smart_joiner_flood_wait_seconds_total 50"), "{text}");
        assert!(
            text.contains(
                "smart_joiner_join_duration_seconds_bucket{outcome=\"flood_wait\",le=\"0.05\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "smart_joiner_join_duration_seconds_bucket{outcome=\"flood_wait\",le=\"+Inf\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("smart_joiner_join_duration_seconds_count{outcome=\"flood_wait\"} 2")
        );
    }

    #[test]
    fn every_account_status_is_reported_even_when_none_has_it() {
        let m = metrics();
        m.set_accounts("default", &[(AccountStatus::Active, 3)]);
        let text = m.render_prometheus();
        assert!(
            text.contains("smart_joiner_accounts{pool=\"default\",status=\"active\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("smart_joiner_accounts{pool=\"default\",status=\"banned\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = metrics();
        m.set_queue_depth("a\"b", 1, 2);
        let text = m.render_prometheus();
        assert!(
            text.contains("smart_joiner_queue_depth{pool=\"a\\\"b\",state=\"ready\"} 1"),
            "{text}"
        );
    }
}
