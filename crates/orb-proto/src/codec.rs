//! bincode 2 encoding with hard limits.
//!
//! A frame on the wire is a 4-byte big-endian length followed by that many
//! bytes of bincode. Decoding checks the length against [`MAX_FRAME`] before
//! allocating, caps bincode's own allocations with the same limit, and
//! refuses trailing bytes, so a hostile peer gets an error and never a panic
//! or an outsized allocation.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::limits::MAX_FRAME;

/// Errors from encoding or decoding.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The frame's declared or actual size is over the limit.
    #[error("frame of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Size seen.
        size: usize,
        /// Limit in force.
        limit: usize,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Valid message followed by unexpected bytes.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
    /// Encoding failed (a bug, or a value over the limit).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// Encode `msg` to bincode (no length prefix).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = bincode::serde::encode_to_vec(msg, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if bytes.len() > MAX_FRAME {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit: MAX_FRAME,
        });
    }
    Ok(bytes)
}

/// Encode `msg` as a frame: 4-byte big-endian length, then the bincode bytes.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let body = encode(msg)?;
    let mut out = Vec::with_capacity(4 + body.len());
    // encode() guarantees body.len() <= MAX_FRAME < u32::MAX.
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Check a frame's declared length before reading it.
pub fn check_frame_len(len: u32) -> Result<usize, CodecError> {
    let len = len as usize;
    if len > MAX_FRAME {
        return Err(CodecError::TooLarge {
            size: len,
            limit: MAX_FRAME,
        });
    }
    Ok(len)
}

/// Decode one message from exactly `bytes` (no length prefix).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_FRAME {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit: MAX_FRAME,
        });
    }
    let (msg, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(msg)
}

/// Decode a whole frame (length prefix included) from `buf`.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<T, CodecError> {
    let Some((head, rest)) = buf.split_first_chunk::<4>() else {
        return Err(CodecError::Malformed(
            "frame shorter than its length prefix".into(),
        ));
    };
    let len = check_frame_len(u32::from_be_bytes(*head))?;
    if rest.len() != len {
        return Err(CodecError::Malformed(format!(
            "frame declares {len} bytes but holds {}",
            rest.len()
        )));
    }
    decode(rest)
}
