//! SmartJoiner's `accounts_config.json`: the Telegram accounts of the pool, with their
//! Telethon session strings and optional SOCKS5 proxies.
//!
//! ```json
//! [
//!   {
//!     "session_name": "acc_1",
//!     "api_id": 123456,
//!     "api_hash": "0123456789abcdef0123456789abcdef",
//!     "string_session": "1BVts...",
//!     "proxy": "socks5://user:pass@10.0.0.1:1080"
//!   }
//! ]
//! ```
//!
//! The file is loaded whole or not at all: [`AccountsConfig::parse`] checks every entry and
//! either returns all accounts or one [`AccountsConfigError`] listing every problem of the file,
//! each naming the entry (its zero-based position, as `jq '.[3]'` addresses it, and its
//! `session_name` when known) and the field.
//!
//! Rules, beyond the field types:
//! - `session_name`: the key of the account in the database, kept exactly as written: letters
//!   of any script, digits, spaces, `+` and punctuation are all fine (`acc_1`, `+380501234567`,
//!   `Оля 2`, `josé`). Refused: an empty name; more than 128 characters or more than 247 bytes
//!   of UTF-8 (SmartJoiner-family tools keep the session in `sessions/{name}.session`, and a file
//!   name has at most 255 bytes); control characters (U+0000-U+001F, U+007F-U+009F); `/` and
//!   `\`, and `.` or `..` as the whole name, for the same file name; whitespace at the start or
//!   the end, refused rather than trimmed, because the name must be the same key wherever it is
//!   written and a trailing space is invisible in most editors.
//!   Names must be unique in the file, compared exactly as the database's unique key compares
//!   them: `Acc` and `acc` are two accounts, and so are one text in two Unicode normalisation
//!   forms (no normalisation is applied). Print a name through [`display_name`].
//! - `api_id`: an integer from 1 to 2147483647, as a JSON number or as a string of ASCII digits
//!   (`"123456"`, as some tools write it; no sign, no spaces).
//! - `api_hash`: exactly 32 lowercase hexadecimal characters, as my.telegram.org issues it.
//!   SmartJoiner did not check it; we do, because it is only used to log in, so a mangled value
//!   (a truncated paste, the api_id in the wrong field) would otherwise go unnoticed until the
//!   day it is needed. An error about it never echoes the value.
//! - `string_session`: a session string in Telethon, GramJS or Pyrogram format (any of its three
//!   layouts), told apart by its bytes (see [`crate::telegram::session_import`]). When it is
//!   absent, `null` or empty: `session_file`, the path of a Telethon `.session` file (see
//!   [`crate::telegram::session_file`]; only ever read), else `sessions/{session_name}.session`
//!   when that file exists, as SmartJoiner-family tools fall back to. Relative paths are read
//!   from the directory of the accounts file. An error names the format the session was read
//!   as.
//! - `proxy`: absent, `null` or `""` for a direct connection, else
//!   `socks5://[user[:password]@]host:port`. grammers speaks SOCKS5 only. `socks5h://` is
//!   accepted as a synonym: the `h` asks the proxy to resolve the destination's name, and our
//!   destinations are always IP addresses from the session, so both mean the same here. User
//!   and password may be percent-encoded in the file; once decoded they must consist of ASCII
//!   letters, digits and `!$%&'()*+,-._~`, because grammers hands the proxy the user and
//!   password exactly as they appear in its URL, and any other character would appear there
//!   percent-encoded.
//!
//! Unknown fields are ignored, so files carrying extra SmartJoiner fields still load. A UTF-8
//! byte order mark at the start of the file, as Windows editors write it, is skipped.
//! `api_hash`, the session's auth key and the proxy password never appear in `Debug` or
//! `Display` output, of the configuration or of any error.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::Secret;
use crate::telegram::session::TelethonSession;
use crate::telegram::session_file;
use crate::telegram::session_import::decode_string;

/// Longest session name, in characters.
const NAME_MAX_CHARS: usize = 128;

/// Longest session name in bytes of UTF-8: `{name}.session` must fit in a file name, at most
/// 255 bytes on common file systems.
const NAME_MAX_BYTES: usize = 255 - ".session".len();

/// A session name as it may be printed in a log or a message: characters that would hide or
/// disguise part of it are escaped like Rust's `escape_debug` (`\n`, `\u{7}`, `\u{202e}`),
/// as is `\` so that an escape is never ambiguous; letters of any script, spaces and
/// punctuation are left as they are.
///
/// Valid names contain neither control characters nor `\`, so in them only invisible format
/// characters (a zero-width space, bidirectional controls) are ever escaped; but names of
/// invalid entries are printed in errors too, and those may contain anything.
pub fn display_name(name: &str) -> impl fmt::Display + '_ {
    DisplayName(name)
}

struct DisplayName<'a>(&'a str);

impl fmt::Display for DisplayName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for c in self.0.chars() {
            if c.is_control() || c == '\\' || is_invisible_format(c) {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Format characters that print as nothing, break the line, or reorder the text around them
/// (a right-to-left override would make the rest of a log line read backwards). The zero-width
/// (non-)joiners are left out: scripts such as Persian and emoji sequences need them.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{200E}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// One account of the pool.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// The account's unique name; the key into the `accounts` table.
    pub session_name: String,
    /// The Telegram API id the session was created with (sent in every `initConnection`).
    pub api_id: i32,
    /// The Telegram API hash belonging to `api_id`; only needed to log in.
    pub api_hash: Secret<String>,
    /// The decoded session: home DC, its address and the auth key.
    pub session: TelethonSession,
    /// SOCKS5 proxy the account connects through, if any.
    pub proxy: Option<ProxyConfig>,
}

/// A SOCKS5 proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// Port, never 0.
    pub port: u16,
    /// User name for the proxy, decoded.
    pub username: Option<String>,
    /// Password for the proxy, decoded.
    pub password: Option<Secret<String>>,
}

