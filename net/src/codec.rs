//! The wire codec: the only place that knows the body encoding (bincode 2, with serde).
//!
//! A frame on the wire is a little-endian `u32` body length followed by the body. Bodies
//! are bincode's standard configuration (varint integers, little endian) with a hard claim
//! limit, so a hostile length inside a body can never make the decoder allocate more than
//! [`plexus_config::MAX_FRAME_LIMIT`] bytes, and decoding never panics.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes taken by the length prefix of a frame.
pub const LEN_PREFIX: usize = 4;

const LIMIT: usize = plexus_config::MAX_FRAME_LIMIT as usize;

type Cfg = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<LIMIT>,
>;

fn cfg() -> Cfg {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Errors of encoding and decoding.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("encode failed: {0}")]
    Encode(String),
    /// The bytes are not a valid body of the expected type.
    #[error("decode failed: {0}")]
    Decode(String),
    /// The body decoded but bytes were left over.
    #[error("decode failed: {0} trailing bytes")]
    Trailing(usize),
    /// A frame is larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The frame's body length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// Encodes `value` into a new vector.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut v = Vec::new();
    encode_into(value, &mut v)?;
    Ok(v)
}

/// Appends the encoding of `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, cfg())
        .map(|_| ())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a whole body; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (v, used) = bincode::serde::decode_from_slice(bytes, cfg())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(v)
}

/// Reads values one after another from a byte slice (for bodies built with repeated
/// [`encode_into`] calls).
#[derive(Debug)]
pub struct SeqReader<'a> {
    rest: &'a [u8],
}

impl<'a> SeqReader<'a> {
    /// Starts reading at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        SeqReader { rest: bytes }
    }

    /// Decodes the next value.
    pub fn read<T: DeserializeOwned>(&mut self) -> Result<T, CodecError> {
        let (v, used) = bincode::serde::decode_from_slice(self.rest, cfg())
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        self.rest = &self.rest[used..];
        Ok(v)
    }

    /// Fails if bytes are left over.
    pub fn finish(self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Trailing(self.rest.len()))
        }
    }
}

/// Appends one frame (length prefix + encoded `value`) to `buf`. On error `buf` is left
/// as it was.
pub fn encode_frame<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(), CodecError> {
    let start = buf.len();
    buf.put_u32_le(0);
    let mut w = buf.writer();
    let res = bincode::serde::encode_into_std_write(value, &mut w, cfg());
    let buf = w.into_inner();
    let len = match res {
        Ok(n) => n,
        Err(e) => {
            buf.truncate(start);
            return Err(CodecError::Encode(e.to_string()));
        }
    };
    if len > max {
        buf.truncate(start);
        return Err(CodecError::TooLarge { len, max });
    }
    buf[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Appends an already-encoded body as one frame.
pub fn put_frame(body: &[u8], buf: &mut BytesMut, max: usize) -> Result<(), CodecError> {
    if body.len() > max {
        return Err(CodecError::TooLarge {
            len: body.len(),
            max,
        });
    }
    buf.put_u32_le(body.len() as u32);
    buf.put_slice(body);
    Ok(())
}

/// Splits the next whole frame body off the front of `buf`, if one is there. A length
/// prefix over `max` is an error at once, before its body arrives.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, CodecError> {
    if buf.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    if buf.len() < LEN_PREFIX + len {
        buf.reserve(LEN_PREFIX + len - buf.len());
        return Ok(None);
    }
    buf.advance(LEN_PREFIX);
    Ok(Some(buf.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
    enum Sample {
        A(u64, String),
        B { xs: Vec<u32>, flag: bool },
        C,
    }

    #[test]
    fn frames_round_trip_and_split() {
        let mut buf = BytesMut::new();
        let a = Sample::A(7, "x".into());
        let b = Sample::B {
            xs: vec![1, 2, 3],
            flag: true,
        };
        encode_frame(&a, &mut buf, 1024).unwrap();
        encode_frame(&b, &mut buf, 1024).unwrap();
        let tail = buf.split_off(buf.len() - 2);
        let f1 = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(decode::<Sample>(&f1).unwrap(), a);
        assert!(split_frame(&mut buf, 1024).unwrap().is_none());
        buf.extend_from_slice(&tail);
        let f2 = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(decode::<Sample>(&f2).unwrap(), b);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let mut buf = BytesMut::new();
        let big = Sample::A(1, "y".repeat(100));
        assert!(matches!(
            encode_frame(&big, &mut buf, 50),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(buf.is_empty());
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        assert!(matches!(
            split_frame(&mut buf, 1 << 20),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn hostile_inner_length_does_not_allocate_or_panic() {
        // variant 0 (A), u64 7, then a string claiming u64::MAX bytes.
        let body = [0u8, 7, 255, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(decode::<Sample>(&body).is_err());
        let body = [1u8, 253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(decode::<Sample>(&body).is_err());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut v = encode(&Sample::C).unwrap();
        v.push(0);
        assert!(matches!(decode::<Sample>(&v), Err(CodecError::Trailing(1))));
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            // Any answer will do, as long as it is an answer.
            drop(decode::<Sample>(&bytes));
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = split_frame(&mut buf, 64) {}
        }

        #[test]
        fn any_value_round_trips(n in any::<u64>(), s in ".*", xs in proptest::collection::vec(any::<u32>(), 0..20)) {
            for v in [Sample::A(n, s.clone()), Sample::B { xs: xs.clone(), flag: n % 2 == 0 }, Sample::C] {
                let e = encode(&v).unwrap();
                prop_assert_eq!(decode::<Sample>(&e).unwrap(), v);
            }
        }
    }
}
