// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The serving loop: listen on the socket, serve one frontend (QEMU) at a
//! time with a fresh device, and listen again when it goes away, until told
//! to stop. The inspect socket and the consumer socket, if asked for, are
//! served all along by threads of their own and see the device of the
//! connection being served; for consumers, the device is the guest
//! [`Config::guest_name`], whose buffers go away (RESET) when its frontend
//! disconnects and come back as it registers them again.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use log::{error, info};
use thiserror::Error as ThisError;
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{Error as DaemonError, ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use bufshare_consumer::props::{is_name_char, NAME_MAX};
use bufshare_consumer::wire::MAX_PROPS_SIZE;

use crate::backend::{self, VhostUserBufshareBackend};
use crate::buffers::{ResetReason, SharedState};
use crate::consumer::{self, ConsumerConfig, ConsumerServer};
use crate::device::Limits;
use crate::fault::FaultFile;
use crate::inspect::{self, InspectServer};

/// Errors that stop the daemon.
#[derive(Debug, ThisError)]
pub enum Error {
    /// The socket could not be made.
    #[error("cannot listen on {0}: {1}")]
    Listen(PathBuf, VhostUserError),
    /// Waiting for a frontend failed.
    #[error("cannot wait for a connection: {0}")]
    Poll(io::Error),
    /// The backend could not be made.
    #[error("cannot create the backend: {0}")]
    Backend(#[from] backend::Error),
    /// The vhost-user daemon could not be made or started.
    #[error("vhost-user daemon: {0}")]
    Daemon(DaemonError),
    /// The shutdown event could not be made.
    #[error("cannot create the shutdown event: {0}")]
    ShutdownEvent(io::Error),
    /// The inspect socket could not be served.
    #[error("inspect socket: {0}")]
    Inspect(#[from] inspect::Error),
    /// The consumer socket could not be served.
    #[error("{0}")]
    Consumer(#[from] consumer::Error),
    /// The configuration does not hold together.
    #[error("{0}")]
    Config(String),
}

/// What the daemon serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The vhost-user socket to listen on.
    pub socket_path: PathBuf,
    /// The device's limits.
    pub limits: Limits,
    /// Stop after the first connection instead of listening again.
    pub once: bool,
    /// The file that says which fault to inject ([`crate::fault`]), if any.
    pub fault_file: Option<PathBuf>,
    /// Where to serve the inspect socket ([`crate::inspect`]), if anywhere.
    pub inspect_socket: Option<PathBuf>,
    /// How to serve the consumer socket ([`crate::consumer`]), if at all.
    pub consumer: Option<ConsumerConfig>,
    /// The guest's name, in what consumers receive.
    pub guest_name: String,
}

/// The guest name made of a socket path: its file name without extension,
/// with characters out of `[A-Za-z0-9_.-]` made `_`, at most 63 of them;
/// `guest` if that leaves nothing.
pub fn default_guest_name(socket_path: &Path) -> String {
    let stem = socket_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii() && is_name_char(c as u8) {
                c
            } else {
                '_'
            }
        })
        .take(NAME_MAX)
        .collect();
    if name.is_empty() {
        String::from("guest")
    } else {
        name
    }
}

/// Detaches the consumer server from the state when dropped.
struct Observed<'a>(&'a SharedState);

impl Drop for Observed<'_> {
    fn drop(&mut self) {
        self.0.lock().observer = None;
    }
}

/// Asks a running [`serve`] to stop, from any thread: the connection being
/// served is shut down and the socket is no longer listened on.
pub struct Shutdown {
    requested: AtomicBool,
    event: EventFd,
    connection: Mutex<Option<ShutdownHandle>>,
}

