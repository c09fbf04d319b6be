//! `smart-joiner console`: the operator's web console, server-rendered HTML on one listener.
//!
//! - Pages (`pages.rs`): pools, accounts, an account, groups, a group, the groups ready for
//!   posting (and their CSV), activity charts (SVG drawn here, `charts.rs`) with a live tail of
//!   attempts, the audit log.
//! - Actions (`actions.rs`): pause/resume an account, retry an `error` group, release an
//!   in-doubt pin, import targets; each one audited store call, the CLI's own.
//! - Access (`auth.rs`): reading needs `CONSOLE_TOKEN` when set, acting needs
//!   `CONSOLE_ADMIN_TOKEN`; a CSRF token on every form; [`check_bind`] refuses a non-loopback
//!   address without a read token.
//! - `/healthz` and `/readyz` answer without a token, for the same probes as the worker.
//!
//! The style and the one script are compiled into the binary (`static/`) and served with a
//! content security policy that allows nothing else. No page ever shows a secret: the console
//! never reads the accounts file (sessions, api_hash, proxies), and store errors arrive with
//! passwords redacted. Requests are logged as method, path, status and duration: never a
//! header, so never a credential.
//!
//! [`serve`] takes a bound listener and a shutdown future, so tests start it on port 0.

mod actions;
pub mod auth;
mod charts;
mod html;
mod pages;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tracing::info;

pub use crate::config::ConsoleArgs;
use crate::config::Secret;
use crate::store::{Limits, Store};
pub use auth::{Access, Auth};

/// Where the console listens unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// How long the readiness probe waits for the database.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the console does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "CONSOLE_ADDR {0} is not a loopback address: set CONSOLE_TOKEN (the token readers must \
         give) to serve it there, or listen on 127.0.0.1"
    )]
    OpenBind(SocketAddr),
    #[error("{name} is {why}: use a long random token (e.g. `openssl rand -hex 24`)")]
    WeakToken { name: &'static str, why: &'static str },
    #[error("cannot connect to Redis {url} for the queue depths (--queue): {message}")]
    Redis { url: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Refuses an address other than loopback when reading needs no token.
pub fn check_bind(addr: SocketAddr, auth: &Auth) -> Result<(), ConsoleError> {
    if addr.ip().is_loopback() || auth.read_protected() {
        Ok(())
    } else {
        Err(ConsoleError::OpenBind(addr))
    }
}

/// Shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// Refuses a token a guess or a copied manifest would open: short, a placeholder, or the same
/// for reading and acting. The error names the variable, never the value.
pub fn check_tokens(read: Option<&str>, admin: Option<&str>) -> Result<(), ConsoleError> {
    for (name, token) in [("CONSOLE_TOKEN", read), ("CONSOLE_ADMIN_TOKEN", admin)] {
        let Some(token) = token else { continue };
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(ConsoleError::WeakToken { name, why: "shorter than 16 characters" });
        }
        if token.to_ascii_uppercase().contains("CHANGE-ME") {
            return Err(ConsoleError::WeakToken { name, why: "still the manifest's placeholder" });
        }
    }
    if read.is_some() && read == admin {
        return Err(ConsoleError::WeakToken {
            name: "CONSOLE_ADMIN_TOKEN",
            why: "the same as CONSOLE_TOKEN (every reader could act)",
        });
    }
    Ok(())
}

/// Reads and checks `CONSOLE_TOKEN` and `CONSOLE_ADMIN_TOKEN` (empty = unset).
pub fn auth_from_env() -> Result<Auth, ConsoleError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (read, admin) = (var("CONSOLE_TOKEN"), var("CONSOLE_ADMIN_TOKEN"));
    check_tokens(read.as_deref(), admin.as_deref())?;
    Ok(Auth::new(read.map(Secret::new), admin.map(Secret::new)))
}

/// Connects to the queues when `args.queue` asks for them; the error names the URL with its
/// password redacted.
pub async fn queues(
    args: &ConsoleArgs,
    redis_url: &str,
) -> Result<Option<crate::queue::QueueDepths>, ConsoleError> {
    if !args.queue {
        return Ok(None);
    }
    crate::queue::QueueDepths::connect(redis_url, &args.redis_prefix).await.map(Some).map_err(|e| {
        ConsoleError::Redis { url: crate::redact::redact_url(redis_url), message: e.detail() }
    })
}

/// Checks the address, then binds it.
pub async fn bind(addr: SocketAddr, auth: &Auth) -> Result<TcpListener, ConsoleError> {
    check_bind(addr, auth)?;
    TcpListener::bind(addr).await.map_err(|source| ConsoleError::Bind { addr, source })
}

/// What every handler sees.
pub struct Console {
    pub store: Store,
    pub auth: Auth,
    pub limits: Limits,
    /// The pools' Redis queues, when asked for (`--queue`).
    pub queues: Option<crate::queue::QueueDepths>,
}

type Shared = State<Arc<Console>>;

/// The routes, for [`serve`] and for tests.
pub fn router(console: Console) -> Router {
    let console = Arc::new(console);
    let protected = Router::new()
        .route("/", get(pages::pools))
        .route("/accounts", get(pages::accounts))
        .route("/accounts/{id}", get(pages::account))
        .route("/accounts/{id}/pause", post(actions::pause))
        .route("/accounts/{id}/resume", post(actions::resume))
        .route("/groups", get(pages::groups))
        .route("/groups/{id}", get(pages::group))
        .route("/groups/{id}/retry", post(actions::retry))
        .route("/groups/{id}/release", post(actions::release))
        .route("/import", post(actions::import))
        .route("/ready", get(pages::ready))
        .route("/ready.csv", get(pages::ready_csv))
        .route("/activity", get(pages::activity))
        .route("/fragments/tail", get(pages::tail))
        .route("/audit", get(pages::audit))
        .route("/login", get(pages::login))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        // Browsers ask for it on every page; nothing to show, and no 404 in their console.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(middleware::from_fn_with_state(console.clone(), require_read));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .layer(middleware::from_fn(log_and_secure))
        .with_state(console)
}

