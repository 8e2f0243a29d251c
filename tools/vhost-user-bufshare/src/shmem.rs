// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The SHMEM_MAP and SHMEM_UNMAP requests of one vhost-user connection,
//! sent in order by a thread of their own ([`Mapper`]).
//!
//! A frontend answers a SHMEM_MAP only once it has changed the guest's
//! memory map, and QEMU 11.1 sends the backend a SET_MEM_TABLE for it
//! (and waits for it to be handled) before it acks the map. The
//! vhost-user request handler that takes that SET_MEM_TABLE needs the
//! backend's lock; so requests are never sent, and their acks never
//! waited for, by a thread that holds it (the worker thread serving the
//! queues) or any lock that thread takes: the import hub queues jobs
//! ([`Job`]), the mapper's thread sends them one after the other and
//! reports each one done ([`Completion`]) without holding anything.
//!
//! Jobs run in the order they were queued: the unmapping of a range comes
//! before any later mapping over it.
//!
//! Jobs run only while the frontend runs the device
//! ([`Mapper::set_running`]): QEMU 11.1.3 dereferences the device of its
//! vhost connection in its SHMEM_MAP and SHMEM_UNMAP handlers, which it
//! clears when it stops the device (a reset), and dies of a request read
//! then (a segmentation fault). The unmaps of an importer's reset so wait
//! for its device to start again. QEMU 11.1.3 drops its mappings itself at
//! a device reset (not when it stops a VM, which the backend cannot tell
//! from a reset): those unmaps then fail, harmlessly (QEMU answers with an
//! error and keeps the channel), and are logged as such.
//!
//! QEMU 11.1 acks a SHMEM_MAP or SHMEM_UNMAP before it commits the change
//! to the guest's memory map; the commit is what sends the SET_MEM_TABLE.
//! So a job is reported done only once the next SET_MEM_TABLE came
//! ([`Mapper::memory_table_changed`]) after each request's ack, or
//! [`SETTLE`] passed without one (QEMU sends none once the table would
//! have more regions than the protocol's 8: it logs `vhost_set_mem_table
//! failed` and goes on), when the mapper was told to wait for them
//! ([`Mapper::await_memory_tables`]).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info};
use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags};
use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};

use crate::import::PAGE_SIZE;

/// Longest wait for the memory table that follows a request's ack.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Where SHMEM_MAP and SHMEM_UNMAP go: the frontend, through the
/// vhost-user backend channel ([`Backend`]), or a mock in tests.
pub trait ShmemChannel: Send + Sync {
    /// Maps `req.len` bytes of `fd` at `req.fd_offset` at `req.shm_offset`
    /// of shared memory region `req.shmid`; returns once the frontend
    /// acked it.
    fn map(&self, req: &VhostUserMMap, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// Unmaps what [`ShmemChannel::map`] mapped with the same `req`.
    fn unmap(&self, req: &VhostUserMMap) -> io::Result<()>;
}

impl ShmemChannel for Backend {
    fn map(&self, req: &VhostUserMMap, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.shmem_map(req, &fd).map(drop)
    }

    fn unmap(&self, req: &VhostUserMMap) -> io::Result<()> {
        self.shmem_unmap(req).map(drop)
    }
}

/// A piece of memory to map: `len` bytes of `fd` at `fd_offset`, at
/// `shm_offset` of the region; all three multiples of [`PAGE_SIZE`].
#[derive(Debug)]
pub struct Piece {
    /// The memory file.
    pub fd: OwnedFd,
    /// Where in it.
    pub fd_offset: u64,
    /// Where in the region.
    pub shm_offset: u64,
    /// How many bytes.
    pub len: u64,
}

/// What the mapper is to do.
#[derive(Debug)]
pub enum Job {
    /// Map the pieces of import `import`, in order, writable; if one
    /// fails, unmap those mapped and report the failure.
    Map {
        /// The import.
        import: u64,
        /// Its pieces.
        pieces: Vec<Piece>,
    },
    /// Unmap the ranges (`shm_offset`, `len`) of import `import`, each as
    /// it was mapped. A failure is logged (a frontend that reset the
    /// device may have unmapped them itself) and counts as done.
    Unmap {
        /// The import.
        import: u64,
        /// Its ranges.
        ranges: Vec<(u64, u64)>,
    },
}

/// A job carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// The pieces of `import` are mapped (`Ok`), or none is, and why.
    Mapped {
        /// The import.
        import: u64,
        /// Whether it worked.
        result: Result<(), String>,
    },
    /// The ranges of `import` are unmapped.
    Unmapped {
        /// The import.
        import: u64,
    },
}

/// Hears about the jobs done, without the mapper's lock held.
pub trait Completion: Send + Sync {
    /// `done` was done.
    fn done(&self, done: Done);
}

