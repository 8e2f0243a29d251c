// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Who may subscribe to what: rules by uid, or uid and gid, checked against
//! the credentials of the connecting process (`SO_PEERCRED`).
//!
//! A rule is written `UID[:GID]=APPS`: `UID` a number or `*` (any uid),
//! `GID` a number, `APPS` a comma-separated list of application names or
//! `*` (every application). A process may subscribe to the union of the
//! applications of the rules that match its effective uid and gid. The uid
//! the backend runs as may subscribe to everything: it could read the
//! backend's memory anyway.
//!
//! Who is trusted with all of the guests' RAM is said apart, by rules
//! written `UID[:GID]=ro|rw` ([`TrustRule`], `--trust-ram`): only those
//! consumers may get buffers as segments, which pass descriptors of the
//! guests' memory files, reopened read-only (`ro`) or read-write (`rw`).
//! Nobody is trusted so unless a rule says so, the backend's own uid
//! included.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use bufshare_consumer::props::is_name;
use bufshare_consumer::ALL_APPLICATIONS;

/// A set of applications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applications {
    /// Every application.
    All,
    /// These.
    Only(BTreeSet<String>),
}

impl Applications {
    /// Whether `application` is in the set.
    pub fn contains(&self, application: &str) -> bool {
        match self {
            Applications::All => true,
            Applications::Only(set) => set.contains(application),
        }
    }

    fn add(&mut self, other: &Applications) {
        match (&mut *self, other) {
            (Applications::All, _) => {}
            (_, Applications::All) => *self = Applications::All,
            (Applications::Only(mine), Applications::Only(theirs)) => {
                mine.extend(theirs.iter().cloned());
            }
        }
    }
}

impl fmt::Display for Applications {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Applications::All => f.write_str(ALL_APPLICATIONS),
            Applications::Only(set) => {
                let names: Vec<&str> = set.iter().map(String::as_str).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

/// One `--allow` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// The uid it applies to; `None`: any.
    pub uid: Option<u32>,
    /// The gid it also requires, if any.
    pub gid: Option<u32>,
    /// What it allows.
    pub applications: Applications,
}

impl AllowRule {
    /// Whether the rule applies to a process with these credentials.
    pub fn matches(&self, uid: u32, gid: u32) -> bool {
        who_matches(self.uid, self.gid, uid, gid)
    }
}

fn number(what: &str, text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} {text:?}: not a number"));
    }
    text.parse()
        .map_err(|_| format!("bad {what} {text:?}: too large"))
}

impl FromStr for AllowRule {
    type Err = String;

    /// Parses `UID[:GID]=APPS`.
    fn from_str(spec: &str) -> Result<Self, String> {
        let (who, apps) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected UID[:GID]=APPLICATIONS"))?;
        let (uid, gid) = parse_who(who)?;
        let applications = if apps == ALL_APPLICATIONS {
            Applications::All
        } else {
            let mut set = BTreeSet::new();
            for app in apps.split(',') {
                if !is_name(app) {
                    return Err(format!(
                        "bad application name {app:?}: 1 to 63 characters out of [A-Za-z0-9_.-]"
                    ));
                }
                set.insert(app.to_string());
            }
            Applications::Only(set)
        };
        Ok(Self {
            uid,
            gid,
            applications,
        })
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_who(f, self.uid, self.gid)?;
        write!(f, "={}", self.applications)
    }
}

/// What a consumer trusted with all of the guests' RAM may do with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RamAccess {
    /// Read it: the memory files are handed over reopened read-only.
    ReadOnly,
    /// Read and write it: the memory files are handed over reopened
    /// read-write.
    ReadWrite,
}

impl fmt::Display for RamAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RamAccess::ReadOnly => "ro",
            RamAccess::ReadWrite => "rw",
        })
    }
}

/// One `--trust-ram` rule: `UID[:GID]=ro|rw`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustRule {
    /// The uid it applies to; `None`: any.
    pub uid: Option<u32>,
    /// The gid it also requires, if any.
    pub gid: Option<u32>,
    /// What it grants.
    pub access: RamAccess,
}

impl TrustRule {
    /// A rule for the uid this process runs as.
    pub fn for_this_process(access: RamAccess) -> Self {
        Self {
            uid: Some(nix::unistd::geteuid().as_raw()),
            gid: None,
            access,
        }
    }

    /// Whether the rule applies to a process with these credentials.
    pub fn matches(&self, uid: u32, gid: u32) -> bool {
        who_matches(self.uid, self.gid, uid, gid)
    }
}

/// Whether a rule for `rule_uid` and `rule_gid` (`None`: any) applies to
/// a process with these credentials.
fn who_matches(rule_uid: Option<u32>, rule_gid: Option<u32>, uid: u32, gid: u32) -> bool {
    rule_uid.is_none_or(|u| u == uid) && rule_gid.is_none_or(|g| g == gid)
}

