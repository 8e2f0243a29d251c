// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The serving loop: one vhost-user socket per guest, each listened on by
//! a thread of its own, which serves one frontend (QEMU) at a time with a
//! fresh device (no buffers, a generation of its own) and listens again
//! when it goes away, until told to stop.
//! Each guest has its own device state (buffer table, guest memory); a
//! frontend that disconnects drops its guest's buffers only.
//!
//! The inspect socket and the consumer socket, if asked for, are served all
//! along by threads of their own and see every guest: for consumers, each
//! guest is [`GuestConfig::name`], whose buffers go away (RESET) when its
//! frontend disconnects and come back as it registers them again.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;

use log::{error, info};
use thiserror::Error as ThisError;
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{Error as DaemonError, ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use bufshare_consumer::props::{is_name, is_name_char, NAME_MAX};
use bufshare_consumer::wire::MAX_PROPS_SIZE;

use crate::backend::{self, VhostUserBufshareBackend};
use crate::buffers::{Observers, ResetReason, SharedState, TableObserver};
use crate::consumer::{self, ConsumerConfig, ConsumerServer};
use crate::device::Limits;
use crate::fault::FaultFile;
use crate::import::hub::{End, ImportHub};
use crate::import::ImportConfig;
use crate::inspect::{self, InspectGuest, InspectServer};
use crate::socket::{ListenPoll, Wakeup};

/// Errors that stop the daemon, or the serving of a guest.
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
    /// A guest's thread could not be started.
    #[error("cannot start a thread for guest {0}: {1}")]
    Thread(String, io::Error),
}

/// One guest: a vhost-user socket, and the name consumers and the inspect
/// socket know its device by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestConfig {
    /// Its name: 1 to 63 characters out of `[A-Za-z0-9_.-]`, unique.
    pub name: String,
    /// The vhost-user socket its frontend connects to.
    pub socket_path: PathBuf,
}

impl GuestConfig {
    /// A guest named `name` on the socket at `socket_path`.
    pub fn new(name: impl Into<String>, socket_path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            socket_path: socket_path.into(),
        }
    }

    /// A guest on the socket at `socket_path`, named after it
    /// ([`default_guest_name`]).
    pub fn from_socket(socket_path: impl Into<PathBuf>) -> Self {
        let socket_path = socket_path.into();
        Self {
            name: default_guest_name(&socket_path),
            socket_path,
        }
    }
}

/// What the daemon serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The guests, each on a vhost-user socket of its own.
    pub guests: Vec<GuestConfig>,
    /// The devices' limits (the same for every guest).
    pub limits: Limits,
    /// Serve one connection per guest socket instead of listening again:
    /// the daemon stops when each guest's first frontend went away.
    pub once: bool,
    /// The file that says which fault to inject ([`crate::fault`]), if
    /// any: read by every guest's device, before each of its commands.
    pub fault_file: Option<PathBuf>,
    /// Where to serve the inspect socket ([`crate::inspect`]), if anywhere.
    pub inspect_socket: Option<PathBuf>,
    /// How to serve the consumer socket ([`crate::consumer`]), if at all.
    pub consumer: Option<ConsumerConfig>,
    /// Devices without `VIRTIO_BUFSHARE_F_EVENTS`
    /// ([`VhostUserBufshareBackend::without_events`]).
    pub no_events: bool,
    /// Guest-to-guest import ([`crate::import`]): off unless its
    /// `shm_size` is not 0.
    pub import: ImportConfig,
}

impl Config {
    /// Serves `guests` with the default limits, listening again after each
    /// connection, with no fault injection, inspect socket or consumer
    /// socket.
    pub fn new(guests: Vec<GuestConfig>) -> Self {
        Self {
            guests,
            limits: Limits::default(),
            once: false,
            fault_file: None,
            inspect_socket: None,
            consumer: None,
            no_events: false,
            import: ImportConfig::default(),
        }
    }

