//! Target links: every spelling an operator may paste, parsed into one normalised form.
//!
//! Usernames are case-insensitive on Telegram, so they are stored lowercased as `@name`.
//! Invite hashes are case-sensitive and stored as `t.me/+HASH`. The normalised string is the
//! `targets.link` column and its uniqueness key.

use std::fmt;

/// What kind of join a link needs: a public username is resolved, then joined; an invite hash is
/// checked, then imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    Username,
    Invite,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Username => "username",
            LinkKind::Invite => "invite",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "username" => Some(LinkKind::Username),
            "invite" => Some(LinkKind::Invite),
            _ => None,
        }
    }
}

/// A parsed, normalised target link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetLink {
    kind: LinkKind,
    /// The username (lowercase, without `@`) or the invite hash (as given).
    value: String,
}

/// Why a link was rejected. The message names the problem so an operator can fix the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("empty link")]
    Empty,
    #[error("unsupported link host {0:?} (expected t.me, telegram.me or telegram.dog)")]
    UnsupportedHost(String),
    #[error(
        "unsupported link {0:?} (expected @name, t.me/name, t.me/+hash, t.me/joinchat/hash or tg://)"
    )]
    Unsupported(String),
    #[error("invalid username {name:?}: {why}")]
    InvalidUsername { name: String, why: &'static str },
    #[error("invalid invite hash {0:?}: expected 1-64 letters, digits, '-' or '_'")]
    InvalidInviteHash(String),
}

const USERNAME_MIN: usize = 5;
const USERNAME_MAX: usize = 32;

impl TargetLink {
    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    /// The username (without `@`) or the invite hash.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Builds a link from its stored parts (kind column + normalised link column).
    ///
    /// Only the two normalised forms are read, and not through [`parse`](Self::parse): `parse`
    /// may come to refuse links it once accepted, and a row imported before must still load, so
    /// that its attempts can end and be reported.
    pub fn from_stored(kind: LinkKind, normalised: &str) -> Result<Self, LinkError> {
        let unsupported = || LinkError::Unsupported(normalised.to_owned());
        match kind {
            LinkKind::Username => {
                Self::username(normalised.strip_prefix('@').ok_or_else(unsupported)?)
            }
            LinkKind::Invite => {
                Self::invite(normalised.strip_prefix("t.me/+").ok_or_else(unsupported)?)
            }
        }
    }

    /// Parses any supported spelling of a Telegram group or channel link.
    pub fn parse(input: &str) -> Result<Self, LinkError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(LinkError::Empty);
        }
        if let Some(rest) = strip_prefix_ci(s, "tg://") {
            return parse_tg_scheme(rest, s);
        }
        if let Some(name) = s.strip_prefix('@') {
            return Self::username(name);
        }
        let without_scheme =
            strip_prefix_ci(s, "https://").or_else(|| strip_prefix_ci(s, "http://")).unwrap_or(s);
        match without_scheme.split_once('/') {
            Some((host, path)) => {
                let host_lc = host.to_ascii_lowercase();
                let host_lc = host_lc.strip_prefix("www.").unwrap_or(&host_lc);
                if !matches!(host_lc, "t.me" | "telegram.me" | "telegram.dog") {
                    return Err(LinkError::UnsupportedHost(host.to_owned()));
                }
                parse_path(path, s)
            }
            None if without_scheme.len() != s.len() => Err(LinkError::Unsupported(s.to_owned())),
            // A bare word: a username without `@`, as SmartJoiner's lists often have.
            None => Self::username(s),
        }
    }

    fn username(name: &str) -> Result<Self, LinkError> {
        validate_username(name)?;
        Ok(Self { kind: LinkKind::Username, value: name.to_ascii_lowercase() })
    }

    fn invite(hash: &str) -> Result<Self, LinkError> {
        let ok = !hash.is_empty()
            && hash.len() <= 64
            && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(LinkError::InvalidInviteHash(hash.to_owned()));
        }
        Ok(Self { kind: LinkKind::Invite, value: hash.to_owned() })
    }
}

impl fmt::Display for TargetLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            LinkKind::Username => write!(f, "@{}", self.value),
            LinkKind::Invite => write!(f, "t.me/+{}", self.value),
        }
    }
}

impl std::str::FromStr for TargetLink {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Path part of an https link: `name`, `+hash`, `joinchat/hash`, `s/name`; a trailing post id
/// (`name/123`), query or fragment is ignored.
fn parse_path(path: &str, original: &str) -> Result<TargetLink, LinkError> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let first = parts.next().ok_or_else(|| LinkError::Unsupported(original.to_owned()))?;
    if let Some(hash) = first.strip_prefix('+') {
        return TargetLink::invite(hash);
    }
    if first.eq_ignore_ascii_case("joinchat") {
        let hash = parts.next().ok_or_else(|| LinkError::InvalidInviteHash(String::new()))?;
        return TargetLink::invite(hash);
    }
    if first.eq_ignore_ascii_case("s") {
        let name = parts.next().ok_or_else(|| LinkError::Unsupported(original.to_owned()))?;
        return TargetLink::username(name);
    }
    // `t.me/name/123` is a post in the group: the group is what we join.
    if let Some(post) = parts.next()
        && (!post.bytes().all(|b| b.is_ascii_digit()) || parts.next().is_some())
    {
        return Err(LinkError::Unsupported(original.to_owned()));
    }
    TargetLink::username(first)
}

