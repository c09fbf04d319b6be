//! Real processes: the `producer` and `worker` binaries on one Postgres database and one Redis,
//! Telegram replaced by the scripted fake (its events land in one shared JSON-lines file).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use smart_joiner::domain::TargetStatus;
use smart_joiner::store::Store;
use smart_joiner::telegram::fake::{Event, Script, read_event_log};
use tokio::sync::OnceCell;

/// The workspace binaries, built once per test run (they belong to other packages, so cargo
/// does not build them for this test binary by itself).
pub async fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceCell<(PathBuf, PathBuf)> = OnceCell::const_new();
    BINS.get_or_init(|| async {
        tokio::task::spawn_blocking(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "producer", "-p", "worker"])
                .status()
                .expect("run cargo build");
            assert!(status.success(), "building the producer and worker binaries failed");
            // This test binary is target/<profile>/deps/it-<hash>.
            let exe = std::env::current_exe().expect("test binary path");
            let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
            let bin = |name: &str| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
            (bin("producer"), bin("worker"))
        })
        .await
        .expect("build task")
    })
    .await
}

/// A private redis-server on a free port, so a test may FLUSHALL or kill it without touching
/// anyone else. Killed on drop.
pub struct PrivateRedis {
    child: Child,
    pub url: String,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see .ci/services.sh)");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url }
    }

    pub async fn flushall(&self) {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One deployment under test.
pub struct Cluster {
    pub store: Store,
    pub dir: tempfile::TempDir,
    db_url: String,
    redis_url: String,
    prefix: String,
    pub workers: Vec<Child>,
    extra_env: Vec<(String, String)>,
    /// Workers use the scripted fake (default) or the real grammers adapter.
    fake_telegram: bool,
}

impl Cluster {
    /// `env` adds or overrides settings (pacing, TTLs) for every process.
    pub async fn new(
        store: Store,
        db_url: String,
        redis_url: &str,
        accounts_json: &str,
        script: &Script,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("accounts_config.json"), accounts_json).unwrap();
        std::fs::write(dir.path().join("script.json"), serde_json::to_string(script).unwrap())
            .unwrap();
        binaries().await;
        Self {
            store,
            dir,
            db_url,
            redis_url: redis_url.to_owned(),
            prefix: format!("sjtest:{}:", ulid::Ulid::new()),
            workers: Vec::new(),
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            fake_telegram: true,
        }
    }

    /// Workers talk to Telegram through the real adapter (to tgsim, via the accounts file).
    pub fn with_real_telegram(mut self) -> Self {
        self.fake_telegram = false;
        self
    }

    fn command(&self, bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        let d = self.dir.path();
        cmd.current_dir(d)
            .env("DATABASE_URL", &self.db_url)
            .env("REDIS_URL", &self.redis_url)
            .env("REDIS_PREFIX", &self.prefix)
            .env("ACCOUNTS_CONFIG", d.join("accounts_config.json"))
            .env("LOG_DIR", d.join("logs"))
            .env("RUST_LOG", "info")
            .env("JOIN_PAUSE_MIN", "60ms")
            .env("JOIN_PAUSE_MAX", "90ms")
            .env("ERROR_PAUSE", "20ms")
            .env("QUEUE_HEARTBEAT", "1s")
            .env("DAILY_JOIN_CAP", "1000")
            // Several workers share this host: each takes a free operations port.
            .env("METRICS_PORT", "0")
            .env_remove("POSTGRES_HOST");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The `smart-joiner` admin binary with this deployment's settings, plus `env`.
    pub fn admin(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = self.command(Path::new(env!("CARGO_BIN_EXE_smart-joiner")));
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("telegram_events.jsonl")
    }

    /// Starts a worker named `name`.
    pub async fn spawn_worker(&mut self, name: &str) {
        let (_, worker) = binaries().await;
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.out"))).unwrap();
        let mut cmd = self.command(worker);
        cmd.args([
            "--name",
            name,
            "--concurrency",
            "4",
            "--poll-interval",
            "100ms",
            "--shutdown-timeout",
            "5s",
        ]);
        if self.fake_telegram {
            cmd.env("SMART_JOINER_FAKE_TELEGRAM", self.dir.path().join("script.json"))
                .env("SMART_JOINER_FAKE_TELEGRAM_LOG", self.events_path());
        }
        let child = cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("spawn worker");
        self.workers.push(child);
    }

    /// One producer run.
    pub async fn produce(&self, niche: &str, batch: u64, recover_after: &str) -> Output {
        let (producer, _) = binaries().await;
        let mut cmd = self.command(producer);
        cmd.args([niche, &batch.to_string(), "--recover-after", recover_after]);
        let out =
            tokio::task::spawn_blocking(move || cmd.output().expect("run producer")).await.unwrap();
        assert!(out.status.success(), "producer failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Runs the producer every `every` until no target is `new`, `queued` or `joining`, or
    /// the deadline passes; returns the count of unsettled targets.
    pub async fn settle(
        &self,
        niche: &str,
        batch: u64,
        recover_after: &str,
        every: Duration,
        deadline: Duration,
    ) -> usize {
        let end = Instant::now() + deadline;
        loop {
            // An in-doubt target stays with its account even when that account then got a long
            // FloodWait elsewhere: it is due when the wait ends, so it counts as settled here.
            let later = chrono::Utc::now() + chrono::Duration::seconds(60);
            let open = self
                .store
                .targets(None, None)
                .await
                .unwrap()
                .iter()
                .filter(|t| {
                    matches!(
                        t.status,
                        TargetStatus::New | TargetStatus::Queued | TargetStatus::Joining
                    ) && !(t.status == TargetStatus::Joining
                        && t.next_run_at.is_some_and(|at| at > later))
                })
                .count();
            if open == 0 || Instant::now() > end {
                return open;
            }
            self.produce(niche, batch, recover_after).await;
            tokio::time::sleep(every).await;
        }
    }

    pub fn events(&self) -> Vec<Event> {
        if !self.events_path().exists() {
            return Vec::new();
        }
        read_event_log(&self.events_path()).unwrap()
    }

    /// Output of every worker, for failure messages.
    pub fn worker_logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "out") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<_> = text.lines().rev().take(40).collect();
                all.push_str(&format!("--- {}\n", entry.path().display()));
                for line in tail.into_iter().rev() {
                    all.push_str(line);
                    all.push('\n');
                }
            }
        }
        all
    }

    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.workers[i].id().to_string();
        let status = Command::new("kill").args([&format!("-{sig}"), &pid]).status().unwrap();
        assert!(status.success(), "kill -{sig} {pid}");
    }

    /// The Redis key prefix of this deployment.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Waits for worker `i` to exit by itself.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.workers[i].try_wait().ok().flatten() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop_all(&mut self) {
        for w in &mut self.workers {
            let _ = Command::new("kill").args(["-TERM", &w.id().to_string()]).status();
        }
        for w in &mut self.workers {
            let deadline = Instant::now() + Duration::from_secs(10);
            while w.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}