    /// Checks that the configuration holds together: at least one guest,
    /// names that are names, no two guests with the same name or socket,
    /// at most 65536 bytes of properties (what consumers take, and a
    /// bound on the commands the device reads).
    pub fn check(&self) -> Result<(), Error> {
        if self.guests.is_empty() {
            return Err(Error::Config(String::from("no guest to serve")));
        }
        let mut names = HashSet::new();
        let mut sockets = HashSet::new();
        for guest in &self.guests {
            if !is_name(&guest.name) {
                return Err(Error::Config(format!(
                    "bad guest name {:?}: 1 to 63 characters out of [A-Za-z0-9_.-]",
                    guest.name
                )));
            }
            if !names.insert(guest.name.as_str()) {
                return Err(Error::Config(format!(
                    "two guests are named {}",
                    guest.name
                )));
            }
            if !sockets.insert(guest.socket_path.as_path()) {
                return Err(Error::Config(format!(
                    "two guests on the socket {}",
                    guest.socket_path.display()
                )));
            }
        }
        // With or without consumers: the device reads commands of up to
        // that many bytes of properties, and a guest could have it
        // allocate gigabytes per command.
        if self.limits.max_props_size as usize > MAX_PROPS_SIZE {
            return Err(Error::Config(format!(
                "--max-props-size may be at most {MAX_PROPS_SIZE}, what consumers take"
            )));
        }
        let guests: Vec<&str> = self.guests.iter().map(|g| g.name.as_str()).collect();
        self.import.check(&guests).map_err(Error::Config)?;
        Ok(())
    }
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

/// Detaches the consumer server from the guests' states when dropped.
struct Observed<'a>(&'a [Arc<SharedState>]);

impl Drop for Observed<'_> {
    fn drop(&mut self) {
        for state in self.0 {
            state.lock().observer = None;
        }
    }
}

/// Stops the import hub's thread when dropped.
struct StopImports<'a>(Option<&'a Arc<ImportHub>>);

impl Drop for StopImports<'_> {
    fn drop(&mut self) {
        if let Some(hub) = self.0 {
            hub.stop();
        }
    }
}

/// Asks a running [`serve`] to stop, from any thread: the connections being
/// served are shut down and the sockets are no longer listened on.
pub struct Shutdown {
    requested: AtomicBool,
    event: EventFd,
    /// The connection being served, by guest.
    connections: Mutex<BTreeMap<usize, ShutdownHandle>>,
}

impl Shutdown {
    /// A shutdown switch, not yet pulled.
    pub fn new() -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Self {
            requested: AtomicBool::new(false),
            event: EventFd::new(EFD_NONBLOCK).map_err(Error::ShutdownEvent)?,
            connections: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Asks the daemon to stop.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // Never read: it stays readable for every guest's thread.
        if let Err(e) = self.event.write(1) {
            error!("cannot wake the daemon up: {e}");
        }
        for conn in lock(&self.connections).values() {
            conn.shutdown();
        }
    }

