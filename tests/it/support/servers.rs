//! Servers of a test's own, beside the shared ones: a private PostgreSQL cluster (TLS on, or
//! one a test stops and starts) and the helpers to run and wait for them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for_port(port: u16, what: &str, server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("{what} exited at start: {status}");
        }
        assert!(Instant::now() < deadline, "{what} does not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The directory of PostgreSQL's server binaries (initdb, postgres).
pub fn pg_bin() -> PathBuf {
    let out = run(Command::new("pg_config").arg("--bindir"));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub fn is_root() -> bool {
    run(Command::new("id").arg("-u")).stdout.starts_with(b"0\n")
}

/// `bin` as the user that owns the cluster: `postgres` when the test runs as root (initdb and
/// postgres refuse root), the test's own user otherwise.
pub fn as_pg_user(bin: PathBuf) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin);
        cmd
    } else {
        Command::new(bin)
    }
}

/// A new cluster in `dir`/pgdata, owned by the user that runs it, whose pg_hba.conf is `hba`;
/// returns its data directory.
pub fn init_postgres(dir: &Path, hba: &str) -> PathBuf {
    let data = dir.join("pgdata");
    if is_root() {
        run(Command::new("chown").args(["-R", "postgres"]).arg(dir));
    }
    run(as_pg_user(pg_bin().join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(&data)
        .stdout(Stdio::null()));
    std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
    if is_root() {
        run(Command::new("chown").args(["-R", "postgres"]).arg(dir));
    }
    data
}

/// The cluster in `data` served on 127.0.0.1:`port`, with `settings` (`name=value`) on top of
/// its configuration; waits until it listens.
pub fn start_postgres(dir: &Path, data: &Path, port: u16, settings: &[String]) -> Server {
    let mut cmd = as_pg_user(pg_bin().join("postgres"));
    cmd.arg("-D").arg(data);
    cmd.args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"]);
    cmd.arg("-c").arg(format!("unix_socket_directories={}", dir.display()));
    for setting in settings {
        cmd.arg("-c").arg(setting);
    }
    let mut server =
        Server(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start postgres"));
    wait_for_port(port, "postgres", &mut server);
    server
}
