//! `ADD <http(s) URL>` as BuildKit does it: the file is named after the last
//! component of the URL's path (`__unnamed__` when there is none), written
//! with mode 0600 and, when the server sends `Last-Modified`, that
//! modification time; it is never unpacked, even when it is an archive.
//! `--checksum=sha256:HEX` must match the downloaded content.
//!
//! Cache keys come from the URL and the content digest. With `--checksum`
//! the digest is known up front, so a cached step fetches nothing. Without
//! it the URL is checked on every build, as BuildKit does, revalidating with
//! the ETag recorded for its last download (`<store>/http-validators/`): a
//! 304 answer stands for the recorded digest and nothing is downloaded
//! unless the step misses the cache. Git sources are not supported yet.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::Digest as _;

/// Largest file `ADD <url>` downloads (a guard against endless responses).
const MAX_DOWNLOAD_BYTES: u64 = 16 << 30;

/// Why an `ADD <url>` source could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "ADD from a git repository ({0}) is not supported by kiln yet; clone it in a RUN step or into the build context"
    )]
    Git(String),
    #[error("invalid --checksum={0}: use sha256:<64 hex digits>")]
    BadChecksum(String),
    #[error("--checksum is only supported for an ADD of one http(s) URL")]
    ChecksumWithoutUrl,
    #[error("failed to fetch {url}: {why} (check the URL and that this machine can reach it)")]
    Request { url: String, why: String },
    #[error("failed to fetch {url}: the server answered {status} {text}")]
    Status {
        url: String,
        status: u16,
        text: String,
    },
    #[error("checksum mismatch for {url}: --checksum wants {expected}, the download is {actual}")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("writing the download of {url} to {path}: {source}")]
    Write {
        url: String,
        path: PathBuf,
        source: io::Error,
    },
}

/// Whether an ADD source is a remote URL kiln fetches over HTTP(S).
pub fn is_http_url(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")) && !is_git_url(source)
}

/// Whether an ADD source names a git repository (as BuildKit recognises them).
pub fn is_git_url(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    let without_fragment = lower.split('#').next().unwrap_or(&lower);
    lower.starts_with("git@")
        || lower.starts_with("git://")
        || lower.starts_with("ssh://")
        || ((lower.starts_with("http://") || lower.starts_with("https://"))
            && without_fragment.ends_with(".git"))
}

/// One downloaded file.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The URL it came from.
    pub url: String,
    /// Its name in the download directory (what BuildKit names it).
    pub name: String,
    /// `sha256:HEX` of its content.
    pub digest: String,
    /// False when the server said the content is unchanged (HTTP 304 to
    /// the ETag of an earlier download): nothing was written yet, and the
    /// caller downloads it again, expecting `digest`, only if it needs it.
    pub downloaded: bool,
}

/// The file name BuildKit gives a URL's download: the last component of the
/// path, or `__unnamed__`.
pub fn file_name(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .split_once('/')
        .map_or("", |(_, path)| path);
    let base = path.rsplit('/').find(|p| !p.is_empty()).unwrap_or_default();
    let decoded = percent_decode(base);
    if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') {
        "__unnamed__".to_string()
    } else {
        decoded
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `--checksum=sha256:HEX` into its lower-case form.
pub fn parse_checksum(text: &str) -> Result<String, FetchError> {
    let bad = || FetchError::BadChecksum(text.to_string());
    let hex = text.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

fn agent() -> ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let (_added, _ignored) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(30))
                .timeout_read(Duration::from_secs(300))
                .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")));
            match rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
            {
                Ok(config) => builder.tls_config(Arc::new(
                    config.with_root_certificates(roots).with_no_client_auth(),
                )),
                Err(_) => builder,
            }
            .build()
        })
        .clone()
}

/// Downloads `url` into `dir` under [`file_name`]`(url)`, with mode 0600 and
/// the server's `Last-Modified` time, checking `checksum` (already parsed by
/// [`parse_checksum`]) when given.
pub fn fetch(url: &str, dir: &Path, checksum: Option<&str>) -> Result<Fetched, FetchError> {
    match fetch_if_changed(url, dir, checksum, None)? {
        Some((fetched, _etag)) => Ok(fetched),
        None => Err(FetchError::Status {
            url: url.to_string(),
            status: 304,
            text: "Not Modified to a request without a validator".into(),
        }),
    }
}

