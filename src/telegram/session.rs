//! Import of Telethon `StringSession` strings, the `string_session` field of SmartJoiner's
//! `accounts_config.json`.
//!
//! Pure parsing: this module imports nothing from grammers. The Telegram adapter turns a
//! [`TelethonSession`] into grammers' session data (home DC = `dc_id`, that DC's address and
//! auth key).
//!
//! # Format
//!
//! `'1'` (the format version) followed by base64 of
//!
//! | bytes | content |
//! | --- | --- |
//! | 1 | DC id |
//! | 4 or 16 | the DC's IPv4 or IPv6 address |
//! | 2 | the DC's port, big endian |
//! | 256 | the auth key |
//!
//! 263 bytes (352 base64 characters) with an IPv4 address, 275 bytes (368 characters) with an
//! IPv6 one. Telethon writes the URL-safe alphabet with `=` padding; [`TelethonSession::decode`]
//! also accepts the string without padding and in the standard alphabet (`+` and `/`), since
//! such strings are sometimes re-encoded by hand or by other tools.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The only string-session version this module reads and writes.
const VERSION: char = '1';

/// Length of a Telegram auth key, in bytes.
pub const AUTH_KEY_LEN: usize = 256;

/// Decoded length of a session with an IPv4 address: DC id, address, port, key.
const LEN_V4: usize = 1 + 4 + 2 + AUTH_KEY_LEN;

/// Decoded length of a session with an IPv6 address.
const LEN_V6: usize = 1 + 16 + 2 + AUTH_KEY_LEN;

/// DC ids a session may name: any non-zero byte.
///
/// Telegram's data centres are numbered 1 to 5 and Telethon only stores those, but grammers
/// connects to the address stored in the session whatever the id, and the loopback DC may
/// claim any id from 1 to 255. So only 0, which Telethon never writes and which marks a zeroed
/// or corrupted string, is refused; garbage is caught by the base64 and length checks anyway.
pub const VALID_DC_IDS: RangeInclusive<i32> = 1..=255;

/// The auth key of a session: 256 bytes that fully authorise the account.
///
/// Its `Debug` prints `[redacted]`, so a key can never reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey([u8; AUTH_KEY_LEN]);

impl AuthKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; AUTH_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; AUTH_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A decoded Telethon `StringSession`: which DC the account lives on, where to reach it, and
/// the auth key.
///
/// `Debug` shows the DC and the address but never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TelethonSession {
    /// The account's home DC, in [`VALID_DC_IDS`] when decoded.
    pub dc_id: i32,
    /// Address of the home DC (IPv4 or IPv6) as stored in the session.
    pub addr: SocketAddr,
    auth_key: AuthKey,
}

impl fmt::Debug for TelethonSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelethonSession")
            .field("dc_id", &self.dc_id)
            .field("addr", &self.addr)
            .field("auth_key", &self.auth_key)
            .finish()
    }
}

/// Why a string is not a usable Telethon session. No variant carries any part of the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The string is empty or only whitespace.
    #[error("the session string is empty")]
    Empty,
    /// The first character is not the version `1`.
    #[error(
        "unsupported session string version {found:?}: only Telethon StringSession strings \
         (starting with '1') are supported; Pyrogram session strings are not, as they carry \
         no DC address"
    )]
    UnsupportedVersion {
        /// The first character of the string.
        found: char,
    },
    /// The part after the version is not valid base64.
    #[error("bad base64{}: {problem}", position.map(|p| format!(" at byte {p}")).unwrap_or_default())]
    BadBase64 {
        /// Zero-based byte offset of the problem in the (trimmed) string, version included,
        /// when the decoder can tell.
        position: Option<usize>,
        /// What is wrong there.
        problem: String,
    },
    /// The base64 decodes, but not to the length of a session.
    #[error(
        "wrong decoded length: expected {LEN_V4} bytes (IPv4 address) or {LEN_V6} bytes \
         (IPv6 address), got {got}"
    )]
    WrongLength {
        /// Number of decoded bytes.
        got: usize,
    },
    /// The DC id is outside [`VALID_DC_IDS`].
    #[error("dc id {dc_id} is out of range 1..=255")]
    DcIdOutOfRange {
        /// The DC id found.
        dc_id: i32,
    },
    /// The stored port is 0, which nothing can connect to.
    #[error("the DC port is 0")]
    ZeroPort,
    /// The auth key is all zero bytes: a placeholder, not a key.
    #[error("the auth key is all zeros")]
    ZeroAuthKey,
}

