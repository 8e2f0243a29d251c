// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! `vhost-user-bufshare`: serves a virtio-bufshare device to a vhost-user
//! frontend such as QEMU's generic device:
//!
//! ```text
//! vhost-user-bufshare --socket-path /tmp/bufshare.sock &
//! qemu-system-x86_64 ... \
//!     -chardev socket,id=c0,path=/tmp/bufshare.sock \
//!     -device vhost-user-test-device-pci,chardev=c0,virtio-id=37,num_vqs=1,config_size=24 \
//!     -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem
//! ```
//!
//! or one device to each of several VMs, each on a socket of its own:
//!
//! ```text
//! vhost-user-bufshare --guest vm0=/run/vm0.sock --guest vm1=/run/vm1.sock
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bufshare_consumer::props::is_name;
use bufshare_consumer::wire::MAX_PROPS_SIZE;
use clap::{ArgGroup, Parser};
use log::{error, info};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use vhost_user_bufshare::consumer::access::{AccessPolicy, AllowRule, TrustRule};
use vhost_user_bufshare::consumer::{
    ConsumerConfig, DEFAULT_MAX_CONSUMERS, DEFAULT_MAX_CONSUMERS_PER_UID, DEFAULT_QUEUE_LIMIT,
};
use vhost_user_bufshare::daemon::{self, Config, GuestConfig, Shutdown};
use vhost_user_bufshare::device::{device_name, Limits};
use vhost_user_bufshare::fault;
use vhost_user_bufshare::import::{parse_duration, parse_size, ImportConfig, ImportRule};

/// vhost-user backend of the virtio-bufshare device (virtio id 37).
#[derive(Debug, Parser)]
#[command(version, about)]
#[command(group(ArgGroup::new("sockets").required(true).args(["socket_path", "guests"])))]
struct BufshareArgs {
    /// Path of the vhost-user socket to listen on (a stale file there is
    /// removed), for a single guest. See also --guest.
    #[arg(long, conflicts_with = "guests")]
    socket_path: Option<PathBuf>,

    /// Serve the guest NAME on the vhost-user socket SOCKET_PATH (a stale
    /// file there is removed). May be given more than once: one device per
    /// guest, each on its socket, all in this process. NAME is the guest's
    /// name for consumers and bufshare-inspect (1 to 63 characters out of
    /// [A-Za-z0-9_.-]); names and sockets are unique.
    #[arg(long = "guest", value_name = "NAME=SOCKET_PATH", value_parser = parse_guest)]
    guests: Vec<GuestConfig>,

    /// Largest number of memory ranges in one buffer (65536: 256 MiB of 4 KiB
    /// pages).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..))]
    max_ranges: u32,

    /// Largest size, in bytes, of one buffer's properties (at most 65536).
    #[arg(long, default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=MAX_PROPS_SIZE as i64))]
    max_props_size: u32,

    /// Largest number of buffers registered at a time.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_buffers: u32,

    /// Largest size, in bytes, of one buffer.
    #[arg(long, default_value_t = 1 << 30, value_parser = clap::value_parser!(u64).range(1..))]
    max_buffer_size: u64,

    /// Serve one frontend per guest socket: exit when it disconnected,
    /// instead of waiting for the next one (with several guests, once every
    /// guest's frontend has).
    #[arg(long)]
    once: bool,

    /// Offer no VIRTIO_BUFSHARE_F_EVENTS: a device of one queue, which
    /// answers UNREGISTER only once no consumer holds the buffer (as a
    /// device of before the event queue).
    #[arg(long)]
    no_events: bool,

