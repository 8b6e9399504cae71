//! Read-only views of a stage's root filesystem without mounting it: looking
//! a path up through a stack of overlayfs lower dirs (snapshots), and the
//! user and group databases read as data (for `COPY --chown=name`).
//!
//! Lookups never follow symlinks in the image; paths are lexically cleaned
//! first, so `..` cannot climb out of a layer directory.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Splits an absolute or relative in-image path into its normal components
/// (`.` dropped, `..` resolved lexically, never above the root).
pub fn components(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => parts.push(name.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    parts
}

/// What a caller of [`resolve_links`] found at one resolved prefix.
pub(crate) enum LinkProbe {
    /// Not a symlink (or not there, or unreadable): keep the component.
    NotALink,
    /// A symlink with this target: splice the target in its place.
    Link(PathBuf),
    /// Stop resolving (a loop or an absurd chain).
    GiveUp,
}

/// How [`resolve_links`] ended.
pub(crate) enum LinkWalk {
    /// Every symlink met was replaced by its target.
    Resolved(Vec<String>),
    /// The probe gave up: the components resolved so far (the last one the
    /// link it gave up on) and those not looked at yet.
    GaveUp {
        resolved: Vec<String>,
        pending: std::collections::VecDeque<String>,
    },
}

/// Resolves the symlinks in `parts` lexically inside a root, component by
/// component: `probe` is asked about each prefix (already free of symlinks,
/// so no host symlink is ever followed) and says whether it is a link and
/// where to. Absolute targets start again at the root and `..` stops there.
/// The probe decides how to look a prefix up and when to give up, so that
/// one splicing logic serves a plain directory and a stack of layers.
pub(crate) fn resolve_links(
    parts: std::collections::VecDeque<String>,
    mut probe: impl FnMut(&[String]) -> LinkProbe,
) -> LinkWalk {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending = parts;
    while let Some(part) = pending.pop_front() {
        resolved.push(part);
        let target = match probe(&resolved) {
            LinkProbe::NotALink => continue,
            LinkProbe::GiveUp => return LinkWalk::GaveUp { resolved, pending },
            LinkProbe::Link(target) => target,
        };
        resolved.pop();
        let target = target.to_string_lossy().into_owned();
        let base = if target.starts_with('/') {
            String::new()
        } else {
            resolved.join("/")
        };
        let mut next: std::collections::VecDeque<String> =
            components(&format!("/{base}/{target}")).into();
        next.extend(pending);
        pending = next;
        resolved.clear();
    }
    LinkWalk::Resolved(resolved)
}

/// A stack of layer directories, top-most first, as overlayfs would merge them.
#[derive(Debug, Clone)]
pub struct LayerView {
    pub lowers_top_first: Vec<PathBuf>,
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 4];
    for name in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
        // SAFETY: both strings are NUL-terminated and the buffer length is passed.
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n == 1 && value.first() == Some(&b'y') {
            return true;
        }
    }
    false
}

