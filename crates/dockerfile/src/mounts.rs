//! `RUN --mount=...` specifications, parsed as BuildKit parses them
//! (`instructions/commands_runmount.go`): a CSV list of `key=value` fields
//! (`type=cache,target=/root/.cache,sharing=locked`), keys case-insensitive,
//! values word-expanded with the build's environment.
//!
//! BuildKit expands mount values only when the RUN is dispatched, with the
//! environment of the stage at that point. [`parse_mount`] therefore has two
//! modes: with an expander (what the build engine calls, through
//! [`crate::instructions::RunMount::expand`]) every value is expanded and
//! validated; without one (when the Dockerfile is read) values that contain
//! `$` are kept as written and checked later, everything else is validated at
//! once so that typos are reported before anything runs. `from=` never
//! accepts variables, as in BuildKit.

// `Diagnostic` is the frontend's single error type: large, but errors are rare.
#![allow(clippy::result_large_err)]

use crate::shell::ExpandError;

/// What kind of filesystem a RUN mount provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MountType {
    /// A read-only (by default) view of a stage, image or the build context.
    Bind,
    /// A persistent cache directory shared between builds.
    Cache,
    /// An empty in-memory filesystem.
    Tmpfs,
    /// A secret file (or environment variable) provided by the client.
    Secret,
    /// An SSH agent socket forwarded from the client.
    Ssh,
}

impl MountType {
    /// All types, in the order BuildKit lists them.
    pub const ALL: [MountType; 5] = [
        MountType::Bind,
        MountType::Cache,
        MountType::Tmpfs,
        MountType::Secret,
        MountType::Ssh,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }

    fn parse(lowercase: &str) -> Option<MountType> {
        MountType::ALL.into_iter().find(|t| t.as_str() == lowercase)
    }
}

impl std::fmt::Display for MountType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

impl CacheSharing {
    pub const ALL: [CacheSharing; 3] = [
        CacheSharing::Shared,
        CacheSharing::Private,
        CacheSharing::Locked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheSharing::Shared => "shared",
            CacheSharing::Private => "private",
            CacheSharing::Locked => "locked",
        }
    }
}

/// One parsed `--mount` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    /// `target=` / `dst=` / `destination=`: where it appears in the container.
    pub target: Option<String>,
    /// `source=` / `src=`: path inside `from` (bind, cache) or secret id.
    pub source: Option<String>,
    /// `from=`: stage name or index, image, or `context` (bind, cache).
    pub from: Option<String>,
    /// Read-only; BuildKit's default is read-only for bind, secret and ssh,
    /// writable for cache and tmpfs.
    pub read_only: bool,
    /// `id=`: cache id, secret id or ssh id.
    pub id: Option<String>,
    /// `sharing=` (cache only).
    pub sharing: Option<CacheSharing>,
    /// `required` (secret and ssh): fail when the client does not provide it.
    pub required: bool,
    /// `mode=` in octal (cache, secret, ssh).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `size=` of a tmpfs in bytes (`64m`, `1g`, binary multiples).
    pub size: Option<u64>,
    /// `env=` (secret): expose the secret as this environment variable.
    pub env: Option<String>,
    /// Keys whose values contain variables and were not yet expanded (only
    /// when parsed without an expander).
    pub deferred: Vec<String>,
}