/// URL-safe alphabet, padding optional (after mapping the standard alphabet onto it).
const DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl TelethonSession {
    /// Builds a session from its parts.
    pub fn new(dc_id: u8, addr: SocketAddr, key: [u8; AUTH_KEY_LEN]) -> Self {
        Self { dc_id: i32::from(dc_id), addr, auth_key: AuthKey::new(key) }
    }

    /// Decodes a Telethon `StringSession` string.
    ///
    /// Surrounding whitespace (a trailing newline from copy and paste) is ignored. Never panics,
    /// whatever the input.
    pub fn decode(s: &str) -> Result<Self, SessionError> {
        let s = s.trim();
        let mut chars = s.chars();
        let version = chars.next().ok_or(SessionError::Empty)?;
        if version != VERSION {
            return Err(SessionError::UnsupportedVersion { found: version });
        }
        // The version is one ASCII byte, so byte 1 onwards is the base64 body. Mapping the
        // standard alphabet onto the URL-safe one keeps every byte at its offset.
        let body: Vec<u8> = s.as_bytes()[1..]
            .iter()
            .map(|&b| match b {
                b'+' => b'-',
                b'/' => b'_',
                other => other,
            })
            .collect();
        let bytes = DECODER.decode(&body).map_err(base64_error)?;

        let (ip, rest) = match bytes.len() {
            LEN_V4 => {
                let (ip, rest) = bytes[1..].split_at(4);
                let ip: [u8; 4] = ip.try_into().map_err(|_| wrong_length(&bytes))?;
                (IpAddr::V4(Ipv4Addr::from(ip)), rest)
            }
            LEN_V6 => {
                let (ip, rest) = bytes[1..].split_at(16);
                let ip: [u8; 16] = ip.try_into().map_err(|_| wrong_length(&bytes))?;
                (IpAddr::V6(Ipv6Addr::from(ip)), rest)
            }
            got => return Err(SessionError::WrongLength { got }),
        };
        let dc_id = i32::from(bytes[0]);
        if !VALID_DC_IDS.contains(&dc_id) {
            return Err(SessionError::DcIdOutOfRange { dc_id });
        }
        let (port, key) = rest.split_at(2);
        let port = u16::from_be_bytes([port[0], port[1]]);
        if port == 0 {
            return Err(SessionError::ZeroPort);
        }
        let key: [u8; AUTH_KEY_LEN] = key.try_into().map_err(|_| wrong_length(&bytes))?;
        if key.iter().all(|&b| b == 0) {
            return Err(SessionError::ZeroAuthKey);
        }
        Ok(Self { dc_id, addr: SocketAddr::new(ip, port), auth_key: AuthKey::new(key) })
    }

    /// Encodes the session exactly as Telethon does: `'1'`, then URL-safe base64 with padding.
    ///
    /// A `dc_id` that does not fit in a byte (possible only by assigning the public field) is
    /// written as 0, which [`decode`](Self::decode) rejects, rather than silently as another DC.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(LEN_V6);
        bytes.push(u8::try_from(self.dc_id).unwrap_or(0));
        match self.addr.ip() {
            IpAddr::V4(ip) => bytes.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => bytes.extend_from_slice(&ip.octets()),
        }
        bytes.extend_from_slice(&self.addr.port().to_be_bytes());
        bytes.extend_from_slice(self.auth_key.as_bytes());
        let mut out = String::with_capacity(1 + LEN_V6.div_ceil(3) * 4);
        out.push(VERSION);
        base64::engine::general_purpose::URL_SAFE.encode_string(&bytes, &mut out);
        out
    }

    /// The 256-byte auth key.
    pub fn auth_key(&self) -> &[u8; AUTH_KEY_LEN] {
        self.auth_key.as_bytes()
    }
}

fn wrong_length(bytes: &[u8]) -> SessionError {
    SessionError::WrongLength { got: bytes.len() }
}

