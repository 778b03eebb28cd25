//! What an identifier must look like to be stored: entity keys (HTTP path keys, stream entry
//! keys, keys a handler emits for) and envelope ids. Checked where they enter, so that nothing
//! Postgres would refuse — a NUL byte, a key longer than an index row allows — reaches a commit
//! and blocks the keys committed with it.

/// Limits the runtime applies to what a handler produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes (`runtime.max_key_bytes`).
    pub max_key_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_key_bytes: 256 }
    }
}

/// Why an identifier is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    /// It is empty.
    #[error("is empty")]
    Empty,
    /// It is longer than allowed.
    #[error("is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit (`runtime.max_key_bytes`).
        max: usize,
    },
    /// It holds a control character (NUL, newline, DEL, C1 controls ...).
    #[error("holds a control character at byte {at}")]
    ControlCharacter {
        /// Byte offset of the first one.
        at: usize,
    },
}

/// Checks an identifier: non-empty, at most `max_bytes` bytes of UTF-8 (a `&str` already is),
/// no control characters.
pub fn validate_key(key: &str, max_bytes: usize) -> Result<(), InvalidKey> {
    if key.is_empty() {
        return Err(InvalidKey::Empty);
    }
    if key.len() > max_bytes {
        return Err(InvalidKey::TooLong {
            len: key.len(),
            max: max_bytes,
        });
    }
    match key.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, _)) => Err(InvalidKey::ControlCharacter { at }),
        None => Ok(()),
    }
}

/// Why a serialized state or payload cannot be stored in Postgres `jsonb`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unstorable {
    /// It does not serialize.
    #[error("does not serialize: {0}")]
    Serialize(String),
    /// It holds a NUL character (`\u0000`), which `jsonb` refuses.
    #[error("holds a NUL character (\\u0000), which Postgres cannot store")]
    Nul,
    /// What is stored would not load back (a NaN or infinite number serializes as `null`).
    #[error("would not load back: {0}")]
    NoRoundTrip(String),
}

/// Whether JSON text holds the escape `\u0000` (not merely an escaped backslash before `u0000`).
pub fn json_has_nul(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut from = 0;
    while let Some(found) = json[from..].find("u0000") {
        let at = from + found;
        // `\u0000` is a NUL escape when the backslashes before `u` are odd in number.
        let slashes = bytes[..at]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if slashes % 2 == 1 {
            return true;
        }
        from = at + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_nonempty_bounded_and_free_of_control_characters() {
        assert_eq!(validate_key("SKU-1", 256), Ok(()));
        assert_eq!(validate_key("ünïcødé-✓", 256), Ok(()));
        assert_eq!(validate_key("", 256), Err(InvalidKey::Empty));
        assert_eq!(
            validate_key("a\0b", 256),
            Err(InvalidKey::ControlCharacter { at: 1 })
        );
        assert_eq!(
            validate_key("a\nb", 256),
            Err(InvalidKey::ControlCharacter { at: 1 })
        );
        assert_eq!(
            validate_key("\u{7f}", 256),
            Err(InvalidKey::ControlCharacter { at: 0 })
        );
        assert_eq!(
            validate_key("x\u{85}", 256),
            Err(InvalidKey::ControlCharacter { at: 1 })
        );
        let long = "k".repeat(3000);
        assert_eq!(
            validate_key(&long, 256),
            Err(InvalidKey::TooLong {
                len: 3000,
                max: 256
            })
        );
        assert_eq!(validate_key(&"é".repeat(128), 256), Ok(()));
        assert!(
            validate_key(&"é".repeat(129), 256).is_err(),
            "bytes, not chars"
        );
    }

    #[test]
    fn finds_nul_escapes_but_not_escaped_backslashes() {
        assert!(json_has_nul(r#"{"a":"\u0000"}"#));
        assert!(json_has_nul(r#"{"a":"x\\\u0000"}"#));
        assert!(!json_has_nul(r#"{"a":"\\u0000"}"#));
        assert!(!json_has_nul(r#"{"a":"u0000"}"#));
        assert!(!json_has_nul(r#"{"a":1}"#));
        let nul = serde_json::to_string(&serde_json::json!({"a": "x\u{0}"})).unwrap();
        assert!(json_has_nul(&nul), "{nul}");
    }
}
