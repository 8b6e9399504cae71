//! The JSON exec form (`CMD ["a", "b"]`) with Go `encoding/json` semantics.
//!
//! BuildKit decodes the argument text with a Go `json.Decoder` into a
//! `[]interface{}`: text that does not start with one complete, valid JSON
//! value is a syntax error and the instruction falls back to shell form
//! (text after that first value is ignored); a valid array with a
//! non-string element is a hard error. Reproducing that split needs
//! the full JSON grammar, so this is a small validator plus a string decoder
//! (with Go's handling of lone surrogates: U+FFFD) that also reports where
//! each element is, for spans. It never recurses, so deep nesting cannot
//! overflow the stack; like Go it gives up beyond 10000 levels.

/// Why the text is not a JSON string array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not valid JSON, or not an array: BuildKit falls back to shell form.
    NotJson,
    /// A valid JSON array with an element that is not a string, at this
    /// byte range of the input.
    NotStringArray(std::ops::Range<usize>),
}

/// One decoded element of the array and its byte range (including quotes).
pub(crate) struct JsonElement {
    pub value: String,
    pub range: std::ops::Range<usize>,
}

/// Go's `encoding/json` nesting limit.
const MAX_DEPTH: usize = 10_000;

/// Decodes `text` (which must start with `[`) as a JSON array of strings.
pub(crate) fn parse_string_array(text: &str) -> Result<Vec<JsonElement>, JsonError> {
    let bytes = text.as_bytes();
    validate(bytes)?;
    // The text is one valid JSON value starting with `[`: walk the top-level
    // elements.
    let mut elements = Vec::new();
    let mut pos = skip_ws(bytes, 1);
    if bytes.get(pos) == Some(&b']') {
        return Ok(elements);
    }
    loop {
        pos = skip_ws(bytes, pos);
        let start = pos;
        match bytes.get(pos) {
            Some(b'"') => {
                let (value, end) = decode_string(text, pos).ok_or(JsonError::NotJson)?;
                elements.push(JsonElement {
                    value,
                    range: start..end,
                });
                pos = end;
            }
            Some(_) => {
                let end = skip_value(bytes, pos).ok_or(JsonError::NotJson)?;
                return Err(JsonError::NotStringArray(start..end));
            }
            None => return Err(JsonError::NotJson),
        }
        pos = skip_ws(bytes, pos);
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            Some(b']') => return Ok(elements),
            _ => return Err(JsonError::NotJson),
        }
    }
}

fn skip_ws(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// Checks that `bytes` is exactly one JSON value with optional surrounding
/// whitespace, iteratively.
fn validate(bytes: &[u8]) -> Result<(), JsonError> {
    // Stack of open containers: b'[' or b'{'.
    let mut stack: Vec<u8> = Vec::new();
    let mut pos = skip_ws(bytes, 0);
    // State: expecting a value (true) or a separator/closer (false).
    let mut expect_value = true;
    // Inside an object, after `{` or `,` a key (string) must come next.
    let mut expect_key = false;
    loop {
        pos = skip_ws(bytes, pos);
        if expect_value {
            let byte = *bytes.get(pos).ok_or(JsonError::NotJson)?;
            if expect_key {
                if byte != b'"' {
                    return Err(JsonError::NotJson);
                }
                pos = skip_string(bytes, pos).ok_or(JsonError::NotJson)?;
                pos = skip_ws(bytes, pos);
                if bytes.get(pos) != Some(&b':') {
                    return Err(JsonError::NotJson);
                }
                pos += 1;
                expect_key = false;
                continue;
            }
            match byte {
                b'[' | b'{' => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(JsonError::NotJson);
                    }
                    stack.push(byte);
                    pos = skip_ws(bytes, pos + 1);
                    let closer = if byte == b'[' { b']' } else { b'}' };
                    if bytes.get(pos) == Some(&closer) {
                        stack.pop();
                        pos += 1;
                        expect_value = false;
                    } else {
                        expect_key = byte == b'{';
                    }
                    continue;
                }
                b'"' => pos = skip_string(bytes, pos).ok_or(JsonError::NotJson)?,
                _ => pos = skip_scalar(bytes, pos).ok_or(JsonError::NotJson)?,
            }
            expect_value = false;
        } else {
            let Some(&top) = stack.last() else {
                // The top-level value is complete. BuildKit reads it with a
                // json.Decoder, which stops there: whatever follows is
                // ignored (`CMD ["a"] b` is exec form `["a"]`, checked
                // against Docker).
                return Ok(());
            };
            match (bytes.get(pos), top) {
                (Some(b','), b'[') => {
                    pos += 1;
                    expect_value = true;
                }
                (Some(b','), _) => {
                    pos += 1;
                    expect_value = true;
                    expect_key = true;
                }
                (Some(b']'), b'[') | (Some(b'}'), b'{') => {
                    stack.pop();
                    pos += 1;
                }
                _ => return Err(JsonError::NotJson),
            }
        }
    }
}

/// Skips a value known to be valid (used after validation).
fn skip_value(bytes: &[u8], pos: usize) -> Option<usize> {
    match bytes.get(pos)? {
        b'"' => skip_string(bytes, pos),
        b'[' | b'{' => {
            // Balanced scan, strings skipped.
            let mut depth = 0usize;
            let mut p = pos;
            while p < bytes.len() {
                match bytes[p] {
                    b'"' => {
                        p = skip_string(bytes, p)?;
                        continue;
                    }
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(p + 1);
                        }
                    }
                    _ => {}
                }
                p += 1;
            }
            None
        }
        _ => skip_scalar(bytes, pos),
    }
}

