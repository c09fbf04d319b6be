//! The MTProto `Full` transport, server side:
//! `len:i32 LE | seq:i32 LE | payload | crc32 LE`, where `len` counts all four parts and each
//! direction numbers its packets from 0.
//!
//! A transport error is a bare negative `len` (e.g. `-404` when the auth key is unknown); grammers
//! reads it as `transport::Error::BadStatus`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest packet we accept; Telegram closes connections above roughly one megabyte.
pub const MAX_PACKET: usize = 1024 * 1024 + 8 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad packet length {0}")]
    BadLen(i32),
    #[error("bad sequence number: expected {expected}, got {got}")]
    BadSeq { expected: i32, got: i32 },
    #[error("bad crc32")]
    BadCrc,
}

/// Reads `Full` frames from one side of a connection.
pub struct FrameReader<R> {
    inner: R,
    seq: i32,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, seq: 0 }
    }

    /// Reads the next frame and returns its payload. A clean close before a frame starts is
    /// `FrameError::Closed`.
    pub async fn read(&mut self) -> Result<Vec<u8>, FrameError> {
        let mut head = [0u8; 8];
        match self.inner.read_exact(&mut head[..4]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(FrameError::Closed);
            }
            Err(e) => return Err(e.into()),
        }
        let len = i32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if len < 12 || len as usize > MAX_PACKET || len % 4 != 0 {
            return Err(FrameError::BadLen(len));
        }
        self.inner.read_exact(&mut head[4..]).await?;
        let seq = i32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if seq != self.seq {
            return Err(FrameError::BadSeq { expected: self.seq, got: seq });
        }
        let mut rest = vec![0u8; len as usize - 8];
        self.inner.read_exact(&mut rest).await?;
        let crc_at = rest.len() - 4;
        let crc = u32::from_le_bytes(rest[crc_at..].try_into().expect("4 bytes"));
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head);
        hasher.update(&rest[..crc_at]);
        if hasher.finalize() != crc {
            return Err(FrameError::BadCrc);
        }
        self.seq += 1;
        rest.truncate(crc_at);
        Ok(rest)
    }
}

/// Writes `Full` frames to one side of a connection.
pub struct FrameWriter<W> {
    inner: W,
    seq: i32,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, seq: 0 }
    }

    /// Frames `payload` (whose length must be a multiple of 4) and writes it.
    pub async fn write(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let frame = encode_frame(self.seq, payload);
        self.seq += 1;
        self.inner.write_all(&frame).await?;
        self.inner.flush().await
    }

    /// Sends a transport error (a negative length, e.g. 404) and nothing else.
    pub async fn write_error(&mut self, status: i32) -> std::io::Result<()> {
        self.inner.write_all(&(-status).to_le_bytes()).await?;
        self.inner.flush().await
    }

    /// Closes the write half so the peer reads end-of-stream.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.inner.shutdown().await
    }
}

/// Encodes one `Full` frame.
pub fn encode_frame(seq: i32, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len().is_multiple_of(4), "payload must be 4-byte aligned");
    let len = payload.len() + 12;
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&(len as i32).to_le_bytes());
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(payload);
    let crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use grammers_crypto::DequeBuffer;
    use grammers_mtproto::transport::{self, Full, Transport};

    #[tokio::test]
    async fn reads_what_grammers_full_packs() {
        let mut client = Full::new();
        let mut wire = Vec::new();
        for n in [4usize, 16, 400] {
            let mut buffer = DequeBuffer::with_capacity(n, 16);
            buffer.extend((0..n).map(|i| i as u8));
            client.pack(&mut buffer);
            wire.extend_from_slice(&buffer[..]);
        }
        let mut reader = FrameReader::new(&wire[..]);
        for n in [4usize, 16, 400] {
            let payload = reader.read().await.unwrap();
            assert_eq!(payload, (0..n).map(|i| i as u8).collect::<Vec<_>>());
        }
        assert!(matches!(reader.read().await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn grammers_full_unpacks_what_we_write() {
        let mut wire = Vec::new();
        let mut writer = FrameWriter::new(&mut wire);
        writer.write(&[1, 2, 3, 4]).await.unwrap();
        writer.write(&[5; 32]).await.unwrap();
        writer.write_error(404).await.unwrap();

        let mut client = Full::new();
        let first = client.unpack(&mut wire).unwrap();
        assert_eq!(&wire[first.data_range.clone()], &[1, 2, 3, 4]);
        let rest = &mut wire[first.next_offset..];
        let second = client.unpack(rest).unwrap();
        assert_eq!(&rest[second.data_range.clone()], &[5; 32]);
        let rest = &mut rest[second.next_offset..];
        assert_eq!(client.unpack(rest), Err(transport::Error::BadStatus { status: 404 }));
    }

    #[tokio::test]
    async fn a_corrupted_frame_is_rejected() {
        let mut frame = encode_frame(0, &[9; 8]);
        frame[10] ^= 0xff;
        let mut reader = FrameReader::new(&frame[..]);
        assert!(matches!(reader.read().await, Err(FrameError::BadCrc)));
    }
}