impl ProxyConfig {
    /// The proxy as the `socks5://[user[:password]@]host:port` URL grammers'
    /// `ConnectionParams::proxy_url` wants. Secret, because it carries the password.
    pub fn url(&self) -> Secret<String> {
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let credentials = match (&self.username, &self.password) {
            (Some(user), Some(password)) => format!("{user}:{}@", password.expose()),
            (Some(user), None) => format!("{user}@"),
            (None, _) => String::new(),
        };
        Secret::new(format!("socks5://{credentials}{host}:{}", self.port))
    }
}

/// The whole accounts file, validated.
#[derive(Debug, Clone, Default)]
pub struct AccountsConfig {
    accounts: Vec<AccountConfig>,
    /// Lenient loading only: entries left out, by session name, with the first problem found.
    rejected: HashMap<String, String>,
}

impl AccountsConfig {
    /// Reads and parses the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AccountsConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|error| AccountsConfigError::Io { path: path.to_owned(), error })?;
        Self::parse_in(&text, base_dir(path))
    }

    /// Reads the file at `path` like [`load`](Self::load), but keeps the valid entries when
    /// some are invalid: the running system goes on with the good accounts, and each bad one
    /// ends as an account-level outcome naming its problem ([`rejection`](Self::rejection)).
    /// A file that is not a JSON array of objects is still refused whole.
    pub fn load_lenient(
        path: impl AsRef<Path>,
    ) -> Result<(Self, Vec<EntryError>), AccountsConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|error| AccountsConfigError::Io { path: path.to_owned(), error })?;
        Self::parse_lenient_in(&text, base_dir(path))
    }

    /// See [`load_lenient`](Self::load_lenient).
    ///
    /// An entry whose `session_name` is itself unusable (empty, too long, a control character,
    /// ...) is only reported: its name cannot be an account's key, in the database or anywhere.
    pub fn parse_lenient(text: &str) -> Result<(Self, Vec<EntryError>), AccountsConfigError> {
        Self::parse_lenient_in(text, Path::new(""))
    }

    /// [`parse_lenient`](Self::parse_lenient), with session files relative to `base`.
    pub fn parse_lenient_in(
        text: &str,
        base: &Path,
    ) -> Result<(Self, Vec<EntryError>), AccountsConfigError> {
        match Self::parse_entries(text, base)? {
            Entries { accounts, errors, .. } if errors.is_empty() => {
                Ok((Self { accounts, rejected: HashMap::new() }, errors))
            }
            Entries { accounts, errors, bad_name } => {
                let mut rejected = HashMap::new();
                for e in &errors {
                    if let Some(name) = &e.session_name
                        && !bad_name.contains(&e.index)
                        && !accounts.iter().any(|a| &a.session_name == name)
                    {
                        rejected
                            .entry(name.clone())
                            .or_insert_with(|| format!("field {}: {}", e.field, e.problem));
                    }
                }
                Ok((Self { accounts, rejected }, errors))
            }
        }
    }

    /// Session names of every entry that has a usable one: the loaded accounts, then those
    /// lenient loading left out (they still get a database row, so their problem shows up
    /// there).
    pub fn session_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.accounts.iter().map(|a| a.session_name.clone()).collect();
        let mut rejected: Vec<&String> = self.rejected.keys().collect();
        rejected.sort();
        names.extend(rejected.into_iter().cloned());
        names
    }

    /// Why the entry named `session_name` was left out by lenient loading.
    pub fn rejection(&self, session_name: &str) -> Option<&str> {
        self.rejected.get(session_name).map(String::as_str)
    }

    /// Parses the text of an accounts file. Never panics, whatever the input.
    ///
    /// Relative `session_file` paths and the `sessions/{session_name}.session` fallback are
    /// read from the current directory; [`load`](Self::load) reads them from the file's own
    /// directory.
    pub fn parse(text: &str) -> Result<Self, AccountsConfigError> {
        Self::parse_in(text, Path::new(""))
    }

    /// [`parse`](Self::parse), with session files relative to `base`.
    pub fn parse_in(text: &str, base: &Path) -> Result<Self, AccountsConfigError> {
        match Self::parse_entries(text, base)? {
            Entries { accounts, errors, .. } if errors.is_empty() => {
                Ok(Self { accounts, rejected: HashMap::new() })
            }
            Entries { errors, .. } => Err(AccountsConfigError::Entries(errors)),
        }
    }

    /// Every valid entry and every problem of the others.
    fn parse_entries(text: &str, base: &Path) -> Result<Entries, AccountsConfigError> {
        // Windows editors (Notepad among them) save UTF-8 with a byte order mark, which JSON
        // does not allow; it carries no meaning, so it is skipped.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let value: Value = serde_json::from_str(text).map_err(|e| AccountsConfigError::Json {
            line: e.line(),
            column: e.column(),
            message: json_message(&e),
        })?;
        let Value::Array(entries) = value else {
            return Err(AccountsConfigError::NotAnArray { found: kind(&value) });
        };

        let mut errors = Vec::new();
        let mut accounts = Vec::with_capacity(entries.len());
        let mut first_index_of: HashMap<String, usize> = HashMap::new();
        // One session under two names would be two accounts to the pool, each with its own
        // hold, and their two connections would kill the session (AUTH_KEY_DUPLICATED).
        let mut first_with_key: HashMap<[u8; crate::telegram::session::AUTH_KEY_LEN], usize> =
            HashMap::new();
        let mut bad_name = HashSet::new();
        for (index, entry) in entries.iter().enumerate() {
            let before = errors.len();
            let account = parse_entry(index, entry, base, &mut errors);
            if errors[before..].iter().any(|e| e.field == "session_name") {
                bad_name.insert(index);
            }
            if let Some(account) = account {
                if let Some(&first) = first_index_of.get(&account.session_name) {
                    errors.push(EntryError {
                        index,
                        session_name: Some(account.session_name.clone()),
                        field: "session_name",
                        problem: format!("duplicate: entry {first} has the same session_name"),
                    });
                } else {
                    first_index_of.insert(account.session_name.clone(), index);
                }
                if let Some(&first) = first_with_key.get(account.session.auth_key()) {
                    errors.push(EntryError {
                        index,
                        session_name: Some(account.session_name.clone()),
                        field: "string_session",
                        problem: format!(
                            "the same session (auth key) as entry {first}: one session under two \
                             names would be connected twice at once, which kills it"
                        ),
                    });
                } else if errors.len() == before {
                    first_with_key.insert(*account.session.auth_key(), index);
                }
                if errors.len() == before {
                    accounts.push(account);
                }
            }
        }
        Ok(Entries { accounts, errors, bad_name })
    }

    /// The account named `session_name`.
    pub fn get(&self, session_name: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.session_name == session_name)
    }

    /// The accounts, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, AccountConfig> {
        self.accounts.iter()
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// True when the file lists no account.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }
}

