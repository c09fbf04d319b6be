//! Fuzz checks of every parser that reads outside input: target links, target files, entries of
//! `accounts_config.json`, session strings, the settings (durations, counts, URLs), active hours,
//! folder links, and tgsim's transport and TL decoding.
//!
//! Each check takes arbitrary bytes, runs the parser the program runs, and panics only when a
//! property is broken: the parser panicked, an error does not say what is wrong, an error or a
//! `Debug` quotes a secret of the input, or what was accepted does not survive a round trip.
//! The libFuzzer targets in `fuzz/fuzz_targets/` are one line each, calling [`TARGETS`]; the
//! unit test at the bottom replays every committed seed and reproducer in `fuzz/corpus/` and
//! `fuzz/artifacts/` through the same functions, so a regression fails `cargo test` without
//! cargo-fuzz. See `fuzz/README.md`.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use serde_json::Value;

use crate::accounts_config::{AccountsConfig, AccountsConfigError};
use crate::config::Settings;
use chrono::{DateTime, Utc};

use crate::domain::{ActiveHours, FolderLink, LinkError, TargetLink};
use crate::ops::targets_file::{parse_targets, shown_line};
use crate::telegram::session::TelethonSession;

/// A fuzz check: arbitrary bytes in, a panic only when a property is broken.
pub type Check = fn(&[u8]);

/// Every fuzz target: its name (the file `fuzz/fuzz_targets/{name}.rs` and the directories
/// `fuzz/corpus/{name}/`, `fuzz/artifacts/{name}/`) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("target_link", target_link),
    ("targets_file", targets_file),
    ("accounts_config", accounts_config),
    ("session", session),
    ("session_file", session_file),
    ("settings", settings),
    ("active_hours", active_hours),
    ("folder_link", folder_link),
    ("tgsim_frames", tgsim::fuzzing::frames),
    ("tgsim_packet", tgsim::fuzzing::packet),
];

/// Session string formats the program reads: a new format is one more line here.
fn session_formats(text: &str) {
    session_format("telethon", text, TelethonSession::decode, TelethonSession::encode);
    // Any format (Telethon, GramJS, Pyrogram's three layouts), told apart by its bytes; the
    // session it yields is kept as a Telethon string, which must read back the same.
    session_format("any", text, decode_any_session, TelethonSession::encode);
}

fn decode_any_session(
    text: &str,
) -> Result<TelethonSession, crate::telegram::session_import::ImportError> {
    crate::telegram::session_import::decode_string(text).map(|(session, _)| session)
}

/// Telethon `.session` files, read from their bytes (a SQLite file parsed by hand): no panic
/// whatever the bytes, a refusal says why, and an accepted file's session encodes to a string
/// that decodes the same.
pub fn session_file(data: &[u8]) {
    match crate::telegram::session_file::parse(data) {
        Ok(session) => {
            let again = TelethonSession::decode(&session.encode());
            assert!(
                again.as_ref().is_ok_and(|s| *s == session),
                "a session read from a file encodes to one that decodes the same: {again:?}"
            );
        }
        Err(problem) => assert_names_a_problem(&problem),
    }
}

/// `TargetLink::parse`: an accepted link is normalised once and for all (its stored form loads
/// back as the same link, and parses back to it unless it reads as a phone number link, see
/// below); a refused one says why, and a service link is shown only up to the word that says
/// what it is.
pub fn target_link(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match TargetLink::parse(text) {
        Ok(link) => {
            let stored = link.to_string();
            assert_eq!(
                TargetLink::from_stored(link.kind(), &stored).as_ref(),
                Ok(&link),
                "the stored form loads back"
            );
            // `t.me/joinchat/1234567` is an invite hash of digits; its normalised spelling
            // `t.me/+1234567` is a phone number link when pasted again. Stored rows load
            // through `from_stored`, so only a re-import would see the difference.
            match TargetLink::parse(&stored) {
                Ok(again) => assert_eq!(again, link, "the normalised form parses to itself"),
                Err(LinkError::ServiceLink { .. }) if link.value().len() >= 7 => {}
                Err(e) => panic!("the normalised form {stored:?} does not parse: {e}"),
            }
        }
        Err(e) => {
            assert_names_a_problem(&e);
            if let LinkError::ServiceLink { link, .. } = &e {
                let original = text.trim();
                let shown = link.strip_suffix("...").unwrap_or(link);
                assert!(
                    link == original
                        || (shown.len() < original.len() && original.starts_with(shown)),
                    "a service link is shown only up to its word: {link:?} of {original:?}"
                );
            }
        }
    }
}

