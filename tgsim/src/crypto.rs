//! The server half of MTProto 2.0 encryption.
//!
//! grammers-crypto only ships the client half (it encrypts with `x = 0` and decrypts with
//! `x = 8`); a data centre needs the mirror image: decrypt what the client sent (`x = 0`) and
//! encrypt its answers (`x = 8`). The AES-256-IGE primitive itself is grammers'.

use grammers_crypto::aes;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Bytes in front of the ciphertext: auth_key_id (8) and msg_key (16).
const HEADER_LEN: usize = 8 + 16;

/// A 256-byte authorisation key with its derived identifier.
#[derive(Clone)]
pub struct AuthKey {
    data: [u8; 256],
    id: [u8; 8],
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key itself: it is the account's whole secret.
        f.debug_struct("AuthKey").field("id", &u64::from_le_bytes(self.id)).finish_non_exhaustive()
    }
}

impl AuthKey {
    /// Wraps the raw key; the identifier is the low 8 bytes of its SHA-1.
    pub fn new(data: [u8; 256]) -> Self {
        let hash = Sha1::digest(data);
        let mut id = [0; 8];
        id.copy_from_slice(&hash[12..20]);
        Self { data, id }
    }

    /// `auth_key_id` as it appears on the wire (little-endian bytes).
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    /// `auth_key_id` as an integer (how the data centre indexes keys).
    pub fn id_u64(&self) -> u64 {
        u64::from_le_bytes(self.id)
    }

    /// The raw key bytes.
    pub fn bytes(&self) -> &[u8; 256] {
        &self.data
    }
}

/// Why a client packet could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("encrypted packet has a bad length ({0} bytes)")]
    BadLength(usize),
    #[error("packet was encrypted with another auth key")]
    WrongKey,
    #[error("msg_key does not match the decrypted plaintext")]
    MsgKeyMismatch,
}

/// Which way a message travels; selects `x` in the key derivation.
#[derive(Clone, Copy)]
enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    fn x(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 8,
        }
    }
}

fn msg_key_for(key: &AuthKey, plaintext: &[u8], dir: Direction) -> [u8; 16] {
    let x = dir.x();
    let large =
        Sha256::new().chain_update(&key.data[88 + x..120 + x]).chain_update(plaintext).finalize();
    let mut msg_key = [0; 16];
    msg_key.copy_from_slice(&large[8..24]);
    msg_key
}

fn aes_key_iv(key: &AuthKey, msg_key: &[u8; 16], dir: Direction) -> ([u8; 32], [u8; 32]) {
    let x = dir.x();
    let a = Sha256::new().chain_update(msg_key).chain_update(&key.data[x..x + 36]).finalize();
    let b = Sha256::new().chain_update(&key.data[40 + x..76 + x]).chain_update(msg_key).finalize();

    let mut aes_key = [0; 32];
    aes_key[..8].copy_from_slice(&a[..8]);
    aes_key[8..24].copy_from_slice(&b[8..24]);
    aes_key[24..].copy_from_slice(&a[24..]);

    let mut aes_iv = [0; 32];
    aes_iv[..8].copy_from_slice(&b[..8]);
    aes_iv[8..24].copy_from_slice(&a[8..24]);
    aes_iv[24..].copy_from_slice(&b[24..]);
    (aes_key, aes_iv)
}

