//! A persistent thread pool for the per-token path.
//!
//! Workers are started once and wait for jobs; a job is one closure called on every thread with
//! `(thread_index, n_threads)`, and each thread picks its share of the work (a static split, or
//! items taken from a counter the job shares). Fork-join pools that create tasks per operation
//! cost Rust engines 2-14x against llama.cpp on this path; this design avoids all per-job
//! allocation.
//!
//! Sharing the machine. A decode step issues hundreds of jobs of 10-50 us each, and every job
//! waits for its slowest thread, so each wait is bounded:
//! - between jobs a worker spins for [`WORKER_SPIN`] and then sleeps on a condition variable, so
//!   an idle engine does not burn a core;
//! - the caller, done with its own share, spins for [`CALLER_SPIN`] and then sleeps until the
//!   last worker wakes it, so it does not burn a core waiting for a thread that is not running;
//! - when another process competes for the cores, the OS deschedules one of our threads for a
//!   time slice (milliseconds) now and then, and every job waits for it until it returns: on the
//!   2-core machine one CPU-bound competitor cut decoding from 110 to 3-14 tokens/s (7 against
//!   140-150 on one thread, measured again with `benches/contention.sh`). So the caller measures
//!   how long it waits for the workers against its own share of each job; when waiting dominates
//!   a window of jobs, the following jobs run on the caller alone (`job(0, 1)`, which every job
//!   accepts) for a back-off period, doubled while the contention lasts, and then all threads are
//!   tried again. With the competitor decoding now runs at the one-thread speed (140-156 tokens/s),
//!   and on a quiet machine the pool stays on all threads. [`ThreadPool::run`] returns the number
//!   of threads a job ran on, for callers that read per-thread results.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a waiting worker spins for the next job before it sleeps. Longer than the gaps
/// between the jobs of a decode step (microseconds) and between tokens (sampling), and than the
/// usual cost of waking a thread on this virtual machine (15-70 us, when its virtual CPU has
/// halted; 1-5 ms now and then): with 200 us here and 50 us for the caller, a sleeping thread
/// that woke late made the other one time out and sleep in turn, job after job.
pub const WORKER_SPIN: Duration = Duration::from_millis(1);

/// How long the caller spins for the workers to finish a job before it sleeps until the last one
/// wakes it. On a quiet machine the wait is a few microseconds and passes 200 us in about one job
/// in a thousand (one in 250 passes 50 us); a descheduled worker keeps it waiting milliseconds.
pub const CALLER_SPIN: Duration = Duration::from_micros(200);

/// `spin_loop` hints between two reads of the clock while spinning (a hint takes about 25 ns on
/// this Zen 3, a clock read 30-70 ns).
const SPINS_PER_CLOCK: u32 = 64;

/// Job time (the caller's own shares plus its waits for the workers) over which contention is
/// judged: a few tokens of decoding, several OS time slices.
const WINDOW: Duration = Duration::from_millis(16);

/// The first period jobs run on the caller alone after a contended window.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The longest such period: while contention lasts the period doubles up to this, so the probe of
/// all threads (which costs a descheduled worker's wait, a few milliseconds) comes at most once a
/// second.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// The current job and the number of threads it runs on, valid while `remaining > 0` for the
    /// current generation.
    job: UnsafeCell<Option<(*const Job, usize)>>,
    /// Bumped once per job; workers compare it with the last one they ran.
    generation: AtomicU64,
    /// Workers that have not yet finished the current job.
    remaining: AtomicUsize,
    /// Set when a worker's share of a job panicked.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Workers asleep on `wake` (changed only under `sleep_lock`).
    sleeping: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    /// Set while the caller sleeps on `done` (set under `done_lock`); the worker that brings
    /// `remaining` to 0 then wakes it.
    caller_asleep: AtomicBool,
    done_lock: Mutex<()>,
    done: Condvar,
}

// The raw job pointer is only dereferenced between the publishing `generation` bump and the
// `remaining` countdown, while `run` keeps the closure alive and blocks.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// The caller's record of recent jobs (under `run_lock`): when to run jobs on the caller alone.
struct Schedule {
    /// Jobs run on the caller alone until then.
    solo_until: Option<Instant>,
    /// The next solo period.
    backoff: Duration,
    /// The current window: the caller's own shares, and its waits for the workers after them.
    work: Duration,
    wait: Duration,
}