/// What [`AccountsConfig::parse_entries`] found.
struct Entries {
    /// The valid entries, in file order.
    accounts: Vec<AccountConfig>,
    /// Every problem of the other entries.
    errors: Vec<EntryError>,
    /// Positions of the entries whose `session_name` is itself invalid (a duplicate is not).
    bad_name: HashSet<usize>,
}

impl<'a> IntoIterator for &'a AccountsConfig {
    type Item = &'a AccountConfig;
    type IntoIter = std::slice::Iter<'a, AccountConfig>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Why the accounts file cannot be used. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AccountsConfigError {
    /// The file cannot be read.
    #[error("cannot read the accounts file {}: {error}", path.display())]
    Io {
        /// The path that was read.
        path: PathBuf,
        /// The I/O error. In the message and deliberately not a `source()`, so an error chain
        /// prints it once.
        error: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("the accounts file is not valid JSON: {message} at line {line}, column {column}")]
    Json {
        /// One-based line of the error.
        line: usize,
        /// One-based column of the error.
        column: usize,
        /// What the JSON parser expected.
        message: String,
    },
    /// The file is JSON, but not an array of accounts.
    #[error("the accounts file must be a JSON array of accounts, found {found}")]
    NotAnArray {
        /// What the top-level value is ("an object", "a string", ...).
        found: &'static str,
    },
    /// Some entries are invalid; every problem of the file is listed.
    #[error("{}", entries_message(.0))]
    Entries(Vec<EntryError>),
}

fn entries_message(errors: &[EntryError]) -> String {
    let mut out = match errors.len() {
        1 => "1 problem in the accounts file:".to_owned(),
        n => format!("{n} problems in the accounts file:"),
    };
    for e in errors {
        out.push_str("\n  - ");
        out.push_str(&e.to_string());
    }
    out
}

/// One problem of one entry of the accounts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// Zero-based position of the entry in the array.
    pub index: usize,
    /// The entry's `session_name`, when it is a string (even an invalid one).
    pub session_name: Option<String>,
    /// The field at fault; empty when the problem concerns the entry as a whole.
    pub field: &'static str,
    /// What is wrong, never quoting a secret.
    pub problem: String,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}", self.index)?;
        if let Some(name) = &self.session_name {
            write!(f, " (session '{}')", display_name(name))?;
        }
        if !self.field.is_empty() {
            write!(f, ": field {}", self.field)?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for EntryError {}

/// serde_json's message without its " at line L column C" suffix (kept in separate fields).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// "a string", "an object", ... for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses one entry, pushing one error per bad field; `Some` only when every field is valid.
fn parse_entry(
    index: usize,
    entry: &Value,
    base: &Path,
    errors: &mut Vec<EntryError>,
) -> Option<AccountConfig> {
    let Value::Object(map) = entry else {
        errors.push(EntryError {
            index,
            session_name: None,
            field: "",
            problem: format!("expected an object, found {}", kind(entry)),
        });
        return None;
    };
    // Shown in every error of the entry; not a secret, but keep it readable. A valid name is
    // never cut: lenient loading files the entry's problem under this name.
    let shown_name = map
        .get("session_name")
        .and_then(Value::as_str)
        .map(|n| n.chars().take(NAME_MAX_CHARS).collect::<String>());
    let mut fail = |field: &'static str, problem: String| {
        errors.push(EntryError { index, session_name: shown_name.clone(), field, problem });
    };

    let session_name =
        required_str(map.get("session_name"), "session_name", &mut fail).and_then(|name| {
            match session_name_problem(name) {
                None => Some(name.to_owned()),
                Some(problem) => {
                    fail("session_name", problem);
                    None
                }
            }
        });

    let api_id = match map.get("api_id") {
        None => {
            fail("api_id", "missing".to_owned());
            None
        }
        Some(Value::Number(n)) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(id) if id > 0 => Some(id),
            _ => {
                fail("api_id", format!("expected a positive integer below 2^31, found {n}"));
                None
            }
        },
        // Some tools write the id quoted. Only plain digits are taken: anything else in a
        // string may be another field pasted here (the api_hash, say), so it is not quoted back.
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            match s.parse::<i32>() {
                Ok(id) if id > 0 => Some(id),
                _ => {
                    fail(
                        "api_id",
                        "expected a positive integer below 2^31, found a string of digits \
                         outside that range"
                            .to_owned(),
                    );
                    None
                }
            }
        }
        Some(Value::String(_)) => {
            fail(
                "api_id",
                "expected a positive integer, found a string that is not one (only the digits \
                 of the id, like 123456 or \"123456\")"
                    .to_owned(),
            );
            None
        }
        Some(other) => {
            fail("api_id", format!("expected a positive integer, found {}", kind(other)));
            None
        }
    };

    let api_hash = required_str(map.get("api_hash"), "api_hash", &mut fail).and_then(|hash| {
        match api_hash_problem(hash) {
            None => Some(Secret::new(hash.to_owned())),
            Some(problem) => {
                fail("api_hash", problem);
                None
            }
        }
    });

    let session = read_session(map, session_name.as_deref(), base, &mut fail);

    let proxy = match map.get("proxy") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.trim().is_empty() => Some(None),
        Some(Value::String(s)) => match parse_proxy(s.trim()) {
            Ok(proxy) => Some(Some(proxy)),
            Err(problem) => {
                fail("proxy", problem);
                None
            }
        },
        Some(other) => {
            fail("proxy", format!("expected a socks5:// URL or null, found {}", kind(other)));
            None
        }
    };

    Some(AccountConfig {
        session_name: session_name?,
        api_id: api_id?,
        api_hash: api_hash?,
        session: session?,
        proxy: proxy?,
    })
}