/// Writes `UID[:GID]` as [`parse_who`] reads it.
fn write_who(f: &mut fmt::Formatter<'_>, uid: Option<u32>, gid: Option<u32>) -> fmt::Result {
    match uid {
        Some(uid) => write!(f, "{uid}")?,
        None => f.write_str("*")?,
    }
    if let Some(gid) = gid {
        write!(f, ":{gid}")?;
    }
    Ok(())
}

/// `UID[:GID]`, as the rules write it.
fn parse_who(who: &str) -> Result<(Option<u32>, Option<u32>), String> {
    let (uid, gid) = match who.split_once(':') {
        Some((uid, gid)) => (uid, Some(number("gid", gid)?)),
        None => (who, None),
    };
    let uid = match uid {
        "*" => None,
        uid => Some(number("uid", uid)?),
    };
    Ok((uid, gid))
}

impl FromStr for TrustRule {
    type Err = String;

    /// Parses `UID[:GID]=ro|rw`.
    fn from_str(spec: &str) -> Result<Self, String> {
        let (who, access) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected UID[:GID]=ro|rw"))?;
        let (uid, gid) = parse_who(who)?;
        let access = match access {
            "ro" => RamAccess::ReadOnly,
            "rw" => RamAccess::ReadWrite,
            other => return Err(format!("{other:?}: expected ro or rw")),
        };
        Ok(Self { uid, gid, access })
    }
}

impl fmt::Display for TrustRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_who(f, self.uid, self.gid)?;
        write!(f, "={}", self.access)
    }
}

/// The rules of a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The uid that may subscribe to everything: the backend's own.
    pub owner: u32,
    /// The `--allow` rules.
    pub rules: Vec<AllowRule>,
    /// The `--trust-ram` rules.
    pub trust: Vec<TrustRule>,
}

impl AccessPolicy {
    /// The rules, with the effective uid of this process as the owner, and
    /// nobody trusted with the guests' RAM.
    pub fn for_this_process(rules: Vec<AllowRule>) -> Self {
        Self {
            owner: nix::unistd::geteuid().as_raw(),
            rules,
            trust: Vec::new(),
        }
    }

    /// The same, with the `--trust-ram` rules `trust`.
    pub fn with_trust(self, trust: Vec<TrustRule>) -> Self {
        Self { trust, ..self }
    }

    /// What a process with these credentials may do with all of the
    /// guests' RAM, if it is trusted with it: the most of the rules that
    /// match it. Only the rules say; being the owner does not.
    pub fn ram_access(&self, uid: u32, gid: u32) -> Option<RamAccess> {
        self.trust
            .iter()
            .filter(|r| r.matches(uid, gid))
            .map(|r| r.access)
            .max()
    }

    /// What a process with these credentials may subscribe to, if anything.
    pub fn allowed(&self, uid: u32, gid: u32) -> Option<Applications> {
        if uid == self.owner {
            return Some(Applications::All);
        }
        let mut allowed: Option<Applications> = None;
        for rule in self.rules.iter().filter(|r| r.matches(uid, gid)) {
            match &mut allowed {
                Some(apps) => apps.add(&rule.applications),
                None => allowed = Some(rule.applications.clone()),
            }
        }
        allowed
    }

