//! Session strings as operators hold them: Telethon, GramJS and Pyrogram, told apart by their
//! bytes, all read into one [`TelethonSession`] (home DC, its address, the auth key).
//!
//! Pure parsing, like [`super::session`]; Telethon `.session` files are
//! [`super::session_file`].
//!
//! # Formats
//!
//! - **Telethon** `StringSession`: `'1'` + URL-safe base64 of DC id (1 byte), IPv4 or IPv6
//!   address (4 or 16), port (2, big endian), auth key (256). See [`super::session`].
//! - **GramJS** `StringSession`: `'1'` + base64 of DC id (1 byte), address length (2, big
//!   endian), the address as UTF-8 text, port (2, big endian), auth key (256). GramJS also
//!   reads Telethon strings; a string whose bytes fit GramJS's layout exactly (the length field
//!   matches and the text is an IP address) is GramJS, any other `'1'` string is Telethon.
//! - **Pyrogram** session strings: URL-safe base64 without padding of a big-endian struct, in
//!   three layouts told apart by their length:
//!
//!   | characters | struct | fields |
//!   | --- | --- | --- |
//!   | 351 | `>B?256sI?` | DC id, test mode, auth key, user id (u32), is bot (old) |
//!   | 356 | `>B?256sQ?` | DC id, test mode, auth key, user id (u64), is bot (old) |
//!   | 362 | `>BI?256sQ?` | DC id, api id, test mode, auth key, user id, is bot (current) |
//!
//!   They carry no address: the DC's production IPv4 address comes from [`PYROGRAM_DCS`], on
//!   port 443. Sessions of Telegram's test servers (test mode set) are refused: this project
//!   works with production accounts only.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::session::{AUTH_KEY_LEN, TelethonSession};

/// Telegram's production data centres (IPv4), as Pyrogram connects to them.
pub const PYROGRAM_DCS: [(u8, Ipv4Addr); 5] = [
    (1, Ipv4Addr::new(149, 154, 175, 53)),
    (2, Ipv4Addr::new(149, 154, 167, 51)),
    (3, Ipv4Addr::new(149, 154, 175, 100)),
    (4, Ipv4Addr::new(149, 154, 167, 91)),
    (5, Ipv4Addr::new(91, 108, 56, 130)),
];

/// The port Pyrogram connects to.
pub const PYROGRAM_PORT: u16 = 443;

/// Which tool wrote a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionFormat {
    TelethonString,
    GramJsString,
    /// A Pyrogram session string of this many characters (351, 356 or 362).
    PyrogramString(usize),
    TelethonFile,
}

impl fmt::Display for SessionFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionFormat::TelethonString => f.write_str("Telethon string session"),
            SessionFormat::GramJsString => f.write_str("GramJS string session"),
            SessionFormat::PyrogramString(362) => {
                f.write_str("Pyrogram session string (362 characters, current layout)")
            }
            SessionFormat::PyrogramString(n) => {
                write!(f, "Pyrogram session string ({n} characters, old layout)")
            }
            SessionFormat::TelethonFile => f.write_str("Telethon .session file"),
        }
    }
}

/// Why a session cannot be read: the format it was read as (None: none fits) and the problem.
/// Never carries any part of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub format: Option<SessionFormat>,
    pub problem: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.format {
            Some(format) => write!(f, "{} (read as a {format})", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl std::error::Error for ImportError {}

fn fail(format: SessionFormat, problem: impl Into<String>) -> ImportError {
    ImportError { format: Some(format), problem: problem.into() }
}

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Base64 in either alphabet, padding optional.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let body: String = s
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            other => other,
        })
        .collect();
    LENIENT.decode(body.as_bytes()).ok()
}

/// Reads a session string of any supported format. Surrounding whitespace is ignored.
pub fn decode_string(s: &str) -> Result<(TelethonSession, SessionFormat), ImportError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ImportError { format: None, problem: "the session string is empty".into() });
    }
    if let Some(body) = s.strip_prefix('1') {
        if let Some(bytes) = decode_base64(body)
            && let Some(session) = gramjs(&bytes)
        {
            return session.map(|s| (s, SessionFormat::GramJsString));
        }
        return TelethonSession::decode(s)
            .map(|session| (session, SessionFormat::TelethonString))
            .map_err(|e| fail(SessionFormat::TelethonString, e.to_string()));
    }
    if matches!(s.len(), 351 | 356 | 362) {
        return pyrogram(s).map(|session| (session, SessionFormat::PyrogramString(s.len())));
    }
    Err(ImportError {
        format: None,
        problem: format!(
            "not a session string of a known format ({} characters starting with {:?}): Telethon \
             and GramJS strings start with '1', Pyrogram strings have 351, 356 or 362 characters",
            s.chars().count(),
            s.chars().next().unwrap_or_default()
        ),
    })
}

