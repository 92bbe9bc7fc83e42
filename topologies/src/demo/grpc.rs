//! gRPC's wire format over HTTP/2, as much of it as unary calls need: the 5-byte
//! length-prefixed message frame and the status codes the demo uses. Pure functions; the
//! server and client do the I/O.

use bytes::{BufMut, Bytes, BytesMut};

/// `grpc-status` OK.
pub const OK: u32 = 0;
/// `grpc-status` UNAVAILABLE: what an injected failure answers (Linkerd counts it as a
/// failure, like an HTTP 5xx).
pub const UNAVAILABLE: u32 = 14;
/// `grpc-status` UNIMPLEMENTED: an unknown method.
pub const UNIMPLEMENTED: u32 = 12;
/// `grpc-status` INVALID_ARGUMENT: a request that does not decode.
pub const INVALID_ARGUMENT: u32 = 3;

/// Why a gRPC message could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header announces.
    #[error("gRPC message truncated: header announces {announced} bytes, {present} present")]
    Truncated {
        /// From the header.
        announced: usize,
        /// In the body.
        present: usize,
    },
    /// The compressed flag is set; the demo never negotiates compression.
    #[error("gRPC message is compressed, but no compression was negotiated")]
    Compressed,
    /// Trailing bytes after the one message of a unary call.
    #[error("gRPC unary body holds more than one message")]
    Trailing,
    /// The message itself.
    #[error("gRPC message does not decode: {0}")]
    Decode(String),
}

/// Frames one message: flag 0 (uncompressed), big-endian length, the message.
pub fn encode<M: prost::Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    message.encode(&mut buf).expect("BytesMut grows as needed");
    buf.freeze()
}

/// Reads the single message of a unary call's body.
pub fn decode<M: prost::Message + Default>(body: &[u8]) -> Result<M, FrameError> {
    if body.len() < 5 {
        return Err(FrameError::Truncated {
            announced: 5,
            present: body.len(),
        });
    }
    if body[0] != 0 {
        return Err(FrameError::Compressed);
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let rest = &body[5..];
    if rest.len() < len {
        return Err(FrameError::Truncated {
            announced: len,
            present: rest.len(),
        });
    }
    if rest.len() > len {
        return Err(FrameError::Trailing);
    }
    M::decode(rest).map_err(|e| FrameError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::proto::HelloRequest;

    #[test]
    fn frames_round_trip_and_bad_frames_are_named() {
        let m = HelloRequest { message: "hi".into() };
        let framed = encode(&m);
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 4]);
        assert_eq!(decode::<HelloRequest>(&framed), Ok(m));
        assert_eq!(
            decode::<HelloRequest>(&framed[..6]),
            Err(FrameError::Truncated {
                announced: 4,
                present: 1
            })
        );
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        assert_eq!(decode::<HelloRequest>(&compressed), Err(FrameError::Compressed));
        let mut two = framed.to_vec();
        two.extend_from_slice(&framed);
        assert_eq!(decode::<HelloRequest>(&two), Err(FrameError::Trailing));
        // An empty message is five bytes of header.
        assert_eq!(
            decode::<HelloRequest>(&[0, 0, 0, 0, 0]),
            Ok(HelloRequest::default())
        );
    }
}