/// The directory relative session paths of the file at `path` are read from.
fn base_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// Where SmartJoiner-family tools keep an account's Telethon session file when its
/// `string_session` is empty (relative to the current directory, as they resolve it).
pub fn fallback_session_file(session_name: &str) -> PathBuf {
    Path::new("sessions").join(format!("{session_name}.session"))
}

/// The entry's session: `string_session` (Telethon, GramJS or Pyrogram, told apart by its
/// bytes) when it is a non-empty string, else the Telethon file `session_file`, else
/// `sessions/{session_name}.session` when that file exists; relative paths from `base`.
/// Files are only read.
fn read_session(
    map: &serde_json::Map<String, Value>,
    session_name: Option<&str>,
    base: &Path,
    fail: &mut impl FnMut(&'static str, String),
) -> Option<TelethonSession> {
    match map.get("string_session") {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            return match decode_string(s) {
                Ok((session, _format)) => Some(session),
                Err(e) => {
                    fail("string_session", e.to_string());
                    None
                }
            };
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => {
            fail("string_session", format!("expected a string, found {}", kind(other)));
            return None;
        }
    }
    let (field, path) = match map.get("session_file") {
        Some(Value::String(p)) if !p.trim().is_empty() => ("session_file", base.join(p.trim())),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            let fallback =
                session_name.map(|n| base.join(fallback_session_file(n))).filter(|p| p.exists());
            match fallback {
                Some(p) => ("string_session", p),
                None => {
                    let hint = session_name
                        .map(|n| {
                            format!(", and there is no {}", fallback_session_file(n).display())
                        })
                        .unwrap_or_default();
                    fail(
                        "string_session",
                        format!("missing (give string_session or session_file{hint})"),
                    );
                    return None;
                }
            }
        }
        Some(other) => {
            fail("session_file", format!("expected a path, found {}", kind(other)));
            return None;
        }
    };
    match session_file::read(&path) {
        Ok(session) => Some(session),
        Err(e) => {
            fail(field, e.to_string());
            None
        }
    }
}

/// A required string field; records "missing" or a type error otherwise.
fn required_str<'v>(
    value: Option<&'v Value>,
    field: &'static str,
    fail: &mut impl FnMut(&'static str, String),
) -> Option<&'v str> {
    match value {
        Some(Value::String(s)) => Some(s),
        None => {
            fail(field, "missing".to_owned());
            None
        }
        Some(other) => {
            fail(field, format!("expected a string, found {}", kind(other)));
            None
        }
    }
}

/// What makes `name` unusable as a session name (see the module documentation).
fn session_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_owned());
    }
    let chars = name.chars().count();
    if chars > NAME_MAX_CHARS {
        return Some(format!("is {chars} characters long; at most {NAME_MAX_CHARS} are allowed"));
    }
    if name.len() > NAME_MAX_BYTES {
        return Some(format!(
            "is {} bytes long in UTF-8; at most {NAME_MAX_BYTES} fit in the file name \
             {{name}}.session",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!("contains the control character U+{:04X}", u32::from(c)));
    }
    if let Some(c) = name.chars().find(|&c| c == '/' || c == '\\') {
        return Some(format!(
            "contains {c:?}, which cannot be part of the file name {{name}}.session"
        ));
    }
    if name == "." || name == ".." {
        return Some(format!("{name:?} is not a usable name: it names a directory"));
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Some(
            "starts or ends with whitespace; remove it (names are kept exactly as written, so \
             it would be part of the account's key)"
                .to_owned(),
        );
    }
    None
}

/// Describes what is wrong with an API hash without quoting it.
fn api_hash_problem(hash: &str) -> Option<String> {
    let expected = "expected 32 lowercase hexadecimal characters, as my.telegram.org shows it";
    let len = hash.chars().count();
    if len != 32 {
        return Some(format!("{expected}; got {len} characters"));
    }
    hash.chars()
        .position(|c| !matches!(c, '0'..='9' | 'a'..='f'))
        .map(|at| format!("{expected}; character {} is not one", at + 1))
}

/// Characters a proxy user name or password may contain: those grammers' URL parsing leaves
/// as they are (see the module documentation).
fn proxy_credential_ok(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!$%&'()*+,-._~".contains(&b))
}

/// Parses `socks5://[user[:password]@]host:port`. The error never quotes the password.
fn parse_proxy(url: &str) -> Result<ProxyConfig, String> {
    const SHAPE: &str = "expected socks5://[user:password@]host:port";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("not a proxy URL; {SHAPE}"));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "socks5" && scheme != "socks5h" {
        let shown: String = scheme.chars().take(20).collect();
        return Err(format!(
            "unknown proxy scheme {shown:?}: only socks5:// is supported (grammers speaks SOCKS5 \
             only)"
        ));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    // The last '@' ends the credentials, so an unencoded '@' in a password still parses.
    let (credentials, host_port) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, rest),
    };
    if host_port.contains(['/', '?', '#']) {
        return Err(format!("unexpected path or query after host:port; {SHAPE}"));
    }

    let (username, password) = match credentials {
        None | Some("") => (None, None),
        Some(c) => {
            let (user, password) = match c.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (c, None),
            };
            let user = percent_decode(user)
                .ok_or_else(|| "bad percent-encoding in the proxy user name".to_owned())?;
            let password = password
                .map(|p| {
                    percent_decode(p)
                        .ok_or_else(|| "bad percent-encoding in the proxy password".to_owned())
                })
                .transpose()?;
            if user.is_empty() {
                return Err("a proxy password needs a user name".to_owned());
            }
            for (what, value) in [("user name", Some(&user)), ("password", password.as_ref())] {
                let Some(value) = value else { continue };
                if value.len() > 255 {
                    return Err(format!("the proxy {what} is longer than SOCKS5's 255 bytes"));
                }
                if !proxy_credential_ok(value) {
                    return Err(format!(
                        "the proxy {what} contains a character grammers cannot pass to the \
                         proxy; only ASCII letters, digits and !$%&'()*+,-._~ are possible"
                    ));
                }
            }
            (Some(user), password.map(Secret::new))
        }
    };

    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((ip, port)) = bracketed.split_once("]:") else {
            return Err(format!("missing port after the IPv6 address; {SHAPE}"));
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("bad proxy host {ip:?}: not an IPv6 address"));
        }
        (ip.to_owned(), port)
    } else {
        let Some((host, port)) = host_port.rsplit_once(':') else {
            return Err(format!("missing proxy port; {SHAPE}"));
        };
        if let Some(problem) = host_problem(host) {
            return Err(format!("bad proxy host {host:?}: {problem}"));
        }
        (host.to_owned(), port)
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => return Err(format!("bad proxy port {port:?}: expected a number from 1 to 65535")),
    };
    Ok(ProxyConfig { host, port, username, password })
}

