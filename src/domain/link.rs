//! Target links: every spelling an operator may paste, parsed into one normalised form.
//!
//! Usernames are case-insensitive on Telegram, so they are stored lowercased as `@name`.
//! Invite hashes are case-sensitive and stored as `t.me/+HASH`. The normalised string is the
//! `targets.link` column and its uniqueness key.
//!
//! Telegram links that open something other than a chat (a proxy, a login code, a sticker set,
//! a chat folder, a phone number, ...) are refused with what they open, rather than read as a
//! username that happens to be `proxy` or an invite hash that happens to be digits.

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
    /// A Telegram link that opens something other than a chat (a proxy, a login code, a
    /// sticker set, ...). `link` is the input cut after the word that says what it is, with
    /// `...` for the rest: that rest may be a secret (a login code, a gift code, a proxy's
    /// secret), and the word is enough to recognise the line.
    #[error("{link} is {what}")]
    ServiceLink { link: String, what: &'static str },
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

    /// Parses any supported spelling of a Telegram group or channel link; a link to anything
    /// else is [`LinkError::ServiceLink`].
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
            None if is_phone_number(s.strip_prefix('+').unwrap_or_default()) => {
                Err(LinkError::ServiceLink { link: s.to_owned(), what: PHONE_NUMBER })
            }
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

/// What a phone number link is, for [`LinkError::ServiceLink`].
const PHONE_NUMBER: &str = "a phone number link (t.me/+ and 7-15 digits opens the account with \
     that number), not a chat";

/// Which links a service word is found in: the first path word of a t.me link, the action of
/// a tg:// link, or both.
#[derive(Clone, Copy, PartialEq, Eq)]
enum In {
    TMe,
    Tg,
    Both,
}

const PRIVATE_POST: &str = "a message link into a private channel, which has no name to join \
     by; give the channel's invite link instead";
const BUSINESS_CHAT: &str =
    "a business chat link (it opens a chat with a business account), not a group";

/// Words of t.me paths and tg:// actions that open something other than a chat, with what
/// they open. Some have the shape of a username; Telegram reserves them, so such a link never
/// names a group.
const SERVICES: &[(&str, In, &str)] = &[
    ("proxy", In::Both, "an MTProto proxy link, not a chat"),
    ("socks", In::Both, "a SOCKS5 proxy link, not a chat"),
    ("login", In::Both, "a login code link, not a chat"),
    ("addlist", In::Both, "a chat folder link; `targets import` expands it into its chats"),
    ("addstickers", In::Both, "a sticker set link, not a chat"),
    ("addemoji", In::Both, "a custom emoji set link, not a chat"),
    ("addtheme", In::Both, "a theme link, not a chat"),
    ("setlanguage", In::Both, "a language pack link, not a chat"),
    ("share", In::Both, "a share link, not a chat"),
    ("msg_url", In::Tg, "a share link, not a chat"),
    ("msg", In::Tg, "a share link, not a chat"),
    ("confirmphone", In::Both, "a phone number confirmation link, not a chat"),
    ("bg", In::Both, "a chat background link, not a chat"),
    ("invoice", In::Both, "an invoice link, not a chat"),
    ("boost", In::Both, "a boost link, not a chat (to join the channel, give its own link)"),
    ("giftcode", In::Both, "a Premium gift code link, not a chat"),
    ("nft", In::Both, "a collectible gift link, not a chat"),
    ("contact", In::Both, "a contact link (it opens a user), not a chat"),
    ("m", In::TMe, BUSINESS_CHAT),
    ("message", In::Tg, BUSINESS_CHAT),
    ("c", In::TMe, PRIVATE_POST),
    ("privatepost", In::Tg, PRIVATE_POST),
    ("iv", In::TMe, "an Instant View link, not a chat"),
    ("user", In::Tg, "a link to a user, not a chat"),
    ("passport", In::Tg, "a Telegram Passport request, not a chat"),
];

/// What the service word `word` opens in links of kind `kind`, if it is one. Case-insensitive,
/// like the rest of a t.me path.
fn service(word: &str, kind: In) -> Option<&'static str> {
    SERVICES
        .iter()
        .find(|&&(w, found_in, _)| {
            (found_in == kind || found_in == In::Both) && w.eq_ignore_ascii_case(word)
        })
        .map(|&(_, _, what)| what)
}

