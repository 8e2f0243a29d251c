// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Guest-to-guest import (`VIRTIO_BUFSHARE_F_IMPORT`): a guest (the
//! *importer*) attaches to an application of another guest served by the
//! same backend (the *exporter*, or source), and the backend maps each of
//! the exporter's complete buffers of that application into the
//! importer's import region (VIRTIO shared memory region 0) with the
//! vhost-user SHMEM_MAP request; see the device specification's
//! "Importing buffers" and Documentation/host/bufshare-import.rst.
//!
//! * [`ImportConfig`]: the size of each guest's import region
//!   (`--shm-size`), who may import what (`--allow-import`, closed by
//!   default) and the grace time before an import whose buffer is gone is
//!   revoked (`--import-grace`);
//! * [`hub::ImportHub`]: the attachments and imports of every guest, and
//!   the mirror of every guest's complete buffers it maps from;
//! * [`alloc::Allocator`]: the first-fit allocator of an import region;
//! * [`crate::shmem`]: the thread that sends the SHMEM_MAP and SHMEM_UNMAP
//!   requests of one connection.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bufshare_consumer::props::is_name;

pub mod alloc;
pub mod hub;

pub use alloc::PAGE_SIZE;

/// Default grace time of an import whose buffer is gone.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// Most attachments a driver has at a time.
pub const MAX_ATTACHMENTS: usize = 64;
/// Longest guest name that can be a source: `source` is 32 bytes with a
/// NUL.
pub const SOURCE_NAME_MAX: usize = bufshare_uapi::VIRTIO_BUFSHARE_NAME_LEN - 1;

/// How an importer may use what it imports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read and write it.
    ReadWrite,
    /// Read it only. QEMU 11.1 cannot map read-only (it ignores the flag of
    /// SHMEM_MAP and refuses read-only descriptors): such a rule is kept,
    /// and an ATTACH under it is refused ([`hub::ImportHub::attach`]).
    ReadOnly,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::ReadWrite => "rw",
            Access::ReadOnly => "ro",
        })
    }
}

/// `IMPORTER:APPLICATION=EXPORTER[:rw|:ro]`: guest IMPORTER may import the
/// buffers guest EXPORTER registers under APPLICATION (`*`: any), read and
/// write (`rw`, the default) or read only (`ro`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportRule {
    /// The importing guest.
    pub importer: String,
    /// The application, or `None` for any.
    pub application: Option<String>,
    /// The exporting guest.
    pub exporter: String,
    /// How.
    pub access: Access,
}

impl ImportRule {
    /// Whether it lets `importer` import `application` of `exporter`.
    pub fn allows(&self, importer: &str, exporter: &str, application: &str) -> bool {
        self.importer == importer
            && self.exporter == exporter
            && self
                .application
                .as_deref()
                .is_none_or(|app| app == application)
    }
}

impl FromStr for ImportRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || format!("{text:?}: IMPORTER:APPLICATION=EXPORTER[:rw|:ro] expected");
        let (left, right) = text.split_once('=').ok_or_else(usage)?;
        let (importer, application) = left.split_once(':').ok_or_else(usage)?;
        let (exporter, access) = match right.split_once(':') {
            Some((exporter, "rw")) => (exporter, Access::ReadWrite),
            Some((exporter, "ro")) => (exporter, Access::ReadOnly),
            Some(_) => return Err(usage()),
            None => (right, Access::ReadWrite),
        };
        for guest in [importer, exporter] {
            if !is_name(guest) {
                return Err(format!(
                    "{text:?}: bad guest name {guest:?}: 1 to 63 characters out of [A-Za-z0-9_.-]"
                ));
            }
        }
        let application = match application {
            "*" => None,
            app if is_name(app) => Some(app.to_string()),
            app => {
                return Err(format!(
                    "{text:?}: bad application {app:?}: 1 to 63 characters out of \
                     [A-Za-z0-9_.-], or *"
                ))
            }
        };
        Ok(Self {
            importer: importer.to_string(),
            application,
            exporter: exporter.to_string(),
            access,
        })
    }
}

impl fmt::Display for ImportRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}={}:{}",
            self.importer,
            self.application.as_deref().unwrap_or("*"),
            self.exporter,
            self.access
        )
    }
}

/// What guests may import, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportConfig {
    /// Size of each guest's import region, in bytes: a multiple of
    /// [`PAGE_SIZE`]; 0 for none (then no device offers
    /// `VIRTIO_BUFSHARE_F_IMPORT`).
    pub shm_size: u64,
    /// Who may import what; nothing is allowed that no rule allows.
    pub rules: Vec<ImportRule>,
    /// How long an importer has to CLOSE an import after IMPORT_REMOVED
    /// before it is revoked.
    pub grace: Duration,
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            shm_size: 0,
            rules: Vec::new(),
            grace: DEFAULT_GRACE,
        }
    }
}

impl ImportConfig {
    /// Whether devices offer `VIRTIO_BUFSHARE_F_IMPORT`.
    pub fn enabled(&self) -> bool {
        self.shm_size != 0
    }

    /// How `importer` may import `application` of `exporter`: the access
    /// of the first rule that allows it, read-write winning over
    /// read-only; `None` if no rule does.
    pub fn access(&self, importer: &str, exporter: &str, application: &str) -> Option<Access> {
        let mut found = None;
        for rule in &self.rules {
            if rule.allows(importer, exporter, application) {
                if rule.access == Access::ReadWrite {
                    return Some(Access::ReadWrite);
                }
                found = Some(rule.access);
            }
        }
        found
    }

    /// Checks the configuration against the guests served, `guests`: a
    /// region size that is a multiple of [`PAGE_SIZE`], rules about guests
    /// that exist, exporters whose names fit in `source`, no guest its own
    /// importer.
    pub fn check(&self, guests: &[&str]) -> Result<(), String> {
        if !self.shm_size.is_multiple_of(PAGE_SIZE) {
            return Err(format!(
                "--shm-size {}: not a multiple of {PAGE_SIZE}",
                self.shm_size
            ));
        }
        for rule in &self.rules {
            for guest in [&rule.importer, &rule.exporter] {
                if !guests.contains(&guest.as_str()) {
                    return Err(format!("--allow-import {rule}: no guest {guest}"));
                }
            }
            if rule.exporter.len() > SOURCE_NAME_MAX {
                return Err(format!(
                    "--allow-import {rule}: an exporter's name has at most {SOURCE_NAME_MAX} \
                     characters"
                ));
            }
            if rule.importer == rule.exporter {
                return Err(format!(
                    "--allow-import {rule}: a guest cannot import its own buffers"
                ));
            }
        }
        Ok(())
    }
}

/// Parses a size: a number of bytes, or with a suffix `K`, `M` or `G`
/// (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{text:?}: a size in bytes, or with K, M or G, expected"))
}

/// Parses a duration: seconds, or with a suffix `ms` or `s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?}: a duration (5, 5s, 500ms) expected");
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().map(Duration::from_millis).map_err(|_| bad());
    }
    let secs = text.strip_suffix('s').unwrap_or(text);
    secs.parse().map(Duration::from_secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests;
