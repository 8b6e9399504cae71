//! Image references (`busybox`, `host:5000/a/b:tag`, `name@sha256:...`) parsed and
//! normalised exactly as docker does (github.com/distribution/reference:
//! `ParseNormalizedNamed` followed by `TagNameOnly`).
//!
//! The grammar is hand-written rather than a regex engine because every production
//! is a simple character class; the structure (split at `@`, then at the last `:`
//! after the last `/`, then an optional domain before the first `/`) is exactly the
//! one the anchored regular expressions of distribution/reference accept.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Registry domain docker uses when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy spelling of [`DEFAULT_DOMAIN`], rewritten to it on parse.
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Namespace of docker's official images (`busybox` is `library/busybox`).
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Tag added to a reference that names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest accepted repository name (domain and path), as in docker.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why a reference was rejected. Every message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Empty input.
    #[error(
        "invalid reference: the image name is empty; give a name such as `busybox` or `registry:5000/app:1.0`"
    )]
    NameEmpty,
    /// Does not match `[domain/]path[:tag][@digest]`.
    #[error("invalid reference format `{input}`: {why}")]
    InvalidFormat {
        /// The text given.
        input: String,
        /// Which part is wrong.
        why: String,
    },
    /// Upper-case letters in the repository path.
    #[error("invalid reference format `{input}`: repository name `{repository}` must be lowercase")]
    NameContainsUppercase {
        /// The text given.
        input: String,
        /// The offending repository part.
        repository: String,
    },
    /// Name longer than [`NAME_TOTAL_LENGTH_MAX`].
    #[error(
        "invalid reference `{input}`: repository name is {len} characters long; at most {NAME_TOTAL_LENGTH_MAX} are allowed"
    )]
    NameTooLong {
        /// The text given.
        input: String,
        /// Length of the name part.
        len: usize,
    },
    /// A bare 64-hex string is an image ID, not a repository name.
    #[error(
        "invalid repository name `{input}`: cannot specify 64-byte hexadecimal strings (that looks like an image ID)"
    )]
    HexIdentifier {
        /// The text given.
        input: String,
    },
    /// The `@...` part is not a well-formed digest.
    #[error("invalid digest in reference `{input}`: {why}")]
    InvalidDigest {
        /// The text given.
        input: String,
        /// What is wrong with the digest.
        why: String,
    },
}

/// A fully qualified image reference: `domain/path[:tag][@digest]`.
///
/// Always normalised: the domain is explicit (`docker.io` when none was given) and
/// official images carry their `library/` prefix. [`fmt::Display`] prints the full
/// form; [`Reference::familiar`] prints what docker shows users.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Result of docker's un-normalised `Parse`: the domain is whatever the text had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawReference {
    pub(crate) domain: String,
    pub(crate) path: String,
    pub(crate) tag: Option<String>,
    pub(crate) digest: Option<Digest>,
}

impl Reference {
    /// Parses as `docker pull`/`docker tag` do: normalise the name and add
    /// `:latest` when neither a tag nor a digest is given.
    ///
    /// `busybox` → `docker.io/library/busybox:latest`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let mut reference = Self::parse_named(input)?;
        if reference.tag.is_none() && reference.digest.is_none() {
            reference.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(reference)
    }

    /// Parses and normalises without adding a default tag
    /// (distribution's `ParseNormalizedNamed`): `busybox` → `docker.io/library/busybox`.
    pub fn parse_named(input: &str) -> Result<Self, ReferenceError> {
        if is_hex_identifier(input) {
            return Err(ReferenceError::HexIdentifier {
                input: input.to_string(),
            });
        }
        let (domain, remainder) = split_docker_domain(input);
        let remote_name = match remainder.find(':') {
            Some(colon) => &remainder[..colon],
            None => remainder.as_str(),
        };
        if remote_name.to_lowercase() != remote_name {
            return Err(ReferenceError::NameContainsUppercase {
                input: input.to_string(),
                repository: remote_name.to_string(),
            });
        }
        let raw = parse_raw(&format!("{domain}/{remainder}")).map_err(|err| reword(err, input))?;
        Ok(Reference {
            domain: raw.domain,
            path: raw.path,
            tag: raw.tag,
            digest: raw.digest,
        })
    }