impl LayerView {
    /// The real file that the merged view shows at `parts` (a path inside the
    /// image), with its metadata; `None` when the path does not exist (absent,
    /// whited out, or hidden by an opaque or non-directory ancestor).
    pub fn lookup(&self, parts: &[String]) -> Option<(PathBuf, fs::Metadata)> {
        'layers: for lower in &self.lowers_top_first {
            // An ancestor in this layer that is a whiteout or a non-directory
            // hides the path in every layer below; an opaque one hides the
            // layers below once this one does not have the path.
            let mut hidden_below = false;
            let mut dir = lower.clone();
            for (depth, part) in parts.iter().enumerate() {
                let candidate = dir.join(part);
                let last = depth + 1 == parts.len();
                match fs::symlink_metadata(&candidate) {
                    Ok(meta) if is_whiteout(&meta) => return None,
                    Ok(meta) if last => return Some((candidate, meta)),
                    Ok(meta) if !meta.is_dir() => return None,
                    Ok(_) => {
                        if is_opaque(&candidate) {
                            hidden_below = true;
                        }
                        dir = candidate;
                    }
                    Err(_) => {
                        if hidden_below {
                            return None;
                        }
                        continue 'layers;
                    }
                }
            }
            if parts.is_empty() {
                return fs::symlink_metadata(lower).ok().map(|m| (lower.clone(), m));
            }
        }
        None
    }

    /// `parts` with every symlink in the image resolved, inside the image
    /// root (absolute targets start at the root, `..` stops there), as
    /// BuildKit resolves COPY and WORKDIR destinations: `/bin/x` on a
    /// merged-usr image is `/usr/bin/x`. Gives up after 40 links.
    pub fn resolve(&self, parts: &[String]) -> Vec<String> {
        let mut links = 0;
        let walk = resolve_links(parts.iter().cloned().collect(), |resolved| {
            let Some((real, meta)) = self.lookup(resolved) else {
                return LinkProbe::NotALink;
            };
            if !meta.file_type().is_symlink() {
                return LinkProbe::NotALink;
            }
            links += 1;
            if links > 40 {
                return LinkProbe::GiveUp;
            }
            match fs::read_link(&real) {
                Ok(target) => LinkProbe::Link(target),
                Err(_) => LinkProbe::NotALink,
            }
        });
        match walk {
            LinkWalk::Resolved(resolved) => resolved,
            LinkWalk::GaveUp {
                mut resolved,
                pending,
            } => {
                resolved.extend(pending);
                resolved
            }
        }
    }

    /// The bytes of a regular file in the view (small files such as /etc/passwd).
    pub fn read_small_file(&self, path: &str) -> Option<String> {
        let (real, meta) = self.lookup(&components(path))?;
        if !meta.is_file() || meta.len() > 16 << 20 {
            return None;
        }
        fs::read(real)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Why a `--chown` value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ChownError {
    #[error("unable to find user {0}: no matching entries in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in the image's /etc/group")]
    UnknownGroup(String),
}

fn lookup_id(database: Option<&str>, name: &str) -> Option<u32> {
    database?.lines().find_map(|line| {
        let mut fields = line.split(':');
        let entry_name = fields.next()?;
        let _password = fields.next()?;
        let id = fields.next()?;
        (entry_name == name).then(|| id.parse().ok()).flatten()
    })
}

/// A user's uid and primary gid from an /etc/passwd text.
fn lookup_user(passwd: Option<&str>, name: &str) -> Option<(u32, u32)> {
    passwd?.lines().find_map(|line| {
        let mut fields = line.split(':');
        let entry_name = fields.next()?;
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        (entry_name == name).then_some((uid, gid))
    })
}

/// Resolves `--chown=USER[:GROUP]` as BuildKit does: numbers are taken as
/// they are, names are looked up in the destination image's /etc/passwd and
/// /etc/group; without a group, a named user gets its primary group and a
/// numeric one gid = uid.
pub fn resolve_chown(spec: &str, view: &LayerView) -> Result<(u32, u32), ChownError> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let passwd = view.read_small_file("/etc/passwd");
    // A user name brings its primary group from /etc/passwd (checked against
    // BuildKit); a bare uid has gid = uid, as the Dockerfile reference says.
    let (uid, primary_gid) = match user.parse::<u32>() {
        // `--chown=:group`: root with that group (checked against BuildKit).
        Err(_) if user.is_empty() => (0, 0),
        Ok(uid) => (uid, uid),
        Err(_) => lookup_user(passwd.as_deref(), user)
            .ok_or_else(|| ChownError::UnknownUser(user.to_string()))?,
    };
    let gid = match group {
        None | Some("") => primary_gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = view.read_small_file("/etc/group");
                lookup_id(groups.as_deref(), group)
                    .ok_or_else(|| ChownError::UnknownGroup(group.to_string()))?
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_cleaned_and_never_climb_out() {
        assert_eq!(components("/a/./b/../c/"), vec!["a", "c"]);
        assert_eq!(components("../../etc"), vec!["etc"]);
        assert!(components("/").is_empty());
    }

    #[test]
    fn resolve_follows_links_across_layers_and_gives_up_on_loops() {
        let top = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let bottom = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        fs::create_dir_all(bottom.path().join("usr/bin")).unwrap_or_default();
        std::os::unix::fs::symlink("usr/bin", top.path().join("bin")).unwrap_or_default();
        std::os::unix::fs::symlink("/../../usr", top.path().join("abs")).unwrap_or_default();
        std::os::unix::fs::symlink("b", top.path().join("a")).unwrap_or_default();
        std::os::unix::fs::symlink("a", bottom.path().join("b")).unwrap_or_default();
        let view = LayerView {
            lowers_top_first: vec![top.path().to_path_buf(), bottom.path().to_path_buf()],
        };
        assert_eq!(view.resolve(&components("/bin/x")), vec!["usr", "bin", "x"]);
        assert_eq!(view.resolve(&components("/abs/bin")), vec!["usr", "bin"]);
        // After 40 links the 41st (an `a`) is kept as it is, with the rest.
        assert_eq!(view.resolve(&components("/a/f")), vec!["a", "f"]);
    }

    #[test]
    fn lookup_prefers_upper_layers_and_honours_missing_paths() {
        let top = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let bottom = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        fs::create_dir_all(bottom.path().join("etc")).unwrap_or_default();
        fs::write(
            bottom.path().join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\nweb:x:1002:50::/:/bin/sh\n",
        )
        .unwrap_or_default();
        fs::write(bottom.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap_or_default();
        fs::create_dir_all(top.path().join("etc")).unwrap_or_default();
        fs::write(top.path().join("etc/hostname"), "x").unwrap_or_default();
        let view = LayerView {
            lowers_top_first: vec![top.path().to_path_buf(), bottom.path().to_path_buf()],
        };
        let (found, _) = view
            .lookup(&components("/etc/passwd"))
            .unwrap_or_else(|| panic!("passwd not found through the stack"));
        assert!(found.starts_with(bottom.path()));
        assert!(view.lookup(&components("/etc/shadow")).is_none());
        assert_eq!(resolve_chown("app", &view).ok(), Some((1000, 1000)));
        assert_eq!(resolve_chown("app:staff", &view).ok(), Some((1000, 50)));
        assert_eq!(resolve_chown("7:8", &view).ok(), Some((7, 8)));
        assert_eq!(resolve_chown("web", &view).ok(), Some((1002, 50)));
        assert_eq!(resolve_chown("1002", &view).ok(), Some((1002, 1002)));
        assert_eq!(resolve_chown(":staff", &view).ok(), Some((0, 50)));
        assert!(matches!(
            resolve_chown("nobody", &view),
            Err(ChownError::UnknownUser(_))
        ));
        fs::create_dir_all(bottom.path().join("usr/bin")).unwrap_or_default();
        let _ = std::os::unix::fs::symlink("usr/bin", top.path().join("bin"));
        fs::create_dir_all(top.path().join("usr")).unwrap_or_default();
        let _ = std::os::unix::fs::symlink("/etc", top.path().join("usr/etc-link"));
        assert_eq!(view.resolve(&components("/bin/x")), vec!["usr", "bin", "x"]);
        assert_eq!(
            view.resolve(&components("/usr/etc-link/passwd")),
            vec!["etc", "passwd"]
        );
        assert_eq!(view.resolve(&components("/new/dir")), vec!["new", "dir"]);
    }
}
