//! `--user` as docker resolves it: names looked up in the task's own
//! `/etc/passwd` and `/etc/group`, numbers taken as they are.

/// Who the task's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Groups of `/etc/group` that list the user by name.
    pub additional_gids: Vec<u32>,
    /// The user's home from `/etc/passwd`, if it is listed.
    pub home: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

/// (name, gid, members) of each line of `/etc/group`.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
            .unwrap_or_default();
        Some((*f.first()?, f.get(2)?.parse().ok()?, members))
    })
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, empty for
/// root) against the contents of the task's `/etc/passwd` and `/etc/group`.
/// The error says which name is missing.
pub fn resolve(user: &str, passwd: &str, group: &str) -> Result<ResolvedUser, String> {
    let (who, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let who = if who.is_empty() { "0" } else { who };
    let entry = match who.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.name == who)
                .ok_or_else(|| format!("no user {who:?} in the task's /etc/passwd"))?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => who.parse().unwrap_or(0),
    };
    let gid = match group_part {
        None | Some("") => entry.as_ref().map_or(0, |e| e.gid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|(name, _, _)| *name == g)
                .map(|(_, gid, _)| gid)
                .ok_or_else(|| format!("no group {g:?} in the task's /etc/group"))?,
        },
    };
    // As docker: a named user also gets the groups that list it (only when
    // no group was given explicitly).
    let additional_gids = match (&entry, group_part) {
        (Some(e), None) => group_entries(group)
            .filter(|(_, gid_, members)| *gid_ != gid && members.contains(&e.name))
            .map(|(_, gid, _)| gid)
            .collect(),
        _ => Vec::new(),
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry
            .as_ref()
            .map(|e| e.home.to_owned())
            .filter(|h| !h.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          www-data:x:33:33:www:/var/www:/usr/sbin/nologin\n\
                          app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\napp:x:1000:\nstaff:x:50:app,other\n";

    fn ids(user: &str) -> Result<(u32, u32, Vec<u32>), String> {
        resolve(user, PASSWD, GROUP).map(|u| (u.uid, u.gid, u.additional_gids))
    }

    #[test]
    fn names_and_numbers_resolve_as_docker_does() {
        assert_eq!(ids(""), Ok((0, 0, vec![])));
        assert_eq!(ids("www-data"), Ok((33, 33, vec![])));
        assert_eq!(ids("app"), Ok((1000, 1000, vec![50])));
        assert_eq!(ids("app:staff"), Ok((1000, 50, vec![])));
        assert_eq!(ids("1000"), Ok((1000, 1000, vec![50])));
        assert_eq!(ids("4242"), Ok((4242, 0, vec![])));
        assert_eq!(ids("4242:4343"), Ok((4242, 4343, vec![])));
        assert_eq!(
            resolve("app", PASSWD, GROUP).expect("test").home.as_deref(),
            Some("/home/app")
        );
    }

    #[test]
    fn missing_names_are_named() {
        let err = ids("nobody-here").expect_err("test");
        assert!(err.contains("\"nobody-here\""), "{err}");
        let err = ids("app:wheel").expect_err("test");
        assert!(err.contains("\"wheel\""), "{err}");
    }
}