/// [`fetch`], sending `If-None-Match: etag` when given: `None` when the
/// server answers 304 Not Modified. Also gives the response's ETag.
fn fetch_if_changed(
    url: &str,
    dir: &Path,
    checksum: Option<&str>,
    etag: Option<&str>,
) -> Result<Option<(Fetched, Option<String>)>, FetchError> {
    if is_git_url(url) {
        return Err(FetchError::Git(url.to_string()));
    }
    let mut request = agent().get(url);
    if let Some(etag) = etag {
        request = request.set("If-None-Match", etag);
    }
    let response = match request.call() {
        Ok(response) if response.status() == 304 && etag.is_some() => return Ok(None),
        Ok(response) => response,
        Err(ureq::Error::Status(status, response)) => {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
                text: response.status_text().to_string(),
            });
        }
        Err(e) => {
            return Err(FetchError::Request {
                url: url.to_string(),
                why: e.to_string(),
            });
        }
    };
    let modified = response.header("Last-Modified").and_then(parse_http_date);
    let new_etag = response.header("ETag").map(str::to_string);
    let name = file_name(url);
    let path = dir.join(&name);
    let write_error = |source| FetchError::Write {
        url: url.to_string(),
        path: path.clone(),
        source,
    };
    let mut file = fs::File::create(&path).map_err(write_error)?;
    let mut hasher = sha2::Sha256::new();
    let mut reader = response.into_reader().take(MAX_DOWNLOAD_BYTES);
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Request {
                    url: url.to_string(),
                    why: format!("reading the response: {e}"),
                });
            }
        };
        let chunk = buffer.get(..n).unwrap_or_default();
        hasher.update(chunk);
        file.write_all(chunk).map_err(write_error)?;
    }
    drop(file);
    let digest = format!("sha256:{}", hex(&hasher.finalize()));
    if let Some(expected) = checksum
        && expected != digest
    {
        return Err(FetchError::ChecksumMismatch {
            url: url.to_string(),
            expected: expected.to_string(),
            actual: digest,
        });
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(write_error)?;
    if let Some(seconds) = modified {
        let time = std::time::UNIX_EPOCH + Duration::from_secs(seconds);
        let file = fs::File::options()
            .write(true)
            .open(&path)
            .map_err(write_error)?;
        file.set_times(fs::FileTimes::new().set_accessed(time).set_modified(time))
            .map_err(write_error)?;
    }
    Ok(Some((
        Fetched {
            url: url.to_string(),
            name,
            digest,
            downloaded: true,
        },
        new_etag,
    )))
}

/// Where the ETag and digest of an earlier download of `url` are kept.
fn validator_path(validators: &Path, url: &str) -> PathBuf {
    validators.join(blake3::hash(url.as_bytes()).to_hex().as_str())
}

/// Downloads the URL sources of an ADD without `--checksum`, revalidating
/// each against the ETag recorded (under `validators`, a directory of the
/// store) for its last download, as BuildKit does: an unchanged file (HTTP
/// 304) is not downloaded again, its recorded digest stands for it
/// (`downloaded: false`). The records are a cache only: unreadable or
/// unwritable ones mean a plain download.
pub fn fetch_or_revalidate(
    urls: &[String],
    dir: &Path,
    validators: &Path,
) -> Result<Vec<Fetched>, FetchError> {
    known_digest(urls, None, false)?;
    let mut out = Vec::with_capacity(urls.len());
    for url in urls {
        let record_path = validator_path(validators, url);
        let record = fs::read_to_string(&record_path).ok();
        let recorded = record.as_deref().and_then(|text| {
            let (etag, digest) = text.split_once('\n')?;
            let digest = digest.trim_end();
            parse_checksum(digest).ok()?;
            Some((etag.to_string(), digest.to_string()))
        });
        match fetch_if_changed(url, dir, None, recorded.as_ref().map(|(e, _)| e.as_str()))? {
            None => {
                let digest = recorded.map(|(_, d)| d).unwrap_or_default();
                out.push(Fetched {
                    url: url.clone(),
                    name: file_name(url),
                    digest,
                    downloaded: false,
                });
            }
            Some((fetched, etag)) => {
                match etag {
                    Some(etag) if !etag.contains('\n') => {
                        let _ = fs::create_dir_all(validators);
                        let temp = record_path.with_extension(format!("tmp{}", std::process::id()));
                        if fs::write(&temp, format!("{etag}\n{}\n", fetched.digest)).is_ok() {
                            let _ = fs::rename(&temp, &record_path);
                        }
                    }
                    _ => {
                        let _ = fs::remove_file(&record_path);
                    }
                }
                out.push(fetched);
            }
        }
    }
    Ok(out)
}

/// The content digest of an ADD's URL source known before fetching it:
/// with `--checksum` (one URL, nothing else), the step's cache key can use
/// it and the download can wait for a cache miss, so a cached rebuild needs
/// no network. Checks the same rules as [`fetch_sources`].
pub fn known_digest(
    urls: &[String],
    checksum: Option<&str>,
    other_sources: bool,
) -> Result<Option<String>, FetchError> {
    if let Some(git) = urls.iter().find(|u| is_git_url(u)) {
        return Err(FetchError::Git(git.clone()));
    }
    let checksum = checksum.map(parse_checksum).transpose()?;
    if checksum.is_some() && (urls.len() != 1 || other_sources) {
        return Err(FetchError::ChecksumWithoutUrl);
    }
    Ok(checksum)
}

