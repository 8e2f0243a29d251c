// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! `bufshare-watch`: shows the events of the virtio-bufshare backend's
//! consumer socket and dumps guest framebuffers as PNG files.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bufshare_consumer::props::is_name;
use bufshare_consumer::ALL_APPLICATIONS;
use bufshare_watch::watch::{run, Exit, Options};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Shows the events of a vhost-user-bufshare consumer socket, one line
/// each, and dumps and verifies guest framebuffers.
///
/// Exit status: 0 when stopped normally (the backend closed the connection,
/// --frames or --seconds reached, SIGINT or SIGTERM), 1 likewise after a
/// --verify mismatch, 2 when the backend refused the subscription (ERROR
/// DENIED, VERSION, PROTOCOL), 3 when it ended the connection with another
/// ERROR (OVERFLOW, SHUTDOWN, BUSY), 4 on any other failure (usage errors
/// included).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The backend's consumer socket (its --consumer-socket).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,

    /// Subscribe to this application's buffers; repeat for more. All
    /// applications when not given.
    #[arg(long = "app", value_name = "NAME", value_parser = app_name)]
    apps: Vec<String>,

    /// On UPDATE, write the frame of a framebuffer buffer (one whose
    /// properties describe a frame) to DIR/<guest>-<id>-<seqno>.png; DIR is
    /// created if needed.
    #[arg(long, value_name = "DIR")]
    dump: Option<PathBuf>,

    /// On UPDATE, check the frame of a framebuffer buffer against its crc32
    /// property.
    #[arg(long)]
    verify: bool,

    /// Stop after N frames (UPDATEs of framebuffer buffers: with --dump,
    /// N dumped frames).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    frames: Option<u64>,

    /// Stop after N seconds.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    seconds: Option<u64>,

    /// Write the event lines to FILE too (created or truncated; each line
    /// written whole as it is handled, for other processes to follow).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,

    /// Print only errors: no event lines on stdout, no progress nor summary
    /// on stderr (the --log file is still written).
    #[arg(long, short)]
    quiet: bool,

    /// Keep each buffer mapped SECS seconds after its REMOVE (or its
    /// guest's RESET) before unmapping it, which tells the backend CLOSED
    /// (a slow consumer, for tests).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86400))]
    hold_after_remove: Option<u64>,

    /// Never tell the backend RELEASE (by default each update is released
    /// once dumped and verified).
    #[arg(long)]
    no_release: bool,

    /// Stop reading the socket after N events, keeping every mapping, until
    /// stopped (a stuck consumer, for tests).
    #[arg(long, value_name = "N")]
    stop_reading: Option<u64>,
}

/// Checks an application name: `[A-Za-z0-9_.-]`, 1 to 63 characters, or
/// `*` for all.
fn app_name(name: &str) -> Result<String, String> {
    if is_name(name) || name == ALL_APPLICATIONS {
        Ok(name.to_owned())
    } else {
        Err("an application name is 1 to 63 characters out of [A-Za-z0-9_.-], or *".to_owned())
    }
}

impl From<Args> for Options {
    fn from(args: Args) -> Self {
        Options {
            socket: args.socket,
            apps: args.apps,
            dump: args.dump,
            verify: args.verify,
            frames: args.frames,
            seconds: args.seconds,
            log: args.log,
            quiet: args.quiet,
            hold_after_remove: args.hold_after_remove.map(Duration::from_secs),
            no_release: args.no_release,
            stop_reading: args.stop_reading,
        }
    }
}

/// Blocks SIGINT and SIGTERM and returns a descriptor that becomes readable
/// when one is pending: the event loop waits for it with the socket.
fn stop_signals() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    // Only the main thread exists: the mask is the process's.
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            // --help and --version succeed; usage errors are failures (4),
            // not clap's 2, which means a refused subscription here.
            return if e.use_stderr() {
                ExitCode::from(Exit::Failed.code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let options = Options::from(args);
    let signals = match stop_signals() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("bufshare-watch: cannot set up signal handling: {e}");
            return ExitCode::from(Exit::Failed.code());
        }
    };
    ExitCode::from(run(&options, Some(signals.as_fd())).code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("bufshare-watch").chain(args.iter().copied()))
    }

    #[test]
    fn command_is_valid() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn minimal() {
        let args = parse(&["--socket", "/run/c.sock"]).unwrap();
        assert_eq!(args.socket, PathBuf::from("/run/c.sock"));
        assert!(args.apps.is_empty());
        assert_eq!(args.dump, None);
        assert!(!args.verify);
        assert_eq!((args.frames, args.seconds), (None, None));
        assert_eq!(args.log, None);
        assert!(!args.quiet);
    }

    #[test]
    fn all_options() {
        let args = parse(&[
            "--socket",
            "s",
            "--app",
            "a",
            "--app",
            "b",
            "--dump",
            "/tmp/d",
            "--verify",
            "--frames",
            "10",
            "--seconds",
            "5",
            "--log",
            "/tmp/log",
            "--quiet",
            "--hold-after-remove",
            "3",
            "--no-release",
            "--stop-reading",
            "7",
        ])
        .unwrap();
        assert_eq!(args.apps, ["a", "b"]);
        assert_eq!(args.dump, Some(PathBuf::from("/tmp/d")));
        assert!(args.verify);
        assert_eq!((args.frames, args.seconds), (Some(10), Some(5)));
        let options = Options::from(args);
        assert_eq!(options.log, Some(PathBuf::from("/tmp/log")));
        assert!(options.quiet);
        assert_eq!(options.hold_after_remove, Some(Duration::from_secs(3)));
        assert!(options.no_release);
        assert_eq!(options.stop_reading, Some(7));
        assert_eq!(parse(&["--socket", "s", "--app", "*"]).unwrap().apps, ["*"]);
    }

    #[test]
    fn refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--socket", "s", "--frames", "0"]).is_err());
        assert!(parse(&["--socket", "s", "--seconds", "x"]).is_err());
        assert!(parse(&["--socket", "s", "--dump"]).is_err());
        assert!(parse(&["--socket", "s", "--app", "a b"]).is_err());
        assert!(parse(&["--socket", "s", "--app", ""]).is_err());
        assert!(parse(&["--socket", "s", "--log"]).is_err());
    }
}
