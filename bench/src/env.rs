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

/// `url` without its path and query: `scheme://user@host:port`.
fn admin_url_of(url: &str) -> String {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => url[..after_scheme + i].to_owned(),
        None => url.to_owned(),
    }
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
        Self::create_on(&admin_url(), tag).await
    }

    /// A fresh database on the server of `admin_url` (a private one: [`PrivatePostgres`]).
    pub async fn create_on(admin_url: &str, tag: &str) -> anyhow::Result<FreshDb> {
        let admin = Database::connect(admin_url)
            .await
            .with_context(|| format!("cannot reach Postgres at {admin_url}"))?;
        let name = format!("sj_bench_{tag}_{}", ulid::Ulid::new().to_string().to_lowercase());
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
        let url = url_for(admin_url, &name);
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        Ok(FreshDb { name, url, store, admin })
    }

    /// This database's URL with another port: the same server through a proxy.
    pub fn url_via_port(&self, port: u16) -> String {
        let admin = admin_url_of(&self.url);
        let (scheme, rest) = admin.split_once("://").unwrap_or(("postgres", admin.as_str()));
        let (auth, host_port) = match rest.rsplit_once('@') {
            Some((auth, hp)) => (format!("{auth}@"), hp),
            None => (String::new(), rest),
        };
        let host = match host_port.rsplit_once(':') {
            Some((host, _)) => host,
            None => host_port,
        };
        url_for(&format!("{scheme}://{auth}{host}:{port}/postgres"), &self.name)
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
/// starts an empty one on the same port. With [`PrivateRedis::start_with_aof`] it keeps an
/// append-only file (fsync every second, as Redis's default) that
/// [`PrivateRedis::restart_from_aof`] starts it from after a SIGKILL.
pub struct PrivateRedis {
    child: Child,
    pub port: u16,
    pub url: String,
    /// The data directory when the server keeps an append-only file.
    aof_dir: Option<tempfile::TempDir>,
}

impl PrivateRedis {
    pub fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = spawn_redis(port, None)?;
        Ok(Self { child, port, url: format!("redis://127.0.0.1:{port}"), aof_dir: None })
    }

    pub fn start_with_aof() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::Builder::new().prefix("sj-redis-aof-").tempdir()?;
        let child = spawn_redis(port, Some(dir.path()))?;
        Ok(Self { child, port, url: format!("redis://127.0.0.1:{port}"), aof_dir: Some(dir) })
    }

    /// SIGKILL, then a new server with no data (no RDB, no AOF): everything in Redis is gone.
    pub fn restart_wiped(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.aof_dir {
            for entry in std::fs::read_dir(dir.path())? {
                let path = entry?.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        self.child = spawn_redis(self.port, self.aof_dir.as_ref().map(|d| d.path()))?;
        Ok(())
    }

    /// SIGKILL (a crash: writes of the last second may be lost), then the server again, which
    /// loads its append-only file.
    pub fn restart_from_aof(&mut self) -> anyhow::Result<()> {
        let dir = self.aof_dir.as_ref().context("this redis-server keeps no append-only file")?;
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_redis(self.port, Some(dir.path()))?;
        Ok(())
    }
}

fn spawn_redis(port: u16, aof_dir: Option<&Path>) -> anyhow::Result<Child> {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--maxclients", "10000"]);
    match aof_dir {
        Some(dir) => {
            cmd.args(["--appendonly", "yes", "--appendfsync", "everysec", "--dir"]).arg(dir);
        }
        None => {
            cmd.args(["--appendonly", "no"]);
        }
    }
    let child = cmd.stdout(Stdio::null()).spawn().context("redis-server must be installed")?;
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

/// A PostgreSQL cluster of our own (initdb in a temporary directory, a free port), which the
/// fault run stops and starts again. The machine's shared server is never touched. As root,
/// the cluster belongs to the `postgres` user (initdb and postgres refuse root).
pub struct PrivatePostgres {
    dir: PathBuf,
    /// Removes the directory when dropped; `None` once [`PrivatePostgres::keep`] kept it.
    guard: Option<tempfile::TempDir>,
    pub port: u16,
    /// `postgres://postgres@127.0.0.1:{port}/postgres` (trust authentication).
    pub admin_url: String,
    /// More server options (`-c name=value ...`), given at every start.
    extra_options: String,
}

impl PrivatePostgres {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with("")
    }

    /// [`PrivatePostgres::start`] with more server options, e.g.
    /// `-c shared_preload_libraries=pg_stat_statements`.
    pub fn start_with(extra_options: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sj-faults-pg-").tempdir()?;
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres"]).arg(dir.path()))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let pg = Self {
            dir: dir.path().to_path_buf(),
            guard: Some(dir),
            port,
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            extra_options: extra_options.to_owned(),
        };
        run(pg
            .command("initdb")?
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(pg.data()))?;
        pg.start_server()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Leaves the server running and its directory in place (for inspection); returns it.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(guard) = self.guard.take() {
            let _ = guard.keep();
        }
        self.dir.clone()
    }

    /// A server binary, run as the cluster's owner.
    fn command(&self, bin: &str) -> anyhow::Result<Command> {
        let out = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .context("pg_config must be installed (PostgreSQL's server binaries)")?;
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(bin);
        Ok(if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        })
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c max_connections=400 -c fsync=off {}",
            self.port,
            self.dir.display(),
            self.extra_options
        );
        run(self
            .command("pg_ctl")?
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]))
    }

    /// Stops the server: `fast` (clients disconnected, a clean shutdown, as a planned restart
    /// or a failover does) or `immediate` (a crash: recovery from the WAL at the next start).
    pub fn stop_server(&self, immediate: bool) -> anyhow::Result<()> {
        let mode = if immediate { "immediate" } else { "fast" };
        run(self
            .command("pg_ctl")?
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "60", "stop"]))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.guard.is_some() {
            let _ = self.stop_server(true);
        }
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs `cmd` to its end; an error with its output when it fails.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
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
        self.spawn_worker_with(name, concurrency, &[])
    }

    /// [`ProcEnv::spawn_worker`] with more variables (or these replacing the run's).
    pub fn spawn_worker_with(
        &self,
        name: &str,
        concurrency: usize,
        vars: &[(String, String)],
    ) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work_dir.join(format!("{name}.out")))?;
        let mut cmd = self.command("worker");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd
            .args(["--name", name, "--concurrency", &concurrency.to_string()])
            .args(["--poll-interval", "50ms", "--shutdown-timeout", "5s"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn worker")?;
        Ok(child)
    }

    /// Starts one producer run without waiting for it (the fault run signals it).
    pub fn spawn_producer(
        &self,
        niche: &str,
        batch: u64,
        recover_after: &str,
    ) -> anyhow::Result<Child> {
        self.command("producer")
            .args([niche, &batch.to_string(), "--recover-after", recover_after])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn producer")
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