/// Why a `--mount` value is invalid. Messages follow BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("failed to parse csv mounts: {0}")]
    Csv(String),
    #[error("invalid field '{0}' must be a key=value pair")]
    NotKeyValue(String),
    #[error("unsupported mount type {0:?}")]
    UnsupportedType(String),
    #[error("unsupported sharing value {0:?}")]
    UnsupportedSharing(String),
    #[error("unexpected key '{key}' for mount type '{kind}'")]
    KeyNotForType { key: String, kind: MountType },
    #[error("unexpected key '{key}' in '{field}'")]
    UnknownKey { key: String, field: String },
    #[error("invalid value for {key}: {value}")]
    InvalidValue { key: String, value: String },
    #[error("invalid value {value} for {key}")]
    InvalidNumber { key: String, value: String },
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    FromWithVariable,
    #[error("{key} not allowed for {kind:?} type mounts")]
    FileInfoNotAllowed { key: &'static str, kind: String },
    #[error("secret mount should not have a from")]
    SecretWithFrom,
    #[error("secret mount should not define sharing")]
    SecretWithSharing,
    #[error("invalid secret mount. one of source, target required")]
    SecretWithoutSourceOrTarget,
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    #[error("invalid cache sharing set for {0} mount")]
    SharingNotCache(MountType),
    #[error(transparent)]
    Expand(#[from] ExpandError),
}

/// Every key BuildKit accepts, for "did you mean" hints.
pub const MOUNT_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

impl MountError {
    /// A suggestion for the user, when an obvious fix exists.
    pub fn hint(&self) -> Option<String> {
        match self {
            MountError::UnsupportedType(value) => Some(
                match crate::diagnostics::closest_match(
                    value,
                    MountType::ALL.iter().map(|t| t.as_str()),
                ) {
                    Some(close) => format!(
                        "did you mean type={close}? valid types are bind, cache, tmpfs, secret, ssh"
                    ),
                    None => "valid types are bind, cache, tmpfs, secret, ssh".into(),
                },
            ),
            MountError::UnsupportedSharing(_) => {
                Some("valid values are shared, private, locked".into())
            }
            MountError::UnknownKey { key, .. } => {
                Some(match crate::diagnostics::closest_match(key, MOUNT_KEYS) {
                    Some(close) => format!(
                        "did you mean {close}? valid keys are {}",
                        MOUNT_KEYS.join(", ")
                    ),
                    None => format!("valid keys are {}", MOUNT_KEYS.join(", ")),
                })
            }
            MountError::FromWithVariable => {
                Some("declare `FROM ${VAR} AS alias` and use from=alias".into())
            }
            MountError::NotKeyValue(_) => {
                Some("write key=value; only ro, rw and required stand alone".into())
            }
            MountError::Expand(err) => err.hint(),
            _ => None,
        }
    }
}

/// Splits one CSV record the way Go's `encoding/csv` reads a single line:
/// `,` separates fields, a field that starts with `"` is quoted and `""`
/// inside it is a quote; a bare `"` inside an unquoted field is an error.
pub fn split_csv(line: &str) -> Result<Vec<String>, MountError> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(MountError::Csv(
                            "extraneous or missing \" in quoted-field".into(),
                        ));
                    }
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some(',') | None => break,
                        Some(_) => {
                            return Err(MountError::Csv(
                                "extraneous or missing \" in quoted-field".into(),
                            ));
                        }
                    },
                    Some(ch) => field.push(ch),
                }
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch == ',' {
                    break;
                }
                if ch == '"' {
                    return Err(MountError::Csv("bare \" in non-quoted-field".into()));
                }
                field.push(ch);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            _ => break,
        }
    }
    // Go's csv reader trims a trailing carriage return / newline of the record.
    if let Some(last) = fields.last_mut() {
        while last.ends_with('\n') || last.ends_with('\r') {
            last.pop();
        }
    }
    Ok(fields)
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `go-units` `RAMInBytes`: a decimal number with an optional binary unit
/// (`k`, `m`, `g`, `t`, `p`, optionally followed by `i` and/or `b`).
pub fn parse_ram_size(value: &str) -> Option<u64> {
    let number_len = value
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(value.len(), |(i, _)| i);
    let (number, unit) = value.split_at(number_len);
    if number.is_empty()
        || number.starts_with('.')
        || number.ends_with('.')
        || number.contains("..")
    {
        return None;
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let (multiplier, suffix): (u64, &str) = match unit.chars().next() {
        Some('k') => (1 << 10, unit.get(1..).unwrap_or("")),
        Some('m') => (1 << 20, unit.get(1..).unwrap_or("")),
        Some('g') => (1 << 30, unit.get(1..).unwrap_or("")),
        Some('t') => (1 << 40, unit.get(1..).unwrap_or("")),
        Some('p') => (1 << 50, unit.get(1..).unwrap_or("")),
        _ => (1, unit.as_str()),
    };
    if !matches!(suffix, "" | "i" | "b" | "ib") {
        return None;
    }
    let parsed: f64 = number.parse().ok()?;
    let bytes = parsed * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return None;
    }
    Some(bytes as u64)
}