/// Serves the console on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    console: Console,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let mode = match (console.auth.read_protected(), console.auth.actions_enabled()) {
        (_, true) => "actions with the admin token",
        (true, false) => "read-only, token required",
        (false, false) => "read-only",
    };
    info!(addr = %addr, mode, "console on http://{addr}");
    axum::serve(listener, router(console)).with_graceful_shutdown(shutdown).await
}

/// `smart-joiner console`: binds `args.addr` (refused without the tokens it needs), opens the
/// migrated database, connects the Redis queues with `--queue`, and serves until `stop` is
/// cancelled; the database is closed in every case.
pub async fn run(
    settings: &crate::config::Settings,
    args: ConsoleArgs,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use crate::ops::commands::finish;
    use anyhow::Context as _;
    let auth = auth_from_env()?;
    let listener = bind(args.addr, &auth).await?;
    let store = crate::modes::wiring::open_database(settings).await?;
    let limits =
        Limits { daily_join_cap: settings.daily_join_cap, channel_limit: settings.channel_limit };
    let queues = match queues(&args, settings.redis_url.expose()).await {
        Ok(queues) => queues,
        Err(e) => return finish(store, Err(e.into())).await,
    };
    let console = Console { store: store.clone(), auth, limits, queues };
    let served = serve(listener, console, stop.cancelled_owned()).await;
    finish(store, served.context("the console stopped")).await
}

/// Whether a `Host` header names this machine's loopback (`127.0.0.1`, `[::1]`, `localhost`,
/// with any port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) { h } else { host }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// 401 with a basic-auth challenge unless the request may read; the access is handed on.
///
/// Without a read token (loopback only) a request must also name loopback in `Host`: a page
/// of another site whose name was made to resolve to 127.0.0.1 (DNS rebinding) would
/// otherwise read the console with the browser's help.
async fn require_read(State(c): Shared, mut req: Request, next: Next) -> Response {
    if !c.auth.read_protected() {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !loopback_host(host) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this console answers only to 127.0.0.1, [::1] or localhost without CONSOLE_TOKEN\n",
            )
                .into_response();
        }
    }
    let access = c.auth.access(req.headers());
    if !access.can_read() {
        return unauthorized("a valid CONSOLE_TOKEN (or the admin token) is needed");
    }
    req.extensions_mut().insert(access);
    next.run(req).await
}

pub(crate) fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"smart-joiner console\", charset=\"UTF-8\"")],
        format!("{why}\n"),
    )
        .into_response()
}

/// One log line per request (never a header: no credential reaches a log), and the security
/// headers on every answer.
async fn log_and_secure(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let status = res.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    if path != "/healthz" && path != "/readyz" && path != "/fragments/tail" {
        info!(method = %method, path = %path, status, ms, "console request");
    } else {
        tracing::debug!(method = %method, path = %path, status, ms, "console request");
    }
    res
}

async fn readyz(State(c): Shared) -> Response {
    match tokio::time::timeout(CHECK_TIMEOUT, c.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: database: {e}\n")).into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: database: no answer within {CHECK_TIMEOUT:?}\n"),
        )
            .into_response(),
    }
}

async fn css() -> Response {
    static_file("text/css; charset=utf-8", include_str!("static/console.css"))
}

async fn js() -> Response {
    static_file("text/javascript; charset=utf-8", include_str!("static/console.js"))
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "private, max-age=300")], body)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_served_without_a_read_token() {
        let open = Auth::new(None, None);
        let locked = Auth::new(Some(Secret::new("t".to_owned())), None);
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_bind(lo, &open).is_ok());
        assert!(check_bind(lo6, &open).is_ok());
        let err = check_bind(any, &open).unwrap_err().to_string();
        assert!(err.contains("CONSOLE_TOKEN") && err.contains("0.0.0.0:8080"), "{err}");
        assert!(check_bind(any, &locked).is_ok());
    }

    #[test]
    fn only_loopback_host_names_pass_the_rebinding_check() {
        for ok in ["127.0.0.1:8080", "localhost", "LOCALHOST:80", "[::1]:8080", "127.0.0.2"] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "10.0.0.1:8080", "", "localhost.evil"] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn short_placeholder_and_shared_tokens_are_refused_without_being_shown() {
        let long = "0123456789abcdef0123";
        assert!(check_tokens(None, None).is_ok());
        assert!(check_tokens(Some(long), Some("fedcba9876543210fedc")).is_ok());
        let short = check_tokens(Some("short-token"), None).unwrap_err().to_string();
        assert!(short.contains("CONSOLE_TOKEN") && !short.contains("short-token"), "{short}");
        let placeholder =
            check_tokens(None, Some("CHANGE-ME-admin-token")).unwrap_err().to_string();
        assert!(placeholder.contains("placeholder") && !placeholder.contains("admin-token"));
        let shared = check_tokens(Some(long), Some(long)).unwrap_err().to_string();
        assert!(shared.contains("the same as CONSOLE_TOKEN") && !shared.contains(long));
    }
}