/// `parse_targets`: every non-blank line is a link, a duplicate or a rejection naming the
/// problem, with its right line number, and a rejected service link is never printed.
pub fn targets_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = parse_targets(text);
    let lines = text.lines().count();
    let mut numbers: Vec<usize> = file.links.iter().map(|(n, _)| *n).collect();
    numbers.extend(&file.duplicate_lines);
    numbers.extend(file.rejected.iter().map(|(n, _, _)| *n));
    numbers.sort_unstable();
    let before = numbers.len();
    numbers.dedup();
    assert_eq!(before, numbers.len(), "a line is counted once");
    assert!(numbers.iter().all(|&n| (1..=lines).contains(&n)), "line numbers are in the file");
    let mut seen = std::collections::HashSet::new();
    assert!(file.links.iter().all(|(_, l)| seen.insert(l.clone())), "links are unique");
    for (_, line, why) in &file.rejected {
        assert_names_a_problem(why);
        let shown = shown_line(line, why);
        if matches!(why, LinkError::ServiceLink { .. }) {
            assert_eq!(shown, "(line not shown)");
        }
    }
}

/// `AccountsConfig::parse` and `parse_lenient` agree; every problem names its entry and field;
/// no error and no `Debug` quotes an `api_hash`, a `string_session` or a proxy password.
pub fn accounts_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let strict = AccountsConfig::parse(text);
    let lenient = AccountsConfig::parse_lenient(text);
    match (&strict, &lenient) {
        (Ok(config), Ok((kept, errors))) => {
            assert!(errors.is_empty(), "strict loading took a file lenient loading faults");
            assert_eq!(config.session_names(), kept.session_names());
        }
        (Err(AccountsConfigError::Entries(all)), Ok((_, errors))) => {
            assert_eq!(all, errors, "both loadings find the same problems");
            assert!(!all.is_empty(), "a refused file has a problem");
            for e in all {
                assert!(!e.problem.is_empty(), "an entry problem says what is wrong: {e}");
            }
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "both loadings refuse the file alike");
            assert_names_a_problem(a);
        }
        (a, b) => panic!("strict and lenient loading disagree: {a:?} / {b:?}"),
    }

    // Secrets, by field, for the first few entries (each check parses the file twice more).
    let Ok(Value::Array(entries)) =
        serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}'))
    else {
        return;
    };
    let outputs = |entries: &[Value]| {
        let text = Value::Array(entries.to_vec()).to_string();
        let mut out = match AccountsConfig::parse(&text) {
            Ok(config) => format!("{config:?}"),
            Err(e) => format!("{e} {e:?}"),
        };
        if let Ok((config, errors)) = AccountsConfig::parse_lenient(&text) {
            out.push_str(&format!(" {config:?} {errors:?}"));
            for name in config.session_names() {
                out.push_str(config.rejection(&name).unwrap_or_default());
            }
        }
        Some(out)
    };
    for (index, entry) in entries.iter().enumerate().take(4) {
        for field in ["api_hash", "string_session"] {
            if let Some(Value::String(secret)) = entry.get(field) {
                assert_not_echoed(secret, field, |replacement| {
                    let mut changed = entries.clone();
                    changed[index][field] = Value::String(replacement.to_owned());
                    outputs(&changed)
                });
            }
        }
        if let Some(Value::String(proxy)) = entry.get("proxy")
            && let Some(span) = password_span(proxy)
        {
            assert_not_echoed(&proxy[span.clone()], "proxy password", |replacement| {
                let mut changed = entries.clone();
                let url = format!("{}{replacement}{}", &proxy[..span.start], &proxy[span.end..]);
                changed[index]["proxy"] = Value::String(url);
                outputs(&changed)
            });
        }
    }
}