    /// Builds a reference from its parts, validating each.
    pub fn from_parts(
        domain: &str,
        path: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<Self, ReferenceError> {
        let mut text = format!("{domain}/{path}");
        if let Some(tag) = tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &digest {
            text.push('@');
            text.push_str(digest.as_ref());
        }
        let parsed = Self::parse_named(&text)?;
        if parsed.domain != domain || parsed.path != path {
            return Err(ReferenceError::InvalidFormat {
                input: text,
                why: "domain and path do not form a canonical name".into(),
            });
        }
        Ok(parsed)
    }

    /// Registry host (and port): `docker.io`, `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Repository path within the registry: `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Full repository name: `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// Repository name as docker shows it: `busybox`, `user/app`, `host:5000/a/b`.
    ///
    /// One deliberate difference from docker: a Docker Hub path whose first
    /// component looks like a registry (`docker.io/a.b/c`, impossible on Docker Hub
    /// itself) keeps its domain, so the familiar form always parses back to the
    /// same reference.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            if let Some(rest) = self.path.strip_prefix(OFFICIAL_REPO_PREFIX)
                && !rest.contains('/')
            {
                return rest.to_string();
            }
            let first = self.path.split('/').next().unwrap_or_default();
            if first.contains(['.', ':']) || first == "localhost" {
                return self.name();
            }
            return self.path.clone();
        }
        self.name()
    }

    /// The whole reference as docker shows it: `busybox:latest`, `host:5000/a/b:tag`.
    pub fn familiar(&self) -> String {
        let mut text = self.familiar_name();
        self.push_suffix(&mut text);
        text
    }

    /// The same repository with another tag (the digest is dropped).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        if !is_valid_tag(tag) {
            return Err(ReferenceError::InvalidFormat {
                input: tag.to_string(),
                why: "a tag is 1 to 128 characters of letters, digits, `_`, `.` and `-`, not starting with `.` or `-`".into(),
            });
        }
        Ok(Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The same repository pinned to a digest (the tag is kept, as docker keeps it).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The repository alone, without tag or digest.
    pub fn repository(&self) -> Self {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: None,
        }
    }

    fn push_suffix(&self, text: &mut String) {
        if let Some(tag) = &self.tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            text.push('@');
            text.push_str(digest.as_ref());
        }
    }
}

impl Ord for Reference {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.domain, &self.path, &self.tag)
            .cmp(&(&other.domain, &other.path, &other.tag))
            .then_with(|| {
                let mine = self.digest.as_ref().map(|digest| digest.as_ref());
                let theirs = other.digest.as_ref().map(|digest| digest.as_ref());
                mine.cmp(&theirs)
            })
    }
}

impl PartialOrd for Reference {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.name();
        self.push_suffix(&mut text);
        f.write_str(&text)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Reference::parse(input)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Reference::parse_named(&text).map_err(serde::de::Error::custom)
    }
}

/// Quotes the user's input (not the internally prefixed text) in an error.
fn reword(err: ReferenceError, input: &str) -> ReferenceError {
    match err {
        ReferenceError::InvalidFormat { why, .. } => ReferenceError::InvalidFormat {
            input: input.to_string(),
            why,
        },
        ReferenceError::NameContainsUppercase { repository, .. } => {
            ReferenceError::NameContainsUppercase {
                input: input.to_string(),
                repository,
            }
        }
        ReferenceError::NameTooLong { len, .. } => ReferenceError::NameTooLong {
            input: input.to_string(),
            len,
        },
        ReferenceError::InvalidDigest { why, .. } => ReferenceError::InvalidDigest {
            input: input.to_string(),
            why,
        },
        other => other,
    }
}

