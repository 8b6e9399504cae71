//! Docker `USER` resolution: `name`, `uid`, `name:group`, `uid:gid` (and mixes)
//! looked up in the image's /etc/passwd and /etc/group, parsed as plain data (no
//! NSS, nothing executed), with the same rules as moby's `user.GetExecUser`:
//! a numeric user or group that is not listed is used as is; a name that is not
//! listed is an error; without an explicit group the user's primary group is used
//! and every group listing the user becomes a supplementary group.

use thiserror::Error;

/// The resolved identity the process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub supplementary_gids: Vec<u32>,
    /// Home directory from /etc/passwd ("/" when not listed), for `HOME`.
    pub home: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {user}: no matching entries in passwd file {file}")]
    UnknownUser { user: String, file: String },
    #[error("unable to find group {group}: no matching entries in group file {file}")]
    UnknownGroup { group: String, file: String },
    #[error("invalid user spec {spec:?}: {reason}")]
    InvalidSpec { spec: String, reason: &'static str },
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse_id(text: &str) -> Option<u32> {
    // Ids must fit in 31 bits, as in moby (uid_t is signed in places).
    text.parse::<u32>().ok().filter(|id| *id <= i32::MAX as u32)
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next();
        let uid = parse_id(fields.next()?)?;
        let gid = fields.next().and_then(parse_id).unwrap_or(0);
        let _gecos = fields.next();
        let home = fields.next().unwrap_or("");
        Some(PasswdEntry {
            name,
            uid,
            gid,
            home,
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next();
        let gid = parse_id(fields.next()?)?;
        let members = fields
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        Some(GroupEntry { name, gid, members })
    })
}

/// Resolves a docker user spec against the contents of /etc/passwd and /etc/group
/// (None when the file does not exist in the image).
pub fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    if group_part == Some("") {
        return Err(UserError::InvalidSpec {
            spec: spec.to_string(),
            reason: "empty group after ':'",
        });
    }

    let passwd_text = passwd.unwrap_or("");
    let numeric_user = parse_id(user_part);
    let entry = passwd_entries(passwd_text).find(|e| match numeric_user {
        // moby matches a numeric user by uid only; a name by name only.
        Some(uid) => e.uid == uid,
        None => e.name == user_part,
    });
    let (uid, mut gid, name, home) = match (entry, numeric_user) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name), e.home.to_string()),
        (None, Some(uid)) => (uid, 0, None, "/".to_string()),
        (None, None) => {
            return Err(UserError::UnknownUser {
                user: user_part.to_string(),
                file: "/etc/passwd".to_string(),
            });
        }
    };
    let home = if home.is_empty() {
        "/".to_string()
    } else {
        home
    };

    let group_text = group.unwrap_or("");
    let mut supplementary_gids = Vec::new();
    match group_part {
        Some(group_spec) => {
            let numeric_group = parse_id(group_spec);
            let found = group_entries(group_text).find(|g| match numeric_group {
                Some(id) => g.gid == id,
                None => g.name == group_spec,
            });
            gid = match (found, numeric_group) {
                (Some(g), _) => g.gid,
                (None, Some(id)) => id,
                (None, None) => {
                    return Err(UserError::UnknownGroup {
                        group: group_spec.to_string(),
                        file: "/etc/group".to_string(),
                    });
                }
            };
        }
        None => {
            if let Some(name) = name {
                for g in group_entries(group_text) {
                    if g.members.contains(&name) && !supplementary_gids.contains(&g.gid) {
                        supplementary_gids.push(g.gid);
                    }
                }
            }
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        supplementary_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        app:x:1000:1001:App:/home/app:/bin/sh\n\
        # a comment\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,other\nappgrp:x:1001:\naudio:x:29:app\n";

    fn resolve(spec: &str) -> Result<ExecUser, UserError> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_spec_is_root_with_home() {
        let user = resolve("").unwrap();
        assert_eq!((user.uid, user.gid, user.home.as_str()), (0, 0, "/root"));
    }

    #[test]
    fn name_gets_primary_group_and_supplementary_groups() {
        let user = resolve("app").unwrap();
        assert_eq!(user.uid, 1000);
        assert_eq!(user.gid, 1001);
        assert_eq!(user.supplementary_gids, vec![10, 29]);
        assert_eq!(user.home, "/home/app");
    }

    #[test]
    fn numeric_uid_listed_uses_its_entry() {
        let user = resolve("1000").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1001));
        assert_eq!(user.supplementary_gids, vec![10, 29]);
    }

    #[test]
    fn numeric_uid_not_listed_is_used_with_gid_0() {
        let user = resolve("4242").unwrap();
        assert_eq!((user.uid, user.gid, user.home.as_str()), (4242, 0, "/"));
        assert!(user.supplementary_gids.is_empty());
    }

    #[test]
    fn explicit_group_by_name_and_number_drops_supplementary() {
        let user = resolve("app:wheel").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 10));
        assert!(user.supplementary_gids.is_empty());
        let user = resolve("app:777").unwrap();
        assert_eq!(user.gid, 777);
        let user = resolve("5:6").unwrap();
        assert_eq!((user.uid, user.gid), (5, 6));
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        let err = resolve("ghost").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user ghost: no matching entries in passwd file /etc/passwd"
        );
        let err = resolve("app:ghosts").unwrap_err();
        assert!(err.to_string().contains("unable to find group ghosts"));
        // No passwd file at all: names fail, numbers work.
        assert!(resolve_user("app", None, None).is_err());
        assert_eq!(resolve_user("7", None, None).unwrap().uid, 7);
    }

    #[test]
    fn malformed_lines_are_skipped_and_huge_ids_rejected() {
        let passwd = "broken\nx:x:notanumber:0::/:\nok:x:3:3::/ok:/bin/sh\n";
        assert_eq!(resolve_user("ok", Some(passwd), None).unwrap().uid, 3);
        assert!(resolve_user("99999999999", Some(passwd), None).is_err());
        assert!(resolve_user("app:", Some(PASSWD), None).is_err());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Hostile /etc/passwd and /etc/group contents never panic.
            #[test]
            fn arbitrary_files_and_specs_never_panic(
                spec in ".{0,40}",
                passwd in proptest::option::of(".{0,400}"),
                group in proptest::option::of(".{0,400}"),
            ) {
                let _ = resolve_user(&spec, passwd.as_deref(), group.as_deref());
            }

            /// A listed user resolves to its own uid, gid and home, and is in
            /// every group that lists it.
            #[test]
            fn listed_users_resolve_to_their_entries(
                name in "[a-z][a-z0-9_]{0,15}",
                uid in 1u32..60000,
                gid in 1u32..60000,
                home in "/[a-z]{1,10}",
                extra in 60001u32..65000,
            ) {
                prop_assume!(name != "root");
                let passwd = format!("root:x:0:0::/root:/bin/sh\n{name}:x:{uid}:{gid}::{home}:/bin/sh\n");
                let group = format!("root:x:0:\nextra:x:{extra}:other,{name}\n");
                let user = resolve_user(&name, Some(&passwd), Some(&group)).unwrap();
                prop_assert_eq!(user.uid, uid);
                prop_assert_eq!(user.gid, gid);
                prop_assert_eq!(&user.home, &home);
                prop_assert_eq!(user.supplementary_gids, vec![extra]);
                let by_number = resolve_user(&uid.to_string(), Some(&passwd), Some(&group)).unwrap();
                prop_assert_eq!(by_number.gid, gid);
            }
        }
    }
}
