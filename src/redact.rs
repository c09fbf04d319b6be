//! Error texts fit to print: no password, each cause once.
//!
//! Drivers build their error messages from whatever they were given, and sea-orm quotes a
//! connection string it cannot parse whole, password included. Every error of the store, the
//! queue and the leases therefore passes through here when it is built: URLs lose their
//! password, the password of the URL in use is cut out wherever it appears, and an error chain
//! whose links repeat their source (sea-orm's `DbErr`, `RedisError`) is flattened into one
//! line with each cause once. The resulting error types carry that line and no `source()`, so
//! `{e}` and anyhow's `{e:#}` print the same, once.

use std::error::Error;

/// What replaces a password.
pub const REDACTED: &str = "[redacted]";

/// `url` with its password replaced by `[redacted]`, for messages that name the server.
///
/// A URL the parser rejects is read leniently: everything between the first `:` after
/// `scheme://` and the last `@` goes, which may take more than the password but never less.
pub fn redact_url(url: &str) -> String {
    match credential_span(url) {
        Some((start, end)) => format!("{}{REDACTED}{}", &url[..start], &url[end..]),
        None => url.to_owned(),
    }
}

/// `text` with the credentials of every URL in it (`scheme://user:password@...`) redacted.
/// Needs no knowledge of the URL, so it also covers texts built deep inside a driver.
pub fn scrub_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let after = i + 3;
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        // A URL in a message ends at white space or at the quote around it.
        let end =
            rest.find(|c: char| c.is_whitespace() || "'\"`".contains(c)).unwrap_or(rest.len());
        let token = &rest[..end];
        match lenient_password(token) {
            Some((start, stop)) => {
                out.push_str(&token[..start]);
                out.push_str(REDACTED);
                out.push_str(&token[stop..]);
            }
            None => out.push_str(token),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `text` with the password of `url` removed, wherever and however (raw or percent-decoded) it
/// appears, and with every URL credential redacted.
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = scrub_url_credentials(text);
    for secret in passwords(url) {
        out = out.replace(&secret, REDACTED);
    }
    out
}

/// Holds the passwords a process was configured with, to scrub any text before it is printed:
/// the last line of defence at the places a binary prints an error.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// Remembers the password of `url` (if it has one).
    pub fn url(mut self, url: &str) -> Self {
        self.secrets.extend(passwords(url));
        self
    }

    /// Remembers `secret` itself.
    pub fn secret(mut self, secret: &str) -> Self {
        if !secret.is_empty() {
            self.secrets.push(secret.to_owned());
        }
        self
    }

    /// `text` without any remembered secret or URL credential.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = scrub_url_credentials(text);
        for secret in &self.secrets {
            out = out.replace(secret, REDACTED);
        }
        out
    }
}

/// An error and its causes as one log field: `error = %Chain(&e)` writes what [`flatten`]
/// does, each cause once. `error = %e` would log the outer message alone.
pub struct Chain<'a>(pub &'a dyn Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&flatten(self.0))
    }
}