/// Session strings, in every format of `session_formats`.
pub fn session(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    session_formats(text);
}

/// One session format: an accepted string encodes back to one that decodes to the same
/// session; a refused one says why without quoting the string.
fn session_format<S, E>(
    format: &str,
    text: &str,
    decode: fn(&str) -> Result<S, E>,
    encode: fn(&S) -> String,
) where
    S: PartialEq + fmt::Debug,
    E: fmt::Display + fmt::Debug,
{
    match decode(text) {
        Ok(session) => {
            let again = decode(&encode(&session));
            assert!(
                again.as_ref().is_ok_and(|s| *s == session),
                "a {format} session encodes to one that decodes the same: {again:?}"
            );
            assert_not_echoed(text.trim(), "session string", |s| {
                decode(s).ok().map(|s| format!("{s:?}"))
            });
        }
        Err(e) => {
            assert_names_a_problem(&e);
            assert_not_echoed(text.trim(), "session string", |s| {
                decode(s).err().map(|e| format!("{e} {e:?}"))
            });
        }
    }
}

/// The variables [`settings`] reads, one `NAME=value` per line of the input.
const SETTINGS_VARS: &[&str] = &[
    "DATABASE_URL",
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "REDIS_URL",
    "ACCOUNTS_CONFIG",
    "JOIN_PAUSE_MIN",
    "JOIN_PAUSE_MAX",
    "ERROR_PAUSE",
    "FLOOD_WAIT_THRESHOLD",
    "WARMUP",
    "PEER_FLOOD_COOLDOWN",
    "IN_DOUBT_MAX_TRIES",
    "DAILY_JOIN_CAP",
    "CHANNEL_LIMIT",
    "LEASE_TTL",
    "CALL_TIMEOUT",
    "LOG_FORMAT",
    "LOG_DIR",
];

/// `Settings::from_env_lookup`, with the variables given as `NAME=value` lines: valid settings
/// keep their cross-field rules; every problem names its variable; no error and no `Debug`
/// quotes a database or Redis URL, a URL's password or POSTGRES_PASSWORD.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let vars: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| SETTINGS_VARS.contains(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let load = |vars: &HashMap<String, String>| Settings::from_env_lookup(|k| vars.get(k).cloned());
    match load(&vars) {
        Ok(s) => {
            let p = &s.pacing;
            assert!(p.join_pause_min <= p.join_pause_max, "{s:?}");
            assert!(!s.call_timeout.is_zero(), "{s:?}");
            assert!(s.lease_ttl >= s.call_timeout.saturating_mul(2), "{s:?}");
            assert!(s.daily_join_cap >= 1 && s.channel_limit >= 1 && p.in_doubt_max_tries >= 1);
        }
        Err(e) => {
            assert!(!e.problems().is_empty(), "a refusal lists a problem");
            for p in e.problems() {
                assert!(
                    SETTINGS_VARS.iter().any(|v| p.contains(v)),
                    "a problem names its variable: {p}"
                );
            }
        }
    }
    let output = |vars: &HashMap<String, String>| {
        Some(match load(vars) {
            Ok(s) => format!("{s:?}"),
            Err(e) => format!("{e} {e:?}"),
        })
    };
    for var in ["DATABASE_URL", "REDIS_URL", "POSTGRES_PASSWORD"] {
        let Some(value) = vars.get(var) else { continue };
        assert_not_echoed(value, var, |replacement| {
            let mut changed = vars.clone();
            changed.insert(var.to_owned(), replacement.to_owned());
            output(&changed)
        });
        if var != "POSTGRES_PASSWORD"
            && let Some(span) = password_span(value)
        {
            assert_not_echoed(&value[span.clone()], "URL password", |replacement| {
                let mut changed = vars.clone();
                let url = format!("{}{replacement}{}", &value[..span.start], &value[span.end..]);
                changed.insert(var.to_owned(), url);
                output(&changed)
            });
        }
    }
}

