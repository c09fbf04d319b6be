//! Fuzz checks of what tgsim reads from clients: the `Full` transport framing, and encrypted
//! packets down to the TL of the API calls.
//!
//! Each function takes arbitrary bytes, feeds them to the same code a connection runs, and
//! panics only when a property is broken (tgsim itself never panics on input). The fuzz
//! targets in `fuzz/` and the corpus replay test of the root crate call these, so a committed
//! reproducer fails `cargo test` without cargo-fuzz.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use grammers_tl_types::{Cursor, Deserializable};
use tokio::sync::mpsc;

use crate::crypto::{self, AuthKey};
use crate::scenario::{Account, Answer, Group, Scenario, Script};
use crate::server::{Conn, Outgoing, Shared};
use crate::tl::ids;
use crate::transport::{FrameReader, encode_frame};

/// `vector#1cb5c415`, the boxed vector (the answer to users.getUsers).
const VECTOR: u32 = 0x1cb5c415;

/// One runtime for every input: reading from a byte slice never waits, and building a runtime
/// per input would dominate the time of an execution.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime")
    })
}

/// The `Full` transport: `data` is what a client sent on a fresh connection. Every frame read
/// must re-encode to exactly the bytes it was read from (sequence numbers from 0, a valid
/// crc32), and a rejected frame must say why.
pub fn frames(data: &[u8]) {
    runtime().block_on(async {
        let mut reader = FrameReader::new(data);
        let mut consumed = 0usize;
        let mut seq = 0i32;
        loop {
            match reader.read().await {
                Ok(payload) => {
                    assert!(payload.len().is_multiple_of(4), "a frame payload is 4-byte aligned");
                    let frame = encode_frame(seq, &payload);
                    assert_eq!(
                        data.get(consumed..consumed + frame.len()),
                        Some(&frame[..]),
                        "frame {seq} re-encodes to the bytes it was read from"
                    );
                    consumed += frame.len();
                    seq += 1;
                }
                Err(error) => {
                    assert!(!error.to_string().is_empty(), "a frame error names the problem");
                    break;
                }
            }
        }
    });
}

/// The auth key of the fuzzed account (any fixed non-zero key will do).
fn fuzz_key() -> [u8; 256] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(97).wrapping_add(13))
}

/// A scenario with something behind each kind of call: a public group, a private one, one
/// that needs approval, a user with a username, and a script that answers joins of one group
/// with a FloodWait, so the fuzzer reaches the scripted paths and the FloodWait rule too. (No
/// latency: a delayed answer is sent from a spawned task, which would make an execution wait
/// for the timer.)
fn scenario() -> Scenario {
    let mut alice = Account::new("alice", 1001);
    alice.auth_key = crate::scenario::AuthKeyBytes(fuzz_key());
    alice.username = Some("alice_user".into());
    Scenario::new()
        .min_join_pause(Duration::from_secs(300))
        .account(alice)
        .account(Account::new("bob", 1002))
        .group(Group::new(5001, "Rust Lovers").username("rustlovers"))
        .group(Group::new(5002, "Private").invite("AAAAAEhQx3k1bXxv"))
        .group(Group::new(5003, "Guarded").username("guarded").request_needed())
        .script(
            Script::join()
                .target("@guarded")
                .answers([Answer::FloodWait { seconds: 30 }, Answer::Ok]),
        )
}

/// An encrypted packet as the account `alice` would send it, built from `plaintext`
/// (`salt | session_id | msg_id | seq_no | length | body`, the fuzzed part) and encrypted the
/// way the grammers client does, then handled like a packet read from a connection. Whatever
/// the plaintext, tgsim answers or rejects it with an error naming the problem, and everything
/// it sends back is a service message or an `rpc_result`.
pub fn packet(plaintext: &[u8]) {
    // A reply is only ever spawned for a scripted latency, which this scenario has none of;
    // the runtime context is there so that a future one cannot panic for want of it.
    let _guard = runtime().enter();
    let raw = fuzz_key();
    let mut buffer = grammers_crypto::DequeBuffer::with_capacity(plaintext.len(), 64);
    buffer.extend(plaintext.iter().copied());
    grammers_crypto::encrypt_data_v2(&mut buffer, &grammers_crypto::AuthKey::from_bytes(raw));
    let encrypted = buffer[..].to_vec();

    let shared = Arc::new(Shared::new(scenario()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = Conn::for_fuzzing(Arc::clone(&shared), 0, AuthKey::new(raw), tx);
    assert_eq!(crypto::packet_key_id(&encrypted), Some(AuthKey::new(raw).id_u64()));
    if let Err(error) = conn.on_packet(&encrypted) {
        assert!(!error.to_string().is_empty(), "a packet error names the problem");
    }
    drop(conn);
    while let Ok(out) = rx.try_recv() {
        let Outgoing::Message { body, .. } = out else { continue };
        let mut c = Cursor::from_slice(&body);
        let id = u32::deserialize(&mut c).expect("an answer starts with a constructor id");
        assert!(
            matches!(id, ids::RPC_RESULT | ids::PONG | ids::FUTURE_SALTS),
            "an answer is an rpc_result, a pong or future_salts, not {id:08x}"
        );
        if id == ids::RPC_RESULT {
            let _req_msg_id = i64::deserialize(&mut c).expect("rpc_result has a req_msg_id");
            let inner = u32::deserialize(&mut c).expect("rpc_result has a result");
            assert!(
                matches!(
                    inner,
                    ids::RPC_ERROR | VECTOR | ids::RPC_ANSWER_UNKNOWN | ids::DESTROY_SESSION_NONE
                ) || grammers_tl_types::name_for_id(inner) != "(unknown)",
                "an rpc_result carries a known constructor, not {inner:08x}"
            );
        }
    }
}
