//! The short fault-injection run, as a test: the `bench faults --short` binary (tgsim, the real
//! producer and three real workers on a fresh database of a private PostgreSQL cluster and a
//! private redis-server with an append-only file) injects at least one fault of each kind:
//! SIGKILL and SIGSTOP past the lease of workers and of a producer run, Redis wiped and Redis
//! restarted from its AOF, Postgres stopped for 11 s and started again, backends terminated,
//! one worker cut from Redis, one from Postgres and one from both for 10 s (longer than a
//! hold), one worker's clock 30 s ahead and one 30 s behind; tgsim adds FloodWaits on both
//! sides of 600 s, bans, drops and silence. It must report every kind injected and no violation
//! of any invariant. The long run is `cargo run --release -p bench -- faults` (see
//! BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the bench, producer and worker binaries in this test's profile; returns their dir.
fn build() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "bench", "-p", "producer", "-p", "worker"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building bench, producer and worker failed");
    // This test binary is target/<profile>/deps/it-<hash>.
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_fault_run_breaks_no_invariant() {
    let dir = tokio::task::spawn_blocking(build).await.unwrap();
    let bench = dir.join(format!("bench{}", std::env::consts::EXE_SUFFIX));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bench)
            .args(["faults", "--short", "--bin-dir"])
            .arg(&dir)
            .output()
            .expect("run bench faults")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "fault run failed:\n{stdout}\n{stderr}");
}
