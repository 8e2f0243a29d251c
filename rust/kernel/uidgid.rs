// SPDX-License-Identifier: GPL-2.0

//! User and group ids as the calling task names them, and checks of its credentials.
//!
//! An id that user space hands to the kernel (in an ioctl, say) is a number in the caller's user
//! namespace; the kernel keeps it as a global [`Kuid`] or [`Kgid`], which it compares with the
//! credentials of later callers.
//!
//! C headers: [`include/linux/uidgid.h`](srctree/include/linux/uidgid.h) and
//! [`include/linux/cred.h`](srctree/include/linux/cred.h)

use crate::{bindings, task::Kuid};

/// A group id, global to the kernel (`kgid_t`).
#[derive(Copy, Clone)]
pub struct Kgid(bindings::kgid_t);

impl Kgid {
    /// The group that `gid` names in the current task's user namespace; `None` if it names none
    /// there.
    pub fn from_current_ns(gid: u32) -> Option<Self> {
        // SAFETY: `current_user_ns()` is the live namespace of the current task; both calls only
        // read it.
        let kgid = unsafe { bindings::make_kgid(bindings::current_user_ns(), gid) };
        // SAFETY: Just an FFI call on a value.
        unsafe { bindings::gid_valid(kgid) }.then_some(Self(kgid))
    }

    /// The number of this group in the current task's user namespace (the overflow gid if it
    /// has none there).
    pub fn into_gid_in_current_ns(self) -> u32 {
        // SAFETY: `current_user_ns()` is the live namespace of the current task.
        unsafe { bindings::from_kgid_munged(bindings::current_user_ns(), self.0) }
    }

    /// Whether the current task is in this group: as its filesystem group, or as one of its
    /// supplementary groups.
    pub fn current_in_group(self) -> bool {
        // SAFETY: Just an FFI call; it reads the current task's credentials.
        unsafe { bindings::in_group_p(self.0) != 0 }
    }
}

impl PartialEq for Kgid {
    fn eq(&self, other: &Self) -> bool {
        // SAFETY: Just an FFI call on values.
        unsafe { bindings::gid_eq(self.0, other.0) }
    }
}

impl Eq for Kgid {}

/// The user that `uid` names in the current task's user namespace; `None` if it names none there.
pub fn kuid_from_current_ns(uid: u32) -> Option<Kuid> {
    // SAFETY: `current_user_ns()` is the live namespace of the current task; both calls only read
    // it.
    let kuid = unsafe { bindings::make_kuid(bindings::current_user_ns(), uid) };
    // SAFETY: Just an FFI call on a value.
    unsafe { bindings::uid_valid(kuid) }.then_some(Kuid::from_raw(kuid))
}

/// The number of user `kuid` in the current task's user namespace (the overflow uid if it has
/// none there).
pub fn uid_in_current_ns(kuid: Kuid) -> u32 {
    // SAFETY: `current_user_ns()` is the live namespace of the current task.
    unsafe { bindings::from_kuid_munged(bindings::current_user_ns(), kuid.into_raw()) }
}

/// The capability of system administration, for [`capable`].
pub const CAP_SYS_ADMIN: u32 = bindings::CAP_SYS_ADMIN;

/// Whether the current task has the capability `cap` (a `CAP_*` value) in the initial user
/// namespace, as `capable()` tells; the check is audited.
pub fn capable(cap: u32) -> bool {
    let Ok(cap) = i32::try_from(cap) else {
        return false;
    };
    // SAFETY: Just an FFI call; it reads the current task's credentials.
    unsafe { bindings::capable(cap) }
}