    // Fault injection: the long help comes from the fault catalogue.
    #[arg(
        long,
        value_name = "PATH",
        help = FAULT_FILE_HELP,
        long_help = format!("{FAULT_FILE_HELP}\n\n{}", fault::file_help())
    )]
    fault_file: Option<PathBuf>,

    /// Serve host tools (bufshare-inspect) on a unix socket at PATH (mode
    /// 0600): list the buffers of every guest, read and write their bytes in
    /// guest memory.
    #[arg(long, value_name = "PATH")]
    inspect_socket: Option<PathBuf>,

    /// Hand the guests' buffers to host programs on a unix socket at PATH
    /// (Documentation/host/bufshare-consumer.rst).
    #[arg(long, value_name = "PATH")]
    consumer_socket: Option<PathBuf>,

    /// File mode of the consumer socket, in octal.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = parse_mode)]
    consumer_socket_mode: u32,

    /// Let processes of uid UID (and gid GID, if given; UID may be *)
    /// subscribe to APPS: application names separated by commas, or * for
    /// all. May be given more than once. The backend's own uid may always
    /// subscribe to everything; without --allow, nobody else may.
    #[arg(long = "allow", value_name = "UID[:GID]=APPS")]
    allow: Vec<AllowRule>,

    /// Trust consumers of uid UID (and gid GID, if given; UID may be *)
    /// with all of the guests' RAM: buffers that cannot go as dma-bufs
    /// (no /dev/udmabuf, pieces not page-aligned) go to them as segments
    /// of the guests' memory files, reopened read-only (ro) or read-write
    /// (rw). May be given more than once. Nobody is trusted so without it,
    /// the backend's own uid included; without /dev/udmabuf, untrusted
    /// consumers are refused.
    #[arg(long = "trust-ram", value_name = "UID[:GID]=ro|rw")]
    trust_ram: Vec<TrustRule>,

    /// Events of each guest queued for a consumer before they overflow
    /// (that guest's buffers are then sent to it again).
    #[arg(long, default_value_t = DEFAULT_QUEUE_LIMIT as u32,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    consumer_queue: u32,

    /// Consumers connected at a time.
    #[arg(long, default_value_t = DEFAULT_MAX_CONSUMERS as u32,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_consumers: u32,

    /// Consumers of one uid connected at a time (handshakes included), so
    /// that no uid takes every slot.
    #[arg(long, default_value_t = DEFAULT_MAX_CONSUMERS_PER_UID as u32,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_consumers_per_uid: u32,

    /// Seconds a consumer (of protocol version 3) has to say CLOSED for a
    /// buffer after its REMOVE (or its guest's RESET) before it is
    /// disconnected; what it holds is then let go only when its process
    /// exits.
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    close_grace: u32,

    /// Give each guest an import region (VIRTIO shared memory region 0) of
    /// SIZE bytes (a multiple of 4096; K, M, G suffixes), into which the
    /// backend maps the buffers it lets it import from other guests
    /// (VIRTIO_BUFSHARE_F_IMPORT, offered with events only). 0: no region,
    /// no import.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    shm_size: u64,

    /// Let guest IMPORTER import the buffers guest EXPORTER registers under
    /// APPLICATION (* for any), read-write (rw, the default) or read-only
    /// (ro: refused with QEMU 11.1, which cannot map read-only). May be
    /// given more than once; nothing may be imported without it.
    #[arg(
        long = "allow-import",
        value_name = "IMPORTER:APPLICATION=EXPORTER[:rw|:ro]"
    )]
    allow_import: Vec<ImportRule>,

    /// How long an importer has to close an import whose buffer its
    /// exporter removed before the backend unmaps it (seconds, or with s
    /// or ms).
    #[arg(long, value_name = "DURATION", default_value = "5", value_parser = parse_duration)]
    import_grace: Duration,

    /// With --socket-path: the guest's name, in what consumers receive (1
    /// to 63 characters out of [A-Za-z0-9_.-]). Default: the socket path's
    /// file name without its extension.
    #[arg(long, value_name = "NAME", value_parser = parse_guest_name, conflicts_with = "guests")]
    guest_name: Option<String>,
}

/// The short help of `--fault-file`; its long help goes on with
/// [`fault::file_help`], made from the fault catalogue.
const FAULT_FILE_HELP: &str = "Fault injection (to test drivers): misbehave as PATH says \
     ({guest} in PATH stands for each guest's name: a file per guest)";

/// An octal file mode, at most 0777.
fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal mode (0 to 777)"))
}

fn parse_guest_name(text: &str) -> Result<String, String> {
    if is_name(text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?}: 1 to 63 characters out of [A-Za-z0-9_.-]"
        ))
    }
}

/// `NAME=SOCKET_PATH`.
fn parse_guest(text: &str) -> Result<GuestConfig, String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: NAME=SOCKET_PATH expected"))?;
    if path.is_empty() {
        return Err(format!("{text:?}: no socket path"));
    }
    Ok(GuestConfig::new(parse_guest_name(name)?, path))
}