/// Fetches the URL sources of one ADD into `dir`. `checksum` is the raw
/// `--checksum` value, allowed only when the one source is a URL;
/// `other_sources` tells whether the ADD also names context files or heredocs.
pub fn fetch_sources(
    urls: &[String],
    checksum: Option<&str>,
    other_sources: bool,
    dir: &Path,
) -> Result<Vec<Fetched>, FetchError> {
    let checksum = known_digest(urls, checksum, other_sources)?;
    urls.iter()
        .map(|url| fetch(url, dir, checksum.as_deref()))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch of an HTTP date (RFC 7231's IMF-fixdate, RFC 850
/// and asctime forms, as Go's `http.ParseTime`); `None` when unreadable.
pub fn parse_http_date(text: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let words: Vec<&str> = text.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    // IMF-fixdate: Sun 06 Nov 1994 08:49:37 GMT; RFC 850: Sunday 06-Nov-94 08:49:37 GMT;
    // asctime: Sun Nov  6 08:49:37 1994.
    let (day, month, year, time) = match words.as_slice() {
        [_, day, month, year, time, "GMT"] => (*day, *month, year.parse::<i64>().ok()?, *time),
        [_, date, time, "GMT"] => {
            let mut parts = date.split('-');
            let day = parts.next()?;
            let month = parts.next()?;
            let year: i64 = parts.next()?.parse().ok()?;
            (
                day,
                month,
                if year < 70 { 2000 + year } else { 1900 + year },
                *time,
            )
        }
        [_, month, day, time, year] => (*day, *month, year.parse::<i64>().ok()?, *time),
        _ => return None,
    };
    let day: i64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3_600 + minute * 60 + second).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_url_path() {
        assert_eq!(
            file_name("https://example.com/a/b/tool.tar.gz"),
            "tool.tar.gz"
        );
        assert_eq!(file_name("http://h:8080/x/y/?q=1#frag"), "y");
        assert_eq!(file_name("http://h/"), "__unnamed__");
        assert_eq!(file_name("http://h"), "__unnamed__");
        assert_eq!(file_name("http://h/with%20space"), "with space");
        assert_eq!(file_name("http://h/a%2Fb"), "__unnamed__");
    }

    #[test]
    fn git_urls_are_told_apart() {
        assert!(is_git_url("git@github.com:moby/buildkit.git"));
        assert!(is_git_url("https://github.com/moby/buildkit.git#v0.10.1"));
        assert!(is_git_url("git://host/repo"));
        assert!(!is_git_url("https://example.com/file.tar.gz"));
        assert!(is_http_url("HTTPS://example.com/x"));
        assert!(!is_http_url("https://github.com/moby/buildkit.git"));
        assert!(!is_http_url("local/file"));
    }

    #[test]
    fn checksums_are_sha256_hex() {
        let hex64 = "A".repeat(64);
        assert_eq!(
            parse_checksum(&format!("sha256:{hex64}")).ok(),
            Some(format!("sha256:{}", "a".repeat(64)))
        );
        assert!(parse_checksum("sha256:abc").is_err());
        assert!(parse_checksum(&format!("md5:{hex64}")).is_err());
    }

    proptest::proptest! {
        /// Server headers and URLs are untrusted: any text gives an answer, never a panic,
        /// and a name never leaves the download directory.
        #[test]
        fn untrusted_text_never_panics(text in ".*") {
            let _ = parse_http_date(&text);
            let _ = parse_checksum(&text);
            let _ = is_git_url(&text);
            let name = file_name(&format!("http://host/{text}"));
            proptest::prop_assert!(!name.contains('/') && name != ".." && name != "." && !name.is_empty());
        }

        #[test]
        fn formatted_dates_read_back(days in 0i64..50_000, secs in 0i64..86_400) {
            // Build an IMF-fixdate from a day count and check the parser inverts it.
            let total = days * 86_400 + secs;
            let (z, doe) = {
                let z = days + 719_468;
                let era = z.div_euclid(146_097);
                (era, z - era * 146_097)
            };
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let day = doy - (153 * mp + 2) / 5 + 1;
            let month = if mp < 10 { mp + 3 } else { mp - 9 };
            let year = yoe + z * 400 + i64::from(month <= 2);
            const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            let text = format!(
                "Mon, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
                MONTHS[(month - 1) as usize],
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            );
            proptest::prop_assert_eq!(parse_http_date(&text), Some(total as u64));
        }
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        assert_eq!(
            parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1_445_412_480)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sun Nov  6 08:49:37 1994"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Wed, 32 Oct 2015 07:28:00 GMT"), None);
    }
}