/// GramJS's layout, when the bytes fit it exactly: None when they do not (then the string is
/// read as Telethon's).
fn gramjs(bytes: &[u8]) -> Option<Result<TelethonSession, ImportError>> {
    let len = u16::from_be_bytes([*bytes.get(1)?, *bytes.get(2)?]) as usize;
    if bytes.len() != 1 + 2 + len + 2 + AUTH_KEY_LEN {
        return None;
    }
    let text = std::str::from_utf8(&bytes[3..3 + len]).ok()?;
    let ip: IpAddr = text.parse().ok()?;
    let format = SessionFormat::GramJsString;
    let dc_id = bytes[0];
    let port = u16::from_be_bytes([bytes[3 + len], bytes[4 + len]]);
    let key: [u8; AUTH_KEY_LEN] = bytes[5 + len..].try_into().ok()?;
    Some(checked(format, dc_id, SocketAddr::new(ip, port), key))
}

fn checked(
    format: SessionFormat,
    dc_id: u8,
    addr: SocketAddr,
    key: [u8; AUTH_KEY_LEN],
) -> Result<TelethonSession, ImportError> {
    if dc_id == 0 {
        return Err(fail(format, "dc id 0 is not a data centre"));
    }
    if addr.port() == 0 {
        return Err(fail(format, "the DC port is 0"));
    }
    if key.iter().all(|&b| b == 0) {
        return Err(fail(format, "the auth key is all zeros"));
    }
    Ok(TelethonSession::new(dc_id, addr, key))
}