/// `ActiveHours::parse` (`ACTIVE_HOURS`, `accounts hours`): an accepted text is written back in
/// a form that parses to the same hours and is written the same again; a refusal names the
/// problem; the accepted hours answer `is_open` and `next_open` without a panic around a
/// clock change, the next opening is never before the moment asked about, and the hours are
/// open at a moment exactly when the next opening is that moment.
pub fn active_hours(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ActiveHours::parse(text) {
        Ok(hours) => {
            let written = hours.to_string();
            let again = ActiveHours::parse(&written);
            assert_eq!(again.as_ref(), Ok(&hours), "{written:?} parses back to the same hours");
            assert_eq!(again.map(|h| h.to_string()), Ok(written.clone()), "written the same");
            // A day with a clock change in Europe and America, and an ordinary one.
            let account = data.iter().fold(0i64, |a, b| a.wrapping_mul(31) ^ i64::from(*b));
            for at in ["2026-03-29T00:30:00Z", "2026-11-01T06:59:59Z", "2026-07-14T12:00:00Z"] {
                let at = DateTime::parse_from_rfc3339(at).map(|t| t.with_timezone(&Utc));
                let Ok(at) = at else { unreachable!("a valid instant") };
                let opens = hours.next_open(account, at);
                assert!(opens >= at, "{written}: opens at {opens}, before {at}");
                let open_now = hours.is_open(account, at);
                assert_eq!(open_now, opens == at, "{written}: is_open and next_open agree at {at}");
            }
        }
        Err(e) => assert_names_a_problem(&e),
    }
}

/// `FolderLink::parse` (folder links in target files): an accepted link has a slug of 1 to 64
/// letters, digits, `-` and `_`, taken from the input as written (its case kept), and its
/// written form `t.me/addlist/SLUG` parses back to the same folder.
pub fn folder_link(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(folder) = FolderLink::parse(text) else { return };
    let slug = folder.slug();
    assert!(
        (1..=64).contains(&slug.len())
            && slug.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "a valid slug: {slug:?}"
    );
    assert!(text.contains(slug), "the slug {slug:?} is cut from the input as written");
    let written = folder.to_string();
    assert_eq!(FolderLink::parse(&written), Some(folder.clone()), "{written:?} parses back");
}

/// An error's text is not empty and is more than punctuation.
fn assert_names_a_problem(e: &(impl fmt::Display + fmt::Debug)) {
    let text = e.to_string();
    assert!(
        text.chars().filter(|c| c.is_alphabetic()).count() >= 3,
        "an error names the problem, got {text:?} from {e:?}"
    );
}

/// Where the password of `user:password@host` is in a URL (or URL-like text): after the first
/// `:` that follows the scheme's `://` (or the start), up to the last `@`.
fn password_span(url: &str) -> Option<Range<usize>> {
    let at = url.rfind('@')?;
    let from = url.find("://").filter(|&i| i < at).map_or(0, |i| i + 3);
    let colon = url[from..at].find(':')? + from + 1;
    (colon < at).then_some(colon..at)
}