/// Skips `true`, `false`, `null` or a number.
fn skip_scalar(bytes: &[u8], pos: usize) -> Option<usize> {
    let rest = bytes.get(pos..)?;
    for literal in [&b"true"[..], b"false", b"null"] {
        if rest.starts_with(literal) {
            return Some(pos + literal.len());
        }
    }
    // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    let mut p = pos;
    if bytes.get(p) == Some(&b'-') {
        p += 1;
    }
    match bytes.get(p)? {
        b'0' => p += 1,
        b'1'..=b'9' => {
            while bytes.get(p).is_some_and(u8::is_ascii_digit) {
                p += 1;
            }
        }
        _ => return None,
    }
    if bytes.get(p) == Some(&b'.') {
        p += 1;
        if !bytes.get(p).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        while bytes.get(p).is_some_and(u8::is_ascii_digit) {
            p += 1;
        }
    }
    if let Some(b'e' | b'E') = bytes.get(p) {
        p += 1;
        if let Some(b'+' | b'-') = bytes.get(p) {
            p += 1;
        }
        if !bytes.get(p).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        while bytes.get(p).is_some_and(u8::is_ascii_digit) {
            p += 1;
        }
    }
    Some(p)
}

/// Skips a string starting at the `"` at `pos`; returns the index after the
/// closing quote. Rejects raw control characters and bad escapes as Go does.
fn skip_string(bytes: &[u8], pos: usize) -> Option<usize> {
    let mut p = pos + 1;
    loop {
        match *bytes.get(p)? {
            b'"' => return Some(p + 1),
            b'\\' => match *bytes.get(p + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => p += 2,
                b'u' => {
                    let hex = bytes.get(p + 2..p + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    p += 6;
                }
                _ => return None,
            },
            byte if byte < 0x20 => return None,
            _ => p += 1,
        }
    }
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let hex = bytes.get(at..at + 4)?;
    let text = std::str::from_utf8(hex).ok()?;
    u32::from_str_radix(text, 16).ok()
}

/// Decodes the (validated) string at `pos`; returns it and the index after
/// the closing quote.
fn decode_string(text: &str, pos: usize) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut p = pos + 1;
    let mut plain_start = p;
    loop {
        match *bytes.get(p)? {
            b'"' => {
                out.push_str(text.get(plain_start..p)?);
                return Some((out, p + 1));
            }
            b'\\' => {
                out.push_str(text.get(plain_start..p)?);
                let escaped = *bytes.get(p + 1)?;
                p += 2;
                match escaped {
                    b'"' => out.push('"'),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'b' => out.push('\u{8}'),
                    b'f' => out.push('\u{c}'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'u' => {
                        let first = hex4(bytes, p)?;
                        p += 4;
                        if (0xD800..0xDC00).contains(&first)
                            && bytes.get(p) == Some(&b'\\')
                            && bytes.get(p + 1) == Some(&b'u')
                        {
                            // A high surrogate: combine with a following low
                            // surrogate, else it is invalid (U+FFFD) and the
                            // next escape is decoded on its own.
                            if let Some(second) = hex4(bytes, p + 2)
                                && (0xDC00..0xE000).contains(&second)
                            {
                                let combined =
                                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                                out.push(char::from_u32(combined).unwrap_or('\u{FFFD}'));
                                p += 6;
                                plain_start = p;
                                continue;
                            }
                        }
                        out.push(char::from_u32(first).unwrap_or('\u{FFFD}'));
                    }
                    _ => return None,
                }
                plain_start = p;
            }
            _ => p += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Result<Vec<String>, JsonError> {
        parse_string_array(text).map(|v| v.into_iter().map(|e| e.value).collect())
    }

    #[test]
    fn decodes_string_arrays_with_escapes() {
        assert_eq!(values(r#"["a", "b c"]"#).unwrap(), ["a", "b c"]);
        assert_eq!(values(r#"[ ]"#).unwrap(), Vec::<String>::new());
        assert_eq!(
            values(r#"["\/usr\\\"/bin", "\u00e9\ud83d\ude00\n"]"#).unwrap(),
            ["/usr\\\"/bin", "é😀\n"]
        );
        assert_eq!(values(r#"["\ud800x"]"#).unwrap(), ["\u{FFFD}x"]);
        // Like Go's json.Decoder, text after the first value is ignored.
        assert_eq!(values(r#"["a"] trailing"#).unwrap(), ["a"]);
        assert_eq!(values(r#"["a"]]"#).unwrap(), ["a"]);
    }

    #[test]
    fn invalid_json_is_not_json() {
        for text in [
            "[",
            r#"["a""#,
            r#"["a",]"#,
            r#"['a']"#,
            "[\"a\tb\"]",
            r#"["\x"]"#,
            "[01]",
            "[1.]",
            r#"[{"a" 1}]"#,
        ] {
            assert_eq!(values(text), Err(JsonError::NotJson), "{text}");
        }
    }

    #[test]
    fn valid_non_string_elements_are_rejected_with_their_range() {
        let text = r#"[ "echo", [ "nested json" ] ]"#;
        assert_eq!(values(text), Err(JsonError::NotStringArray(10..27)));
        assert!(matches!(values("[1]"), Err(JsonError::NotStringArray(_))));
        assert!(matches!(
            values(r#"["a", {"k": [null, true, -1.5e3]}]"#),
            Err(JsonError::NotStringArray(_))
        ));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let text = "[".repeat(200_000);
        assert_eq!(values(&text), Err(JsonError::NotJson));
        let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(matches!(values(&nested), Err(JsonError::NotStringArray(_))));
    }
}
