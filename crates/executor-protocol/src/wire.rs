//! The frames on `picloud-executor`'s Unix socket (cluster mode, DESIGN.md §1).
//!
//! One connection carries one exchange. For an invocation: the node sends [`Ask::Invoke`];
//! while the script runs, the executor relays each of its host calls back as
//! [`Answer::HostCall`] and waits for the node's [`Ask::HostReply`]; the last frame is
//! [`Answer::Result`]. The executor thus holds no database connection and no credential: the
//! tenant's key-value store is reached only through the node that asked, scoped to the
//! invocation's tenant there. [`Ask::Stats`] answers the pool's figures (and is the health
//! check).
//!
//! A frame is a little-endian `u32` length, then that many bytes of JSON; a length past
//! [`MAX_FRAME`] is refused before anything is allocated for it.

use std::collections::BTreeMap;
use std::io;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use picloud_shared::host::{HostCall, HostReply};
use picloud_shared::{FunctionRef, InvocationRequest, InvocationResult, Limits};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::bytes::{Bytes, BytesMut};
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::{PoolStats, SandboxReport};

/// Largest frame either side accepts: a request or an answer with its body and logs.
pub const MAX_FRAME: usize = 64 << 20;

/// What the node sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ask {
    Invoke(Box<InvokeAsk>),
    HostReply { reply: HostReply },
    Stats,
}

/// One invocation, with everything the executor needs to run it.
#[derive(Debug, Serialize, Deserialize)]
pub struct InvokeAsk {
    pub owner: FunctionRef,
    pub script: String,
    pub request: InvocationRequest,
    pub limits: Limits,
    pub env: Option<BTreeMap<String, String>>,
    pub event: Option<String>,
    /// Whether the node answers host calls; without, each fails with a clear error.
    pub host: bool,
}

/// What the executor sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    HostCall {
        call: HostCall,
    },
    Result {
        result: Box<InvocationResult>,
    },
    Stats {
        stats: PoolStats,
        sandbox: Option<SandboxReport>,
    },
    /// The ask could not be read.
    Refused {
        message: String,
    },
}

/// The socket's framing: a little-endian `u32` length, at most [`MAX_FRAME`].
#[must_use]
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .little_endian()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Both directions of one connection, framed.
pub fn framed<T: AsyncRead + AsyncWrite>(io: T) -> Framed<T, LengthDelimitedCodec> {
    Framed::new(io, codec())
}

/// The reading half of a connection, framed.
pub fn reader<R: AsyncRead>(io: R) -> FramedRead<R, LengthDelimitedCodec> {
    FramedRead::new(io, codec())
}

/// The writing half of a connection, framed.
pub fn writer<W: AsyncWrite>(io: W) -> FramedWrite<W, LengthDelimitedCodec> {
    FramedWrite::new(io, codec())
}

/// Sends `message` as one frame.
///
/// # Errors
///
/// When the connection fails, or the message is longer than a frame may be.
pub async fn send(
    frames: &mut (impl Sink<Bytes, Error = io::Error> + Unpin),
    message: &impl Serialize,
) -> io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
    frames.send(Bytes::from(bytes)).await
}

/// Reads the next frame as a `T`. Cancel-safe: a frame half read stays in the framed reader.
///
/// # Errors
///
/// [`io::ErrorKind::UnexpectedEof`] when the connection ends before a frame,
/// [`io::ErrorKind::InvalidData`] when a frame is too long or not a `T`, and the connection's
/// own errors.
pub async fn receive<T: for<'de> Deserialize<'de>>(
    frames: &mut (impl Stream<Item = io::Result<BytesMut>> + Unpin),
) -> io::Result<T> {
    match frames.next().await {
        Some(Ok(frame)) => serde_json::from_slice(&frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Some(Err(e)) => Err(e),
        None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The codec's frames are the ones the executor spoke before it used it: a little-endian
    /// length, then the JSON, nothing else.
    #[tokio::test]
    async fn a_frame_is_a_little_endian_length_then_json() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut frames = framed(ours);
        send(&mut frames, &Ask::Stats).await.expect("sent");
        let mut raw = [0u8; 64];
        let n = tokio::io::AsyncReadExt::read(&mut theirs, &mut raw)
            .await
            .expect("read");
        let json = br#"{"kind":"stats"}"#;
        assert_eq!(&raw[..4], &(json.len() as u32).to_le_bytes());
        assert_eq!(&raw[4..n], json);
    }

    /// A declared length past the cap is refused as invalid data, before the body arrives.
    #[tokio::test]
    async fn a_frame_past_the_cap_is_refused_unread() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut frames = reader(ours);
        let too_long = u32::try_from(MAX_FRAME + 1).expect("fits");
        theirs
            .write_all(&too_long.to_le_bytes())
            .await
            .expect("written");
        let e = receive::<Ask>(&mut frames).await.expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[tokio::test]
    async fn an_end_before_a_frame_is_an_unexpected_eof_and_garbage_is_invalid() {
        let (ours, theirs) = tokio::io::duplex(1024);
        drop(theirs);
        let e = receive::<Ask>(&mut reader(ours)).await.expect_err("ended");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);

        let (ours, theirs) = tokio::io::duplex(1024);
        let mut w = writer(theirs);
        w.send(Bytes::from_static(b"\xff\x00not json"))
            .await
            .expect("sent");
        let e = receive::<Ask>(&mut reader(ours))
            .await
            .expect_err("garbage");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