/// Panics if `output(secret)` quotes `secret` because of the secret itself: the text is also
/// produced with the secret replaced by another of the same shape ([`swapped`]), and if the
/// secret then disappears from it, it was echoed. (A secret that is also fixed wording of the
/// message, or the value of another field, stays and is no leak.) Secrets shorter than 6
/// characters are not checked: they are found in too many texts by chance.
fn assert_not_echoed(secret: &str, what: &str, output: impl Fn(&str) -> Option<String>) {
    if secret.chars().count() < 6 {
        return;
    }
    let alt = swapped(secret);
    if alt.to_lowercase() == secret.to_lowercase() {
        return;
    }
    // Compared without case: a parser may lowercase what it quotes (a scheme, a host).
    let secret_lc = secret.to_lowercase();
    let quotes = |text: &str| text.to_lowercase().contains(&secret_lc);
    let Some(text) = output(secret) else { return };
    if !quotes(&text) {
        return;
    }
    let stays = output(&alt).is_some_and(|t| quotes(&t));
    assert!(stays, "the {what} is quoted in the output: {text}");
}

/// Another text of the same shape: each digit, hex letter and other letter replaced by another
/// of its class, so validation takes the same branches as often as possible.
fn swapped(s: &str) -> String {
    fn rot(c: char, first: char, len: u32, by: u32) -> char {
        char::from_u32(first as u32 + (c as u32 - first as u32 + by) % len).unwrap_or(c)
    }
    s.chars()
        .map(|c| match c {
            '0'..='9' => rot(c, '0', 10, 5),
            'a'..='f' => rot(c, 'a', 6, 3),
            'A'..='F' => rot(c, 'A', 6, 3),
            'g'..='z' => rot(c, 'g', 20, 10),
            'G'..='Z' => rot(c, 'G', 20, 10),
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fuzz_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut files: Vec<_> = entries
            .map(|e| e.expect("a readable directory entry").path())
            .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
            .collect();
        files.sort();
        files
    }

    /// The regression suite: every committed seed and every committed reproducer of a past
    /// crash goes through its target's check.
    #[test]
    fn every_committed_seed_and_reproducer_passes_its_target_check() {
        let mut failures = Vec::new();
        for (name, check) in TARGETS {
            let seeds = files_in(&fuzz_dir().join("corpus").join(name));
            assert!(!seeds.is_empty(), "fuzz target {name} has no seeds in fuzz/corpus/{name}/");
            let crashes = files_in(&fuzz_dir().join("artifacts").join(name));
            for file in seeds.iter().chain(&crashes) {
                let data = std::fs::read(file).expect("a readable file");
                if std::panic::catch_unwind(|| check(&data)).is_err() {
                    failures.push(file.display().to_string());
                }
            }
        }
        assert!(failures.is_empty(), "inputs failing their fuzz check: {failures:#?}");
    }

    #[test]
    fn every_fuzz_target_file_is_a_listed_target_and_the_reverse() {
        let mut files: Vec<String> = files_in(&fuzz_dir().join("fuzz_targets"))
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        files.sort();
        let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
        listed.sort();
        assert_eq!(files, listed);
    }

    #[test]
    fn an_echoed_secret_is_caught_and_fixed_wording_is_not_taken_for_one() {
        let echo = |s: &str| Some(format!("bad value {s}"));
        let caught = std::panic::catch_unwind(|| assert_not_echoed("hunter22", "password", echo));
        assert!(caught.is_err());
        let fixed = |_: &str| Some("expected a password like hunter22".to_owned());
        assert_not_echoed("hunter22", "password", fixed);
    }

    #[test]
    fn password_spans_are_found_in_urls_and_in_url_like_text() {
        let at = |url: &'static str| password_span(url).map(|r| &url[r]);
        assert_eq!(at("socks5://user:pw:x@host:1"), Some("pw:x"));
        assert_eq!(at("postgres://u:p@ss@h/db"), Some("p@ss"));
        assert_eq!(at("user:secret@host://"), Some("secret"));
        assert_eq!(at("redis://host:6379"), None);
        assert_eq!(at("redis://user@host"), None);
    }
}