fn pyrogram(s: &str) -> Result<TelethonSession, ImportError> {
    let format = SessionFormat::PyrogramString(s.len());
    if let Some((at, c)) =
        s.char_indices().find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(fail(
            format,
            format!(
                "invalid character {:?} at byte {at} (URL-safe base64 expected)",
                c.escape_default().to_string()
            ),
        ));
    }
    let bytes = decode_base64(s)
        .ok_or_else(|| fail(format, "bad base64 (the string looks truncated or altered)"))?;
    // (offset of test mode, offset of the key) per layout.
    let (test_at, key_at, want) = match s.len() {
        351 => (1, 2, 1 + 1 + 256 + 4 + 1),
        356 => (1, 2, 1 + 1 + 256 + 8 + 1),
        _ => (5, 6, 1 + 4 + 1 + 256 + 8 + 1),
    };
    if bytes.len() != want {
        return Err(fail(format, format!("decodes to {} bytes, expected {want}", bytes.len())));
    }
    if bytes[test_at] != 0 {
        return Err(fail(
            format,
            "a session of Telegram's test servers (test mode); only production accounts are used",
        ));
    }
    let dc_id = bytes[0];
    let Some((_, ip)) = PYROGRAM_DCS.iter().find(|(id, _)| *id == dc_id) else {
        return Err(fail(format, format!("dc id {dc_id} is not one of Telegram's DCs 1-5")));
    };
    let key: [u8; AUTH_KEY_LEN] = bytes[key_at..key_at + AUTH_KEY_LEN]
        .try_into()
        .map_err(|_| fail(format, "the auth key is cut short"))?;
    checked(format, dc_id, SocketAddr::new(IpAddr::V4(*ip), PYROGRAM_PORT), key)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use super::*;

    fn key(seed: u8) -> [u8; AUTH_KEY_LEN] {
        let mut k = [0u8; AUTH_KEY_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(13).wrapping_add(seed);
        }
        k
    }

    /// GramJS's bytes: dc, address length, address text, port, key; standard base64.
    fn gramjs_string(dc: u8, addr: &str, port: u16, key: &[u8; AUTH_KEY_LEN]) -> String {
        let mut b = vec![dc];
        b.extend_from_slice(&(addr.len() as u16).to_be_bytes());
        b.extend_from_slice(addr.as_bytes());
        b.extend_from_slice(&port.to_be_bytes());
        b.extend_from_slice(key);
        format!("1{}", STANDARD.encode(b))
    }

    /// Pyrogram's struct in each layout; URL-safe base64 without padding.
    fn pyrogram_string(chars: usize, dc: u8, test: bool, key: &[u8; AUTH_KEY_LEN]) -> String {
        let mut b = vec![dc];
        if chars == 362 {
            b.extend_from_slice(&123_456u32.to_be_bytes()); // api_id
        }
        b.push(u8::from(test));
        b.extend_from_slice(key);
        match chars {
            351 => b.extend_from_slice(&987_654_321u32.to_be_bytes()),
            _ => b.extend_from_slice(&5_987_654_321u64.to_be_bytes()),
        }
        b.push(0); // is_bot
        URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn every_pyrogram_layout_is_read_with_its_dc_address_from_the_table() {
        for (chars, dc, ip) in
            [(351, 2, "149.154.167.51"), (356, 4, "149.154.167.91"), (362, 5, "91.108.56.130")]
        {
            let s = pyrogram_string(chars, dc, false, &key(chars as u8));
            assert_eq!(s.len(), chars);
            let (session, format) = decode_string(&format!("{s}\n")).unwrap();
            assert_eq!(format, SessionFormat::PyrogramString(chars));
            assert_eq!(session.dc_id, i32::from(dc));
            assert_eq!(session.addr, SocketAddr::new(ip.parse().unwrap(), 443));
            assert_eq!(session.auth_key(), &key(chars as u8));
        }
    }

    #[test]
    fn a_gramjs_string_round_trips_and_a_telethon_one_is_still_telethon() {
        let s = gramjs_string(2, "149.154.167.51", 443, &key(1));
        let (session, format) = decode_string(&s).unwrap();
        assert_eq!(format, SessionFormat::GramJsString);
        assert_eq!((session.dc_id, session.addr), (2, "149.154.167.51:443".parse().unwrap()));
        assert_eq!(session.auth_key(), &key(1));
        // The same session written by Telethon (its IPv4 layout) and IPv6 GramJS.
        let telethon = session.encode();
        assert_eq!(decode_string(&telethon).unwrap(), (session, SessionFormat::TelethonString));
        let v6 = gramjs_string(4, "2001:67c:4e8:f004::a", 443, &key(2));
        let (session, format) = decode_string(&v6).unwrap();
        assert_eq!(format, SessionFormat::GramJsString);
        assert_eq!(session.addr, "[2001:67c:4e8:f004::a]:443".parse().unwrap());
        // A GramJS string with an address whose length equals Telethon's IPv6 layout (275
        // bytes) is still told apart by its length field.
        let telethon_v6 =
            TelethonSession::new(2, "[2001:b28:f23d:f001::a]:443".parse().unwrap(), key(3));
        let decoded = decode_string(&telethon_v6.encode()).unwrap();
        assert_eq!(decoded, (telethon_v6, SessionFormat::TelethonString));
    }

    #[test]
    fn unreadable_sessions_name_the_format_and_never_the_key() {
        let check = |s: &str, want: &str| {
            let e = decode_string(s).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
            if s.len() > 40 {
                assert!(!e.contains(&s[8..40]), "the string is echoed: {e}");
            }
        };
        check(
            &pyrogram_string(362, 2, true, &key(1)),
            "test servers (test mode); only production accounts are used (read as a Pyrogram session string (362 characters, current layout))",
        );
        check(
            &pyrogram_string(356, 9, false, &key(1)),
            "dc id 9 is not one of Telegram's DCs 1-5 (read as a Pyrogram session string (356 characters, old layout))",
        );
        check(&pyrogram_string(351, 1, false, &[0; AUTH_KEY_LEN]), "all zeros (read as a Pyrogram");
        let mut bad = pyrogram_string(362, 2, false, &key(1));
        bad.replace_range(100..101, "!");
        check(
            &bad,
            "invalid character \"!\" at byte 100 (URL-safe base64 expected) (read as a Pyrogram",
        );
        check(
            &gramjs_string(2, "149.154.167.51", 0, &key(1)),
            "the DC port is 0 (read as a GramJS string session)",
        );
        check("1AAAA", "(read as a Telethon string session)");
        check("hello", "not a session string of a known format (5 characters starting with 'h')");
        assert_eq!(decode_string("  ").unwrap_err().to_string(), "the session string is empty");
    }
}