impl Schedule {
    /// Adds a job run on all `n_threads`; at the end of a window, decides whether the next jobs
    /// run on the caller alone.
    fn record(&mut self, work: Duration, wait: Duration, now: Instant, n_threads: usize) {
        self.work += work;
        self.wait += wait;
        if self.work + self.wait < WINDOW {
            return;
        }
        // Over the window the jobs took longer than the caller's shares times the threads: the
        // caller alone would have been faster even with the work shared perfectly. In 16 ms
        // windows of decoding on a quiet machine the caller waits 2-7% of its own time (median),
        // and longer than its own time at most once in 5 seconds (the virtual CPUs stall for
        // milliseconds now and then); with a CPU-bound competitor it waits 16-22x its own time.
        // 4 ms windows and waits over half the own time sent quiet runs to the caller alone 2-4
        // times a second, and decoding was 7-13% slower than with the old pool.
        if self.wait > self.work * (n_threads as u32 - 1) {
            self.solo_until = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        } else {
            self.backoff = FIRST_BACKOFF;
        }
        self.work = Duration::ZERO;
        self.wait = Duration::ZERO;
    }
}

/// A fixed set of threads that run one job at a time; the calling thread takes part as thread 0.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
    run_lock: Mutex<Schedule>,
    /// Every job on the caller alone, whatever the schedule says (for tests).
    solo_forced: AtomicBool,
}

/// Worker threads that could not be started: the system refused one (a limit on threads or
/// memory). Its message is one line that says how many threads were asked for, why the system
/// refused, and what to do.
#[derive(Debug)]
pub struct SpawnError {
    /// Threads asked for, the caller included.
    pub wanted: usize,
    /// Threads that were running when the system refused the next one, the caller included.
    pub started: usize,
    /// The system's reason.
    pub error: std::io::Error,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (wanted, started, error) = (self.wanted, self.started, &self.error);
        write!(
            f,
            "cannot start {wanted} kernel threads: {error}; {started} started, so ask for {started} or fewer, or raise the system's limit on threads"
        )
    }
}

// The cause is part of the message, so it is not repeated as a source.
impl std::error::Error for SpawnError {}

/// Starts worker `index` running the closure (`std::thread::Builder::spawn`, or a stand-in that
/// fails in tests).
type Spawner<'a> = dyn FnMut(usize, Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>> + 'a;

/// Starts worker `index` as a named thread.
fn spawn_thread(index: usize, body: Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("ferrolm-worker-{index}")).spawn(body)
}

impl ThreadPool {
    /// A pool of `n_threads` threads in all (the caller plus `n_threads - 1` workers); 0 means 1.
    /// Fails, with the started workers stopped again, when the system refuses a thread.
    pub fn try_new(n_threads: usize) -> Result<ThreadPool, SpawnError> {
        ThreadPool::try_start(n_threads, &mut spawn_thread)
    }

    /// As [`ThreadPool::try_new`], but when the system refuses a thread the pool runs on the
    /// threads that did start (at least the caller): [`ThreadPool::n_threads`] says how many. It
    /// does not fail.
    pub fn new(n_threads: usize) -> ThreadPool {
        ThreadPool::start(n_threads, &mut spawn_thread).0
    }

    fn try_start(n_threads: usize, spawn: &mut Spawner) -> Result<ThreadPool, SpawnError> {
        let wanted = n_threads.max(1);
        match ThreadPool::start(wanted, spawn) {
            (pool, None) => Ok(pool),
            // Dropping the pool stops and joins the workers that did start.
            (pool, Some(error)) => Err(SpawnError { wanted, started: pool.n_threads, error }),
        }
    }