/// Describes a base64 failure; offsets are shifted past the version character.
fn base64_error(e: base64::DecodeError) -> SessionError {
    use base64::DecodeError as E;
    let (position, problem) = match e {
        E::InvalidByte(at, byte) => (
            Some(at + 1),
            format!("invalid character {:?}", char::from(byte).escape_default().to_string()),
        ),
        E::InvalidLastSymbol(at, byte) => (
            Some(at + 1),
            format!(
                "invalid last character {:?} (the string looks truncated or altered)",
                char::from(byte).escape_default().to_string()
            ),
        ),
        E::InvalidLength(len) => {
            (None, format!("{len} base64 characters is not a possible length (truncated?)"))
        }
        E::InvalidPadding => (None, "invalid '=' padding".to_owned()),
    };
    SessionError::BadBase64 { position, problem }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{SocketAddrV4, SocketAddrV6};

    fn key(seed: u8) -> [u8; AUTH_KEY_LEN] {
        let mut k = [0u8; AUTH_KEY_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        }
        k
    }

    fn v4_session() -> TelethonSession {
        TelethonSession::new(2, "149.154.167.51:443".parse().unwrap(), key(7))
    }

    /// Builds a session string from raw bytes, the way Telethon would.
    fn string_of(bytes: &[u8]) -> String {
        format!("1{}", base64::engine::general_purpose::URL_SAFE.encode(bytes))
    }

    fn raw_v4(dc: u8, port: u16, key: [u8; AUTH_KEY_LEN]) -> Vec<u8> {
        let mut b = vec![dc, 149, 154, 167, 51];
        b.extend_from_slice(&port.to_be_bytes());
        b.extend_from_slice(&key);
        b
    }

    #[test]
    fn an_ipv4_session_encodes_to_352_base64_characters_with_padding() {
        let s = v4_session().encode();
        assert_eq!(s.len(), 1 + 352);
        assert!(s.starts_with('1'));
        assert!(s.ends_with('='));
    }

    #[test]
    fn an_ipv6_session_encodes_to_368_base64_characters() {
        let addr: SocketAddr = "[2001:67c:4e8:f002::a]:443".parse().unwrap();
        let s = TelethonSession::new(4, addr, key(1)).encode();
        assert_eq!(s.len(), 1 + 368);
    }

    #[test]
    fn a_telethon_layout_decodes_to_its_dc_address_and_key() {
        let s = string_of(&raw_v4(2, 443, key(9)));
        let session = TelethonSession::decode(&s).unwrap();
        assert_eq!(session.dc_id, 2);
        assert_eq!(session.addr, "149.154.167.51:443".parse().unwrap());
        assert_eq!(session.auth_key(), &key(9));
    }

    #[test]
    fn decoding_accepts_missing_padding_the_standard_alphabet_and_surrounding_whitespace() {
        let original = v4_session();
        let padded = original.encode();
        let unpadded = padded.trim_end_matches('=').to_owned();
        let standard = padded.replace('-', "+").replace('_', "/");
        let wrapped = format!("  {padded}\n");
        for s in [padded, unpadded, standard, wrapped] {
            assert_eq!(TelethonSession::decode(&s).unwrap(), original, "{s}");
        }
    }

    #[test]
    fn an_empty_string_is_reported_as_empty() {
        assert_eq!(TelethonSession::decode(""), Err(SessionError::Empty));
        assert_eq!(TelethonSession::decode(" \n"), Err(SessionError::Empty));
    }

    #[test]
    fn a_string_of_another_version_is_rejected_and_pyrogram_is_named() {
        let err = TelethonSession::decode("BQAAAAAA").unwrap_err();
        assert_eq!(err, SessionError::UnsupportedVersion { found: 'B' });
        assert!(err.to_string().contains("Pyrogram"));
    }

    #[test]
    fn an_invalid_character_is_reported_with_its_position() {
        let mut s = v4_session().encode();
        s.replace_range(10..11, "!");
        let err = TelethonSession::decode(&s).unwrap_err();
        assert!(matches!(err, SessionError::BadBase64 { position: Some(10), .. }), "{err:?}");
        assert!(err.to_string().contains("at byte 10"), "{err}");
    }

    #[test]
    fn a_truncated_string_is_reported_with_the_decoded_length() {
        let s = v4_session().encode();
        let err = TelethonSession::decode(&s[..s.len() - 5]).unwrap_err();
        // 347 base64 characters of body is not a valid length; 344 decode to 258 bytes.
        assert!(matches!(err, SessionError::BadBase64 { .. }), "{err:?}");
        let err = TelethonSession::decode(&s[..1 + 344]).unwrap_err();
        assert_eq!(err, SessionError::WrongLength { got: 258 });
        assert!(err.to_string().contains("expected 263"));
    }

    #[test]
    fn dc_id_zero_is_rejected_and_every_other_byte_accepted() {
        let err = TelethonSession::decode(&string_of(&raw_v4(0, 443, key(0)))).unwrap_err();
        assert_eq!(err, SessionError::DcIdOutOfRange { dc_id: 0 });
        assert!(err.to_string().contains("1..=255"), "{err}");
        for dc in [1u8, 2, 5, 6, 255] {
            assert!(TelethonSession::decode(&string_of(&raw_v4(dc, 443, key(0)))).is_ok());
        }
    }

    #[test]
    fn port_zero_is_rejected() {
        let err = TelethonSession::decode(&string_of(&raw_v4(2, 0, key(0)))).unwrap_err();
        assert_eq!(err, SessionError::ZeroPort);
    }

    #[test]
    fn an_all_zero_auth_key_is_rejected() {
        let err = TelethonSession::decode(&string_of(&raw_v4(2, 443, [0; AUTH_KEY_LEN])));
        assert_eq!(err, Err(SessionError::ZeroAuthKey));
    }

    #[test]
    fn debug_shows_dc_and_address_but_never_the_key() {
        let session = v4_session();
        let debug = format!("{session:?}");
        assert!(debug.contains("dc_id: 2"), "{debug}");
        assert!(debug.contains("149.154.167.51:443"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
        assert!(!debug.contains(&format!("{:?}", &session.auth_key()[..8])), "{debug}");
        assert!(!debug.contains(&session.encode()[1..40]), "{debug}");
    }

    #[test]
    fn an_out_of_range_public_dc_id_encodes_to_something_decode_rejects() {
        let mut session = v4_session();
        session.dc_id = 300;
        let err = TelethonSession::decode(&session.encode()).unwrap_err();
        assert_eq!(err, SessionError::DcIdOutOfRange { dc_id: 0 });
    }

    fn any_key() -> impl Strategy<Value = [u8; AUTH_KEY_LEN]> {
        prop::collection::vec(any::<u8>(), AUTH_KEY_LEN).prop_map(|v| {
            let mut k = [0u8; AUTH_KEY_LEN];
            k.copy_from_slice(&v);
            k[0] |= 1; // never all zero
            k
        })
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), 1..=u16::MAX)
                .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(ip.into(), port))),
            (any::<[u8; 16]>(), 1..=u16::MAX)
                .prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(ip.into(), port, 0, 0))),
        ]
    }

    proptest! {
        #[test]
        fn random_strings_never_panic(s in any::<String>()) {
            let _ = TelethonSession::decode(&s);
        }

        #[test]
        fn random_base64_looking_strings_never_panic(
            s in "1[A-Za-z0-9_=+/-]{0,400}"
        ) {
            let _ = TelethonSession::decode(&s);
        }

        #[test]
        fn random_bytes_of_session_length_never_panic(
            bytes in prop_oneof![
                prop::collection::vec(any::<u8>(), LEN_V4),
                prop::collection::vec(any::<u8>(), LEN_V6),
                prop::collection::vec(any::<u8>(), 0..300),
            ]
        ) {
            let _ = TelethonSession::decode(&string_of(&bytes));
        }

        #[test]
        fn encode_then_decode_gives_back_the_same_session(
            dc in 1u8..=255, addr in any_addr(), key in any_key()
        ) {
            let session = TelethonSession::new(dc, addr, key);
            let encoded = session.encode();
            prop_assert_eq!(encoded.len(), if addr.is_ipv4() { 353 } else { 369 });
            prop_assert_eq!(TelethonSession::decode(&encoded), Ok(session));
        }
    }
}