/// `tg://resolve?domain=name` and `tg://join?invite=hash`.
fn parse_tg_scheme(rest: &str, original: &str) -> Result<TargetLink, LinkError> {
    let (action, query) = rest.split_once('?').unwrap_or((rest, ""));
    let param = |key: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then_some(v)
        })
    };
    match action.trim_end_matches('/').to_ascii_lowercase().as_str() {
        "resolve" => match param("domain") {
            Some(name) => TargetLink::username(name),
            None => Err(LinkError::Unsupported(original.to_owned())),
        },
        "join" => match param("invite") {
            Some(hash) => TargetLink::invite(hash.trim_start_matches('+')),
            None => Err(LinkError::InvalidInviteHash(String::new())),
        },
        _ => Err(LinkError::Unsupported(original.to_owned())),
    }
}

/// Telegram's username rules: 5-32 characters, ASCII letters, digits and underscores, starting
/// with a letter, not ending with an underscore.
pub fn validate_username(name: &str) -> Result<(), LinkError> {
    let bad = |why| Err(LinkError::InvalidUsername { name: name.to_owned(), why });
    if name.len() < USERNAME_MIN || name.len() > USERNAME_MAX {
        return bad("must be 5-32 characters long");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return bad("only letters, digits and underscores are allowed");
    }
    if !name.as_bytes()[0].is_ascii_alphabetic() {
        return bad("must start with a letter");
    }
    if name.ends_with('_') {
        return bad("must not end with an underscore");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(input: &str, expected: &str, kind: LinkKind) {
        let link = TargetLink::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(link.to_string(), expected, "input {input:?}");
        assert_eq!(link.kind(), kind, "input {input:?}");
        // The normalised form parses back to itself.
        assert_eq!(TargetLink::parse(expected).unwrap(), link);
    }

    #[test]
    fn every_supported_spelling_normalises_to_one_form() {
        use LinkKind::*;
        for input in [
            "@autobazar_com_ua",
            "autobazar_com_ua",
            "AutoBazar_com_UA",
            "https://t.me/autobazar_com_ua",
            "http://t.me/autobazar_com_ua/",
            "t.me/autobazar_com_ua",
            "https://telegram.me/autobazar_com_ua",
            "https://telegram.dog/autobazar_com_ua",
            "https://www.t.me/autobazar_com_ua?start=1",
            "https://t.me/autobazar_com_ua/123",
            "https://t.me/s/autobazar_com_ua",
            "tg://resolve?domain=autobazar_com_ua",
            "  @autobazar_com_ua \n",
        ] {
            check(input, "@autobazar_com_ua", Username);
        }
        for input in [
            "https://t.me/+AbCdEf123_-x",
            "t.me/+AbCdEf123_-x",
            "https://t.me/joinchat/AbCdEf123_-x",
            "telegram.me/joinchat/AbCdEf123_-x",
            "tg://join?invite=AbCdEf123_-x",
        ] {
            check(input, "t.me/+AbCdEf123_-x", Invite);
        }
    }

    #[test]
    fn bad_links_are_rejected_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty link"),
            ("@abc", "5-32 characters"),
            ("@1abcdef", "start with a letter"),
            ("@abc-def", "letters, digits and underscores"),
            ("@abcdef_", "end with an underscore"),
            ("@a234567890123456789012345678901234", "5-32 characters"),
            ("https://example.com/name", "unsupported link host"),
            ("https://t.me/", "unsupported link"),
            ("https://t.me/+", "invalid invite hash"),
            ("https://t.me/joinchat/", "invalid invite hash"),
            ("https://t.me/+bad hash", "invalid invite hash"),
            ("tg://resolve?x=1", "unsupported link"),
            ("tg://settings", "unsupported link"),
            ("https://t.me/name_ok/abc", "unsupported link"),
            ("ftp://t.me", "unsupported link"),
        ];
        for (input, needle) in cases {
            let err = TargetLink::parse(input).expect_err(input).to_string();
            assert!(err.contains(needle), "{input:?}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn a_stored_link_is_read_in_its_normalised_form_only() {
        // A row imported before some kind of link was refused must stay readable.
        let link = TargetLink::from_stored(LinkKind::Invite, "t.me/+380501234567").unwrap();
        assert_eq!(link.value(), "380501234567");
        assert!(TargetLink::from_stored(LinkKind::Username, "t.me/+380501234567").is_err());
        assert!(TargetLink::from_stored(LinkKind::Invite, "https://t.me/+abc").is_err());
    }

    #[test]
    fn stored_kind_must_match_the_link() {
        assert!(TargetLink::from_stored(LinkKind::Invite, "@autobazar").is_err());
        assert!(TargetLink::from_stored(LinkKind::Username, "@autobazar").is_ok());
    }

    proptest! {
        #[test]
        fn random_input_never_panics(s in ".{0,80}") {
            let _ = TargetLink::parse(&s);
        }

        #[test]
        fn random_link_shaped_input_never_panics(
            scheme in "(https?://|tg://|)", host in "(t\\.me|telegram\\.me|x)?/?",
            rest in "[+@a-zA-Z0-9_/?=&#.-]{0,40}") {
            let _ = TargetLink::parse(&format!("{scheme}{host}{rest}"));
        }

        #[test]
        fn valid_usernames_round_trip(name in "[a-zA-Z][a-zA-Z0-9_]{3,30}[a-zA-Z0-9]") {
            let link = TargetLink::parse(&format!("https://t.me/{name}")).unwrap();
            prop_assert_eq!(link.value(), name.to_ascii_lowercase());
            prop_assert_eq!(TargetLink::parse(&link.to_string()).unwrap(), link);
        }
    }
}