/// Checks a host name or IPv4 address (IPv6 comes in brackets and is checked apart).
fn host_problem(host: &str) -> Option<&'static str> {
    if host.is_empty() {
        return Some("empty");
    }
    if host.len() > 253 {
        return Some("longer than 253 characters");
    }
    if host.contains(':') {
        return Some("an IPv6 address must be written in brackets, like [::1]:1080");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !host.split('.').all(label_ok) {
        return Some("not a host name or IP address");
    }
    None
}

/// Decodes `%XX` escapes; `None` on a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const API_HASH: &str = "0123456789abcdef0123456789abcdef";
    const PROXY_PASSWORD: &str = "Pr0xyPa55word";

    fn session_string(seed: u8) -> String {
        let mut key = [0u8; 256];
        for (i, b) in key.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(seed) | 1;
        }
        TelethonSession::new(2, "149.154.167.51:443".parse().unwrap(), key).encode()
    }

    fn entry(name: &str, seed: u8, proxy: Value) -> Value {
        serde_json::json!({
            "session_name": name,
            "api_id": 123456,
            "api_hash": API_HASH,
            "string_session": session_string(seed),
            "proxy": proxy,
        })
    }

    fn valid_file() -> String {
        Value::Array(vec![
            entry("acc_1", 1, Value::Null),
            entry("acc-2.b", 2, format!("socks5://user:{PROXY_PASSWORD}@10.0.0.1:1080").into()),
            entry("acc_3", 3, "socks5h://proxy.example:9050".into()),
        ])
        .to_string()
    }

    fn entry_errors(text: &str) -> Vec<EntryError> {
        match AccountsConfig::parse(text) {
            Err(AccountsConfigError::Entries(errors)) => errors,
            other => panic!("expected entry errors, got {other:?}"),
        }
    }

    /// Every secret of the test files: no Debug or Display output may contain one.
    fn secrets() -> Vec<String> {
        let mut s = vec![API_HASH.to_owned(), PROXY_PASSWORD.to_owned()];
        for seed in 0..8 {
            let session = session_string(seed);
            s.push(session[1..41].to_owned());
            s.push(session[200..240].to_owned());
        }
        s
    }

    fn assert_no_secret(text: &str) {
        for secret in secrets() {
            assert!(!text.contains(&secret), "secret {secret:?} leaked in {text}");
        }
    }

    #[test]
    fn a_valid_file_loads_every_account_in_order() {
        let config = AccountsConfig::parse(&valid_file()).unwrap();
        assert_eq!(config.len(), 3);
        let names: Vec<_> = config.iter().map(|a| a.session_name.as_str()).collect();
        assert_eq!(names, ["acc_1", "acc-2.b", "acc_3"]);
        let acc = config.get("acc-2.b").unwrap();
        assert_eq!(acc.api_id, 123456);
        assert_eq!(acc.api_hash.expose(), API_HASH);
        assert_eq!(acc.session.dc_id, 2);
        let proxy = acc.proxy.as_ref().unwrap();
        assert_eq!((proxy.host.as_str(), proxy.port), ("10.0.0.1", 1080));
        assert_eq!(proxy.username.as_deref(), Some("user"));
        assert_eq!(proxy.url().expose(), &format!("socks5://user:{PROXY_PASSWORD}@10.0.0.1:1080"));
        assert!(config.get("acc_1").unwrap().proxy.is_none());
        assert_eq!(
            config.get("acc_3").unwrap().proxy.as_ref().unwrap().url().expose(),
            "socks5://proxy.example:9050"
        );
        assert!(config.get("nope").is_none());
    }

    #[test]
    fn a_missing_or_empty_proxy_means_a_direct_connection_and_extra_fields_are_ignored() {
        let mut e = entry("a", 1, "".into());
        e["phone"] = "+100".into();
        let mut f = entry("b", 2, Value::Null);
        f.as_object_mut().unwrap().remove("proxy");
        let config = AccountsConfig::parse(&Value::Array(vec![e, f]).to_string()).unwrap();
        assert!(config.iter().all(|a| a.proxy.is_none()));
    }

    #[test]
    fn a_byte_order_mark_at_the_start_of_the_file_is_skipped() {
        let config = AccountsConfig::parse(&format!("\u{feff}{}", valid_file())).unwrap();
        assert_eq!(config.len(), 3);
        assert!(AccountsConfig::parse("\u{feff}[]").unwrap().is_empty());
        // Only at the start: anywhere else it is not JSON.
        assert!(matches!(
            AccountsConfig::parse("[\u{feff}]"),
            Err(AccountsConfigError::Json { .. })
        ));
    }

    #[test]
    fn an_empty_array_is_an_empty_pool() {
        assert!(AccountsConfig::parse("[]").unwrap().is_empty());
    }

    #[test]
    fn invalid_json_reports_line_and_column() {
        match AccountsConfig::parse("[\n  {\"session_name\": }\n]") {
            Err(AccountsConfigError::Json { line, column, message }) => {
                assert_eq!(line, 2);
                assert!(column > 0);
                assert!(!message.contains("at line"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_top_level_object_is_not_an_array() {
        let err = AccountsConfig::parse("{}").unwrap_err();
        assert!(matches!(err, AccountsConfigError::NotAnArray { found: "an object" }));
        assert!(err.to_string().contains("must be a JSON array"));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = AccountsConfig::load("definitely/not/here.json").unwrap_err();
        assert!(matches!(err, AccountsConfigError::Io { .. }));
        assert!(err.to_string().contains("definitely/not/here.json"), "{err}");
    }

    #[test]
    fn every_bad_field_of_every_entry_is_reported_together() {
        let bad = serde_json::json!([
            entry("good", 1, Value::Null),
            "not an object",
            { "session_name": "acc_2" },
            {
                "session_name": "bad/name",
                "api_id": "12x",
                "api_hash": API_HASH.to_uppercase(),
                "string_session": format!("{}!{}", &session_string(3)[..10], &session_string(3)[11..]),
                "proxy": "http://h:1"
            },
            {
                "session_name": 7,
                "api_id": -1,
                "api_hash": &API_HASH[..31],
                "string_session": &session_string(4)[..201],
                "proxy": 5
            },
            entry("good", 5, "socks5://h:0".into()),
        ]);
        let errors = entry_errors(&bad.to_string());
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let expected = [
            "entry 1: expected an object, found a string",
            "entry 2 (session 'acc_2'): field api_id: missing",
            "entry 2 (session 'acc_2'): field api_hash: missing",
            "entry 2 (session 'acc_2'): field string_session: missing",
            "entry 3 (session 'bad/name'): field session_name: contains '/'",
            "entry 3 (session 'bad/name'): field api_id: expected a positive integer, found a string that is not one",
            "entry 3 (session 'bad/name'): field api_hash: expected 32 lowercase hexadecimal characters",
            "entry 3 (session 'bad/name'): field string_session: bad base64 at byte 10",
            "entry 3 (session 'bad/name'): field proxy: unknown proxy scheme \"http\"",
            "entry 4: field session_name: expected a string, found a number",
            "entry 4: field api_id: expected a positive integer below 2^31, found -1",
            "entry 4: field api_hash: expected 32 lowercase hexadecimal characters, as my.telegram.org shows it; got 31 characters",
            "entry 4: field string_session: wrong decoded length",
            "entry 4: field proxy: expected a socks5:// URL or null, found a number",
            "entry 5 (session 'good'): field proxy: bad proxy port \"0\"",
        ];
        assert_eq!(lines.len(), expected.len(), "{lines:#?}");
        for (line, start) in lines.iter().zip(expected) {
            assert!(line.starts_with(start), "{line:?} should start with {start:?}");
        }
    }

    #[test]
    fn lenient_loading_keeps_the_good_entries_and_remembers_why_the_others_were_left_out() {
        let mut bad = entry("acc_bad", 9, Value::Null);
        bad["string_session"] = "1not-base64!".into();
        let text =
            Value::Array(vec![entry("acc_1", 1, Value::Null), bad, entry("acc_3", 3, Value::Null)])
                .to_string();
        assert!(AccountsConfig::parse(&text).is_err(), "strict loading refuses the file");
        let (config, errors) = AccountsConfig::parse_lenient(&text).unwrap();
        let names: Vec<_> = config.iter().map(|a| a.session_name.as_str()).collect();
        assert_eq!(names, ["acc_1", "acc_3"]);
        assert_eq!(errors.len(), 1);
        let why = config.rejection("acc_bad").expect("remembered");
        assert!(why.starts_with("field string_session:"), "{why}");
        assert_eq!(config.rejection("acc_1"), None);
        assert!(
            AccountsConfig::parse_lenient("{}").is_err(),
            "a broken file is still refused whole"
        );
    }

    #[test]
    fn an_api_id_may_be_a_string_of_digits() {
        for (written, id) in [("12345", 12345), ("2147483647", i32::MAX), ("007", 7)] {
            let mut e = entry("acc", 1, Value::Null);
            e["api_id"] = written.into();
            let config = AccountsConfig::parse(&Value::Array(vec![e]).to_string())
                .unwrap_or_else(|err| panic!("{written:?}: {err}"));
            assert_eq!(config.get("acc").unwrap().api_id, id, "{written:?}");
        }
    }

    #[test]
    fn an_api_id_string_that_is_not_a_usable_id_is_refused_without_being_quoted() {
        let cases = [
            ("0", "outside that range"),
            ("2147483648", "outside that range"),
            ("99999999999999999999999", "outside that range"),
            ("", "found a string that is not one"),
            ("-5", "found a string that is not one"),
            ("+5", "found a string that is not one"),
            (" 5", "found a string that is not one"),
            ("5.0", "found a string that is not one"),
            ("12a", "found a string that is not one"),
            (API_HASH, "found a string that is not one"),
            (PROXY_PASSWORD, "found a string that is not one"),
        ];
        for (written, needle) in cases {
            let mut e = entry("acc", 1, Value::Null);
            e["api_id"] = written.into();
            let errors = entry_errors(&Value::Array(vec![e]).to_string());
            assert_eq!(errors.len(), 1, "{written:?}: {errors:?}");
            let line = errors[0].to_string();
            assert_eq!(errors[0].field, "api_id", "{written:?}");
            assert!(line.contains(needle), "{written:?}: {line}");
            // Shorter values may occur in the message by chance ("entry 0").
            if written.len() >= 4 {
                assert!(!line.contains(written), "{written:?} is quoted in {line}");
            }
            assert_no_secret(&line);
            assert_no_secret(&format!("{:?}", errors[0]));
        }
    }

    #[test]
    fn lenient_loading_gives_no_account_to_an_entry_whose_session_name_is_unusable() {
        let long = "x".repeat(200);
        let mut no_session = entry("no session", 4, Value::Null);
        no_session["string_session"] = "".into();
        let text = Value::Array(vec![
            entry("acc_1", 1, Value::Null),
            entry("", 2, Value::Null),
            entry("nul\u{0}here", 3, Value::Null),
            entry(&long, 5, Value::Null),
            entry("bad/name", 6, Value::Null),
            no_session,
        ])
        .to_string();
        let (config, errors) = AccountsConfig::parse_lenient(&text).unwrap();
        assert_eq!(errors.len(), 5, "each is still reported: {errors:#?}");
        // A name cut for display must not become a key either.
        assert_eq!(config.session_names(), ["acc_1", "no session"]);
        assert!(config.rejection("").is_none());
        assert!(config.rejection(&long[..128]).is_none());
        assert!(config.rejection("no session").is_some());
    }

    #[test]
    fn a_duplicate_session_name_names_the_first_entry() {
        let text = Value::Array(vec![entry("a", 1, Value::Null), entry("a", 2, Value::Null)]);
        let errors = entry_errors(&text.to_string());
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "entry 1 (session 'a'): field session_name: duplicate: entry 0 has the same session_name"
        );
    }

    #[test]
    fn one_session_under_two_names_is_refused_naming_the_first_entry() {
        let text =
            Value::Array(vec![entry("acc1", 7, Value::Null), entry("acc1_copy", 7, Value::Null)]);
        let errors = entry_errors(&text.to_string());
        assert_eq!(errors.len(), 1, "{errors:?}");
        let shown = errors[0].to_string();
        assert!(
            shown.starts_with("entry 1 (session 'acc1_copy'): field string_session: the same session (auth key) as entry 0"),
            "{shown}"
        );
        assert!(!shown.contains(&session_string(7)), "the session is never echoed");
        // Lenient loading keeps the first and leaves the copy out.
        let (config, rejected) = AccountsConfig::parse_lenient(&text.to_string()).unwrap();
        assert!(config.get("acc1").is_some() && config.get("acc1_copy").is_none());
        assert_eq!(rejected.len(), 1);
    }

    #[test]
    fn session_names_as_operators_write_them_are_accepted_and_kept_exactly() {
        let names = [
            "acc_1",
            "A-b.c",
            "+380501234567",
            "Оля 2",
            "josé",
            "acc 1",
            "🚗 cars: №1 (old)",
            ".hidden",
            "a",
            &"x".repeat(128),
            &"ж".repeat(123),
        ];
        for name in names {
            assert_eq!(session_name_problem(name), None, "{name:?} should be accepted");
        }
        let file: Vec<Value> =
            names.iter().zip(1..).map(|(name, seed)| entry(name, seed, Value::Null)).collect();
        let config = AccountsConfig::parse(&Value::Array(file).to_string()).unwrap();
        let loaded: Vec<&str> = config.iter().map(|a| a.session_name.as_str()).collect();
        assert_eq!(loaded, names);
        assert!(config.get("Оля 2").is_some());
        assert!(config.get("оля 2").is_none(), "names are not case-folded");
    }

    #[test]
    fn unusable_session_names_are_refused_with_the_reason() {
        let cases = [
            ("", "is empty"),
            (&"x".repeat(129), "129 characters long; at most 128"),
            (&"ж".repeat(124), "248 bytes long in UTF-8; at most 247"),
            ("a\u{0}b", "control character U+0000"),
            ("a\u{7}", "control character U+0007"),
            ("a\nb", "control character U+000A"),
            ("acc\t", "control character U+0009"),
            ("a\u{7f}", "control character U+007F"),
            ("a\u{85}b", "control character U+0085"),
            ("a\u{9f}", "control character U+009F"),
            ("a/b", "contains '/'"),
            ("..\\x", "contains '\\\\'"),
            (".", "names a directory"),
            ("..", "names a directory"),
            (" acc", "starts or ends with whitespace"),
            ("acc ", "starts or ends with whitespace"),
            ("\u{a0}acc", "starts or ends with whitespace"),
            ("acc\u{3000}", "starts or ends with whitespace"),
        ];
        for (name, needle) in cases {
            let problem = session_name_problem(name).unwrap_or_else(|| panic!("{name:?} accepted"));
            assert!(problem.contains(needle), "{name:?}: {problem}");
        }
    }

    #[test]
    fn duplicate_session_names_are_compared_exactly() {
        let file = |a: &str, b: &str| {
            Value::Array(vec![entry(a, 1, Value::Null), entry(b, 2, Value::Null)]).to_string()
        };
        // Case and Unicode normalisation make different keys, as in the database.
        assert_eq!(AccountsConfig::parse(&file("Acc", "acc")).unwrap().len(), 2);
        assert_eq!(AccountsConfig::parse(&file("jos\u{e9}", "jose\u{301}")).unwrap().len(), 2);
        let errors = entry_errors(&file("Оля 2", "Оля 2"));
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "entry 1 (session 'Оля 2'): field session_name: duplicate: entry 0 has the same \
             session_name"
        );
    }

    #[test]
    fn display_name_escapes_what_would_hide_part_of_a_name_and_nothing_else() {
        let cases = [
            ("Оля 2", "Оля 2"),
            ("josé", "josé"),
            ("+380501234567", "+380501234567"),
            ("🚗 cars: \"x\" 'y'", "🚗 cars: \"x\" 'y'"),
            ("a\u{a0}b", "a\u{a0}b"),
            ("a\nb", "a\\nb"),
            ("a\tb\r", "a\\tb\\r"),
            ("a\u{0}b", "a\\0b"),
            ("a\u{7}b", "a\\u{7}b"),
            ("a\u{9b}b", "a\\u{9b}b"),
            ("a\\nb", "a\\\\nb"),
            ("abc\u{202e}fed", "abc\\u{202e}fed"),
            ("a\u{200b}b", "a\\u{200b}b"),
            ("a\u{feff}", "a\\u{feff}"),
            ("a\u{2028}b", "a\\u{2028}b"),
            ("ми\u{200c}р", "ми\u{200c}р"),
        ];
        for (name, shown) in cases {
            assert_eq!(display_name(name).to_string(), shown, "{name:?}");
        }
    }

    #[test]
    fn errors_print_a_bad_session_name_escaped_and_never_a_secret() {
        let mut e = entry("bad\nname\u{7}", 1, Value::Null);
        e["api_id"] = API_HASH.into();
        e["api_hash"] = format!("{API_HASH}0").into();
        e["proxy"] = format!("socks5://user:{PROXY_PASSWORD}@:0").into();
        e["string_session"] = session_string(1)[..300].into();
        let errors = entry_errors(&Value::Array(vec![e]).to_string());
        assert_eq!(errors.len(), 5, "{errors:#?}");
        for error in &errors {
            let line = error.to_string();
            assert!(line.starts_with("entry 0 (session 'bad\\nname\\u{7}'): "), "{line}");
            assert!(!line.contains('\n') && !line.contains('\u{7}'), "{line:?}");
            assert_no_secret(&line);
            assert_no_secret(&format!("{error:?}"));
        }
        assert!(
            errors[0]
                .to_string()
                .ends_with("field session_name: contains the control character U+000A")
        );
    }

    #[test]
    fn proxies_of_every_accepted_shape_parse() {
        let cases = [
            ("socks5://1.2.3.4:1080", "1.2.3.4", 1080, None, None),
            ("SOCKS5://h.example:1/", "h.example", 1, None, None),
            ("socks5://u@h:2", "h", 2, Some("u"), None),
            ("socks5://u:p%21x@h:3", "h", 3, Some("u"), Some("p!x")),
            ("socks5://[::1]:5", "::1", 5, None, None),
        ];
        for (url, host, port, user, password) in cases {
            let p = parse_proxy(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(p.host, host, "{url}");
            assert_eq!(p.port, port, "{url}");
            assert_eq!(p.username.as_deref(), user, "{url}");
            assert_eq!(p.password.as_ref().map(|s| s.expose().as_str()), password, "{url}");
        }
        assert_eq!(parse_proxy("socks5://[::1]:5").unwrap().url().expose(), "socks5://[::1]:5");
    }

    #[test]
    fn malformed_proxies_are_rejected_with_the_reason() {
        let cases = [
            ("h:1080", "not a proxy URL"),
            ("http://h:1", "unknown proxy scheme"),
            ("socks4://h:1", "unknown proxy scheme"),
            ("socks5://h", "missing proxy port"),
            ("socks5://h:x", "bad proxy port"),
            ("socks5://h:70000", "bad proxy port"),
            ("socks5://:1", "bad proxy host"),
            ("socks5://a..b:1", "bad proxy host"),
            ("socks5://::1:1", "bad proxy host"),
            ("socks5://[zz]:1", "bad proxy host"),
            ("socks5://h:1/path", "unexpected path"),
            ("socks5://:pw@h:1", "needs a user name"),
            ("socks5://u:p%zz@h:1", "bad percent-encoding in the proxy password"),
            ("socks5://u:a%40b@h:1", "password contains a character grammers cannot pass"),
            ("socks5://u:p@ss@h:1", "password contains a character grammers cannot pass"),
        ];
        for (url, expected) in cases {
            let err = parse_proxy(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }

    #[test]
    fn secrets_appear_in_no_debug_or_display_output() {
        let config = AccountsConfig::parse(&valid_file()).unwrap();
        assert_no_secret(&format!("{config:?}"));
        assert_no_secret(&format!("{:?}", config.get("acc-2.b").unwrap().proxy));

        // Files that fail in every way while carrying the secrets.
        let mut wrong_places = entry("w", 1, Value::Null);
        wrong_places["api_id"] = API_HASH.into();
        wrong_places["session_name"] = 5.into();
        wrong_places["api_hash"] = format!("{API_HASH}0").into();
        wrong_places["proxy"] = format!("http://user:{PROXY_PASSWORD}@h:1").into();
        let mut bad_password = entry("p", 2, Value::Null);
        bad_password["proxy"] = format!("socks5://user:{PROXY_PASSWORD}@:0").into();
        bad_password["string_session"] = format!("{}#", session_string(2)).into();
        let mut upper_hash = entry("u", 3, Value::Null);
        upper_hash["api_hash"] = API_HASH.replace('a', "A").into();
        upper_hash["string_session"] = session_string(3)[..300].into();
        let files = [
            Value::Array(vec![wrong_places, bad_password, upper_hash]).to_string(),
            format!("[{{\"api_hash\": \"{API_HASH}\", \"proxy\": \"{PROXY_PASSWORD}"),
            format!("{{\"api_hash\": \"{API_HASH}\"}}"),
        ];
        for file in files {
            let err = AccountsConfig::parse(&file).unwrap_err();
            assert_no_secret(&format!("{err:?}"));
            assert_no_secret(&err.to_string());
            if let AccountsConfigError::Entries(errors) = &err {
                assert!(errors.len() >= 6, "{err}");
                for e in errors {
                    assert_no_secret(&format!("{e:?}"));
                }
            }
        }
    }

    proptest! {
        #[test]
        fn random_json_ish_text_never_panics(text in r#"[\[\]{}:,"a-z0-9_ .@/%\\-]{0,200}"#) {
            let _ = AccountsConfig::parse(&text);
        }

        #[test]
        fn random_text_mutations_of_a_valid_file_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0..3u8), 1..8)
        ) {
            let mut text: Vec<char> = valid_file().chars().collect();
            for (at, c, op) in edits {
                if text.is_empty() { break; }
                let i = at.index(text.len());
                match op {
                    0 => text[i] = c,
                    1 => { text.remove(i); }
                    _ => text.insert(i, c),
                }
            }
            let text: String = text.into_iter().collect();
            let _ = AccountsConfig::parse(&text);
        }

        #[test]
        fn random_field_values_never_panic_and_errors_name_the_field(
            field in prop::sample::select(vec!["session_name", "api_id", "api_hash", "string_session", "proxy"]),
            replacement in prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
                ".{0,80}".prop_map(Value::from),
                "socks5://[a-z:@%0-9.\\[\\]/]{0,40}".prop_map(Value::from),
                "1[A-Za-z0-9_=-]{340,370}".prop_map(Value::from),
            ],
        ) {
            let mut e = entry("acc", 1, Value::Null);
            e[field] = replacement;
            match AccountsConfig::parse(&Value::Array(vec![e]).to_string()) {
                Ok(config) => prop_assert_eq!(config.len(), 1),
                Err(AccountsConfigError::Entries(errors)) => {
                    prop_assert!(errors.iter().all(|e| e.field == field));
                }
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
