//! The one place bytes are made: bincode 2 (serde) behind a leading format-version byte, for both
//! persisted values and node-to-node frames. Readers refuse versions they do not know rather than
//! misread them.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Empty input: not even a version byte.
    #[error("empty input: missing format version byte")]
    Empty,
    /// The version byte is not one this build reads.
    #[error("format version {found} is not supported (this build reads version {expected})")]
    UnsupportedVersion {
        /// Version found.
        found: u8,
        /// Version expected.
        expected: u8,
    },
    /// The body does not decode.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// The value could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>()
}

/// Encodes `value` behind `version`.
pub fn encode<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![version];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes bytes written by [`encode`] with `version`.
pub fn decode<T: DeserializeOwned>(version: u8, bytes: &[u8]) -> Result<T, CodecError> {
    let (&found, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if found != version {
        return Err(CodecError::UnsupportedVersion {
            found,
            expected: version,
        });
    }
    let (value, read) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if read != body.len() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes",
            body.len() - read
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        tags: Vec<String>,
        n: Option<u64>,
    }

    #[test]
    fn round_trips_behind_its_version() {
        let s = Sample {
            name: "a".into(),
            tags: vec!["x".into()],
            n: Some(7),
        };
        let bytes = encode(3, &s).unwrap();
        assert_eq!(bytes[0], 3);
        assert_eq!(decode::<Sample>(3, &bytes).unwrap(), s);
    }

    #[test]
    fn refuses_other_versions_empty_input_and_garbage() {
        let bytes = encode(1, &7u32).unwrap();
        assert_eq!(
            decode::<u32>(2, &bytes),
            Err(CodecError::UnsupportedVersion {
                found: 1,
                expected: 2
            })
        );
        assert_eq!(decode::<u32>(1, &[]), Err(CodecError::Empty));
        assert!(matches!(
            decode::<Sample>(1, &[1, 0xff, 0xff]),
            Err(CodecError::Malformed(_))
        ));
        let mut long = encode(1, &7u32).unwrap();
        long.push(0);
        assert!(matches!(
            decode::<u32>(1, &long),
            Err(CodecError::Malformed(_))
        ));
    }
}