/// The Display of `err` followed by each of its sources, joined by `": "`, leaving out a source
/// whose text the line already holds (drivers often print their source inside their own
/// message and return it as `source()` as well).
pub fn flatten(err: &dyn Error) -> String {
    let mut line = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

/// Byte range of the password in `url`: from the parser when it accepts the URL, else lenient.
fn credential_span(url: &str) -> Option<(usize, usize)> {
    match url::Url::parse(url) {
        Ok(parsed) => {
            parsed.password()?;
            // The parser accepted it, so the authority ends at the first `/`, `?` or `#`
            // after `scheme://`, and its last `@` ends the user information.
            let start = url.find("://")? + 3;
            let authority_end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
            let at = start + url[start..authority_end].rfind('@')?;
            let colon = start + url[start..at].find(':')?;
            Some((colon + 1, at))
        }
        Err(_) => {
            let start = url.find("://")? + 3;
            let (s, e) = lenient_password(&url[start..])?;
            Some((start + s, start + e))
        }
    }
}

/// In `rest` (what follows `scheme://`), the range between the first `:` of the user
/// information and its last `@`. Taking the last `@` of the whole text may take part of a path
/// too: more is redacted, never less.
fn lenient_password(rest: &str) -> Option<(usize, usize)> {
    let at = rest.rfind('@')?;
    let colon = rest[..at].find(':')?;
    (colon + 1 < at).then_some((colon + 1, at))
}

/// The password of `url` as written and percent-decoded (both may appear in a driver's text).
fn passwords(url: &str) -> Vec<String> {
    let Some((start, end)) = credential_span(url) else { return Vec::new() };
    let raw = &url[start..end];
    let mut all = vec![raw.to_owned()];
    if let Ok(decoded) = percent_decode(raw)
        && decoded != raw
        && !decoded.is_empty()
    {
        all.push(decoded);
    }
    all.retain(|s| !s.is_empty());
    all
}

fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parseable_url_loses_only_its_password() {
        assert_eq!(
            redact_url("postgres://u:secretpw@db:5432/x?sslmode=require"),
            "postgres://u:[redacted]@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:secretpw@127.0.0.1:6379/0"),
            "redis://:[redacted]@127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(
            redact_url("sqlite://smart_joiner.db?mode=rwc"),
            "sqlite://smart_joiner.db?mode=rwc"
        );
        // An `@` later in the URL is not part of the credentials.
        assert_eq!(
            redact_url("postgres://u:p%40ss@db/x?application_name=a@b"),
            "postgres://u:[redacted]@db/x?application_name=a@b"
        );
    }

    #[test]
    fn an_unparseable_url_is_redacted_leniently() {
        assert_eq!(
            redact_url("postgres://u:secretpw@host:99999/db"),
            "postgres://u:[redacted]@host:99999/db"
        );
        assert_eq!(redact_url("postgres://u:secretpw@/db"), "postgres://u:[redacted]@/db");
        // A raw `/` or `@` inside the password: more goes, nothing of it stays.
        let r = redact_url("postgres://u:se/cr@et@host/db");
        assert!(!r.contains("se/cr") && !r.contains("et@host"), "{r}");
    }

    #[test]
    fn credentials_are_scrubbed_from_any_text() {
        let text = "The connection string 'postgres://u:secretpw@host:99999/db' cannot be parsed. \
                    also redis://:other@r:1/ and http://example.com/x";
        let s = scrub_url_credentials(text);
        assert!(!s.contains("secretpw") && !s.contains("other"), "{s}");
        assert!(s.contains("'postgres://u:[redacted]@host:99999/db'"), "{s}");
        assert!(s.contains("http://example.com/x"), "{s}");
    }

    #[test]
    fn the_known_password_is_cut_out_raw_and_decoded() {
        let url = "postgres://u:p%40ss%2Fword@host/db";
        let s = scrub("auth failed for p@ss/word and p%40ss%2Fword", url);
        assert_eq!(s, "auth failed for [redacted] and [redacted]");
        let r = Redactor::default().url(url).secret("hunter2");
        assert_eq!(r.scrub("x p@ss/word hunter2 y"), "x [redacted] [redacted] y");
    }

    #[derive(Debug)]
    struct Link(&'static str, Option<Box<Link>>);
    impl std::fmt::Display for Link {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Link {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn a_chain_that_repeats_its_sources_is_printed_once() {
        let inner = Link("Connection refused (os error 111)", None);
        let mid =
            Link("Connection Error: Connection refused (os error 111)", Some(Box::new(inner)));
        assert_eq!(flatten(&mid), "Connection Error: Connection refused (os error 111)");
        let a = Link("outer", Some(Box::new(Link("inner", None))));
        assert_eq!(flatten(&a), "outer: inner");
    }

    #[test]
    fn a_logged_error_carries_its_causes() {
        let e = Link("hold not extended", Some(Box::new(Link("connection reset", None))));
        assert_eq!(Chain(&e).to_string(), "hold not extended: connection reset");
    }
}