/// Reads the `auth_key_id` of an encrypted packet (0 means a plain, unencrypted message).
pub fn packet_key_id(packet: &[u8]) -> Option<u64> {
    packet.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Decrypts a client packet (`auth_key_id | msg_key | ciphertext`) and returns the plaintext
/// (`salt | session_id | message | padding`).
pub fn decrypt_from_client(key: &AuthKey, packet: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if packet.len() < HEADER_LEN + 16 || !(packet.len() - HEADER_LEN).is_multiple_of(16) {
        return Err(CryptoError::BadLength(packet.len()));
    }
    if packet[..8] != key.id {
        return Err(CryptoError::WrongKey);
    }
    let msg_key: [u8; 16] = packet[8..24].try_into().expect("16 bytes");
    let (aes_key, aes_iv) = aes_key_iv(key, &msg_key, Direction::ClientToServer);
    let mut plaintext = packet[HEADER_LEN..].to_vec();
    aes::ige_decrypt(&mut plaintext, &aes_key, &aes_iv);
    if msg_key_for(key, &plaintext, Direction::ClientToServer) != msg_key {
        return Err(CryptoError::MsgKeyMismatch);
    }
    Ok(plaintext)
}

/// Encrypts a server plaintext (`salt | session_id | message`), adding MTProto 2.0 padding
/// (12 to 1024 random bytes, total a multiple of 16), and returns the packet to frame.
pub fn encrypt_for_client(key: &AuthKey, plaintext: &[u8]) -> Vec<u8> {
    // At least 12 bytes of padding, at most 27, and the result aligned to 16.
    let padding = 12 + (16 - (plaintext.len() + 12) % 16) % 16;
    let mut body = Vec::with_capacity(HEADER_LEN + plaintext.len() + padding);
    body.extend_from_slice(&[0; HEADER_LEN]);
    body.extend_from_slice(plaintext);
    let mut pad = [0u8; 32];
    rand::fill(&mut pad[..padding]);
    body.extend_from_slice(&pad[..padding]);

    let msg_key = msg_key_for(key, &body[HEADER_LEN..], Direction::ServerToClient);
    let (aes_key, aes_iv) = aes_key_iv(key, &msg_key, Direction::ServerToClient);
    aes::ige_encrypt(&mut body[HEADER_LEN..], &aes_key, &aes_iv);
    body[..8].copy_from_slice(&key.id);
    body[8..24].copy_from_slice(&msg_key);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use grammers_crypto::DequeBuffer;

    fn key(seed: u8) -> [u8; 256] {
        std::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
    }

    #[test]
    fn key_id_matches_grammers() {
        let raw = key(7);
        let mut buffer = DequeBuffer::with_capacity(64, 64);
        buffer.extend([0u8; 16]);
        grammers_crypto::encrypt_data_v2(&mut buffer, &grammers_crypto::AuthKey::from_bytes(raw));
        assert_eq!(AuthKey::new(raw).id(), buffer[..8]);
    }

    #[test]
    fn server_decrypts_what_the_grammers_client_encrypts() {
        let raw = key(1);
        let plaintext: Vec<u8> = (0..100u8).collect();
        let mut buffer = DequeBuffer::with_capacity(256, 64);
        buffer.extend(plaintext.iter().copied());
        grammers_crypto::encrypt_data_v2(&mut buffer, &grammers_crypto::AuthKey::from_bytes(raw));

        let decrypted = decrypt_from_client(&AuthKey::new(raw), &buffer[..]).unwrap();
        assert_eq!(&decrypted[..plaintext.len()], &plaintext[..]);
    }

    #[test]
    fn grammers_client_decrypts_what_the_server_encrypts() {
        let raw = key(2);
        for len in [16usize, 20, 28, 32, 100, 1000] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut packet = encrypt_for_client(&AuthKey::new(raw), &plaintext);
            let padding = packet.len() - HEADER_LEN - len;
            assert!((12..=1024).contains(&padding), "padding {padding} for {len}");
            let decrypted = grammers_crypto::decrypt_data_v2(
                &mut packet,
                &grammers_crypto::AuthKey::from_bytes(raw),
            )
            .unwrap();
            assert_eq!(&decrypted[..len], &plaintext[..]);
        }
    }

    #[test]
    fn a_tampered_packet_is_rejected() {
        let raw = key(3);
        let mut buffer = DequeBuffer::with_capacity(64, 64);
        buffer.extend([1u8; 32]);
        grammers_crypto::encrypt_data_v2(&mut buffer, &grammers_crypto::AuthKey::from_bytes(raw));
        let mut packet = buffer[..].to_vec();
        let last = packet.len() - 1;
        packet[last] ^= 1;
        assert_eq!(
            decrypt_from_client(&AuthKey::new(raw), &packet),
            Err(CryptoError::MsgKeyMismatch)
        );
        assert_eq!(
            decrypt_from_client(&AuthKey::new(key(4)), &buffer[..]),
            Err(CryptoError::WrongKey)
        );
    }
}