/// A job queued, and whether the device was stopped since it was queued
/// (or was then): its mappings may be gone.
type Queued = (Job, bool);

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Queued>,
    /// Whether the frontend runs the device: jobs wait otherwise.
    running: bool,
    stopped: bool,
}

/// The mapper of one connection; see the module.
#[derive(Default)]
pub struct Mapper {
    queue: Mutex<Queue>,
    wake: Condvar,
    channel: Mutex<Option<Arc<dyn ShmemChannel>>>,
    completion: Mutex<Option<Arc<dyn Completion>>>,
    /// Memory tables received (SET_MEM_TABLE), and whether to wait for
    /// one after each request.
    tables: Mutex<(u64, bool)>,
    table_changed: Condvar,
}

impl fmt::Debug for Mapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapper")
            .field("jobs", &lock(&self.queue).jobs.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn request(shm_offset: u64, fd_offset: u64, len: u64) -> VhostUserMMap {
    VhostUserMMap {
        shmid: bufshare_uapi::VIRTIO_BUFSHARE_SHM_IMPORT,
        fd_offset,
        shm_offset,
        len,
        flags: VhostUserMMapFlags::WRITABLE.bits(),
        ..Default::default()
    }
}

impl Mapper {
    /// A mapper with no channel yet (its maps fail until it has one).
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Sends the requests to `channel` from now on.
    pub fn set_channel(&self, channel: Arc<dyn ShmemChannel>) {
        *lock(&self.channel) = Some(channel);
    }

    /// Tells `completion` about each job done from now on.
    pub fn set_completion(&self, completion: Arc<dyn Completion>) {
        *lock(&self.completion) = Some(completion);
    }

    /// Waits, after each request's ack, for the next memory table (or
    /// [`SETTLE`]) before going on.
    pub fn await_memory_tables(&self) {
        lock(&self.tables).1 = true;
    }

    /// The frontend gave a memory table (SET_MEM_TABLE).
    pub fn memory_table_changed(&self) {
        lock(&self.tables).0 += 1;
        self.table_changed.notify_all();
    }

    /// The number of memory tables received so far.
    fn tables(&self) -> u64 {
        lock(&self.tables).0
    }

    /// Waits until more than `seen` memory tables were received, or
    /// [`SETTLE`] passed, if the mapper waits for them.
    fn settle(&self, seen: u64) {
        let deadline = Instant::now() + SETTLE;
        let mut tables = lock(&self.tables);
        while tables.1 && tables.0 <= seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                debug!("no memory table after {SETTLE:?}: going on");
                return;
            }
            tables = self
                .table_changed
                .wait_timeout(tables, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Whether the frontend runs the device now (it gave a memory table
    /// since it last stopped it): the thread runs jobs only then.
    pub fn set_running(&self, running: bool) {
        let mut queue = lock(&self.queue);
        if queue.running != running && !queue.jobs.is_empty() {
            info!(
                "{} map jobs {}",
                queue.jobs.len(),
                if running {
                    "resumed"
                } else {
                    "wait for the device to start"
                }
            );
        }
        if !running {
            for (_, after_stop) in &mut queue.jobs {
                *after_stop = true;
            }
        }
        queue.running = running;
        self.wake.notify_all();
    }

    /// Queues `job`.
    pub fn push(&self, job: Job) {
        let mut queue = lock(&self.queue);
        if queue.stopped {
            debug!("mapper stopped: {job:?} dropped");
            return;
        }
        let after_stop = !queue.running;
        queue.jobs.push_back((job, after_stop));
        self.wake.notify_all();
    }

    /// Number of jobs queued.
    pub fn queued(&self) -> usize {
        lock(&self.queue).jobs.len()
    }

    /// Carries out the first job queued, if any, running or not; whether
    /// there was one. (The mapper's thread does this while the device
    /// runs; tests call it directly.)
    pub fn run_one(&self) -> bool {
        let Some((job, after_stop)) = lock(&self.queue).jobs.pop_front() else {
            return false;
        };
        let done = self.carry_out(job, after_stop);
        let completion = lock(&self.completion).clone();
        if let Some(completion) = completion {
            completion.done(done);
        }
        true
    }

    /// Carries out every job queued, those queued meanwhile included.
    pub fn run_all(&self) {
        while self.run_one() {}
    }

    /// Starts the thread that carries the jobs out while the device runs,
    /// until [`Mapper::stop`].
    pub fn start(self: &Arc<Self>, name: &str) -> io::Result<JoinHandle<()>> {
        let mapper = Arc::clone(self);
        thread::Builder::new()
            .name(format!("shmem-{name}"))
            .spawn(move || loop {
                {
                    let mut queue = lock(&mapper.queue);
                    while (queue.jobs.is_empty() || !queue.running) && !queue.stopped {
                        queue = mapper
                            .wake
                            .wait(queue)
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                    }
                    if queue.stopped {
                        return;
                    }
                }
                mapper.run_one();
            })
    }

    /// Stops the thread: the jobs queued are dropped, and later ones are.
    pub fn stop(&self) {
        let mut queue = lock(&self.queue);
        queue.stopped = true;
        if !queue.jobs.is_empty() {
            info!("mapper stopped with {} jobs queued", queue.jobs.len());
        }
        queue.jobs.clear();
        self.wake.notify_all();
    }

    fn map_pieces(
        &self,
        channel: &dyn ShmemChannel,
        import: u64,
        pieces: &[Piece],
    ) -> Result<(), String> {
        for (i, piece) in pieces.iter().enumerate() {
            let aligned = [piece.fd_offset, piece.shm_offset, piece.len]
                .iter()
                .all(|v| v.is_multiple_of(PAGE_SIZE));
            let req = request(piece.shm_offset, piece.fd_offset, piece.len);
            let seen = self.tables();
            let result = if aligned && piece.len != 0 {
                channel.map(&req, piece.fd.as_fd())
            } else {
                Err(io::Error::other("not whole pages"))
            };
            if let Err(e) = result {
                for done in &pieces[..i] {
                    let seen = self.tables();
                    match channel.unmap(&request(done.shm_offset, 0, done.len)) {
                        Ok(()) => self.settle(seen),
                        Err(e) => {
                            crate::guest_warn!(
                                "import {import}: SHMEM_UNMAP after a failed map: {e}"
                            )
                        }
                    }
                }
                return Err(format!(
                    "SHMEM_MAP of {:#x} bytes at {:#x}: {e}",
                    piece.len, piece.shm_offset
                ));
            }
            self.settle(seen);
        }
        debug!("import {import}: {} pieces mapped", pieces.len());
        Ok(())
    }

    fn carry_out(&self, job: Job, after_stop: bool) -> Done {
        let channel = lock(&self.channel).clone();
        match job {
            Job::Map { import, pieces } => {
                let result = match channel {
                    Some(channel) => self.map_pieces(&*channel, import, &pieces),
                    None => Err(String::from(
                        "the frontend gave no backend channel (SHMEM not negotiated)",
                    )),
                };
                Done::Mapped { import, result }
            }
            Job::Unmap { import, ranges } => {
                if let Some(channel) = channel {
                    for &(shm_offset, len) in &ranges {
                        let seen = self.tables();
                        match channel.unmap(&request(shm_offset, 0, len)) {
                            Ok(()) => self.settle(seen),
                            Err(e) if after_stop => crate::guest_info!(
                                "import {import}: SHMEM_UNMAP {shm_offset:#x}+{len:#x}: {e} \
                                 (the device was reset since: gone with the reset)"
                            ),
                            Err(e) => crate::guest_warn!(
                                "import {import}: SHMEM_UNMAP {shm_offset:#x}+{len:#x}: {e}"
                            ),
                        }
                    }
                }
                debug!("import {import}: unmapped");
                Done::Unmapped { import }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A frontend that records the requests and fails the maps at
    /// offsets it is told to.
    #[derive(Debug, Default)]
    pub(crate) struct MockChannel {
        /// (map?, shm_offset, fd_offset, len), in order.
        pub log: Mutex<Vec<(bool, u64, u64, u64)>>,
        /// Maps at these offsets fail.
        pub fail_at: Mutex<Vec<u64>>,
    }

    impl ShmemChannel for MockChannel {
        fn map(&self, req: &VhostUserMMap, _fd: BorrowedFd<'_>) -> io::Result<()> {
            let (shm, fd, len) = (req.shm_offset, req.fd_offset, req.len);
            if lock(&self.fail_at).contains(&shm) {
                return Err(io::Error::other("mock refuses"));
            }
            lock(&self.log).push((true, shm, fd, len));
            Ok(())
        }

        fn unmap(&self, req: &VhostUserMMap) -> io::Result<()> {
            lock(&self.log).push((false, req.shm_offset, 0, req.len));
            Ok(())
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Done>>);

    impl Completion for Recorder {
        fn done(&self, done: Done) {
            lock(&self.0).push(done);
        }
    }

    fn piece(shm_offset: u64, len: u64) -> Piece {
        let file = tempfile::tempfile().unwrap();
        Piece {
            fd: OwnedFd::from(file),
            fd_offset: 0x1000,
            shm_offset,
            len,
        }
    }

    #[test]
    fn jobs_in_order_and_failures_undone() {
        let mapper = Mapper::new();
        let channel = Arc::new(MockChannel::default());
        let recorder = Arc::new(Recorder::default());
        mapper.set_completion(recorder.clone());
        // No channel: the map fails, cleanly.
        mapper.push(Job::Map {
            import: 1,
            pieces: vec![piece(0, 0x1000)],
        });
        mapper.run_all();
        assert!(matches!(
            &lock(&recorder.0)[0],
            Done::Mapped {
                import: 1,
                result: Err(_)
            }
        ));
        mapper.set_channel(channel.clone());
        mapper.push(Job::Map {
            import: 2,
            pieces: vec![piece(0, 0x1000), piece(0x1000, 0x2000)],
        });
        mapper.push(Job::Unmap {
            import: 2,
            ranges: vec![(0, 0x1000), (0x1000, 0x2000)],
        });
        lock(&channel.fail_at).push(0x5000);
        mapper.push(Job::Map {
            import: 3,
            pieces: vec![piece(0x3000, 0x2000), piece(0x5000, 0x1000)],
        });
        // Not whole pages: refused before the frontend sees it.
        mapper.push(Job::Map {
            import: 4,
            pieces: vec![piece(0x8000, 0x800)],
        });
        assert_eq!(mapper.queued(), 4);
        mapper.run_all();
        assert_eq!(
            *lock(&channel.log),
            [
                (true, 0, 0x1000, 0x1000),
                (true, 0x1000, 0x1000, 0x2000),
                (false, 0, 0, 0x1000),
                (false, 0x1000, 0, 0x2000),
                (true, 0x3000, 0x1000, 0x2000),
                (false, 0x3000, 0, 0x2000),
            ]
        );
        let done = lock(&recorder.0).clone();
        assert_eq!(
            done[1],
            Done::Mapped {
                import: 2,
                result: Ok(())
            }
        );
        assert_eq!(done[2], Done::Unmapped { import: 2 });
        assert!(matches!(
            &done[3],
            Done::Mapped {
                import: 3,
                result: Err(_)
            }
        ));
        assert!(matches!(
            &done[4],
            Done::Mapped {
                import: 4,
                result: Err(_)
            }
        ));
    }

    /// A frontend that gives a new memory table some time after each ack,
    /// as QEMU does, if `tables`.
    struct Committing {
        mapper: std::sync::Weak<Mapper>,
        tables: bool,
    }

    impl ShmemChannel for Committing {
        fn map(&self, _req: &VhostUserMMap, _fd: BorrowedFd<'_>) -> io::Result<()> {
            let mapper = self.mapper.clone();
            if self.tables {
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(50));
                    if let Some(mapper) = mapper.upgrade() {
                        mapper.memory_table_changed();
                    }
                });
            }
            Ok(())
        }

        fn unmap(&self, req: &VhostUserMMap) -> io::Result<()> {
            self.map(req, std::io::stdin().as_fd())
        }
    }

    #[test]
    fn done_once_the_memory_table_follows() {
        for tables in [true, false] {
            let mapper = Mapper::new();
            mapper.await_memory_tables();
            mapper.set_channel(Arc::new(Committing {
                mapper: Arc::downgrade(&mapper),
                tables,
            }));
            let recorder = Arc::new(Recorder::default());
            mapper.set_completion(recorder.clone());
            mapper.push(Job::Map {
                import: 1,
                pieces: vec![piece(0, 0x1000), piece(0x1000, 0x1000)],
            });
            let start = Instant::now();
            mapper.run_all();
            let took = start.elapsed();
            assert_eq!(lock(&recorder.0).len(), 1);
            if tables {
                // Two tables, each about 50 ms after its ack.
                assert!(took >= Duration::from_millis(100), "{took:?}");
                assert!(took < SETTLE, "{took:?}");
            } else {
                // No table: SETTLE after each piece, then on.
                assert!(took >= 2 * SETTLE, "{took:?}");
            }
        }
    }

    #[test]
    fn the_thread_runs_jobs_until_stopped() {
        let mapper = Mapper::new();
        let channel = Arc::new(MockChannel::default());
        mapper.set_channel(channel.clone());
        let thread = mapper.start("test").unwrap();
        mapper.push(Job::Unmap {
            import: 1,
            ranges: vec![(0, 0x1000)],
        });
        // Not while the device is stopped.
        thread::sleep(Duration::from_millis(100));
        assert!(lock(&channel.log).is_empty());
        assert_eq!(mapper.queued(), 1);
        mapper.set_running(true);
        let start = std::time::Instant::now();
        while lock(&channel.log).is_empty() {
            assert!(start.elapsed() < std::time::Duration::from_secs(10));
            thread::sleep(std::time::Duration::from_millis(1));
        }
        mapper.stop();
        thread.join().unwrap();
        mapper.push(Job::Unmap {
            import: 2,
            ranges: vec![(0, 0x1000)],
        });
        assert_eq!(mapper.queued(), 0, "dropped once stopped");
    }
}
