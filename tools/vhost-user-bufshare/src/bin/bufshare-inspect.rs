// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! `bufshare-inspect`: looks at the buffers of a running
//! `vhost-user-bufshare` through its inspect socket (`--inspect-socket`).
//!
//! ```text
//! bufshare-inspect --socket PATH [--guest NAME] list
//! bufshare-inspect --socket PATH [--guest NAME] read ID OFFSET LEN > bytes
//! bufshare-inspect --socket PATH [--guest NAME] write ID OFFSET < bytes
//! bufshare-inspect --socket PATH guests
//! bufshare-inspect --socket PATH [--guest NAME] holders
//! ```
//!
//! `read` and `write` go straight to the buffer's guest memory. Without
//! `--guest`, they are about the backend's only guest (an error if it
//! serves several), and `list` lists the only guest's buffers, or every
//! guest's, each line starting with `guest=NAME `. Errors are reported on
//! stderr, with exit status 1.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use bufshare_consumer::escape_controls;
use clap::{Parser, Subcommand};
use vhost_user_bufshare::inspect::{Client, ClientError};

/// Looks at the buffers of a vhost-user-bufshare backend.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The backend's inspect socket (its --inspect-socket).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,

    /// The guest whose buffers to look at (the backend's --guest NAME).
    /// Default: the backend's only guest; for list, with several guests,
    /// every guest.
    #[arg(long, global = true, value_name = "NAME", value_parser = parse_guest)]
    guest: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One line per buffer: `id=<n> application=<s> size=<n> ranges=<n>
    /// complete=<0|1> seqno=<n>`, then a TAB and `name=value` per property.
    /// Without --guest, of a backend of several guests: every guest's
    /// buffers, each line starting with `guest=<name> `.
    List,
    /// One line per guest: `guest=<name> connected=<0|1> buffers=<n>`.
    Guests,
    /// One line per buffer that consumers hold, or that waits for them
    /// after UNREGISTER: `id=<n> holders=<n> instances=<n> draining=<0|1>`
    /// (holders: consumer connections, or consumers gone whose process
    /// lives; instances: ADDs of it they did not say CLOSED for). Without
    /// --guest, of a backend of several guests: each line starting with
    /// `guest=<name> `.
    Holders,
    /// Writes LEN bytes of buffer ID, from OFFSET, to stdout.
    Read {
        /// The buffer's id.
        #[arg(value_parser = parse_u64)]
        id: u64,
        /// Where to start, in bytes.
        #[arg(value_parser = parse_u64)]
        offset: u64,
        /// How many bytes.
        #[arg(value_parser = parse_u64)]
        len: u64,
    },
    /// Writes stdin into buffer ID, from OFFSET.
    Write {
        /// The buffer's id.
        #[arg(value_parser = parse_u64)]
        id: u64,
        /// Where to start, in bytes.
        #[arg(value_parser = parse_u64)]
        offset: u64,
    },
}

/// A guest name: 1 to 63 characters out of `[A-Za-z0-9_.-]`.
fn parse_guest(s: &str) -> Result<String, String> {
    if bufshare_consumer::props::is_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: 1 to 63 characters out of [A-Za-z0-9_.-]"))
    }
}

/// A number, decimal or with `0x` hexadecimal.
fn parse_u64(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?}: {e}"))
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("stdin: {0}")]
    Stdin(io::Error),
    #[error("stdout: {0}")]
    Stdout(io::Error),
}

fn run(args: Args) -> Result<(), Error> {
    let client = Client::new(&args.socket).with_guest(args.guest);
    let print = |listing: Vec<u8>| {
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(&listing)
            .and_then(|()| stdout.flush())
            .map_err(Error::Stdout)
    };
    match args.command {
        Command::List => print(escape_listing(&client.list()?)),
        Command::Guests => print(escape_listing(&client.guests()?)),
        Command::Holders => print(escape_listing(&client.holders()?)),
        Command::Read { id, offset, len } => {
            let mut stdout = io::BufWriter::new(io::stdout().lock());
            // A failure to write stdout comes as a client I/O error.
            client.read(id, offset, len, &mut stdout)?;
            stdout.flush().map_err(Error::Stdout)
        }
        Command::Write { id, offset } => {
            let mut data = Vec::new();
            io::stdin()
                .lock()
                .read_to_end(&mut data)
                .map_err(Error::Stdin)?;
            Ok(client.write(id, offset, &data)?)
        }
    }
}

/// A listing made fit for a terminal: property values are the guest's
/// bytes, which may hold C1 control characters (0x80 to 0x9f, raw or in
/// UTF-8) that a terminal would act on. Those, any other control character
/// but the listing's TABs and newlines, and backslashes, are escaped
/// ([`escape_controls`]).
fn escape_listing(listing: &[u8]) -> Vec<u8> {
    escape_controls(listing, b"\t\n")
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bufshare-inspect: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn listings_are_escaped() {
        let listing = "id=1 application=a size=4 ranges=1 complete=1 seqno=0\n\
                       \tt=\u{9b}2J\\\n\tr=\u{e9}\n"
            .as_bytes()
            .to_vec();
        let mut raw = listing.clone();
        raw.extend_from_slice(b"\tb=\x9b\xe9\n");
        assert_eq!(
            escape_listing(&raw),
            b"id=1 application=a size=4 ranges=1 complete=1 seqno=0\n\
              \tt=\\xc2\\x9b2J\\\\\n\tr=\xc3\xa9\n\tb=\\x9b\xe9\n"
        );
    }

    #[test]
    fn cli() {
        Args::command().debug_assert();
        let args =
            Args::try_parse_from(["x", "--socket", "s", "read", "1", "0x10", "4096"]).unwrap();
        assert!(matches!(
            args.command,
            Command::Read {
                id: 1,
                offset: 16,
                len: 4096
            }
        ));
        let args = Args::try_parse_from(["x", "--socket", "s", "write", "7", "0"]).unwrap();
        assert!(matches!(args.command, Command::Write { id: 7, offset: 0 }));
        assert!(Args::try_parse_from(["x", "--socket", "s", "list"]).is_ok());
        // --guest, before or after the command.
        let args = Args::try_parse_from([
            "x", "--socket", "s", "--guest", "vm1", "read", "1", "2", "3",
        ])
        .unwrap();
        assert_eq!(args.guest.as_deref(), Some("vm1"));
        let args =
            Args::try_parse_from(["x", "--socket", "s", "write", "--guest", "vm.2", "1", "2"])
                .unwrap();
        assert_eq!(args.guest.as_deref(), Some("vm.2"));
        assert!(matches!(args.command, Command::Write { id: 1, offset: 2 }));
        let args = Args::try_parse_from(["x", "--socket", "s", "guests"]).unwrap();
        assert!(matches!(args.command, Command::Guests));
        assert_eq!(args.guest, None);
        assert!(Args::try_parse_from(["x", "--socket", "s", "--guest", "a b", "list"]).is_err());
        assert!(Args::try_parse_from(["x", "--socket", "s", "--guest", "", "list"]).is_err());
        assert!(Args::try_parse_from(["x", "list"]).is_err());
        assert!(Args::try_parse_from(["x", "--socket", "s", "read", "1", "2"]).is_err());
        assert!(Args::try_parse_from(["x", "--socket", "s", "read", "-1", "0", "1"]).is_err());
        assert!(Args::try_parse_from(["x", "--socket", "s", "write", "1", "0x"]).is_err());
    }
}
