// SPDX-License-Identifier: GPL-2.0

//! Who may register buffers under which application name.
//!
//! Application names are how host consumers tell whose buffers they get, so a guest user must
//! not publish under another's name. The administrator binds names to users and groups
//! (`BUFSHARE_IOC_BIND_APPLICATION`, with `CAP_SYS_ADMIN`); a registration under a bound name is
//! refused with `EACCES` unless the caller is the bound user or in the bound group. Names
//! nobody bound are open to everybody, unless the module parameter `bound_applications_only`
//! closes them.

use kernel::{
    prelude::*,
    task::Kuid,
    uapi,
    uidgid::{
        self,
        Kgid, //
    },
};

use crate::{module_parameters, props::APP_LEN};

/// The most names bound at once on one device.
const MAX_BINDINGS: usize = 256;

/// A name bound to a user, a group, or either.
///
/// # Invariants
///
/// At least one of `uid` and `gid` is set.
struct Binding {
    application: [u8; APP_LEN],
    uid: Option<Kuid>,
    gid: Option<Kgid>,
}

/// The names bound on a device.
pub(crate) struct Bindings(KVec<Binding>);

impl Bindings {
    /// No name bound.
    pub(crate) fn new() -> Self {
        Self(KVec::new())
    }

    /// Binds `application` as `req` asks, or removes its binding if `req` names neither a user
    /// nor a group. The ids are the caller's: checked to name a user and a group in its
    /// namespace.
    pub(crate) fn bind(
        &mut self,
        application: [u8; APP_LEN],
        req: &uapi::bufshare_app_binding,
    ) -> Result {
        let known = uapi::BUFSHARE_BIND_UID | uapi::BUFSHARE_BIND_GID;
        if req.flags & !known != 0 || req.reserved != 0 {
            return Err(EINVAL);
        }
        let uid = match req.flags & uapi::BUFSHARE_BIND_UID {
            0 => None,
            _ => Some(uidgid::kuid_from_current_ns(req.uid).ok_or(EINVAL)?),
        };
        let gid = match req.flags & uapi::BUFSHARE_BIND_GID {
            0 => None,
            _ => Some(Kgid::from_current_ns(req.gid).ok_or(EINVAL)?),
        };
        let at = self.0.iter().position(|b| b.application == application);
        if uid.is_none() && gid.is_none() {
            if let Some(at) = at {
                self.0.remove(at)?;
            }
            return Ok(());
        }
        // INVARIANT: `uid` or `gid` is set.
        let binding = Binding {
            application,
            uid,
            gid,
        };
        match at {
            Some(at) => self.0[at] = binding,
            None if self.0.len() >= MAX_BINDINGS => return Err(ENOSPC),
            None => self.0.push(binding, GFP_KERNEL)?,
        }
        Ok(())
    }

    /// Fills in the binding of `application`, with the ids as the caller's namespace numbers
    /// them; `ENOENT` if the name is not bound.
    pub(crate) fn get(
        &self,
        application: &[u8; APP_LEN],
        req: &mut uapi::bufshare_app_binding,
    ) -> Result {
        let b = self
            .0
            .iter()
            .find(|b| &b.application == application)
            .ok_or(ENOENT)?;
        req.flags = 0;
        req.uid = 0;
        req.gid = 0;
        if let Some(uid) = b.uid {
            req.flags |= uapi::BUFSHARE_BIND_UID;
            req.uid = uidgid::uid_in_current_ns(uid);
        }
        if let Some(gid) = b.gid {
            req.flags |= uapi::BUFSHARE_BIND_GID;
            req.gid = gid.into_gid_in_current_ns();
        }
        Ok(())
    }

    /// Whether the caller may register under `application`: `EACCES` if not.
    pub(crate) fn check(&self, application: &[u8; APP_LEN]) -> Result {
        let Some(b) = self.0.iter().find(|b| &b.application == application) else {
            if module_parameters::bound_applications_only.value() {
                return Err(EACCES);
            }
            return Ok(());
        };
        let user = b.uid.is_some_and(|uid| uid == Kuid::current_euid());
        let member = b.gid.is_some_and(Kgid::current_in_group);
        if user || member {
            Ok(())
        } else {
            Err(EACCES)
        }
    }
}