/// distribution's `splitDockerDomain`: the first component is a registry only if it
/// contains `.` or `:`, is `localhost`, or has upper case (docker's historical rule).
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.find('/') {
        Some(slash) => {
            let first = &name[..slash];
            let looks_like_host =
                first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first;
            if looks_like_host {
                (first.to_string(), name[slash + 1..].to_string())
            } else {
                (DEFAULT_DOMAIN.to_string(), name.to_string())
            }
        }
        None => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

fn is_hex_identifier(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// distribution's un-normalised `Parse`: `[domain/]path[:tag][@digest]`.
pub(crate) fn parse_raw(input: &str) -> Result<RawReference, ReferenceError> {
    if input.is_empty() {
        return Err(ReferenceError::NameEmpty);
    }
    match parse_shape(input) {
        Ok(shape) => {
            if shape.name.len() > NAME_TOTAL_LENGTH_MAX {
                return Err(ReferenceError::NameTooLong {
                    input: input.to_string(),
                    len: shape.name.len(),
                });
            }
            let digest =
                match shape.digest {
                    Some(text) => Some(validate_digest(text).map_err(|why| {
                        ReferenceError::InvalidDigest {
                            input: input.to_string(),
                            why,
                        }
                    })?),
                    None => None,
                };
            let (domain, path) =
                split_name(shape.name).ok_or_else(|| invalid(input, "bad name"))?;
            Ok(RawReference {
                domain: domain.to_string(),
                path: path.to_string(),
                tag: shape.tag.map(str::to_string),
                digest,
            })
        }
        Err(why) => {
            // As docker: if the lower-cased text would be valid, the problem is case.
            let lowered = input.to_lowercase();
            if let Ok(shape) = parse_shape(&lowered) {
                let original_name = input.get(..shape.name.len()).unwrap_or(input);
                return Err(ReferenceError::NameContainsUppercase {
                    input: input.to_string(),
                    repository: original_name.to_string(),
                });
            }
            Err(invalid(input, &why))
        }
    }
}

fn invalid(input: &str, why: &str) -> ReferenceError {
    ReferenceError::InvalidFormat {
        input: input.to_string(),
        why: why.to_string(),
    }
}

struct Shape<'a> {
    name: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Matches the text against docker's `ReferenceRegexp` (syntax only).
fn parse_shape(input: &str) -> Result<Shape<'_>, String> {
    let (before_digest, digest) = match input.split_once('@') {
        Some((before, digest)) => (before, Some(digest)),
        None => (input, None),
    };
    if let Some(digest) = digest
        && !is_digest_shape(digest)
    {
        return Err(format!(
            "`{digest}` is not a digest; expected `algorithm:hex` such as `sha256:` and 64 hex digits"
        ));
    }
    let last_slash = before_digest.rfind('/');
    let (name, tag) = match before_digest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&before_digest[..colon], Some(&before_digest[colon + 1..]))
        }
        _ => (before_digest, None),
    };
    if let Some(tag) = tag
        && !is_valid_tag(tag)
    {
        return Err(format!(
            "tag `{tag}` is invalid: a tag is 1 to 128 characters of letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
        ));
    }
    if name.is_empty() {
        return Err("the repository name is empty".into());
    }
    if split_name(name).is_none() {
        return Err(format!(
            "repository name `{name}` is invalid: path components are lowercase letters and digits separated by `.`, `_`, `__` or dashes, joined by `/`, optionally after a registry host[:port]/"
        ));
    }
    Ok(Shape { name, tag, digest })
}