/// Expands one word (a mount value) in the build's environment.
pub type WordExpander<'a> = dyn FnMut(&str) -> Result<String, ExpandError> + 'a;

/// Parses one `--mount` value. With `expander`, every value is expanded
/// before it is interpreted; without, values containing `$` are left as
/// written and listed in [`Mount::deferred`].
pub fn parse_mount(
    spec: &str,
    mut expander: Option<&mut WordExpander<'_>>,
) -> Result<Mount, MountError> {
    let fields = split_csv(spec)?;
    let mut mount = Mount {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        read_only: false,
        id: None,
        sharing: None,
        required: false,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        env: None,
        deferred: Vec::new(),
    };
    let mut read_only_auto = true;
    // Whether `kind` is known; a deferred `type=$T` leaves it unknown, and
    // checks that depend on the type wait for expansion.
    let mut kind_known = true;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.to_ascii_lowercase(), Some(value)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    mount.read_only = true;
                    read_only_auto = false;
                }
                "readwrite" | "rw" => {
                    mount.read_only = false;
                    read_only_auto = false;
                }
                "required" => {
                    if !kind_known || matches!(mount.kind, MountType::Secret | MountType::Ssh) {
                        mount.required = true;
                    } else {
                        return Err(MountError::KeyNotForType {
                            key,
                            kind: mount.kind,
                        });
                    }
                }
                _ => return Err(MountError::NotKeyValue(field.clone())),
            }
            continue;
        };
        let value: String = match expander.as_mut() {
            Some(expand) => expand(value)?,
            None => {
                if key == "from" {
                    if value
                        .find('$')
                        .is_some_and(|dollar| dollar + 1 != value.len())
                    {
                        return Err(MountError::FromWithVariable);
                    }
                    value.to_string()
                } else if value.contains('$') {
                    if key == "type" {
                        kind_known = false;
                    }
                    mount.deferred.push(key.clone());
                    match key.as_str() {
                        "source" | "src" => mount.source = Some(value.to_string()),
                        "target" | "dst" | "destination" => mount.target = Some(value.to_string()),
                        "id" => mount.id = Some(value.to_string()),
                        "env" => mount.env = Some(value.to_string()),
                        _ => {}
                    }
                    continue;
                } else {
                    value.to_string()
                }
            }
        };
        let bool_value = |key: &str, value: &str| {
            parse_go_bool(value).ok_or_else(|| MountError::InvalidValue {
                key: key.to_string(),
                value: value.to_string(),
            })
        };
        let number = |key: &str, value: &str, radix: u32| {
            u32::from_str_radix(value, radix)
                .ok()
                .filter(|_| !value.starts_with('+'))
                .ok_or_else(|| MountError::InvalidNumber {
                    key: key.to_string(),
                    value: value.to_string(),
                })
        };
        match key.as_str() {
            "type" => {
                mount.kind = MountType::parse(&value.to_ascii_lowercase())
                    .ok_or_else(|| MountError::UnsupportedType(value.clone()))?;
                kind_known = true;
            }
            "from" => mount.from = Some(value),
            "source" | "src" => mount.source = Some(value),
            "target" | "dst" | "destination" => mount.target = Some(value),
            "readonly" | "ro" => {
                mount.read_only = bool_value(&key, &value)?;
                read_only_auto = false;
            }
            "readwrite" | "rw" => {
                mount.read_only = !bool_value(&key, &value)?;
                read_only_auto = false;
            }
            "required" => {
                if kind_known && !matches!(mount.kind, MountType::Secret | MountType::Ssh) {
                    return Err(MountError::KeyNotForType {
                        key,
                        kind: mount.kind,
                    });
                }
                mount.required = bool_value(&key, &value)?;
            }
            "size" => {
                if kind_known && mount.kind != MountType::Tmpfs {
                    return Err(MountError::KeyNotForType {
                        key,
                        kind: mount.kind,
                    });
                }
                mount.size =
                    Some(parse_ram_size(&value).ok_or(MountError::InvalidValue { key, value })?);
            }
            "id" => mount.id = Some(value),
            "sharing" => {
                let lower = value.to_ascii_lowercase();
                mount.sharing = Some(
                    CacheSharing::ALL
                        .into_iter()
                        .find(|s| s.as_str() == lower)
                        .ok_or(MountError::UnsupportedSharing(value))?,
                );
            }
            "mode" => mount.mode = Some(number("mode", &value, 8)?),
            "uid" => mount.uid = Some(number("uid", &value, 10)?),
            "gid" => mount.gid = Some(number("gid", &value, 10)?),
            "env" => mount.env = Some(value),
            _ => {
                return Err(MountError::UnknownKey {
                    key,
                    field: field.clone(),
                });
            }
        }
    }
    if !kind_known {
        return Ok(mount);
    }
    let file_info_allowed = matches!(
        mount.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        let kind = mount.kind.as_str().to_string();
        if mount.mode.is_some() {
            return Err(MountError::FileInfoNotAllowed { key: "mode", kind });
        }
        if mount.uid.is_some() {
            return Err(MountError::FileInfoNotAllowed { key: "uid", kind });
        }
        if mount.gid.is_some() {
            return Err(MountError::FileInfoNotAllowed { key: "gid", kind });
        }
    }
    if read_only_auto {
        mount.read_only = !matches!(mount.kind, MountType::Cache | MountType::Tmpfs);
    }
    if mount.kind == MountType::Secret {
        if mount.from.is_some() {
            return Err(MountError::SecretWithFrom);
        }
        if mount.sharing.is_some() {
            return Err(MountError::SecretWithSharing);
        }
        if mount.source.is_none()
            && mount.target.is_none()
            && mount.id.is_none()
            && mount.env.is_none()
        {
            return Err(MountError::SecretWithoutSourceOrTarget);
        }
        if mount.source.is_some() && mount.id.is_some() {
            return Err(MountError::SecretSourceAndId);
        }
    }
    if mount.sharing.is_some() && mount.kind != MountType::Cache {
        return Err(MountError::SharingNotCache(mount.kind));
    }
    Ok(mount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::Lexer;

    fn parse(spec: &str) -> Result<Mount, MountError> {
        parse_mount(spec, None)
    }

    #[test]
    fn cache_mount_with_all_keys() {
        let m = parse(
            "type=cache,target=/root/.cache,id=go,sharing=locked,mode=0755,uid=1000,gid=1000",
        )
        .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.id.as_deref(), Some("go"));
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!((m.uid, m.gid), (Some(1000), Some(1000)));
        assert!(!m.read_only, "cache mounts are writable by default");
    }

    #[test]
    fn bind_defaults_and_aliases() {
        let m = parse("from=build,src=/out,dst=/in").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert_eq!(m.from.as_deref(), Some("build"));
        assert_eq!(m.source.as_deref(), Some("/out"));
        assert_eq!(m.target.as_deref(), Some("/in"));
        assert!(m.read_only, "bind mounts are read-only by default");
        assert!(!parse("type=bind,target=/x,rw").unwrap().read_only);
        assert!(
            !parse("type=bind,destination=/x,readwrite=true")
                .unwrap()
                .read_only
        );
        assert!(parse("type=cache,target=/x,ro").unwrap().read_only);
        assert!(parse("TYPE=CACHE,Target=/x,readonly=1").unwrap().read_only);
    }

    #[test]
    fn secret_ssh_and_tmpfs() {
        let m = parse("type=secret,id=npmrc,target=/root/.npmrc,required").unwrap();
        assert_eq!(m.kind, MountType::Secret);
        assert!(m.required && m.read_only);
        let m = parse("type=secret,id=token,env=TOKEN").unwrap();
        assert_eq!(m.env.as_deref(), Some("TOKEN"));
        assert!(parse("type=ssh,required=true").unwrap().required);
        assert_eq!(
            parse("type=tmpfs,target=/t,size=64m").unwrap().size,
            Some(64 << 20)
        );
    }

    #[test]
    fn errors_match_buildkit() {
        let cases = [
            ("type=volume,target=/x", "unsupported mount type \"volume\""),
            (
                "type=cache,target=/x,sharing=sometimes",
                "unsupported sharing value \"sometimes\"",
            ),
            (
                "type=cache,targte=/x",
                "unexpected key 'targte' in 'targte=/x'",
            ),
            (
                "type=bind,target=/x,required",
                "unexpected key 'required' for mount type 'bind'",
            ),
            (
                "type=cache,size=1g",
                "unexpected key 'size' for mount type 'cache'",
            ),
            ("type=cache,mode=999", "invalid value 999 for mode"),
            ("type=cache,uid=-1", "invalid value -1 for uid"),
            ("type=bind,ro=maybe", "invalid value for ro: maybe"),
            (
                "type=bind,target=/x,mode=0644",
                "mode not allowed for \"bind\" type mounts",
            ),
            (
                "type=secret,from=x,id=a",
                "secret mount should not have a from",
            ),
            (
                "type=secret",
                "invalid secret mount. one of source, target required",
            ),
            (
                "type=secret,source=a,id=b",
                "both source and id can't be set",
            ),
            (
                "type=bind,target=/x,sharing=shared",
                "invalid cache sharing set for bind mount",
            ),
            (
                "from=$STAGE,target=/x",
                "'from' doesn't support variable expansion, define alias stage instead",
            ),
            ("target", "invalid field 'target' must be a key=value pair"),
            (
                "target=\"/x",
                "failed to parse csv mounts: bare \" in non-quoted-field",
            ),
            (
                "\"target=/x",
                "failed to parse csv mounts: extraneous or missing \" in quoted-field",
            ),
        ];
        for (spec, message) in cases {
            let err = parse(spec).expect_err(spec);
            assert_eq!(err.to_string(), message, "{spec}");
        }
        let err = parse("type=cach,target=/x").unwrap_err();
        assert!(
            err.hint().unwrap().contains("did you mean type=cache"),
            "{:?}",
            err.hint()
        );
        let err = parse("type=cache,taget=/x").unwrap_err();
        assert!(
            err.hint().unwrap().starts_with("did you mean target?"),
            "{:?}",
            err.hint()
        );
    }

    #[test]
    fn variables_are_deferred_then_expanded() {
        let spec = "type=cache,target=$HOME/.cache,uid=${UID}";
        let m = parse(spec).unwrap();
        assert_eq!(m.target.as_deref(), Some("$HOME/.cache"));
        assert_eq!(m.uid, None);
        assert_eq!(m.deferred, ["target", "uid"]);
        let lexer = Lexer::default();
        let env = [("HOME", "/root"), ("UID", "42")];
        let mut expand = |word: &str| lexer.process_word(word, &env);
        let m = parse_mount(spec, Some(&mut expand)).unwrap();
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.uid, Some(42));
        assert!(m.deferred.is_empty());
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(
            split_csv(r#"a,"b,c","d""e",f"#).unwrap(),
            ["a", "b,c", "d\"e", "f"]
        );
        assert_eq!(split_csv("").unwrap(), [""]);
        assert!(split_csv(r#"a"b"#).is_err());
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(parse_ram_size("100"), Some(100));
        assert_eq!(parse_ram_size("1k"), Some(1024));
        assert_eq!(parse_ram_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_ram_size("2MiB"), Some(2 << 20));
        assert_eq!(parse_ram_size("10 mb"), Some(10 << 20));
        assert_eq!(parse_ram_size("x"), None);
        assert_eq!(parse_ram_size("-1"), None);
        assert_eq!(parse_ram_size("1q"), None);
    }
}
