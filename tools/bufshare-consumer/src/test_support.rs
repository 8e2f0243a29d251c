// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Descriptors for the tests of the messages and of their transport.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::sys::memfd::{memfd_create, MFdFlags};

/// A new empty memfd: a descriptor to send.
pub(crate) fn memfd() -> OwnedFd {
    memfd_create("bufshare-consumer-test", MFdFlags::MFD_CLOEXEC).unwrap()
}

/// The inode of a descriptor: what identifies it across a round trip.
pub(crate) fn ino(fd: impl AsFd) -> u64 {
    File::from(fd.as_fd().try_clone_to_owned().unwrap())
        .metadata()
        .unwrap()
        .ino()
}