impl Shutdown {
    /// A shutdown switch, not yet pulled.
    pub fn new() -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Self {
            requested: AtomicBool::new(false),
            event: EventFd::new(EFD_NONBLOCK).map_err(Error::ShutdownEvent)?,
            connection: Mutex::new(None),
        }))
    }

    /// Asks the daemon to stop.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        if let Err(e) = self.event.write(1) {
            error!("cannot wake the daemon up: {e}");
        }
        if let Some(conn) = lock(&self.connection).as_ref() {
            conn.shutdown();
        }
    }

    /// Whether [`Shutdown::request`] was called.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    fn set_connection(&self, conn: Option<ShutdownHandle>) {
        let mut slot = lock(&self.connection);
        *slot = conn;
        // A request that came before the handle was stored still counts.
        if self.requested() {
            if let Some(conn) = slot.as_ref() {
                conn.shutdown();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves frontends on `config.socket_path`, one at a time, each with a
/// freshly reset device, until `shutdown` is requested (or, with
/// `config.once`, until the first connection ends).
///
/// A stale socket file is removed first. The socket stays bound between
/// connections, so that a frontend reconnecting at any time finds it (and
/// waits in the backlog if another one is being served); it is made again if
/// someone removed the file, and removed on return.
pub fn serve(config: &Config, shutdown: &Shutdown) -> Result<(), Error> {
    let listen = || {
        let listener = Listener::new(&config.socket_path, true)
            .map_err(|e| Error::Listen(config.socket_path.clone(), e))?;
        info!("listening on {}", config.socket_path.display());
        Ok::<_, Error>(listener)
    };
    let state = Arc::new(SharedState::default());
    // Up before the vhost-user socket; stopped, and their sockets removed,
    // when dropped on return.
    let _inspect = match &config.inspect_socket {
        Some(path) => Some(InspectServer::start(path, Arc::clone(&state))?),
        None => None,
    };
    let consumers = match &config.consumer {
        Some(consumer) => {
            if config.limits.max_props_size as usize > MAX_PROPS_SIZE {
                return Err(Error::Config(format!(
                    "consumers take at most {MAX_PROPS_SIZE} bytes of properties: \
                     lower --max-props-size"
                )));
            }
            Some(ConsumerServer::start(consumer.clone())?)
        }
        None => None,
    };
    // Dropped before the consumer server.
    let _observed = match &consumers {
        Some(server) => {
            state.lock().observer = Some(server.guest(&config.guest_name)?);
            info!("guest {} for consumers", config.guest_name);
            Some(Observed(&state))
        }
        None => None,
    };
    let mut listener = listen()?;
    loop {
        if !wait_for_connection(&listener, shutdown)? {
            info!("shutting down");
            return Ok(());
        }

        serve_connection(config, shutdown, &mut listener, &state)?;

        if shutdown.requested() {
            info!("shutting down");
            return Ok(());
        }
        if config.once {
            return Ok(());
        }
        if !config.socket_path.exists() {
            info!("the socket file was removed");
            drop(listener);
            listener = listen()?;
        } else {
            info!("waiting for the frontend to reconnect");
        }
    }
}

/// Serves the connection waiting on `listener` until it ends, keeping the
/// device's buffers and guest memory in `state`; they are dropped when it
/// ends.
fn serve_connection(
    config: &Config,
    shutdown: &Shutdown,
    listener: &mut Listener,
    state: &Arc<SharedState>,
) -> Result<(), Error> {
    let result = run_connection(config, shutdown, listener, state);
    let mut state = state.lock();
    let dropped = state.drop_all(ResetReason::Disconnected);
    if dropped != 0 {
        info!("{dropped} buffers dropped with the connection");
    }
    state.mem = None;
    result
}

fn run_connection(
    config: &Config,
    shutdown: &Shutdown,
    listener: &mut Listener,
    state: &Arc<SharedState>,
) -> Result<(), Error> {
    let mut backend = VhostUserBufshareBackend::with_state(config.limits, Arc::clone(state))?;
    if let Some(path) = &config.fault_file {
        backend = backend.with_fault_file(FaultFile::new(path));
    }
    let backend = Arc::new(RwLock::new(backend));
    let mut daemon = VhostUserDaemon::new(
        String::from("vhost-user-bufshare"),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(Error::Daemon)?;

    daemon.start(listener).map_err(Error::Daemon)?;
    info!("frontend connected");
    shutdown.set_connection(daemon.shutdown_handle());
    let result = daemon.wait();
    shutdown.set_connection(None);

    // A frontend that goes away, even in the middle of a message, is no
    // reason to stop serving.
    match result {
        Ok(())
        | Err(DaemonError::HandleRequest(
            VhostUserError::Disconnected | VhostUserError::PartialMessage,
        )) => info!("frontend disconnected"),
        Err(e) => error!("connection ended: {e}"),
    }
    // Dropping the daemon stops its worker threads.
    Ok(())
}

/// Waits until a frontend connects (`true`) or a shutdown is requested
/// (`false`).
fn wait_for_connection(listener: &Listener, shutdown: &Shutdown) -> Result<bool, Error> {
    const LISTENER: u64 = 0;
    const SHUTDOWN: u64 = 1;

    let epoll = Epoll::new().map_err(Error::Poll)?;
    for (fd, token) in [
        (listener.as_raw_fd(), LISTENER),
        (shutdown.event.as_raw_fd(), SHUTDOWN),
    ] {
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
            .map_err(Error::Poll)?;
    }
    let mut events = [EpollEvent::default(); 2];
    loop {
        if shutdown.requested() {
            return Ok(false);
        }
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Poll(e)),
        };
        if events[..n].iter().any(|e| e.data() == SHUTDOWN) || shutdown.requested() {
            return Ok(false);
        }
        if events[..n].iter().any(|e| e.data() == LISTENER) {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names() {
        for (path, name) in [
            ("/run/vm0.sock", "vm0"),
            ("/tmp/bufshare.sock", "bufshare"),
            ("relative/my-vm.2", "my-vm"),
            ("/run/a b/c d+e.sock", "c_d_e"),
            ("/run/é.sock", "_"),
            ("/", "guest"),
            ("", "guest"),
            ("/run/.sock", ".sock"),
        ] {
            assert_eq!(default_guest_name(Path::new(path)), name, "{path}");
        }
        let long = format!("/run/{}.sock", "x".repeat(100));
        assert_eq!(default_guest_name(Path::new(&long)), "x".repeat(63));
    }
}