impl From<BufshareArgs> for Config {
    fn from(args: BufshareArgs) -> Self {
        let consumer = args.consumer_socket.map(|path| ConsumerConfig {
            mode: args.consumer_socket_mode,
            access: AccessPolicy::for_this_process(args.allow).with_trust(args.trust_ram),
            queue_limit: args.consumer_queue as usize,
            max_consumers: args.max_consumers as usize,
            max_consumers_per_uid: args.max_consumers_per_uid as usize,
            close_grace: Duration::from_secs(args.close_grace.into()),
            ..ConsumerConfig::new(path)
        });
        let guests = match args.socket_path {
            Some(path) => vec![match args.guest_name {
                Some(name) => GuestConfig::new(name, path),
                None => GuestConfig::from_socket(path),
            }],
            None => args.guests,
        };
        Config {
            guests,
            limits: Limits {
                max_ranges: args.max_ranges,
                max_props_size: args.max_props_size,
                max_buffers: args.max_buffers,
                max_buffer_size: args.max_buffer_size,
            },
            once: args.once,
            fault_file: args.fault_file,
            inspect_socket: args.inspect_socket,
            consumer,
            no_events: args.no_events,
            import: ImportConfig {
                shm_size: args.shm_size,
                rules: args.allow_import,
                grace: args.import_grace,
            },
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config::from(BufshareArgs::parse());
    if let Err(e) = config.check() {
        error!("{e}");
        return ExitCode::FAILURE;
    }

    let shutdown = match Shutdown::new() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = watch_signals(Arc::clone(&shutdown)) {
        error!("cannot handle SIGTERM and SIGINT: {e}");
        return ExitCode::FAILURE;
    }

    info!("{} starting, limits {:?}", device_name(), config.limits);
    match daemon::serve(&config, &shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// On SIGTERM or SIGINT, asks the daemon to stop.
fn watch_signals(shutdown: Arc<Shutdown>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    thread::Builder::new()
        .name(String::from("signals"))
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                info!("signal {signal} received");
                shutdown.request();
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        BufshareArgs::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let args = BufshareArgs::try_parse_from(["prog", "--socket-path", "/tmp/s"]).unwrap();
        let config = Config::from(args);
        assert_eq!(config.guests, [GuestConfig::new("s", "/tmp/s")]);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(
            config.limits,
            Limits {
                max_ranges: 65536,
                max_props_size: 4096,
                max_buffers: 4096,
                max_buffer_size: 1073741824,
            }
        );
        assert!(!config.once);
        assert_eq!(config.fault_file, None);
        assert_eq!(config.inspect_socket, None);
        assert_eq!(config.consumer, None);
        assert!(!config.no_events);
        assert_eq!(config.import, ImportConfig::default());
        assert_eq!(
            config.import.grace,
            vhost_user_bufshare::import::DEFAULT_GRACE
        );
    }

    #[test]
    fn import_options() {
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "prog",
                "--guest",
                "a=/run/a.sock",
                "--guest",
                "b=/run/b.sock",
            ];
            argv.extend_from_slice(extra);
            BufshareArgs::try_parse_from(argv).map(Config::from)
        };
        let config = parse(&[
            "--shm-size",
            "64M",
            "--allow-import",
            "b:frames=a",
            "--allow-import",
            "a:*=b:ro",
            "--import-grace",
            "500ms",
        ])
        .unwrap();
        assert_eq!(config.import.shm_size, 64 << 20);
        assert_eq!(
            config.import.rules,
            [
                "b:frames=a:rw".parse().unwrap(),
                "a:*=b:ro".parse().unwrap()
            ]
        );
        assert_eq!(config.import.grace, Duration::from_millis(500));
        assert!(config.check().is_ok());
        // Parsed, refused by the check.
        for argv in [
            &["--shm-size", "4097"][..],
            &["--shm-size", "4096", "--allow-import", "c:x=a"],
            &["--shm-size", "4096", "--allow-import", "a:x=a"],
        ] {
            assert!(parse(argv).unwrap().check().is_err(), "{argv:?}");
        }
        for bad in [
            &["--shm-size", "x"][..],
            &["--allow-import", "b=a"],
            &["--import-grace", "soon"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_events() {
        let args = BufshareArgs::try_parse_from(["prog", "--socket-path", "/tmp/s", "--no-events"])
            .unwrap();
        assert!(Config::from(args).no_events);
    }

    #[test]
    fn consumer_options() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["prog", "--socket-path", "/run/vm-1.sock"];
            argv.extend_from_slice(extra);
            BufshareArgs::try_parse_from(argv).map(Config::from)
        };
        let config = parse(&["--consumer-socket", "/run/c.sock"]).unwrap();
        let consumer = config.consumer.unwrap();
        assert_eq!(consumer, ConsumerConfig::new("/run/c.sock"));
        assert_eq!(consumer.mode, 0o600);
        assert_eq!(consumer.queue_limit, 1024);
        assert_eq!(consumer.max_consumers, 16);
        assert_eq!(consumer.max_consumers_per_uid, 4);
        assert!(consumer.access.rules.is_empty());
        assert!(consumer.access.trust.is_empty());
        assert_eq!(config.guests[0].name, "vm-1");

        let config = parse(&[
            "--consumer-socket",
            "/run/c.sock",
            "--consumer-socket-mode",
            "0666",
            "--allow",
            "1000=camera,weston",
            "--allow",
            "*:44=*",
            "--trust-ram",
            "1000=ro",
            "--trust-ram",
            "*:45=rw",
            "--consumer-queue",
            "8",
            "--max-consumers",
            "2",
            "--max-consumers-per-uid",
            "1",
            "--guest-name",
            "desktop.1",
            "--close-grace",
            "2",
        ])
        .unwrap();
        let consumer = config.consumer.unwrap();
        assert_eq!(consumer.mode, 0o666);
        assert_eq!(
            consumer.access.rules,
            [
                "1000=camera,weston".parse().unwrap(),
                "*:44=*".parse().unwrap()
            ]
        );
        assert_eq!(
            consumer.access.trust,
            ["1000=ro".parse().unwrap(), "*:45=rw".parse().unwrap()]
        );
        assert_eq!(consumer.queue_limit, 8);
        assert_eq!(consumer.max_consumers, 2);
        assert_eq!(consumer.max_consumers_per_uid, 1);
        assert_eq!(consumer.close_grace, Duration::from_secs(2));
        assert_eq!(
            config.guests,
            [GuestConfig::new("desktop.1", "/run/vm-1.sock")]
        );

        for bad in [
            &["--consumer-socket-mode", "8"][..],
            &["--consumer-socket-mode", "1000"],
            &["--allow", "x=camera"],
            &["--allow", "1000"],
            &["--trust-ram", "1000"],
            &["--trust-ram", "1000=w"],
            &["--consumer-queue", "0"],
            &["--max-consumers", "0"],
            &["--max-consumers-per-uid", "0"],
            &["--guest-name", "a b"],
            &["--guest-name", ""],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options() {
        let args = BufshareArgs::try_parse_from([
            "prog",
            "--socket-path",
            "s",
            "--max-ranges",
            "1",
            "--max-props-size",
            "2",
            "--max-buffers",
            "3",
            "--max-buffer-size",
            "4",
            "--once",
            "--fault-file",
            "/shared/fault",
            "--inspect-socket",
            "/run/inspect.sock",
        ])
        .unwrap();
        let config = Config::from(args);
        assert_eq!(
            config.limits,
            Limits {
                max_ranges: 1,
                max_props_size: 2,
                max_buffers: 3,
                max_buffer_size: 4,
            }
        );
        assert!(config.once);
        assert_eq!(config.fault_file, Some(PathBuf::from("/shared/fault")));
        assert_eq!(
            config.inspect_socket,
            Some(PathBuf::from("/run/inspect.sock"))
        );
    }

    #[test]
    fn several_guests() {
        let parse = |argv: &[&str]| {
            let mut all = vec!["prog"];
            all.extend_from_slice(argv);
            BufshareArgs::try_parse_from(all).map(Config::from)
        };
        let config = parse(&[
            "--guest",
            "vm0=/run/vm0.sock",
            "--guest",
            "desktop.1=rel/a=b.sock",
            "--consumer-socket",
            "/run/c.sock",
        ])
        .unwrap();
        assert_eq!(
            config.guests,
            [
                GuestConfig::new("vm0", "/run/vm0.sock"),
                GuestConfig::new("desktop.1", "rel/a=b.sock"),
            ]
        );
        assert!(config.check().is_ok());
        let config = parse(&["--guest", "vm0=/run/vm0.sock"]).unwrap();
        assert_eq!(config.guests, [GuestConfig::new("vm0", "/run/vm0.sock")]);

        // Parsed, but refused by the check.
        for argv in [
            &["--guest", "a=/s0", "--guest", "a=/s1"][..],
            &["--guest", "a=/s0", "--guest", "b=/s0"],
        ] {
            assert!(parse(argv).unwrap().check().is_err(), "{argv:?}");
        }
        for bad in [
            &["--guest", "vm0"][..],
            &["--guest", "=/run/s"],
            &["--guest", "vm0="],
            &["--guest", "a b=/run/s"],
            &["--guest", "vm0=/s", "--socket-path", "/t"],
            &["--guest", "vm0=/s", "--guest-name", "x"],
            &["--guest-name", "x"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_options() {
        assert!(BufshareArgs::try_parse_from(["prog"]).is_err());
        assert!(
            BufshareArgs::try_parse_from(["prog", "--socket-path", "s", "--max-ranges", "0"])
                .is_err()
        );
        assert!(BufshareArgs::try_parse_from([
            "prog",
            "--socket-path",
            "s",
            "--max-buffers",
            "4294967296"
        ])
        .is_err());
        // Properties: up to what consumers take, which also bounds the
        // commands the device reads.
        let props = |size: &str| {
            BufshareArgs::try_parse_from(["prog", "--socket-path", "s", "--max-props-size", size])
        };
        assert_eq!(props("65536").unwrap().max_props_size, 65536);
        for bad in ["65537", "4294967295", "0"] {
            assert!(props(bad).is_err(), "{bad}");
        }
    }
}