/// Splits a name into (domain, path) as the anchored name regexp does: the part
/// before the first `/` is the domain when it is a valid host and the rest is a
/// valid path; otherwise the whole is a path. Returns None if neither matches.
fn split_name(name: &str) -> Option<(&str, &str)> {
    if let Some((first, rest)) = name.split_once('/')
        && is_domain_and_port(first)
        && is_remote_name(rest)
    {
        return Some((first, rest));
    }
    if is_remote_name(name) {
        return Some(("", name));
    }
    None
}

/// `[\w][\w.-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match bytes.split_first() {
        Some((first, rest)) => {
            word(*first)
                && rest.len() <= 127
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
        }
        None => false,
    }
}

/// `path-component ('/' path-component)*`.
fn is_remote_name(text: &str) -> bool {
    text.split('/').all(is_path_component)
}

/// `[a-z0-9]+ ((?:[._]|__|[-]+) [a-z0-9]+)*`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut index = 0;
    let run = |index: &mut usize| {
        let start = *index;
        while *index < bytes.len() && alnum(bytes[*index]) {
            *index += 1;
        }
        *index > start
    };
    if !run(&mut index) {
        return false;
    }
    while index < bytes.len() {
        let separator_start = index;
        match bytes[index] {
            b'.' => index += 1,
            b'_' => {
                index += 1;
                if index < bytes.len() && bytes[index] == b'_' {
                    index += 1;
                }
            }
            b'-' => {
                while index < bytes.len() && bytes[index] == b'-' {
                    index += 1;
                }
            }
            _ => return false,
        }
        debug_assert!(index > separator_start);
        if !run(&mut index) {
            return false;
        }
    }
    true
}

