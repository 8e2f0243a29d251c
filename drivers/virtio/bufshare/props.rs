// SPDX-License-Identifier: GPL-2.0

//! Properties and application names.
//!
//! Properties are NUL-terminated `name=value` strings: a name is 1 to 63 characters out of
//! `[A-Za-z0-9_.-]` and appears at most once, a value holds no control character (see the device
//! specification). An application name is made of the same characters as a property name.

use kernel::{
    prelude::*,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
    uapi,
};

/// The size of an application name on the wire, NUL padding included.
pub(crate) const APP_LEN: usize = uapi::VIRTIO_BUFSHARE_APP_LEN as usize;

/// The longest property name.
const PROP_NAME_MAX: usize = uapi::VIRTIO_BUFSHARE_PROP_NAME_MAX as usize;

/// Whether `c` may be part of a property or application name.
fn name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-'
}

fn name_ok(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= PROP_NAME_MAX && name.iter().all(|&c| name_char(c))
}

fn value_ok(value: &[u8]) -> bool {
    value.iter().all(|&c| c >= 0x20 && c != 0x7f)
}

/// Splits a property set into `(name, value)` pairs; the set must have been checked.
pub(crate) fn iter(props: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    props
        .split(|&c| c == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.iter().position(|&c| c == b'=') {
            Some(eq) => (&entry[..eq], &entry[eq + 1..]),
            None => (entry, &entry[entry.len()..]),
        })
}

/// Checks a property set: every entry NUL-terminated, a valid name, a `=`, a valid value, and no
/// name twice.
pub(crate) fn check(props: &[u8]) -> Result {
    if props.is_empty() {
        return Ok(());
    }
    if props.last() != Some(&0) {
        return Err(EINVAL);
    }
    let body = &props[..props.len() - 1];
    for entry in body.split(|&c| c == 0) {
        let eq = entry.iter().position(|&c| c == b'=').ok_or(EINVAL)?;
        if !name_ok(&entry[..eq]) || !value_ok(&entry[eq + 1..]) {
            return Err(EINVAL);
        }
    }
    for (i, (name, _)) in iter(props).enumerate() {
        if iter(props).skip(i + 1).any(|(other, _)| other == name) {
            return Err(EINVAL);
        }
    }
    Ok(())
}

/// Returns the value of property `name`.
pub(crate) fn get<'a>(props: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    iter(props).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// Returns the value of property `name` as a decimal `u32`.
pub(crate) fn get_u32(props: &[u8], name: &[u8]) -> Option<u32> {
    let value = get(props, name)?;
    if value.is_empty() || value.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in value {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    u32::try_from(n).ok()
}

/// Merges the checked set `new` into the checked set `old`: properties of `new` replace those of
/// the same name, the others of `old` stay.
pub(crate) fn merge(old: &[u8], new: &[u8]) -> Result<KVec<u8>> {
    let mut out = KVec::with_capacity(old.len() + new.len(), GFP_KERNEL)?;
    for (name, value) in iter(old) {
        if get(new, name).is_none() {
            out.extend_from_slice(name, GFP_KERNEL)?;
            out.push(b'=', GFP_KERNEL)?;
            out.extend_from_slice(value, GFP_KERNEL)?;
            out.push(0, GFP_KERNEL)?;
        }
    }
    out.extend_from_slice(new, GFP_KERNEL)?;
    Ok(out)
}

/// Reads `size` bytes of properties from user space at `ptr`, at most `max`, and checks them.
pub(crate) fn read(ptr: u64, size: u32, max: usize) -> Result<KVec<u8>> {
    let size = size as usize;
    if size > max {
        return Err(E2BIG);
    }
    let mut buf = KVec::new();
    if size > 0 {
        let ptr = usize::try_from(ptr).map_err(|_| EFAULT)?;
        UserSlice::new(UserPtr::from_addr(ptr), size).read_all(&mut buf, GFP_KERNEL)?;
    }
    check(&buf)?;
    Ok(buf)
}

/// Checks an application name from user space: 1 to 63 characters out of `[A-Za-z0-9_.-]`, then
/// a NUL. Returns it NUL-padded, as the device reads it.
pub(crate) fn application(raw: &[kernel::ffi::c_char; APP_LEN]) -> Result<[u8; APP_LEN]> {
    let mut app = [0u8; APP_LEN];
    let len = raw.iter().position(|&c| c == 0).ok_or(EINVAL)?;
    if len == 0 {
        return Err(EINVAL);
    }
    for (dst, &c) in app.iter_mut().zip(&raw[..len]) {
        if !name_char(c) {
            return Err(EINVAL);
        }
        *dst = c;
    }
    Ok(app)
}