    /// Whether [`Shutdown::request`] was called.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Sets (or clears) the connection being served for guest `guest`.
    fn set_connection(&self, guest: usize, conn: Option<ShutdownHandle>) {
        let mut connections = lock(&self.connections);
        match conn {
            Some(conn) => {
                // A request that came before the handle was stored still
                // counts.
                if self.requested() {
                    conn.shutdown();
                }
                connections.insert(guest, conn);
            }
            None => {
                connections.remove(&guest);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Binds the vhost-user socket of `guest` (a stale file there is removed).
fn listen(guest: &GuestConfig) -> Result<Listener, Error> {
    let listener = Listener::new(&guest.socket_path, true)
        .map_err(|e| Error::Listen(guest.socket_path.clone(), e))?;
    info!(
        "guest {}: listening on {}",
        guest.name,
        guest.socket_path.display()
    );
    Ok(listener)
}

/// Serves the frontends of every guest of `config`, each guest on its
/// socket, one frontend at a time per guest, each with a freshly reset
/// device, until `shutdown` is requested (or, with `config.once`, until the
/// first connection of every guest ended).
///
/// The configuration is checked first ([`Config::check`]); then the
/// inspect and consumer sockets and every guest's socket are made (a stale
/// socket file is removed): an error there is returned before anything is
/// served. Each guest's socket stays bound between connections, so that a
/// frontend reconnecting at any time finds it (and waits in the backlog if
/// another one is being served); it is made again if someone removed the
/// file, and removed when the guest is no longer served.
///
/// An error while serving a guest (its socket cannot be made again, the
/// vhost-user daemon cannot start) ends the serving of that guest only; it
/// is logged, and returned once every guest is done.
pub fn serve(config: &Config, shutdown: &Shutdown) -> Result<(), Error> {
    config.check()?;
    let states: Vec<Arc<SharedState>> = config
        .guests
        .iter()
        .map(|_| Arc::new(SharedState::default()))
        .collect();
    // Up before the vhost-user sockets; stopped, and their sockets removed,
    // when dropped on return.
    let _inspect = match &config.inspect_socket {
        Some(path) => {
            let guests = config
                .guests
                .iter()
                .zip(&states)
                .map(|(guest, state)| InspectGuest::new(&guest.name, Arc::clone(state)))
                .collect();
            Some(InspectServer::start(path, guests)?)
        }
        None => None,
    };
    let consumers = match &config.consumer {
        Some(consumer) => Some(ConsumerServer::start(consumer.clone())?),
        None => None,
    };
    let imports = if config.import.enabled() {
        let hub = ImportHub::new(config.import.clone());
        hub.start()
            .map_err(|e| Error::Thread(String::from("import-revoke"), e))?;
        Some(hub)
    } else {
        if !config.import.rules.is_empty() {
            info!("--allow-import without --shm-size: no guest imports");
        }
        None
    };
    let imports = imports.as_ref();
    let _stop_imports = StopImports(imports);
    // Dropped before the consumer server.
    let observed = Observed(&states);
    for (guest, state) in config.guests.iter().zip(&states) {
        let mut observers: Vec<Arc<dyn TableObserver>> = Vec::new();
        let mut state = state.lock();
        if let Some(server) = &consumers {
            let events = server.guest(&guest.name)?;
            state.holders = Arc::clone(events.holders());
            observers.push(events);
            info!("guest {} for consumers", guest.name);
        }
        if let Some(hub) = &imports {
            hub.add_guest(&guest.name, Arc::clone(&state.holders));
            observers.push(hub.observer(&guest.name));
        }
        state.observer = match observers.len() {
            0 => None,
            1 => observers.pop(),
            _ => Some(Arc::new(Observers(observers))),
        };
    }
    let _observed = observed;
    let listeners = config
        .guests
        .iter()
        .map(listen)
        .collect::<Result<Vec<_>, _>>()?;

    let mut results: Vec<Result<(), Error>> = Vec::new();
    thread::scope(|scope| {
        let mut threads = Vec::new();
        for (index, ((guest, state), listener)) in
            config.guests.iter().zip(&states).zip(listeners).enumerate()
        {
            let spawned = thread::Builder::new()
                .name(format!("guest-{}", guest.name))
                .spawn_scoped(scope, move || {
                    let result = panic::catch_unwind(AssertUnwindSafe(|| {
                        serve_guest(config, index, listener, state, imports, shutdown)
                    }))
                    .unwrap_or_else(|panicked| {
                        // A bug: stop every guest, then pass it on.
                        shutdown.request();
                        panic::resume_unwind(panicked)
                    });
                    if let Err(e) = &result {
                        error!("guest {}: no longer served: {e}", guest.name);
                    }
                    result
                });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    // Stop the guests already served.
                    results.push(Err(Error::Thread(guest.name.clone(), e)));
                    shutdown.request();
                    break;
                }
            }
        }
        let mut panicked = None;
        for thread in threads {
            match thread.join() {
                Ok(result) => results.push(result),
                Err(panic) => {
                    panicked.get_or_insert(panic);
                }
            }
        }
        if let Some(panic) = panicked {
            panic::resume_unwind(panic);
        }
    });
    if shutdown.requested() {
        info!("shut down");
    } else {
        info!("every guest is done");
    }
    results.into_iter().collect()
}

/// `path` with each `{guest}` in it replaced by `name`: one fault file per
/// guest when several are served.
fn guest_path(path: &Path, name: &str) -> PathBuf {
    match path.to_str() {
        Some(p) if p.contains("{guest}") => PathBuf::from(p.replace("{guest}", name)),
        _ => path.to_path_buf(),
    }
}

/// Serves the frontends of guest `index` of `config`, one at a time, on
/// `listener`, keeping its device's buffers and guest memory in `state`.
fn serve_guest(
    config: &Config,
    index: usize,
    mut listener: Listener,
    state: &Arc<SharedState>,
    imports: Option<&Arc<ImportHub>>,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let guest = &config.guests[index];
    loop {
        if !wait_for_connection(&listener, shutdown)? {
            return Ok(());
        }

        let result = run_connection(config, index, shutdown, &mut listener, state, imports);
        // The connection's imports, buffers and guest memory go with it.
        if let Some(hub) = imports {
            hub.end_importer(&guest.name, End::Disconnected);
        }
        {
            let mut state = state.lock();
            state.connected = false;
            let dropped = state.drop_all(ResetReason::Disconnected);
            if dropped != 0 {
                info!(
                    "guest {}: {dropped} buffers dropped with the connection",
                    guest.name
                );
            }
            state.mem = None;
        }
        result?;

        if shutdown.requested() || config.once {
            return Ok(());
        }
        if !guest.socket_path.exists() {
            info!("guest {}: the socket file was removed", guest.name);
            drop(listener);
            listener = listen(guest)?;
        } else {
            info!(
                "guest {}: waiting for the frontend to reconnect",
                guest.name
            );
        }
    }
}

/// Serves the connection waiting on `listener` until it ends, keeping the
/// device's buffers and guest memory in `state`.
fn run_connection(
    config: &Config,
    index: usize,
    shutdown: &Shutdown,
    listener: &mut Listener,
    state: &Arc<SharedState>,
    imports: Option<&Arc<ImportHub>>,
) -> Result<(), Error> {
    let name = &config.guests[index].name;
    let mut backend = VhostUserBufshareBackend::with_state(config.limits, Arc::clone(state))?;
    if let Some(hub) = imports {
        backend = backend
            .with_imports(hub, name)
            .map_err(|e| Error::Thread(name.clone(), e))?;
    }
    if let Some(path) = &config.fault_file {
        backend = backend.with_fault_file(FaultFile::new(guest_path(path, name)));
    }
    if config.no_events {
        backend = backend.without_events();
    }
    let backend = Arc::new(RwLock::new(backend));
    let mut daemon = VhostUserDaemon::new(
        format!("bufshare-{name}"),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(Error::Daemon)?;

    daemon.start(listener).map_err(Error::Daemon)?;
    info!("guest {name}: frontend connected");
    // The holders of the buffers wake the worker thread up when they let
    // go of something.
    let holders = Arc::clone(&state.lock().holders);
    if let Some(handler) = daemon.get_epoll_handlers().first() {
        if let Err(e) = handler.register_listener(
            holders.wake_fd().as_raw_fd(),
            EventSet::IN,
            u64::from(backend::HOLDERS_EVENT),
        ) {
            error!("guest {name}: cannot listen to the holders of the buffers: {e}");
        }
    }
    state.lock().connected = true;
    shutdown.set_connection(index, daemon.shutdown_handle());
    let result = daemon.wait();
    shutdown.set_connection(index, None);

    // A frontend that goes away, even in the middle of a message, is no
    // reason to stop serving.
    match result {
        Ok(())
        | Err(DaemonError::HandleRequest(
            VhostUserError::Disconnected | VhostUserError::PartialMessage,
        )) => info!("guest {name}: frontend disconnected"),
        Err(e) => error!("guest {name}: connection ended: {e}"),
    }
    // Dropping the daemon stops its worker threads.
    Ok(())
}

/// Waits until a frontend connects (`true`) or a shutdown is requested
/// (`false`).
fn wait_for_connection(listener: &Listener, shutdown: &Shutdown) -> Result<bool, Error> {
    let poll = ListenPoll::new(listener, &shutdown.event).map_err(Error::Poll)?;
    if shutdown.requested() {
        return Ok(false);
    }
    // A request sets the flag, then signals the event: it wakes this up.
    let wakeup = poll.wait().map_err(Error::Poll)?;
    Ok(wakeup == Wakeup::Connection && !shutdown.requested())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_file_per_guest() {
        let p = Path::new("/run/{guest}/fault");
        assert_eq!(guest_path(p, "a"), PathBuf::from("/run/a/fault"));
        assert_eq!(guest_path(p, "b"), PathBuf::from("/run/b/fault"));
        let shared = Path::new("/run/fault");
        assert_eq!(guest_path(shared, "a"), PathBuf::from("/run/fault"));
    }

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
