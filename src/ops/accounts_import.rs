//! `accounts import --from DIR`: a folder of Telethon `.session` files, with their optional
//! `.json` companions (`app_id`, `app_hash`, proxy; the layout session sellers and account
//! managers hand out), turned into an `accounts_config.json`.
//!
//! Each `NAME.session` becomes the entry `NAME`, its session written as a Telethon
//! `string_session` (SmartJoiner's format, so the file stands on its own). `NAME.json`, when
//! present, gives `app_id` / `api_id`, `app_hash` / `api_hash` and `proxy` (a `socks5://` URL,
//! an array `[type, host, port, rdns?, user?, password?]` as Telethon takes it, or an object
//! with `type`, `host`/`addr`, `port`, `username`/`user`, `password`/`pass`); the defaults
//! fill what it lacks. Session files are only read. The result is validated as any accounts
//! file is, and either every file imports or nothing is written: the output is written to a
//! temporary file beside it (owner-only permissions), then renamed over.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::accounts_config::AccountsConfig;
use crate::telegram::session_file;

/// What a companion `.json` may lack.
#[derive(Debug, Clone, Default)]
pub struct ImportDefaults {
    pub api_id: Option<i32>,
    pub api_hash: Option<String>,
}

/// What an import produced.
#[derive(Debug)]
pub struct Imported {
    /// Session names, in file-name order.
    pub names: Vec<String>,
    /// The accounts file's text.
    text: String,
}

/// Why a folder cannot be imported: every problem, by file. No secret in any.
#[derive(Debug, thiserror::Error)]
#[error("cannot import {}: {}", dir.display(), problems.join("; "))]
pub struct ImportError {
    pub dir: PathBuf,
    pub problems: Vec<String>,
}

fn field_str<'a>(map: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| map.get(*n)).filter(|v| !v.is_null())
}

/// Percent-encodes a proxy user or password for the URL.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn proxy_url(value: &Value) -> Result<Option<String>, String> {
    let scheme_ok = |t: &str| matches!(t.to_ascii_lowercase().as_str(), "socks5" | "socks5h" | "2");
    let build = |kind: &str, host: &str, port: u64, user: Option<&str>, pass: Option<&str>| {
        if !scheme_ok(kind) {
            let shown: String = kind.chars().take(20).collect();
            return Err(format!("proxy type {shown:?} is not supported (SOCKS5 only)"));
        }
        let credentials = match (user, pass) {
            (Some(u), Some(p)) if !u.is_empty() => format!("{}:{}@", encode(u), encode(p)),
            (Some(u), None) if !u.is_empty() => format!("{}@", encode(u)),
            _ => String::new(),
        };
        Ok(Some(format!("socks5://{credentials}{host}:{port}")))
    };
    let text = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_owned())),
        Value::Array(a) if a.is_empty() => Ok(None),
        Value::Array(a) => {
            let kind = text(a.first()).ok_or("proxy: the first item is not a type")?;
            let host = text(a.get(1)).ok_or("proxy: no host")?;
            let port = a.get(2).and_then(|p| p.as_u64().or_else(|| p.as_str()?.parse().ok()));
            let port = port.ok_or("proxy: no port")?;
            // [type, host, port, rdns, user, pass]; rdns may be left out.
            let rest: Vec<&Value> = a.iter().skip(3).skip_while(|v| v.is_boolean()).collect();
            let user = text(rest.first().copied());
            let pass = text(rest.get(1).copied());
            build(&kind, &host, port, user.as_deref(), pass.as_deref())
        }
        Value::Object(m) => {
            let kind = text(field_str(m, &["type", "scheme", "proxy_type"]))
                .unwrap_or_else(|| "socks5".to_owned());
            let host =
                text(field_str(m, &["host", "addr", "hostname", "ip"])).ok_or("proxy: no host")?;
            let port = field_str(m, &["port"])
                .and_then(|p| p.as_u64().or_else(|| p.as_str()?.parse().ok()))
                .ok_or("proxy: no port")?;
            let user = text(field_str(m, &["username", "user", "login"]));
            let pass = text(field_str(m, &["password", "pass"]));
            build(&kind, &host, port, user.as_deref(), pass.as_deref())
        }
        _ => Err("proxy: expected a URL, an array or an object".to_owned()),
    }
}

