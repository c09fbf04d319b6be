//! SmartJoiner's Python call, on smart-joiner's batch:
//!
//! ```python
//! from smart_joiner import SmartJoiner
//! joiner = SmartJoiner(accounts_config_path='accounts_config.json')
//! report = await joiner.run_batch(niche='ukraine_cars', batch_size=5)
//! ```
//!
//! `run_batch` is an asyncio awaitable (wrapped in a coroutine by the package's `__init__.py`)
//! running [`smart_joiner::modes::batch::run_batch`], the batch
//! `smart-joiner run` runs (same join procedure, pacing, FloodWait handling and bindings), on
//! a tokio runtime beside the caller's event loop. Settings are read from the environment as
//! the command reads them (`DATABASE_URL`, else `POSTGRES_HOST/PORT/USER/PASSWORD/DB` as
//! SmartJoiner read them, else SQLite `smart_joiner.db`; the pacing variables), each argument
//! given here winning over its variable. Errors are Python exceptions whose messages carry no
//! password or session.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Parser;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use smart_joiner::config::{Secret, Settings, SettingsArgs};
use smart_joiner::modes::batch;
use smart_joiner::modes::wiring::TelegramArgs;
use tokio_util::sync::CancellationToken;

/// The process's logging, installed by the first batch (inside the tokio runtime, as the
/// binaries do): SmartJoiner's log lines on stdout and in `logs/smart_joiner.log` (LOG_DIR,
/// LOG_FORMAT, RUST_LOG as for the command). Kept for the life of the process.
static TELEMETRY: OnceLock<Option<smart_joiner::telemetry::Telemetry>> = OnceLock::new();

fn init_logging(settings: &Settings) {
    TELEMETRY.get_or_init(|| {
        let logs = smart_joiner::telemetry::LogSettings::from_settings(settings);
        match smart_joiner::telemetry::init(&logs, "smart-joiner-python") {
            Ok(t) => Some(t),
            Err(e) => {
                // The host already installed a global subscriber, or OTEL_* is malformed:
                // said once, and the batches run without our log lines.
                eprintln!("smart_joiner: logging not set up: {e}");
                None
            }
        }
    });
}

/// The command's settings surface, read from the environment only.
#[derive(Parser)]
struct FromEnv {
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(flatten)]
    telegram: TelegramArgs,
}

/// What a batch came to, returned to Python as a dict.
#[derive(IntoPyObject)]
struct Report {
    niche: String,
    batch_size: u64,
    /// Targets the batch took (leftovers of an interrupted run included).
    taken: usize,
    /// Targets that ended joined.
    joined: usize,
    /// Final status of each taken target, counted.
    by_status: BTreeMap<String, usize>,
    interrupted: bool,
}

/// `SmartJoiner(accounts_config_path='accounts_config.json', database_url=None,
/// pool='default', max_wait_seconds=1200)`.
#[pyclass(module = "smart_joiner._native", frozen)]
struct SmartJoiner {
    settings: Arc<Settings>,
    telegram: Arc<TelegramArgs>,
    pool: String,
    max_wait: Duration,
}

#[pymethods]
impl SmartJoiner {
    #[new]
    #[pyo3(signature = (accounts_config_path = PathBuf::from("accounts_config.json"), database_url = None, pool = "default".to_owned(), max_wait_seconds = 1200))]
    fn new(
        accounts_config_path: PathBuf,
        database_url: Option<String>,
        pool: String,
        max_wait_seconds: u64,
    ) -> PyResult<Self> {
        let from_env = FromEnv::try_parse_from(["smart_joiner"])
            .map_err(|e| PyValueError::new_err(format!("bad environment: {e}")))?;
        let mut args = from_env.settings;
        args.accounts_config = Some(accounts_config_path);
        if let Some(url) = database_url {
            args.database_url = Some(Secret::new(url));
        }
        let settings = args.into_settings().map_err(|e| PyValueError::new_err(e.to_string()))?;
        if pool.trim().is_empty() {
            return Err(PyValueError::new_err("pool must not be empty"));
        }
        Ok(Self {
            settings: Arc::new(settings),
            telegram: Arc::new(from_env.telegram),
            pool,
            max_wait: Duration::from_secs(max_wait_seconds),
        })
    }

    /// Runs one batch: leftovers plus up to `batch_size` new targets of `niche`. Returns the
    /// report as a dict: niche, batch_size, taken, joined, by_status, interrupted.
    #[pyo3(signature = (niche = "ukraine_cars".to_owned(), batch_size = 5))]
    fn run_batch<'py>(
        &self,
        py: Python<'py>,
        niche: String,
        batch_size: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let settings = Arc::clone(&self.settings);
        let telegram = Arc::clone(&self.telegram);
        let pool = self.pool.clone();
        let max_wait = self.max_wait;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            // Cancelling the awaitable drops this future: the batch's joins in flight end with
            // it, and what they did not record is recovered by the next batch.
            init_logging(&settings);
            let stop = CancellationToken::new();
            let result =
                batch::run_batch(&settings, &niche, batch_size, &pool, max_wait, &telegram, stop)
                    .await;
            let report = result.map_err(|e| {
                // The store's errors are redacted already; this is the backstop the binaries
                // have too.
                PyRuntimeError::new_err(settings.redactor().scrub(&e.to_string()))
            })?;
            Ok(Report {
                joined: report.by_status.get("joined").copied().unwrap_or(0),
                niche,
                batch_size,
                taken: report.taken,
                by_status: report.by_status,
                interrupted: report.interrupted,
            })
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "SmartJoiner(accounts_config_path={:?}, pool={:?})",
            self.settings.accounts_config.display().to_string(),
            self.pool
        )
    }
}

/// The native module `smart_joiner._native`, wrapped by `pysrc/smart_joiner/__init__.py` so
/// that `run_batch` is a coroutine function (callable before the event loop runs, as in
/// `asyncio.run(joiner.run_batch())`).
#[pymodule]
#[pyo3(name = "_native")]
fn smart_joiner_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SmartJoiner>()?;
    Ok(())
}
