// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The events file of fault injection: with `--fault-file PATH`, the
//! backend appends a line to `PATH.events` when a device reset begins
//! (`reset-start NS`) and when it is complete (`reset-done NS`), NS being
//! `CLOCK_REALTIME` in nanoseconds. A guest test, whose realtime clock
//! follows the host's, compares them with its own times: e.g. that the
//! driver's reset did not return before the device's was done.
//!
//! Each line is written with one `write()` to a file opened `O_APPEND`, so
//! that the lines of several devices (guests) sharing the file, and of a
//! reader truncating it, never mix.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use log::warn;

/// What the suffix `.events` is appended to: the fault file's path.
pub const EVENTS_SUFFIX: &str = ".events";

/// An event of the events file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetEvent {
    /// `reset-start`: a device reset begins (before any delay).
    Start,
    /// `reset-done`: the device reset is complete.
    Done,
}

impl ResetEvent {
    /// The event's word in the file.
    pub fn word(self) -> &'static str {
        match self {
            ResetEvent::Start => "reset-start",
            ResetEvent::Done => "reset-done",
        }
    }

    /// The event's line, at `ns` nanoseconds of `CLOCK_REALTIME`.
    pub fn line(self, ns: u128) -> String {
        format!("{} {ns}\n", self.word())
    }
}

/// `CLOCK_REALTIME` now, in nanoseconds since the epoch (0 for a clock set
/// before it).
pub fn realtime_ns() -> u128 {
    // SystemTime is CLOCK_REALTIME on Linux.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The events file, `PATH.events` for the fault file PATH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventsFile {
    path: PathBuf,
}

impl EventsFile {
    /// The events file of the fault file at `fault_file`.
    pub fn for_fault_file(fault_file: &Path) -> Self {
        let mut path = OsString::from(fault_file.as_os_str());
        path.push(EVENTS_SUFFIX);
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the line of `event`, now. Never fails: an error is logged.
    pub fn append(&self, event: ResetEvent) {
        if let Err(e) = self.write_line(&event.line(realtime_ns())) {
            warn!(
                "cannot append {} to {}: {e}",
                event.word(),
                self.path.display()
            );
        }
    }

    /// Appends `line` with a single `write()`, creating the file if
    /// missing. A symbolic link is not followed, nor does a FIFO block.
    fn write_line(&self, line: &str) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)?;
        let written = file.write(line.as_bytes())?;
        if written != line.len() {
            return Err(io::Error::other(format!(
                "{written} of {} bytes written",
                line.len()
            )));
        }
        Ok(())
    }
}

/// The lines of an events file's text, as (word, ns): for tests.
#[cfg(test)]
pub(crate) fn parse_lines(text: &str) -> Vec<(String, u128)> {
    text.lines()
        .map(|line| {
            let (word, ns) = line.split_once(' ').unwrap();
            (word.to_owned(), ns.parse().unwrap())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of `path`, as (word, ns).
    fn lines_of(path: &Path) -> Vec<(String, u128)> {
        parse_lines(&std::fs::read_to_string(path).unwrap())
    }

    #[test]
    fn lines() {
        assert_eq!(ResetEvent::Start.line(12), "reset-start 12\n");
        assert_eq!(ResetEvent::Done.line(0), "reset-done 0\n");
        assert_eq!(
            EventsFile::for_fault_file(Path::new("/srv/share/fault")).path(),
            Path::new("/srv/share/fault.events")
        );
        assert_eq!(
            EventsFile::for_fault_file(Path::new("f.txt")).path(),
            Path::new("f.txt.events")
        );
    }

    #[test]
    fn appended_with_the_realtime_clock() {
        let dir = tempfile::tempdir().unwrap();
        let events = EventsFile::for_fault_file(&dir.path().join("fault"));
        let before = realtime_ns();
        // Created if missing.
        events.append(ResetEvent::Start);
        events.append(ResetEvent::Done);
        let after = realtime_ns();
        let got = events_of(&events);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "reset-start");
        assert_eq!(got[1].0, "reset-done");
        assert!(before <= got[0].1 && got[0].1 <= got[1].1 && got[1].1 <= after);
        // Seconds since the epoch: after 2020, in nanoseconds.
        assert!(got[0].1 > 1_577_836_800 * 1_000_000_000);

        // Appended to what is there, whoever wrote it.
        std::fs::write(events.path(), "reset-start 1\n").unwrap();
        events.append(ResetEvent::Done);
        let got = events_of(&events);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ("reset-start".to_owned(), 1));
        assert_eq!(got[1].0, "reset-done");
    }

    fn events_of(events: &EventsFile) -> Vec<(String, u128)> {
        lines_of(events.path())
    }

    #[test]
    fn no_symlink_followed_nor_fifo_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let events = EventsFile::for_fault_file(&dir.path().join("fault"));
        let target = dir.path().join("target");
        std::fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, events.path()).unwrap();
        events.append(ResetEvent::Start);
        assert_eq!(std::fs::read(&target).unwrap(), b"");

        std::fs::remove_file(events.path()).unwrap();
        nix::unistd::mkfifo(events.path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        // No reader: refused at once rather than waited for.
        events.append(ResetEvent::Start);
    }
}