/// Reads every `.session` file of `dir` (not its subfolders) into an accounts file's text.
pub fn import_dir(dir: &Path, defaults: &ImportDefaults) -> Result<Imported, ImportError> {
    let refuse = |problems: Vec<String>| ImportError { dir: dir.to_owned(), problems };
    let listing = std::fs::read_dir(dir).map_err(|e| refuse(vec![e.to_string()]))?;
    let mut files: Vec<PathBuf> = listing
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "session") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(refuse(vec!["it holds no .session file".to_owned()]));
    }
    let mut problems = Vec::new();
    let mut entries = Vec::new();
    let mut names = Vec::new();
    for file in &files {
        let shown = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(name) = file.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            problems.push(format!("{shown}: the file name is not UTF-8"));
            continue;
        };
        let companion = file.with_extension("json");
        let meta: Map<String, Value> = if companion.is_file() {
            let parsed = std::fs::read_to_string(&companion)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()));
            match parsed {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    problems.push(format!("{name}.json: expected a JSON object"));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{name}.json: {e}"));
                    continue;
                }
            }
        } else {
            Map::new()
        };
        // Every problem of the file, not only the first.
        let session = session_file::read(file)
            .map_err(|e| problems.push(format!("{shown}: {}", e.problem)))
            .ok();
        let api_id = match (field_str(&meta, &["app_id", "api_id"]), defaults.api_id) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(id)) => Some(json!(id)),
            (None, None) => {
                problems.push(format!("{shown}: no app_id in {name}.json and no --api-id given"));
                None
            }
        };
        let api_hash = match (field_str(&meta, &["app_hash", "api_hash"]), &defaults.api_hash) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(hash)) => Some(json!(hash)),
            (None, None) => {
                problems
                    .push(format!("{shown}: no app_hash in {name}.json and no --api-hash given"));
                None
            }
        };
        let proxy = match field_str(&meta, &["proxy"]).map(proxy_url).transpose() {
            Ok(p) => Some(p.flatten()),
            Err(e) => {
                problems.push(format!("{name}.json: {e}"));
                None
            }
        };
        let (Some(session), Some(api_id), Some(api_hash), Some(proxy)) =
            (session, api_id, api_hash, proxy)
        else {
            continue;
        };
        entries.push(json!({
            "session_name": name,
            "api_id": api_id,
            "api_hash": api_hash,
            "string_session": session.encode(),
            "proxy": proxy,
        }));
        names.push(name);
    }
    if !problems.is_empty() {
        return Err(refuse(problems));
    }
    let text = serde_json::to_string_pretty(&Value::Array(entries))
        .map_err(|e| refuse(vec![e.to_string()]))?;
    // Every rule of an accounts file (names, api_hash, proxies, one session per name).
    if let Err(e) = AccountsConfig::parse(&text) {
        return Err(refuse(vec![e.to_string()]));
    }
    Ok(Imported { names, text: text + "\n" })
}

impl Imported {
    /// Writes the accounts file: refused when `path` exists unless `overwrite`; written whole
    /// (a temporary file beside it, owner-only, synced, then renamed) or not at all.
    pub fn write(&self, path: &Path, overwrite: bool) -> std::io::Result<()> {
        if path.exists() && !overwrite {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists (pass --force to replace it)", path.display()),
            ));
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        tmp.write_all(self.text.as_bytes())?;
        tmp.as_file().sync_all()?;
        // Without overwrite, a file that appeared meanwhile (another import) is not replaced.
        if overwrite {
            tmp.persist(path).map_err(|e| e.error)?;
        } else {
            tmp.persist_noclobber(path).map_err(|e| e.error)?;
        }
        Ok(())
    }

    /// The accounts file's text (it holds sessions: a secret).
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_in_every_companion_shape_become_socks5_urls() {
        let cases = [
            (json!("socks5://u:p@1.2.3.4:1080"), Some("socks5://u:p@1.2.3.4:1080")),
            (
                json!(["socks5", "1.2.3.4", 1080, true, "u", "p@ss"]),
                Some("socks5://u:p%40ss@1.2.3.4:1080"),
            ),
            (json!([2, "1.2.3.4", "1080", "u", "p"]), Some("socks5://u:p@1.2.3.4:1080")),
            (
                json!({"type": "SOCKS5", "addr": "h.example", "port": 1080}),
                Some("socks5://h.example:1080"),
            ),
            (
                json!({"host": "h", "port": 9, "username": "a", "password": "b"}),
                Some("socks5://a:b@h:9"),
            ),
            (json!(null), None),
            (json!([]), None),
        ];
        for (value, want) in cases {
            assert_eq!(proxy_url(&value).unwrap().as_deref(), want, "{value}");
        }
        let e = proxy_url(&json!(["http", "h", 8080, "u", "secret"])).unwrap_err();
        assert!(e.contains("\"http\" is not supported") && !e.contains("secret"), "{e}");
    }
}
