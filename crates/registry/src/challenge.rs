//! Parsing `WWW-Authenticate` challenges (RFC 7235) as registries send them:
//! `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"`
//! or `Basic realm="Registry Realm"`.

use std::collections::BTreeMap;

/// One authentication challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased: `bearer` or `basic`.
    pub scheme: String,
    /// Parameters, names lower-cased (`realm`, `service`, `scope`, `error`).
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses every challenge of a `WWW-Authenticate` header value. Unparseable
/// parts are skipped (a registry's odd header must not make kiln panic).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut challenges = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        let before = rest.len();
        let scheme_end = rest
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(rest.len());
        let (scheme, after) = rest.split_at(scheme_end);
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: BTreeMap::new(),
        };
        rest = after.trim_start_matches([' ', '\t', ',']);
        // Parameters: name=value or name="quoted value", comma separated,
        // until a token not followed by `=` (the next challenge's scheme).
        loop {
            let name_end = rest
                .find(|c: char| c == '=' || c.is_whitespace() || c == ',')
                .unwrap_or(rest.len());
            let (name, after_name) = rest.split_at(name_end);
            let after_name_trimmed = after_name.trim_start();
            let Some(value_start) = after_name_trimmed.strip_prefix('=') else {
                break;
            };
            if name.is_empty() {
                break;
            }
            let value_start = value_start.trim_start();
            let (value, remaining) = if let Some(quoted) = value_start.strip_prefix('"') {
                parse_quoted(quoted)
            } else {
                let end = value_start.find(',').unwrap_or(value_start.len());
                let (value, rest) = value_start.split_at(end);
                (value.trim().to_string(), rest)
            };
            challenge.params.insert(name.to_ascii_lowercase(), value);
            rest = remaining.trim_start_matches([' ', '\t', ',']);
        }
        if !challenge.scheme.is_empty() {
            challenges.push(challenge);
        }
        // No progress means text this parser cannot read: stop rather than spin.
        if rest.len() == before {
            break;
        }
    }
    challenges
}

/// Reads a quoted string (after its opening quote); returns the unescaped value
/// and what follows the closing quote.
fn parse_quoted(text: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            '"' => return (value, &text[index + 1..]),
            other => value.push(other),
        }
    }
    (value, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let found = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].scheme, "bearer");
        assert_eq!(
            found[0].param("realm"),
            Some("https://auth.docker.io/token")
        );
        assert_eq!(found[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            found[0].param("scope"),
            Some("repository:library/busybox:pull,push")
        );
    }

    #[test]
    fn basic_and_unquoted_and_escapes() {
        let found = parse_challenges(
            r#"Basic realm="a \"b\" c", Bearer realm=https://x/t, error=insufficient_scope"#,
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].scheme, "basic");
        assert_eq!(found[0].param("realm"), Some(r#"a "b" c"#));
        assert_eq!(found[1].scheme, "bearer");
        assert_eq!(found[1].param("realm"), Some("https://x/t"));
        assert_eq!(found[1].param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn garbage_does_not_panic() {
        for text in [
            "",
            "=",
            "\"",
            "Bearer realm=\"",
            "Bearer ,,,=,",
            "x y z",
            " =",
            "  , =",
            "Basic realm=\"\\",
        ] {
            let _ = parse_challenges(text);
        }
        assert_eq!(parse_challenges("Basic")[0].scheme, "basic");
    }
}
