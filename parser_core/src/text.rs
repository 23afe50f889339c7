//! Text of the rejection messages, written exactly as the Python reference writes it: a byte
//! string's `repr()` and the reason of a failed UTF-8 decode.

/// `repr(token)` of a Python `bytes` object: `b'...'`, or `b"..."` when the bytes hold a single
/// quote and no double quote; `\\`, `\t`, `\n`, `\r` escaped; other bytes outside 0x20..0x7e as `\xhh`.
pub fn bytes_repr(token: &[u8]) -> String {
    let quote = if token.contains(&b'\'') && !token.contains(&b'"') { b'"' } else { b'\'' };
    let mut out = String::with_capacity(token.len() + 3);
    out.push('b');
    out.push(quote as char);
    for &byte in token {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if byte == quote => {
                out.push('\\');
                out.push(byte as char);
            }
            0x20..=0x7e => out.push(byte as char),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out.push(quote as char);
    out
}

/// Where and why `bytes.decode("utf-8")` fails, as CPython says it (`UnicodeDecodeError.start`
/// and `.reason`); `None` when the bytes are valid UTF-8.
pub fn utf8_error(bytes: &[u8]) -> Option<(usize, &'static str)> {
    let error = std::str::from_utf8(bytes).err()?;
    let start = error.valid_up_to();
    // CPython names a byte that can never start a sequence first, then a sequence cut by the end
    // of the data, then any other bad byte after a valid start byte.
    let reason = match (bytes[start], error.error_len()) {
        (0x80..=0xc1 | 0xf5..=0xff, _) => "invalid start byte",
        (_, None) => "unexpected end of data",
        _ => "invalid continuation byte",
    };
    Some((start, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_python() {
        assert_eq!(bytes_repr(b"abc"), "b'abc'");
        assert_eq!(bytes_repr(b"it's"), "b\"it's\"");
        assert_eq!(bytes_repr(b"'\""), "b'\\'\"'");
        assert_eq!(bytes_repr(b"\x01\x02\x7f\xff\\\t\n\r"), "b'\\x01\\x02\\x7f\\xff\\\\\\t\\n\\r'");
        assert_eq!(bytes_repr(b""), "b''");
    }

    #[test]
    fn utf8_errors_match_python() {
        assert_eq!(utf8_error(b"ok \xc3\xa9"), None);
        assert_eq!(utf8_error(b"a\xffb"), Some((1, "invalid start byte")));
        assert_eq!(utf8_error(b"a\xe4\xb8"), Some((1, "unexpected end of data")));
        assert_eq!(utf8_error(b"a\xe4\xb8a"), Some((1, "invalid continuation byte")));
        assert_eq!(utf8_error(b"\xed\xa0\x80"), Some((0, "invalid continuation byte")));
    }
}