    /// Starts up to `n_threads` threads in all, stopping at the first the system refuses: the pool
    /// of those that started, and the refusal.
    fn start(n_threads: usize, spawn: &mut Spawner) -> (ThreadPool, Option<std::io::Error>) {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            generation: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            caller_asleep: AtomicBool::new(false),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(n_threads - 1);
        let mut refused = None;
        for index in 1..n_threads {
            let shared = Arc::clone(&shared);
            match spawn(index, Box::new(move || worker_loop(&shared, index))) {
                Ok(handle) => workers.push(handle),
                Err(error) => {
                    refused = Some(error);
                    break;
                }
            }
        }
        let n_threads = workers.len() + 1;
        let schedule = Schedule { solo_until: None, backoff: FIRST_BACKOFF, work: Duration::ZERO, wait: Duration::ZERO };
        (ThreadPool { shared, workers, n_threads, run_lock: Mutex::new(schedule), solo_forced: AtomicBool::new(false) }, refused)
    }

    /// The number of threads a job runs on at most (buffers with one slot per thread are sized
    /// by it); a job may run on the caller alone, see [`ThreadPool::run`].
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Runs every job on the calling thread alone while `on`, as the pool does when it finds the
    /// machine contended: lets tests check that callers handle jobs run on one thread.
    pub fn force_solo(&self, on: bool) {
        self.solo_forced.store(on, Ordering::Relaxed);
    }

    /// Calls `job(i, n)` once on each of `n` threads and returns `n` when all have finished: all
    /// the pool's threads, or 1 (`job(0, 1)` on the caller) while the machine is contended. A
    /// caller that reads per-thread results reads the first `n`.
    pub fn run<'a>(&self, job: &'a (dyn Fn(usize, usize) + Sync + 'a)) -> usize {
        if self.n_threads == 1 {
            job(0, 1);
            return 1;
        }
        let mut schedule = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.solo_forced.load(Ordering::Relaxed) {
            job(0, 1);
            return 1;
        }
        if let Some(until) = schedule.solo_until {
            if Instant::now() < until {
                job(0, 1);
                return 1;
            }
            schedule.solo_until = None;
        }
        let shared = &*self.shared;
        // Erase the lifetime: the pointer is not used after this function returns.
        let job_ptr: *const Job = unsafe { std::mem::transmute::<&'a (dyn Fn(usize, usize) + Sync + 'a), &'static Job>(job) };
        unsafe { *shared.job.get() = Some((job_ptr, self.n_threads)) };
        shared.remaining.store(self.n_threads - 1, Ordering::Relaxed);
        let any_asleep = {
            let _guard = shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.generation.fetch_add(1, Ordering::Release);
            shared.sleeping.load(Ordering::Relaxed) > 0
        };
        // Spinning workers see the new generation by themselves; waking is a system call, made
        // only when one sleeps. A worker that is about to sleep checks the generation under the
        // same lock, so it cannot miss this job.
        if any_asleep {
            shared.wake.notify_all();
        }
        let start = Instant::now();
        let own = catch_unwind(AssertUnwindSafe(|| job(0, self.n_threads)));
        let own_end = Instant::now();
        let all_done = if shared.remaining.load(Ordering::Acquire) == 0 {
            own_end
        } else {
            wait_for_workers(shared, own_end);
            Instant::now()
        };
        unsafe { *shared.job.get() = None };
        if let Err(payload) = own {
            std::panic::resume_unwind(payload);
        }
        if shared.panicked.swap(false, Ordering::Relaxed) {
            panic!("a worker thread panicked while running a kernel");
        }
        // A job that had to wake a sleeping worker measured the wake-up, not contention.
        if !any_asleep {
            schedule.record(own_end - start, all_done - own_end, all_done, self.n_threads);
        }
        self.n_threads
    }
}