    /// Checks a subscription to `requested` (names, or just `*`) of a
    /// process with these credentials; returns what it subscribes to, or
    /// why it may not.
    pub fn check(&self, uid: u32, gid: u32, requested: &[String]) -> Result<Applications, String> {
        let who = format!("uid {uid} gid {gid}");
        let allowed = self
            .allowed(uid, gid)
            .ok_or_else(|| format!("{who} may not subscribe to any application"))?;
        if requested.iter().any(|a| a == ALL_APPLICATIONS) {
            if allowed != Applications::All {
                return Err(format!(
                    "{who} may not subscribe to every application, only to {allowed}"
                ));
            }
            return Ok(Applications::All);
        }
        let mut set = BTreeSet::new();
        for app in requested {
            if !allowed.contains(app) {
                return Err(format!("{who} may not subscribe to application {app}"));
            }
            set.insert(app.clone());
        }
        Ok(Applications::Only(set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(names: &[&str]) -> Applications {
        Applications::Only(names.iter().map(|n| n.to_string()).collect())
    }

    fn rule(s: &str) -> AllowRule {
        s.parse().unwrap()
    }

    #[test]
    fn rules() {
        assert_eq!(
            rule("1000=camera,weston"),
            AllowRule {
                uid: Some(1000),
                gid: None,
                applications: only(&["camera", "weston"]),
            }
        );
        assert_eq!(
            rule("1000:44=*"),
            AllowRule {
                uid: Some(1000),
                gid: Some(44),
                applications: Applications::All,
            }
        );
        assert_eq!(
            rule("*:44=a"),
            AllowRule {
                uid: None,
                gid: Some(44),
                applications: only(&["a"]),
            }
        );
        for text in [
            "1000=camera,weston",
            "1000:44=*",
            "*:44=a",
            "*=*",
            "0=a.b-c_d",
        ] {
            assert_eq!(rule(text).to_string(), text);
        }
        // Names are deduplicated and sorted.
        assert_eq!(rule("1=b,a,b").to_string(), "1=a,b");
    }

    #[test]
    fn bad_rules() {
        for bad in [
            "",
            "1000",
            "=a",
            "x=a",
            "-1=a",
            "4294967296=a",
            "1000:=a",
            "1000:x=a",
            "1000:*=a",
            "1000=",
            "1000=a,,b",
            "1000=a b",
            "1000=*,a",
            "1000=a=b",
            " 1000=a",
        ] {
            assert!(bad.parse::<AllowRule>().is_err(), "{bad:?}");
        }
        let e = "1000=a/b".parse::<AllowRule>().unwrap_err();
        assert!(e.contains("\"a/b\""), "{e}");
    }

    #[test]
    fn policy() {
        let policy = AccessPolicy {
            owner: 7,
            rules: vec![
                rule("1000=camera"),
                rule("1000:44=weston"),
                rule("*:55=video"),
                rule("2000=*"),
            ],
            trust: Vec::new(),
        };
        assert_eq!(policy.allowed(7, 0), Some(Applications::All));
        assert_eq!(policy.allowed(1000, 0), Some(only(&["camera"])));
        assert_eq!(policy.allowed(1000, 44), Some(only(&["camera", "weston"])));
        assert_eq!(policy.allowed(1000, 55), Some(only(&["camera", "video"])));
        assert_eq!(policy.allowed(3000, 55), Some(only(&["video"])));
        assert_eq!(policy.allowed(2000, 55), Some(Applications::All));
        assert_eq!(policy.allowed(3000, 0), None);

        let apps = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            policy.check(1000, 44, &apps(&["weston", "camera"])),
            Ok(only(&["camera", "weston"]))
        );
        assert_eq!(policy.check(7, 0, &apps(&["*"])), Ok(Applications::All));
        assert_eq!(
            policy.check(1000, 0, &apps(&["camera", "weston"])),
            Err("uid 1000 gid 0 may not subscribe to application weston".into())
        );
        assert_eq!(
            policy.check(1000, 0, &apps(&["*"])),
            Err("uid 1000 gid 0 may not subscribe to every application, only to camera".into())
        );
        assert_eq!(
            policy.check(3000, 0, &apps(&["camera"])),
            Err("uid 3000 gid 0 may not subscribe to any application".into())
        );
    }

    #[test]
    fn trust_rules() {
        let trust = |s: &str| s.parse::<TrustRule>().unwrap();
        assert_eq!(
            trust("1000:44=rw"),
            TrustRule {
                uid: Some(1000),
                gid: Some(44),
                access: RamAccess::ReadWrite,
            }
        );
        for text in ["1000=ro", "*:44=rw", "0=rw", "*=ro"] {
            assert_eq!(trust(text).to_string(), text);
        }
        for bad in ["1000", "1000=", "1000=r", "1000=RW", "x=ro", "1000=ro,rw"] {
            assert!(bad.parse::<TrustRule>().is_err(), "{bad:?}");
        }
        let policy = AccessPolicy {
            owner: 7,
            rules: Vec::new(),
            trust: vec![trust("1000=ro"), trust("1000:44=rw"), trust("*:55=ro")],
        };
        // The owner is not trusted unless a rule says so.
        assert_eq!(policy.ram_access(7, 0), None);
        assert_eq!(policy.ram_access(1000, 0), Some(RamAccess::ReadOnly));
        assert_eq!(policy.ram_access(1000, 44), Some(RamAccess::ReadWrite));
        assert_eq!(policy.ram_access(3, 55), Some(RamAccess::ReadOnly));
        assert_eq!(policy.ram_access(3, 0), None);
        let mine = TrustRule::for_this_process(RamAccess::ReadOnly);
        assert_eq!(mine.uid, Some(nix::unistd::geteuid().as_raw()));
        assert_eq!(
            AccessPolicy::for_this_process(Vec::new()).ram_access(mine.uid.unwrap(), 0),
            None
        );
    }

    #[test]
    fn default_policy_is_the_owner_only() {
        let policy = AccessPolicy::for_this_process(Vec::new());
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(policy.owner, me);
        assert_eq!(policy.allowed(me, 12345), Some(Applications::All));
        assert_eq!(policy.allowed(me.wrapping_add(1), 0), None);
    }
}
