//! Who may see and who may act.
//!
//! - Reading needs `CONSOLE_TOKEN` when one is set (it must be set to bind anything but
//!   loopback); acting needs `CONSOLE_ADMIN_TOKEN`, and without one the console is read-only.
//!   The admin token also reads.
//! - A token arrives as HTTP basic auth (any user name, the token as password: the browser's
//!   own prompt) or as `Authorization: Bearer <token>`. Never in a URL, so no log or history
//!   holds one.
//! - Tokens are compared in constant time (SHA-256 of both sides, then every byte).
//! - Every form carries a CSRF token: an HMAC-SHA256, under a secret drawn at start, of the
//!   credential the request came with. A page from another site cannot read it, and the
//!   browser sends basic-auth credentials cross-site on its own, so this is what stops a
//!   forged form. A POST whose `Origin` names another host is refused too.

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// What a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Nothing: no valid token where one is needed.
    Denied,
    /// See every page.
    Read,
    /// See and act, as `actor` (`console:<user name given with the admin token>`).
    Admin { actor: String },
}

impl Access {
    pub fn can_read(&self) -> bool {
        !matches!(self, Access::Denied)
    }

    pub fn actor(&self) -> Option<&str> {
        match self {
            Access::Admin { actor } => Some(actor),
            _ => None,
        }
    }
}

/// The tokens and the CSRF secret of one console process.
pub struct Auth {
    read_token: Option<Secret<String>>,
    admin_token: Option<Secret<String>>,
    csrf_secret: [u8; 32],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("read_token", &self.read_token.is_some())
            .field("admin_token", &self.admin_token.is_some())
            .finish_non_exhaustive()
    }
}

/// A credential as sent: user name (basic auth only) and token.
struct Credential {
    user: String,
    token: String,
}

fn credential(headers: &HeaderMap) -> Option<Credential> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credential { user: String::new(), token: rest.to_owned() });
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, token) = text.split_once(':')?;
        return Some(Credential { user: user.to_owned(), token: token.to_owned() });
    }
    None
}

/// Equal, in time that depends only on the lengths of the digests (fixed), not the contents.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A user name fit for the audit log: printable, short.
fn actor_name(user: &str) -> String {
    let clean: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
        .take(64)
        .collect();
    if clean.is_empty() { "console:admin".to_owned() } else { format!("console:{clean}") }
}

impl Auth {
    pub fn new(read_token: Option<Secret<String>>, admin_token: Option<Secret<String>>) -> Self {
        let mut csrf_secret = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut csrf_secret);
        let non_empty = |t: Option<Secret<String>>| t.filter(|t| !t.expose().is_empty());
        Auth { read_token: non_empty(read_token), admin_token: non_empty(admin_token), csrf_secret }
    }

    /// Whether reading needs a token.
    pub fn read_protected(&self) -> bool {
        self.read_token.is_some()
    }

    /// Whether actions are possible at all.
    pub fn actions_enabled(&self) -> bool {
        self.admin_token.is_some()
    }

    /// What the request's credential allows.
    pub fn access(&self, headers: &HeaderMap) -> Access {
        let cred = credential(headers);
        if let (Some(c), Some(admin)) = (&cred, &self.admin_token)
            && same_secret(&c.token, admin.expose())
        {
            return Access::Admin { actor: actor_name(&c.user) };
        }
        match (&self.read_token, &cred) {
            (None, _) => Access::Read,
            (Some(read), Some(c)) if same_secret(&c.token, read.expose()) => Access::Read,
            _ => Access::Denied,
        }
    }

    /// The CSRF token of the request's credential (empty without an admin credential: such a
    /// request has no form to fill).
    pub fn csrf_token(&self, headers: &HeaderMap) -> String {
        match credential(headers) {
            Some(c) => {
                hex(&hmac_sha256(&self.csrf_secret, format!("csrf\0{}", c.token).as_bytes()))
            }
            None => String::new(),
        }
    }

    /// Whether a form's CSRF token is the one of the request's credential, and the request
    /// does not come from another site's page.
    pub fn csrf_ok(&self, headers: &HeaderMap, form_token: &str) -> bool {
        if let (Some(origin), Some(host)) = (headers.get(ORIGIN), headers.get(HOST)) {
            let origin = origin.to_str().unwrap_or("");
            let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
            if origin_host != host.to_str().unwrap_or("") {
                return false;
            }
        }
        let expected = self.csrf_token(headers);
        !expected.is_empty() && same_secret(form_token, &expected)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn basic(user: &str, token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Basic {b64}")).unwrap());
        h
    }

    fn auth(read: Option<&str>, admin: Option<&str>) -> Auth {
        Auth::new(read.map(|t| Secret::new(t.to_owned())), admin.map(|t| Secret::new(t.to_owned())))
    }

    #[test]
    fn hmac_matches_an_independent_implementation() {
        // The value of Python's `hmac.new(bytes([0x0b] * 32), b"Hi There", hashlib.sha256)`.
        let key = [0x0bu8; 32];
        let mac = hex(&hmac_sha256(&key, b"Hi There"));
        assert_eq!(mac, "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7");
    }

    #[test]
    fn the_read_token_reads_the_admin_token_acts_and_nothing_else_gets_in() {
        let a = auth(Some("reader-token"), Some("admin-token"));
        assert_eq!(a.access(&HeaderMap::new()), Access::Denied);
        assert_eq!(a.access(&basic("x", "wrong")), Access::Denied);
        assert_eq!(a.access(&basic("", "reader-token")), Access::Read);
        assert_eq!(
            a.access(&basic("alice", "admin-token")),
            Access::Admin { actor: "console:alice".to_owned() }
        );
        let mut bearer = HeaderMap::new();
        bearer.insert(AUTHORIZATION, HeaderValue::from_static("Bearer admin-token"));
        assert_eq!(a.access(&bearer), Access::Admin { actor: "console:admin".to_owned() });
    }

    #[test]
    fn without_a_read_token_anyone_reads_and_only_the_admin_token_acts() {
        let a = auth(None, Some("admin-token"));
        assert_eq!(a.access(&HeaderMap::new()), Access::Read);
        assert_eq!(a.access(&basic("x", "wrong")), Access::Read);
        let read_only = auth(None, None);
        assert!(!read_only.actions_enabled());
        assert_eq!(read_only.access(&basic("x", "anything")), Access::Read);
    }

    #[test]
    fn a_csrf_token_belongs_to_its_credential_and_its_site() {
        let a = auth(None, Some("admin-token"));
        let admin = basic("alice", "admin-token");
        let token = a.csrf_token(&admin);
        assert!(a.csrf_ok(&admin, &token));
        assert!(!a.csrf_ok(&admin, "forged"));
        assert!(!a.csrf_ok(&basic("alice", "other"), &token));
        assert!(!a.csrf_ok(&HeaderMap::new(), ""));
        let mut cross = admin.clone();
        cross.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        cross.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!a.csrf_ok(&cross, &token));
        let mut same = admin.clone();
        same.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        same.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(a.csrf_ok(&same, &token));
        // Another process (another secret) does not accept it.
        assert!(!auth(None, Some("admin-token")).csrf_ok(&admin, &token));
    }

    #[test]
    fn actor_names_are_cleaned() {
        assert_eq!(actor_name("alice\n<b>"), "console:aliceb");
        assert_eq!(actor_name(""), "console:admin");
    }
}
