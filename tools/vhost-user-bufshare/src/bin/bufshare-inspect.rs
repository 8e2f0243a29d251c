// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! `bufshare-inspect`: looks at the buffers of a running
//! `vhost-user-bufshare` through its inspect socket (`--inspect-socket`).
//!
//! ```text
//! bufshare-inspect --socket PATH list
//! bufshare-inspect --socket PATH read ID OFFSET LEN > bytes
//! bufshare-inspect --socket PATH write ID OFFSET < bytes
//! ```
//!
//! `read` and `write` go straight to the buffer's guest memory. Errors are
//! reported on stderr, with exit status 1.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vhost_user_bufshare::inspect::{Client, ClientError};

/// Looks at the buffers of a vhost-user-bufshare backend.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The backend's inspect socket (its --inspect-socket).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One line per buffer: `id=<n> application=<s> size=<n> ranges=<n>
    /// complete=<0|1> seqno=<n>`, then a TAB and `name=value` per property.
    List,
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
    let client = Client::new(&args.socket);
    match args.command {
        Command::List => {
            let listing = client.list()?;
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(&listing)
                .and_then(|()| stdout.flush())
                .map_err(Error::Stdout)
        }
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
        assert!(Args::try_parse_from(["x", "list"]).is_err());
        assert!(Args::try_parse_from(["x", "--socket", "s", "read", "1", "2"]).is_err());
        assert!(Args::try_parse_from(["x", "--socket", "s", "read", "-1", "0", "1"]).is_err());
        assert!(Args::try_parse_from(["x", "--socket", "s", "write", "1", "0x"]).is_err());
    }
}