/// The caller's wait for `remaining` to reach 0: spins for [`CALLER_SPIN`] after `since`, then
/// sleeps until the last worker wakes it.
fn wait_for_workers(shared: &Shared, since: Instant) {
    let mut spins = 0u32;
    while shared.remaining.load(Ordering::Acquire) != 0 {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(SPINS_PER_CLOCK) && since.elapsed() >= CALLER_SPIN {
            let mut guard = shared.done_lock.lock().unwrap_or_else(|e| e.into_inner());
            // SeqCst on both sides (this store then the load of `remaining`; the worker's
            // decrement then its load of `caller_asleep`): either the caller sees 0 or the
            // last worker sees the caller asleep, and it takes `done_lock` before it notifies,
            // so the notification cannot come between this check and the wait.
            shared.caller_asleep.store(true, Ordering::SeqCst);
            while shared.remaining.load(Ordering::SeqCst) != 0 {
                guard = shared.done.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            shared.caller_asleep.store(false, Ordering::Relaxed);
            return;
        }
        std::hint::spin_loop();
    }
}

fn worker_loop(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin first, then sleep.
        let mut spins = 0u32;
        let mut spin_start = None;
        loop {
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            if shared.generation.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            // The clock is read only when no job came within the first few spins.
            if !spins.is_multiple_of(SPINS_PER_CLOCK) || spin_start.get_or_insert_with(Instant::now).elapsed() < WORKER_SPIN {
                std::hint::spin_loop();
                continue;
            }
            let guard = shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            if shared.generation.load(Ordering::Acquire) == seen && !shared.shutdown.load(Ordering::Acquire) {
                shared.sleeping.fetch_add(1, Ordering::Relaxed);
                let guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                shared.sleeping.fetch_sub(1, Ordering::Relaxed);
                drop(guard);
            }
        }
        seen = shared.generation.load(Ordering::Acquire);
        if let Some((job, n_threads)) = unsafe { *shared.job.get() } {
            let job = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| job(index, n_threads))).is_err() {
                shared.panicked.store(true, Ordering::Relaxed);
            }
        }
        if shared.remaining.fetch_sub(1, Ordering::SeqCst) == 1 && shared.caller_asleep.load(Ordering::SeqCst) {
            let _guard = shared.done_lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.done.notify_one();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let _guard = self.shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// The half-open range of `n_items` that thread `i` of `n` takes in a static split.
#[inline]
pub fn split_range(n_items: usize, i: usize, n: usize) -> std::ops::Range<usize> {
    let per = n_items.div_ceil(n.max(1));
    let start = (i * per).min(n_items);
    start..(start + per).min(n_items)
}

/// A raw pointer that threads may share to write disjoint parts of one output buffer.
#[derive(Clone, Copy)]
pub struct SharedMut<T>(*mut T);
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// Wraps a slice's pointer.
    pub fn new(slice: &mut [T]) -> SharedMut<T> {
        SharedMut(slice.as_mut_ptr())
    }

    /// Writes `value` at `index`.
    ///
    /// # Safety
    /// `index` is in bounds of the wrapped slice, the slice outlives the job, and no other thread
    /// touches the same index during the job.
    #[inline(always)]
    pub unsafe fn write(&self, index: usize, value: T) {
        unsafe { self.0.add(index).write(value) }
    }

    /// A mutable sub-slice `[start, start + len)`.
    ///
    /// # Safety
    /// As for [`SharedMut::write`], for the whole range.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_thread_runs_each_job_once() {
        // A fresh pool runs its first jobs on all threads; later ones may run on the caller alone
        // (jobs this small would be faster so, and a busy test machine may deschedule a worker).
        let pool = ThreadPool::new(3);
        assert_eq!(run_checked(&pool, &|_, _| {}), 3);
        for _ in 0..1000 {
            run_checked(&pool, &|_, _| {});
        }
    }

    #[test]
    fn workers_wake_after_sleeping() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let hits = AtomicUsize::new(0);
        pool.run(&|_, _| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn forced_solo_runs_each_job_once_on_the_caller() {
        let pool = ThreadPool::new(3);
        let caller = std::thread::current().id();
        pool.force_solo(true);
        for _ in 0..100 {
            let hits = AtomicUsize::new(0);
            let ran = pool.run(&|i, n| {
                assert_eq!((i, n), (0, 1));
                assert_eq!(std::thread::current().id(), caller);
                hits.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!((ran, hits.load(Ordering::Relaxed)), (1, 1));
        }
        pool.force_solo(false);
        let mask = AtomicUsize::new(0);
        let ran = pool.run(&|i, _| {
            mask.fetch_or(1 << i, Ordering::Relaxed);
        });
        assert_eq!(ran, 3);
        assert_eq!(mask.load(Ordering::Relaxed), 0b111);
    }

    /// Runs `job` and checks that each of the `n` threads it reports ran it exactly once, with `n`.
    fn run_checked(pool: &ThreadPool, job: &(dyn Fn(usize, usize) + Sync)) -> usize {
        let (hits, mask, seen_n) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
        let ran = pool.run(&|i, n| {
            job(i, n);
            hits.fetch_add(1, Ordering::Relaxed);
            mask.fetch_or(1 << i, Ordering::Relaxed);
            seen_n.store(n, Ordering::Relaxed);
        });
        assert_eq!((hits.load(Ordering::Relaxed), mask.load(Ordering::Relaxed), seen_n.load(Ordering::Relaxed)), (ran, (1 << ran) - 1, ran));
        ran
    }

    #[test]
    fn a_descheduled_worker_sends_jobs_to_the_caller_until_the_back_off_ends() {
        // A worker that takes milliseconds while the caller's share is empty looks like one the
        // OS has descheduled: within a window or two of such jobs the pool runs them on the
        // caller alone.
        let pool = ThreadPool::new(2);
        let slow_worker = |i: usize, _: usize| {
            if i != 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        let solo_after = (0..100).position(|_| run_checked(&pool, &slow_worker) == 1);
        assert!(solo_after.is_some(), "the pool never ran a job on the caller alone");
        // The first back-off is FIRST_BACKOFF; after it the next job tries all threads again.
        std::thread::sleep(FIRST_BACKOFF + Duration::from_millis(10));
        assert_eq!(run_checked(&pool, &|_, _| {}), 2);
    }

    /// Starts workers as `spawn_thread` does up to index `refuse`, which the "system" refuses;
    /// counts the workers that have exited in `exited`.
    fn refusing_spawner(refuse: usize, exited: Arc<AtomicUsize>) -> impl FnMut(usize, Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>> {
        move |index, body| {
            if index >= refuse {
                return Err(std::io::Error::other("no more threads"));
            }
            let exited = Arc::clone(&exited);
            spawn_thread(
                index,
                Box::new(move || {
                    body();
                    exited.fetch_add(1, Ordering::SeqCst);
                }),
            )
        }
    }

    #[test]
    fn a_refused_thread_is_a_one_line_error_and_the_started_workers_stop() {
        let exited = Arc::new(AtomicUsize::new(0));
        let err = ThreadPool::try_start(4, &mut refusing_spawner(2, exited.clone())).err().expect("the third thread was refused");
        assert_eq!((err.wanted, err.started), (4, 2));
        assert_eq!(
            err.to_string(),
            "cannot start 4 kernel threads: no more threads; 2 started, so ask for 2 or fewer, or raise the system's limit on threads"
        );
        // The one worker that started was stopped and joined before the error came back.
        assert_eq!(exited.load(Ordering::SeqCst), 1);
        assert!(ThreadPool::try_new(3).is_ok());
    }

    #[test]
    fn new_runs_on_the_threads_that_started_when_one_is_refused() {
        let exited = Arc::new(AtomicUsize::new(0));
        let (pool, refused) = ThreadPool::start(4, &mut refusing_spawner(2, exited.clone()));
        assert!(refused.is_some());
        assert_eq!(pool.n_threads(), 2);
        // Every thread sees the pool's real size, the workers started before the refusal too.
        assert_eq!(run_checked(&pool, &|_, n| assert_eq!(n, 2)), 2);
        drop(pool);
        assert_eq!(exited.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn split_range_covers_everything_once() {
        for n_items in [0, 1, 7, 64, 577] {
            for n in 1..5 {
                let mut covered = vec![0; n_items];
                for i in 0..n {
                    for j in split_range(n_items, i, n) {
                        covered[j] += 1;
                    }
                }
                assert!(covered.iter().all(|&c| c == 1));
            }
        }
    }

    #[test]
    fn worker_panic_is_reported_not_hung() {
        let pool = ThreadPool::new(2);
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i, _| {
                if i == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(result.is_err());
        // The pool still works afterwards.
        let hits = AtomicUsize::new(0);
        pool.run(&|_, _| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 2);
    }
}
