// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! `bufshare-watch`: shows the events of the virtio-bufshare backend's
//! consumer socket and dumps guest framebuffers as PNG files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Shows the events of a vhost-user-bufshare consumer socket and dumps
/// guest framebuffers as PNG files.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The backend's consumer socket (its --consumer-socket).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,

    /// Subscribe to this application's buffers; repeat for more. All
    /// applications when not given.
    #[arg(long = "app", value_name = "NAME")]
    apps: Vec<String>,

    /// Write every updated frame to DIR/<guest>-<id>-<seqno>.png.
    #[arg(long, value_name = "DIR")]
    dump: Option<PathBuf>,

    /// Check every updated frame against its buffer's crc32 property.
    #[arg(long)]
    verify: bool,

    /// Stop after N frames.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    frames: Option<u64>,

    /// Stop after N seconds.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    seconds: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The event loop comes with the bufshare-consumer client.
    let _ = (
        &args.socket,
        &args.apps,
        &args.dump,
        args.verify,
        args.frames,
        args.seconds,
    );
    eprintln!(
        "bufshare-watch: consumer client not wired yet: cannot watch {}",
        args.socket.display()
    );
    ExitCode::FAILURE
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
        ])
        .unwrap();
        assert_eq!(args.apps, ["a", "b"]);
        assert_eq!(args.dump, Some(PathBuf::from("/tmp/d")));
        assert!(args.verify);
        assert_eq!((args.frames, args.seconds), (Some(10), Some(5)));
    }

    #[test]
    fn refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--socket", "s", "--frames", "0"]).is_err());
        assert!(parse(&["--socket", "s", "--seconds", "x"]).is_err());
        assert!(parse(&["--socket", "s", "--dump"]).is_err());
    }
}
