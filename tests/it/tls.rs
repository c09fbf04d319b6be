//! TLS to Postgres and Redis, through the real binaries: a private Postgres and a private Redis
//! that accept TLS only, with a CA and a server certificate made here by `openssl`. Nothing
//! of the shared servers is touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::servers::{
    Server, free_port, init_postgres, run, start_postgres, wait_for_port,
};
use std::time::{Duration, Instant};

/// A CA and a certificate for 127.0.0.1/localhost signed by it, in `dir` (`name`.pem/.key);
/// returns the CA file.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let ca_key = dir.join(format!("{name}-ca.key"));
    let ca = dir.join(format!("{name}-ca.pem"));
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let cert = dir.join(format!("{name}.pem"));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    let openssl = || Command::new("openssl");
    run(openssl()
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={name} test CA"))
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    run(openssl()
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(openssl()
        .args(["x509", "-req", "-days", "2", "-set_serial", "1", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-out")
        .arg(&cert)
        .arg("-extfile")
        .arg(&ext));
    ca
}

/// redis-server with TLS on `port` and no plain port.
fn tls_redis(dir: &Path, port: u16) -> Server {
    let mut server = Server(
        Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(dir.join("server.pem"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("server-ca.pem"))
            .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed"),
    );
    wait_for_port(port, "redis-server", &mut server);
    server
}

/// A private PostgreSQL on `port` that accepts TLS connections only (pg_hba: hostssl).
fn tls_postgres(dir: &Path, port: u16) -> Server {
    let data =
        init_postgres(dir, "hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n");
    let ssl = [
        "ssl=on".to_owned(),
        format!("ssl_cert_file={}", dir.join("server.pem").display()),
        format!("ssl_key_file={}", dir.join("server.key").display()),
    ];
    start_postgres(dir, &data, port, &ssl)
}

fn smart_joiner(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smart-joiner"));
    cmd.current_dir(dir)
        .args(args)
        .env("LOG_DIR", dir.join("logs"))
        .env("RUST_LOG", "info")
        .env("REDIS_PREFIX", "tlstest:")
        .env_remove("SSL_CERT_FILE")
        .env_remove("POSTGRES_HOST");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The exporter with `env`, until it logs its port; `Err(output)` when it exits first.
fn start_exporter(dir: &Path, env: &[(&str, &str)]) -> Result<(Server, u16), String> {
    let log = dir.join(format!("exporter-{}.log", ulid::Ulid::new()));
    let file = std::fs::File::create(&log).unwrap();
    let child = smart_joiner(dir, &["exporter", "--port", "0"], env)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split("exporter on http://0.0.0.0:").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return Ok((server, digits.parse().unwrap()));
        }
        if server.0.try_wait().unwrap().is_some() {
            return Err(text);
        }
        assert!(Instant::now() < deadline, "the exporter neither started nor failed:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let code = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

#[test]
fn postgres_and_redis_over_tls_verified_against_a_private_ca_and_refused_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = make_ca(dir, "server");
    let other_ca = make_ca(dir, "other");
    let (pg_port, redis_port) = (free_port(), free_port());
    let _pg = tls_postgres(dir, pg_port);
    let _redis = tls_redis(dir, redis_port);
    let ca = ca.display().to_string();
    let other_ca = other_ca.display().to_string();

    let pg = |query: &str| {
        format!("postgres://postgres:pw-not-shown@127.0.0.1:{pg_port}/postgres?{query}")
    };
    let verified = pg(&format!("sslmode=verify-full&sslrootcert={ca}"));
    let rediss = format!("rediss://127.0.0.1:{redis_port}/");

    // Migrations over TLS, the certificate verified against the private CA.
    run(&mut smart_joiner(dir, &["migrate", "up"], &[("DATABASE_URL", &verified)]));

    // The exporter: Postgres with sslmode=require (what managed databases ask for), Redis over
    // rediss:// checked against SSL_CERT_FILE. Both answer its readiness check.
    let env = [
        ("DATABASE_URL", pg("sslmode=require")),
        ("REDIS_URL", rediss.clone()),
        ("SSL_CERT_FILE", ca.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (exporter, port) = start_exporter(dir, &env).expect("the exporter starts over TLS");
    assert_eq!(http_get(port, "/readyz"), (200, "ready\n".to_owned()));
    let (code, body) = http_get(port, "/scaling/default");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"due\":0"), "{body}");
    drop(exporter);

    // Without TLS the servers refuse; with a certificate from another CA the clients refuse.
    // Each failure is one clear error line without the password.
    let refused = |env: &[(&str, &str)], words: &[&str]| {
        let out = start_exporter(dir, env).err().expect("the exporter must not start");
        println!("refused as expected: {}", out.lines().last().unwrap_or_default());
        for w in words {
            assert!(out.to_lowercase().contains(w), "no {w:?} in:\n{out}");
        }
        assert!(!out.contains("pw-not-shown"), "the password leaked:\n{out}");
    };
    let plain_pg = pg("sslmode=disable");
    let wrong_ca_pg = pg(&format!("sslmode=verify-full&sslrootcert={other_ca}"));
    let plain_redis = format!("redis://127.0.0.1:{redis_port}/");
    refused(
        &[("DATABASE_URL", &plain_pg), ("REDIS_URL", &rediss), ("SSL_CERT_FILE", &ca)],
        &["pg_hba.conf", "no encryption"],
    );
    refused(
        &[("DATABASE_URL", &wrong_ca_pg), ("REDIS_URL", &rediss), ("SSL_CERT_FILE", &ca)],
        &["certificate"],
    );
    refused(
        &[("DATABASE_URL", &verified), ("REDIS_URL", &rediss), ("SSL_CERT_FILE", &other_ca)],
        &["redis", "certificate"],
    );
    refused(
        &[("DATABASE_URL", &verified), ("REDIS_URL", &plain_redis), ("SSL_CERT_FILE", &ca)],
        &["redis"],
    );
}
