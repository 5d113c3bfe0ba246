//! Percent-encoding of binary-mode header values, as the CloudEvents HTTP binding (§3.1.3.2)
//! defines it: space, `"`, `%` and every byte outside printable ASCII are encoded; decoding is a
//! single round, so an encoded `%25` comes back as `%` and nothing else.

use std::borrow::Cow;

/// Encodes a value for a `ce-*` header.
pub(crate) fn encode(value: &str) -> Cow<'_, str> {
    if value.bytes().all(|b| !needs_encoding(b)) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if needs_encoding(b) {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        } else {
            out.push(char::from(b));
        }
    }
    Cow::Owned(out)
}

/// Decodes a `ce-*` header value. A `%` not followed by two hex digits is kept as it is, because
/// senders that do not encode at all are common and should not be punished for a literal `%`.
/// `None` when the decoded bytes are not UTF-8.
pub(crate) fn decode(value: &str) -> Option<Cow<'_, str>> {
    decode_with(value, true)
}

/// Decodes a percent-encoded value (a package URL's parts, say) where a `%` must start an
/// escape. `None` for a stray `%` or bytes that are not UTF-8.
pub fn decode_strict(value: &str) -> Option<Cow<'_, str>> {
    decode_with(value, false)
}

fn decode_with(value: &str, keep_stray_percent: bool) -> Option<Cow<'_, str>> {
    if !value.contains('%') {
        return Some(Cow::Borrowed(value));
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex_value(*b)),
                bytes.get(i + 2).and_then(|b| hex_value(*b)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else if bytes[i] == b'%' && !keep_stray_percent {
            return None;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn needs_encoding(b: u8) -> bool {
    matches!(b, b' ' | b'"' | b'%') || !(0x21..=0x7e).contains(&b)
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(nibble & 0x0f)])
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_what_needs_encoding() {
        for value in [
            "plain",
            "a b",
            "100%",
            "quote\"d",
            "Ünïcode €",
            "tab\tnl\n",
            "",
        ] {
            let encoded = encode(value);
            assert!(
                encoded
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b'"')
            );
            assert_eq!(decode(&encoded).as_deref(), Some(value));
        }
    }

    #[test]
    fn decodes_once_and_keeps_stray_percent() {
        assert_eq!(decode("%2525").as_deref(), Some("%25"));
        assert_eq!(decode("50%").as_deref(), Some("50%"));
        assert_eq!(decode("%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(decode("%C3%BC").as_deref(), Some("ü"));
        assert!(decode("%FF").is_none());
    }

    #[test]
    fn strict_decoding_refuses_a_stray_percent() {
        assert_eq!(decode_strict("sha256%3Aab").as_deref(), Some("sha256:ab"));
        assert_eq!(decode_strict("plain").as_deref(), Some("plain"));
        assert!(decode_strict("50%").is_none());
        assert!(decode_strict("%zz").is_none());
        assert!(decode_strict("%FF").is_none());
    }
}