/// `host (':' [0-9]+)?` where host is a domain name or a bracketed IPv6 address.
fn is_domain_and_port(text: &str) -> bool {
    let (host, port) = if let Some(after_bracket) = text.strip_prefix('[') {
        let Some(close) = after_bracket.find(']') else {
            return false;
        };
        let inside = &after_bracket[..close];
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        let after = &after_bracket[close + 1..];
        (None, after)
    } else {
        match text.find(':') {
            Some(colon) => (Some(&text[..colon]), &text[colon..]),
            None => (Some(text), ""),
        }
    };
    if let Some(host) = host
        && !host.split('.').all(is_domain_component)
    {
        return false;
    }
    if port.is_empty() {
        return true;
    }
    match port.strip_prefix(':') {
        Some(digits) => !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`.
fn is_digest_shape(text: &str) -> bool {
    let Some((algorithm, encoded)) = text.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let bytes = part.as_bytes();
        matches!(bytes.first(), Some(b) if b.is_ascii_alphabetic())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric())
    });
    algorithm_ok && encoded.len() >= 32 && encoded.bytes().all(|b| b.is_ascii_hexdigit())
}

/// go-digest's validation: a known algorithm and exactly its length of lowercase hex.
fn validate_digest(text: &str) -> Result<Digest, String> {
    let Some((algorithm, encoded)) = text.split_once(':') else {
        return Err(format!("`{text}` has no `algorithm:` prefix"));
    };
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => {
            return Err(format!(
                "unsupported digest algorithm `{other}`; use sha256, sha384 or sha512"
            ));
        }
    };
    if encoded.len() != hex_len {
        return Err(format!(
            "{algorithm} digest has {} hex digits; expected {hex_len}",
            encoded.len()
        ));
    }
    if !encoded
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!("digest `{text}` must be lowercase hex"));
    }
    Digest::from_str(text).map_err(|err| format!("digest `{text}`: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FF64: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    /// distribution/reference `TestReferenceParse` (un-normalised Parse):
    /// (input, domain, path-with-domain, tag, digest) or an error kind.
    /// (input, domain, name, tag, digest) of a reference that parses.
    type Vector<'a> = (String, &'a str, String, Option<&'a str>, Option<String>);

    #[test]
    fn raw_parse_matches_distribution_vectors() {
        let ok: Vec<Vector> = vec![
            ("test_com".into(), "", "test_com".into(), None, None),
            (
                "test.com:tag".into(),
                "",
                "test.com".into(),
                Some("tag"),
                None,
            ),
            (
                "test.com:5000".into(),
                "",
                "test.com".into(),
                Some("5000"),
                None,
            ),
            (
                "test.com/repo:tag".into(),
                "test.com",
                "test.com/repo".into(),
                Some("tag"),
                None,
            ),
            (
                "test:5000/repo".into(),
                "test:5000",
                "test:5000/repo".into(),
                None,
                None,
            ),
            (
                "test:5000/repo:tag".into(),
                "test:5000",
                "test:5000/repo".into(),
                Some("tag"),
                None,
            ),
            (
                format!("test:5000/repo@sha256:{FF64}"),
                "test:5000",
                "test:5000/repo".into(),
                None,
                Some(format!("sha256:{FF64}")),
            ),
            (
                format!("test:5000/repo:tag@sha256:{FF64}"),
                "test:5000",
                "test:5000/repo".into(),
                Some("tag"),
                Some(format!("sha256:{FF64}")),
            ),
            (
                "lowercase:Uppercase".into(),
                "",
                "lowercase".into(),
                Some("Uppercase"),
                None,
            ),
            (
                format!("{}a:tag-puts-this-over-max", "a/".repeat(127)),
                "a",
                format!("{}a", "a/".repeat(127)),
                Some("tag-puts-this-over-max"),
                None,
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux".into(),
                "sub-dom1.foo.com",
                "sub-dom1.foo.com/bar/baz/quux".into(),
                None,
                None,
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
                "sub-dom1.foo.com",
                "sub-dom1.foo.com/bar/baz/quux".into(),
                Some("some-long-tag"),
                None,
            ),
            (
                "b.gcr.io/test.example.com/my-app:test.example.com".into(),
                "b.gcr.io",
                "b.gcr.io/test.example.com/my-app".into(),
                Some("test.example.com"),
                None,
            ),
            (
                "xn--n3h.com/myimage:xn--n3h.com".into(),
                "xn--n3h.com",
                "xn--n3h.com/myimage".into(),
                Some("xn--n3h.com"),
                None,
            ),
            (
                format!("xn--7o8h.com/myimage:xn--7o8h.com@sha512:{FF64}{FF64}"),
                "xn--7o8h.com",
                "xn--7o8h.com/myimage".into(),
                Some("xn--7o8h.com"),
                Some(format!("sha512:{FF64}{FF64}")),
            ),
            (
                "foo_bar.com:8080".into(),
                "",
                "foo_bar.com".into(),
                Some("8080"),
                None,
            ),
            (
                "foo/foo_bar.com:8080".into(),
                "foo",
                "foo/foo_bar.com".into(),
                Some("8080"),
                None,
            ),
            ("192.168.1.1".into(), "", "192.168.1.1".into(), None, None),
            (
                "192.168.1.1:tag".into(),
                "",
                "192.168.1.1".into(),
                Some("tag"),
                None,
            ),
            (
                "192.168.1.1:5000".into(),
                "",
                "192.168.1.1".into(),
                Some("5000"),
                None,
            ),
            (
                "192.168.1.1/repo".into(),
                "192.168.1.1",
                "192.168.1.1/repo".into(),
                None,
                None,
            ),
            (
                "192.168.1.1:5000/repo".into(),
                "192.168.1.1:5000",
                "192.168.1.1:5000/repo".into(),
                None,
                None,
            ),
            (
                "192.168.1.1:5000/repo:5050".into(),
                "192.168.1.1:5000",
                "192.168.1.1:5000/repo".into(),
                Some("5050"),
                None,
            ),
            (
                "[2001:db8::1]/repo".into(),
                "[2001:db8::1]",
                "[2001:db8::1]/repo".into(),
                None,
                None,
            ),
            (
                "[2001:db8:1:2:3:4:5:6]/repo:tag".into(),
                "[2001:db8:1:2:3:4:5:6]",
                "[2001:db8:1:2:3:4:5:6]/repo".into(),
                Some("tag"),
                None,
            ),
            (
                "[2001:db8::1]:5000/repo".into(),
                "[2001:db8::1]:5000",
                "[2001:db8::1]:5000/repo".into(),
                None,
                None,
            ),
            (
                "[2001:db8::1]:5000/repo:tag".into(),
                "[2001:db8::1]:5000",
                "[2001:db8::1]:5000/repo".into(),
                Some("tag"),
                None,
            ),
            (
                format!("[2001:db8::1]:5000/repo@sha256:{FF64}"),
                "[2001:db8::1]:5000",
                "[2001:db8::1]:5000/repo".into(),
                None,
                Some(format!("sha256:{FF64}")),
            ),
            (
                "[2001:db8::]:5000/repo".into(),
                "[2001:db8::]:5000",
                "[2001:db8::]:5000/repo".into(),
                None,
                None,
            ),
            (
                "[::1]:5000/repo".into(),
                "[::1]:5000",
                "[::1]:5000/repo".into(),
                None,
                None,
            ),
        ];
        for (input, domain, repository, tag, digest) in ok {
            let raw = parse_raw(&input).unwrap_or_else(|err| panic!("{input}: {err}"));
            assert_eq!(raw.domain, domain, "{input}");
            let name = if raw.domain.is_empty() {
                raw.path.clone()
            } else {
                format!("{}/{}", raw.domain, raw.path)
            };
            assert_eq!(name, repository, "{input}");
            assert_eq!(raw.tag.as_deref(), tag, "{input}");
            assert_eq!(raw.digest.map(|d| d.to_string()), digest, "{input}");
        }

        let invalid_format = [
            ":justtag".to_string(),
            format!("@sha256:{FF64}"),
            "aa/asdf$$^/aa".into(),
            "[2001:db8::1]".into(),
            "[2001:db8::1]:5000".into(),
            "[2001:db8::1]:tag".into(),
            "[fe80::1%eth0]:5000/repo".into(),
            "[fe80::1%@invalidzone]:5000/repo".into(),
        ];
        for input in invalid_format {
            let err = parse_raw(&input).unwrap_err();
            assert!(
                matches!(err, ReferenceError::InvalidFormat { .. }),
                "{input}: {err:?}"
            );
            assert!(
                err.to_string().contains(&input),
                "error should quote the input: {err}"
            );
        }
        assert_eq!(parse_raw("").unwrap_err(), ReferenceError::NameEmpty);
        for input in ["Uppercase:tag", "test:5000/Uppercase/lowercase:tag"] {
            let err = parse_raw(input).unwrap_err();
            assert!(
                matches!(err, ReferenceError::NameContainsUppercase { .. }),
                "{input}: {err:?}"
            );
        }
        let err = parse_raw(&format!("{}a:tag", "a/".repeat(128))).unwrap_err();
        assert!(matches!(err, ReferenceError::NameTooLong { .. }), "{err:?}");
        for input in [
            "repo@sha256:ffffffffffffffffffffffffffffffffff".to_string(),
            format!("validname@invaliddigest:{FF64}"),
        ] {
            let err = parse_raw(&input).unwrap_err();
            assert!(
                matches!(err, ReferenceError::InvalidDigest { .. }),
                "{input}: {err:?}"
            );
        }
    }

    /// distribution/reference `TestValidateReferenceName` and `TestValidateRemoteName`.
    #[test]
    fn normalized_names_accept_and_reject_as_docker() {
        let valid = [
            "docker/docker",
            "library/debian",
            "debian",
            "docker.io/docker/docker",
            "docker.io/library/debian",
            "docker.io/debian",
            "index.docker.io/docker/docker",
            "index.docker.io/library/debian",
            "index.docker.io/debian",
            "127.0.0.1:5000/docker/docker",
            "127.0.0.1:5000/library/debian",
            "127.0.0.1:5000/debian",
            "192.168.0.1",
            "192.168.0.1:80",
            "192.168.0.1:8/debian",
            "192.168.0.2:25000/debian",
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "[fc00::1]:5000/docker",
            "[fc00::1]:5000/docker/docker",
            "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
            "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "Docker/docker",
            "DOCKER/docker",
            "docker-rules/docker",
            "docker---rules/docker",
            "doc/docker",
            "d/docker",
            "jess/t",
            "dock__er/docker",
        ];
        for name in valid {
            assert!(
                Reference::parse_named(name).is_ok(),
                "{name} should be valid: {:?}",
                Reference::parse_named(name)
            );
        }
        let invalid = [
            "https://github.com/docker/docker",
            "docker/Docker",
            "-docker",
            "-docker/docker",
            "-docker.io/docker/docker",
            "docker///docker",
            "docker.io/docker/Docker",
            "docker.io/docker///docker",
            "[fc00::1]",
            "[fc00::1]:5000",
            "fc00::1:5000/debian",
            "[fe80::1%eth0]:5000/debian",
            "[2001:db8:3:4::192.0.2.33]:5000/debian",
            "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "docker-/docker",
            "-docker-/docker",
            "____/____",
            "_docker/_docker",
            "dock..er/docker",
            "dock_.er/docker",
            "dock-.er/docker",
            "docker/",
            "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker",
        ];
        for name in invalid {
            let err = Reference::parse_named(name).expect_err(name);
            assert!(
                err.to_string().contains(name),
                "error for {name} should quote it: {err}"
            );
        }
    }

    /// distribution/reference `TestParseRepositoryInfo`: (path, familiar, full, ambiguous, domain).
    #[test]
    fn familiar_and_full_names_match_docker() {
        let cases = [
            (
                "fooo/bar",
                "fooo/bar",
                "docker.io/fooo/bar",
                Some("index.docker.io/fooo/bar"),
                "docker.io",
            ),
            (
                "library/ubuntu",
                "ubuntu",
                "docker.io/library/ubuntu",
                Some("library/ubuntu"),
                "docker.io",
            ),
            (
                "nonlibrary/ubuntu",
                "nonlibrary/ubuntu",
                "docker.io/nonlibrary/ubuntu",
                None,
                "docker.io",
            ),
            (
                "other/library",
                "other/library",
                "docker.io/other/library",
                None,
                "docker.io",
            ),
            (
                "private/moonbase",
                "127.0.0.1:8000/private/moonbase",
                "127.0.0.1:8000/private/moonbase",
                None,
                "127.0.0.1:8000",
            ),
            (
                "privatebase",
                "127.0.0.1:8000/privatebase",
                "127.0.0.1:8000/privatebase",
                None,
                "127.0.0.1:8000",
            ),
            (
                "private/moonbase",
                "example.com/private/moonbase",
                "example.com/private/moonbase",
                None,
                "example.com",
            ),
            (
                "privatebasee",
                "example.com:8000/privatebasee",
                "example.com:8000/privatebasee",
                None,
                "example.com:8000",
            ),
            (
                "library/ubuntu-12.04-base",
                "ubuntu-12.04-base",
                "docker.io/library/ubuntu-12.04-base",
                Some("index.docker.io/library/ubuntu-12.04-base"),
                "docker.io",
            ),
            (
                "library/foo",
                "foo",
                "docker.io/library/foo",
                Some("docker.io/foo"),
                "docker.io",
            ),
            (
                "library/foo/bar",
                "library/foo/bar",
                "docker.io/library/foo/bar",
                None,
                "docker.io",
            ),
            (
                "store/foo/bar",
                "store/foo/bar",
                "docker.io/store/foo/bar",
                None,
                "docker.io",
            ),
            ("bar", "Foo/bar", "Foo/bar", None, "Foo"),
            ("bar", "FOO/bar", "FOO/bar", None, "FOO"),
        ];
        for (path, familiar, full, ambiguous, domain) in cases {
            for input in [Some(familiar), Some(full), ambiguous]
                .into_iter()
                .flatten()
            {
                let named =
                    Reference::parse_named(input).unwrap_or_else(|err| panic!("{input}: {err}"));
                assert_eq!(named.familiar_name(), familiar, "{input}");
                assert_eq!(named.to_string(), full, "{input}");
                assert_eq!(named.domain(), domain, "{input}");
                assert_eq!(named.path(), path, "{input}");
            }
        }
    }

    #[test]
    fn docker_cli_forms_normalise_and_display() {
        let cases = [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            ("user/app", "docker.io/user/app:latest", "user/app:latest"),
            (
                "host:5000/a/b:tag",
                "host:5000/a/b:tag",
                "host:5000/a/b:tag",
            ),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            (
                "localhost:5000/x:1.0",
                "localhost:5000/x:1.0",
                "localhost:5000/x:1.0",
            ),
            (
                "docker.io/library/redis:7",
                "docker.io/library/redis:7",
                "redis:7",
            ),
        ];
        for (input, full, familiar) in cases {
            let reference = Reference::parse(input).unwrap();
            assert_eq!(reference.to_string(), full, "{input}");
            assert_eq!(reference.familiar(), familiar, "{input}");
            assert_eq!(Reference::parse(&reference.to_string()).unwrap(), reference);
        }
        let digest = "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
        let by_digest = Reference::parse(&format!("busybox@{digest}")).unwrap();
        assert_eq!(
            by_digest.tag(),
            None,
            "a digest reference gets no default tag"
        );
        assert_eq!(
            by_digest.to_string(),
            format!("docker.io/library/busybox@{digest}")
        );
        let both = Reference::parse(&format!("busybox:latest@{digest}")).unwrap();
        assert_eq!(both.familiar(), format!("busybox:latest@{digest}"));
        assert_eq!(
            both.digest().map(|d| d.to_string()).as_deref(),
            Some(digest)
        );
    }

    #[test]
    fn errors_say_why_and_show_input() {
        let err = Reference::parse("Busybox").unwrap_err();
        assert!(
            err.to_string().contains("must be lowercase") && err.to_string().contains("Busybox"),
            "{err}"
        );
        let err = Reference::parse("busybox:-bad").unwrap_err();
        assert!(
            err.to_string().contains("busybox:-bad") && err.to_string().contains("tag"),
            "{err}"
        );
        let err = Reference::parse(&"a".repeat(64).replace('a', "b")).unwrap_err();
        assert!(err.to_string().contains("hexadecimal"), "{err}");
        let long_tag = format!("busybox:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        assert!(Reference::parse(&format!("busybox:{}", "t".repeat(128))).is_ok());
        assert!(Reference::parse("").is_err());
    }

    #[test]
    fn with_tag_and_repository_helpers() {
        let reference = Reference::parse("busybox").unwrap();
        assert_eq!(
            reference.with_tag("1.36").unwrap().familiar(),
            "busybox:1.36"
        );
        assert!(reference.with_tag(".bad").is_err());
        assert_eq!(
            reference.repository().to_string(),
            "docker.io/library/busybox"
        );
        let parts = Reference::from_parts("localhost:5000", "a/b", Some("t"), None).unwrap();
        assert_eq!(parts.to_string(), "localhost:5000/a/b:t");
    }

    #[test]
    fn familiar_form_stays_unambiguous_for_dotted_hub_paths() {
        let reference = Reference::parse("docker.io/0.0/0").unwrap();
        assert_eq!(reference.familiar(), "docker.io/0.0/0:latest");
        assert_eq!(Reference::parse(&reference.familiar()).unwrap(), reference);
    }
}
