//! Frames on the zygote's control socket and on each worker's channel: a little-endian `u32`
//! length, then that many bytes (JSON, or the guest input verbatim).

use std::io::{self, Read, Write};
use std::path::PathBuf;

use picloud_shared::Limits;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest answer a worker may send: a body of Rhai's largest string (4 MiB) even if JSON
/// escaped every byte of it, logs and framing.
pub(crate) const MAX_ANSWER_FRAME: usize = 32 << 20;

/// The first byte of a worker's frame that carries a host call rather than its answer (an
/// answer is JSON, which never starts with it). The server replies with one frame.
pub(crate) const CALL_TAG: u8 = 0x01;

pub(crate) fn frame(parts: &[&[u8]]) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| 4 + p.len()).sum();
    let mut out = Vec::with_capacity(total);
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

pub(crate) fn write_frame(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(&frame(&[bytes]))
}

/// Reads one frame; `Ok(None)` on a clean end of stream before its first byte.
pub(crate) fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// Reads one frame from a worker, each kind under its own cap, checked before anything is
/// allocated: a host call ([`CALL_TAG`] first) at most the largest call, an answer at most
/// [`MAX_ANSWER_FRAME`].
pub(crate) async fn read_worker_frame(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let len = r.read_u32_le().await? as usize;
    if len == 0 {
        return Ok(Vec::new());
    }
    let first = r.read_u8().await?;
    let max = if first == CALL_TAG {
        1 + picloud_shared::host::MAX_CALL_BYTES
    } else {
        MAX_ANSWER_FRAME
    };
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a worker's frame of {len} bytes (at most {max} for its kind)"),
        ));
    }
    let mut buf = vec![0u8; len];
    buf[0] = first;
    r.read_exact(&mut buf[1..]).await?;
    Ok(buf)
}

/// The server's first message to a new zygote.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ZygoteHello {
    pub module_path: PathBuf,
    pub max_memory_bytes: u64,
    pub consume_fuel: bool,
    pub worker_cpu_seconds: u64,
    pub max_invocations_per_worker: u32,
    pub diagnostics: bool,
}

/// The zygote's answer once it can fork workers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum ZygoteReady {
    Ready { sandbox: crate::SandboxReport },
    Failed { error: String },
}

/// The first frame the server sends a worker. For `Invoke`, a second frame follows: the
/// guest input, which the worker copies into the instance untouched.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum WorkerRequest {
    Invoke { limits: Limits },
    Diagnose,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn read_declared(declared: u32, first: u8) -> io::Result<Vec<u8>> {
        let (mut ours, mut theirs) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let _ = theirs.write_all(&declared.to_le_bytes()).await;
            let _ = theirs.write_all(&[first]).await;
            // Never the rest: a cap must refuse before waiting for (or allocating) it.
        });
        read_worker_frame(&mut ours).await
    }

    #[tokio::test]
    async fn each_kind_of_worker_frame_has_its_cap() {
        let call_cap = 1 + picloud_shared::host::MAX_CALL_BYTES;
        let refused = read_declared(call_cap as u32 + 1, CALL_TAG)
            .await
            .expect_err("a host call past its cap");
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData);
        let refused = read_declared(MAX_ANSWER_FRAME as u32 + 1, b'{')
            .await
            .expect_err("an answer past its cap");
        assert!(refused.to_string().contains("at most"), "{refused}");

        let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
        let answer = b"{\"outcome\":1}".to_vec();
        let sent = answer.clone();
        tokio::spawn(async move { theirs.write_all(&frame(&[&sent])).await });
        assert_eq!(
            read_worker_frame(&mut ours).await.expect("an answer"),
            answer
        );
    }
}