/// `+` and 7 to 15 digits is a phone number (E.164 allows at most 15); invite hashes are
/// base64url and in practice never all digits.
fn is_phone_number(digits: &str) -> bool {
    (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `original` cut `end` bytes in, with `...` when something followed (see
/// [`LinkError::ServiceLink`]).
fn shown_up_to(original: &str, end: usize) -> String {
    match original.get(..end) {
        Some(head) if end < original.len() => format!("{head}..."),
        Some(head) => head.to_owned(),
        None => original.to_owned(),
    }
}

/// Path part of an https link: `name`, `+hash`, `joinchat/hash`, `s/name`; a trailing post id
/// (`name/123`), query or fragment is ignored. Service paths (`proxy`, `login/CODE`, `+PHONE`,
/// `$invoice`, ...) are refused with what they are.
fn parse_path(path: &str, original: &str) -> Result<TargetLink, LinkError> {
    // `path` is the end of `original`, so the first word starts this many bytes in.
    let first_at = original.len().saturating_sub(path.trim_start_matches('/').len());
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let first = parts.next().ok_or_else(|| LinkError::Unsupported(original.to_owned()))?;
    let refuse = |word_len: usize, what| {
        Err(LinkError::ServiceLink { link: shown_up_to(original, first_at + word_len), what })
    };
    if let Some(hash) = first.strip_prefix('+') {
        if is_phone_number(hash) {
            return refuse(1, PHONE_NUMBER);
        }
        return TargetLink::invite(hash);
    }
    if first.starts_with('$') {
        return refuse(1, "an invoice link, not a chat");
    }
    if let Some(what) = service(first, In::TMe) {
        return refuse(first.len(), what);
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

/// `tg://resolve?domain=name` and `tg://join?invite=hash`. Other actions are refused: with
/// what they open when it is known, as unsupported otherwise.
fn parse_tg_scheme(rest: &str, original: &str) -> Result<TargetLink, LinkError> {
    let (action, query) = rest.split_once('?').unwrap_or((rest, ""));
    // "tg://" and the action: what a refusal shows of the link.
    let action_end = original.len().saturating_sub(rest.len()) + action.len();
    let param = |key: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then_some(v)
        })
    };
    match action.trim_end_matches('/').to_ascii_lowercase().as_str() {
        "resolve" => match (param("domain"), param("phone")) {
            (Some(name), _) => TargetLink::username(name),
            (None, Some(_)) => Err(LinkError::ServiceLink {
                link: shown_up_to(original, action_end),
                what: "a phone number link, not a chat",
            }),
            (None, None) => Err(LinkError::Unsupported(original.to_owned())),
        },
        "join" => match param("invite") {
            Some(hash) => TargetLink::invite(hash.trim_start_matches('+')),
            None => Err(LinkError::InvalidInviteHash(String::new())),
        },
        action => match service(action, In::Tg) {
            Some(what) => {
                Err(LinkError::ServiceLink { link: shown_up_to(original, action_end), what })
            }
            None => Err(LinkError::Unsupported(original.to_owned())),
        },
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
    fn links_that_open_something_other_than_a_chat_are_refused_with_what_they_are() {
        let cases: &[(&str, &str)] = &[
            (
                "https://t.me/proxy?server=1.2.3.4&port=443&secret=ee00",
                "t.me/proxy... is an MTProto proxy link",
            ),
            ("t.me/socks?server=1.2.3.4&port=1080", "t.me/socks... is a SOCKS5 proxy link"),
            ("https://t.me/login/12345", "t.me/login... is a login code link"),
            (
                "https://t.me/addlist/AbCdEf",
                "a chat folder link; `targets import` expands it into its chats",
            ),
            ("https://t.me/addstickers/Animals", "a sticker set link"),
            ("https://t.me/addemoji/Smiles", "a custom emoji set link"),
            ("https://t.me/addtheme/Night", "a theme link"),
            ("https://t.me/setlanguage/uk", "a language pack link"),
            ("https://t.me/share/url?url=https://example.com", "a share link"),
            ("https://t.me/share?url=https://example.com", "a share link"),
            (
                "https://t.me/confirmphone?phone=380501234567&hash=ab",
                "a phone number confirmation link",
            ),
            ("https://t.me/bg/abcdef", "a chat background link"),
            ("https://t.me/invoice/abcdef", "an invoice link"),
            ("https://t.me/$abcdef", "t.me/$... is an invoice link"),
            ("https://t.me/boost/autobazar_com_ua", "a boost link"),
            ("https://t.me/boost?c=1234567", "a boost link"),
            ("https://t.me/giftcode/abcdef", "a Premium gift code link"),
            ("https://t.me/nft/SomeGift-12", "a collectible gift link"),
            ("https://t.me/contact/abcdef", "a contact link"),
            ("https://t.me/m/abcdef", "a business chat link"),
            ("https://t.me/c/1234567890/45", "a message link into a private channel"),
            ("https://t.me/c/1234567890", "a message link into a private channel"),
            ("https://t.me/iv?url=https://example.com&rhash=ab", "an Instant View link"),
            ("https://t.me/+380501234567", "t.me/+... is a phone number link"),
            ("t.me/+1234567", "a phone number link"),
            ("+380501234567", "+380501234567 is a phone number link"),
            ("https://telegram.me/proxy?server=h", "telegram.me/proxy... is an MTProto proxy link"),
            ("https://telegram.dog/login/123", "telegram.dog/login... is a login code link"),
            ("HTTPS://T.ME/Proxy?server=h", "T.ME/Proxy... is an MTProto proxy link"),
            ("https://t.me//login/123", "t.me//login... is a login code link"),
            (
                "tg://proxy?server=1.2.3.4&port=443&secret=ee00",
                "tg://proxy... is an MTProto proxy link",
            ),
            ("tg://socks?server=1.2.3.4&port=1080", "a SOCKS5 proxy link"),
            ("tg://login?code=12345", "tg://login... is a login code link"),
            ("tg://addlist?slug=abc", "a chat folder link"),
            ("tg://addstickers?set=Animals", "a sticker set link"),
            ("tg://addemoji?set=Smiles", "a custom emoji set link"),
            ("tg://addtheme?slug=Night", "a theme link"),
            ("tg://setlanguage?lang=uk", "a language pack link"),
            ("tg://msg_url?url=https://example.com", "a share link"),
            ("tg://msg?text=hi&to=name", "a share link"),
            ("tg://confirmphone?phone=380501234567&hash=ab", "a phone number confirmation link"),
            ("tg://bg?slug=abcdef", "a chat background link"),
            ("tg://invoice?slug=abcdef", "an invoice link"),
            ("tg://boost?domain=autobazar_com_ua", "a boost link"),
            ("tg://giftcode?slug=abcdef", "a Premium gift code link"),
            ("tg://contact?token=abcdef", "a contact link"),
            ("tg://message?slug=abcdef", "a business chat link"),
            ("tg://privatepost?channel=123&post=45", "a message link into a private channel"),
            ("tg://user?id=12345", "a link to a user"),
            ("tg://passport?bot_id=1", "a Telegram Passport request"),
            ("tg://resolve?phone=380501234567", "tg://resolve... is a phone number link"),
            ("TG://Proxy?server=h", "TG://Proxy... is an MTProto proxy link"),
        ];
        for (input, needle) in cases {
            let err = TargetLink::parse(input).expect_err(input);
            assert!(matches!(err, LinkError::ServiceLink { .. }), "{input:?}: {err:?}");
            let message = err.to_string();
            assert!(message.contains(needle), "{input:?}: {message:?} lacks {needle:?}");
        }
    }

    #[test]
    fn a_refused_service_link_does_not_echo_what_follows_its_word() {
        // Login codes, gift codes and proxy secrets are worth something to whoever reads a log.
        for (input, secret) in [
            ("https://t.me/login/86420", "86420"),
            ("tg://login?code=86420", "86420"),
            ("https://t.me/giftcode/GiFtC0dE", "GiFtC0dE"),
            ("https://t.me/proxy?server=h&port=1&secret=ee5ecret", "ee5ecret"),
        ] {
            let message = TargetLink::parse(input).expect_err(input).to_string();
            assert!(!message.contains(secret), "{input:?}: {message:?}");
        }
    }

    #[test]
    fn names_that_only_begin_like_a_service_word_are_still_usernames() {
        for name in ["proxybot", "login_help", "c_channel", "sharecars", "boosted", "maestro"] {
            check(&format!("https://t.me/{name}"), &format!("@{name}"), LinkKind::Username);
            check(&format!("tg://resolve?domain={name}"), &format!("@{name}"), LinkKind::Username);
        }
    }

    #[test]
    fn a_plus_and_digits_is_an_invite_when_too_short_or_too_long_for_a_phone_number() {
        check("https://t.me/+123456", "t.me/+123456", LinkKind::Invite);
        check("https://t.me/+1234567890123456", "t.me/+1234567890123456", LinkKind::Invite);
        check("https://t.me/+12345678a", "t.me/+12345678a", LinkKind::Invite);
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
