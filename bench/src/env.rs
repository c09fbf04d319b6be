//! The environment every run builds for itself: a fresh Postgres database, a private
//! redis-server, the real `producer` and `worker` binaries, and a working directory.
//!
//! Nothing here touches a shared service destructively: the database is new (`CREATE DATABASE`),
//! the redis-server is our own child on a free port, and every child process is ours.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use smart_joiner::store::Store;

/// Admin URL of the Postgres server the runs create their databases on.
pub fn admin_url() -> String {
    std::env::var("BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `admin` with its database name replaced by `db`.
pub fn url_for(admin: &str, db: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    format!("{server}/{db}{query}")
}

/// A brand-new, migrated database, dropped by [`FreshDb::drop_db`] (or kept with `--keep`).
pub struct FreshDb {
    pub name: String,
    pub url: String,
    pub store: Store,
    admin: DatabaseConnection,
}

impl FreshDb {
    pub async fn create(tag: &str) -> anyhow::Result<FreshDb> {
        let admin_url = admin_url();
        let admin = Database::connect(admin_url.as_str())
            .await
            .with_context(|| format!("cannot reach Postgres at {admin_url}"))?;
        let name = format!("sj_bench_{tag}_{}", ulid::Ulid::new().to_string().to_lowercase());
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
        let url = url_for(&admin_url, &name);
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        Ok(FreshDb { name, url, store, admin })
    }

    /// Terminates every backend connected to this database (the driver's own included);
    /// returns how many.
    pub async fn terminate_backends(&self) -> anyhow::Result<u64> {
        let rows = self
            .admin
            .query_all_raw(Statement::from_string(
                self.admin.get_database_backend(),
                format!(
                    "SELECT pg_terminate_backend(pid) AS t FROM pg_stat_activity \
                     WHERE datname = '{}' AND pid <> pg_backend_pid()",
                    self.name
                ),
            ))
            .await?;
        Ok(rows.len() as u64)
    }

    /// Runs one statement on the run's database through a fresh connection.
    pub async fn exec(&self, sql: &str) -> anyhow::Result<()> {
        let db = Database::connect(self.url.as_str()).await?;
        db.execute_unprepared(sql).await?;
        db.close().await.ok();
        Ok(())
    }

    pub async fn drop_db(self) {
        self.store.connection().clone().close().await.ok();
        let _ = self
            .admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .await;
    }
}

/// A redis-server of our own on a free port; [`PrivateRedis::restart_wiped`] kills it and
/// starts an empty one on the same port.
pub struct PrivateRedis {
    child: Child,
    pub port: u16,
    pub url: String,
}

impl PrivateRedis {
    pub fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = spawn_redis(port)?;
        Ok(Self { child, port, url: format!("redis://127.0.0.1:{port}") })
    }

    /// SIGKILL, then a new server with no data (no RDB, no AOF): everything in Redis is gone.
    pub fn restart_wiped(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_redis(self.port)?;
        Ok(())
    }
}

fn spawn_redis(port: u16) -> anyhow::Result<Child> {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no", "--maxclients", "10000"])
        .stdout(Stdio::null())
        .spawn()
        .context("redis-server must be installed")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server on port {port} did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the `producer` and `worker` binaries are: `--bin-dir`, else next to this binary.
pub fn bin_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match flag {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()?.parent().context("no exe dir")?.to_path_buf(),
    };
    for bin in ["producer", "worker"] {
        if !dir.join(bin).exists() {
            bail!(
                "{} has no `{bin}` binary: build with `cargo build --release -p producer -p worker` \
                 or pass --bin-dir",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// The environment of every child process of one run.
#[derive(Clone)]
pub struct ProcEnv {
    pub bin_dir: PathBuf,
    pub work_dir: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl ProcEnv {
    pub fn command(&self, bin: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(bin));
        cmd.current_dir(&self.work_dir)
            .env_remove("POSTGRES_HOST")
            .env_remove("SMART_JOINER_FAKE_TELEGRAM")
            .env_remove("SMART_JOINER_FAKE_TELEGRAM_LOG")
            .env("LOG_DIR", self.work_dir.join("logs"))
            // Several workers on one host: each serves /metrics on a port of its own.
            .env("METRICS_PORT", "0")
            .env("RUST_LOG", std::env::var("BENCH_CHILD_LOG").unwrap_or_else(|_| "warn".into()));
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_owned(), value.into()));
    }

    /// Starts a worker; its output goes to `<work_dir>/<name>.out`.
    pub fn spawn_worker(&self, name: &str, concurrency: usize) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work_dir.join(format!("{name}.out")))?;
        let child = self
            .command("worker")
            .args(["--name", name, "--concurrency", &concurrency.to_string()])
            .args(["--poll-interval", "50ms", "--shutdown-timeout", "5s"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn worker")?;
        Ok(child)
    }

    /// One producer run; Ok(exit success).
    pub async fn produce(
        &self,
        niche: &str,
        batch: u64,
        recover_after: &str,
    ) -> anyhow::Result<bool> {
        let mut cmd = self.command("producer");
        cmd.args([niche, &batch.to_string(), "--recover-after", recover_after])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = tokio::task::spawn_blocking(move || cmd.status()).await??;
        Ok(status.success())
    }
}

/// Sends `sig` (`KILL`, `STOP`, `CONT`, `TERM`) to one process of ours.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
}

/// SIGTERM, then SIGKILL after `grace`.
pub fn stop_child(child: &mut Child, grace: Duration) {
    signal(child.id(), "CONT");
    signal(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The machine a figure came from.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':'])))
        .unwrap_or("unknown CPU")
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!("{cpus} CPUs ({model}), {:.1} GiB RAM", mem_kb as f64 / 1024.0 / 1024.0)
}

/// Resident memory (VmRSS) of a process, in KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}
