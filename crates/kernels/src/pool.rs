//! A persistent thread pool for the per-token path.
//!
//! Workers are started once and wait for jobs; a job is one closure called on every thread with
//! `(thread_index, n_threads)`, and each thread picks its share of the work (a static split, or
//! items taken from a counter the job shares). Between jobs a worker spins briefly (a decode step
//! issues hundreds of jobs in a few milliseconds, and waking a sleeping thread costs tens of
//! microseconds) and then sleeps on a condition variable, so an idle engine does not burn a core. Fork-join pools that create tasks per operation cost
//! Rust engines 2-14x against llama.cpp on this path; this design avoids all per-job allocation.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Iterations a waiting worker spins before it goes to sleep (tens of microseconds).
const SPIN_ITERATIONS: u32 = 1 << 16;

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// The current job, valid while `remaining > 0` for the current generation.
    job: UnsafeCell<Option<*const Job>>,
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
}

// The raw job pointer is only dereferenced between the publishing `generation` bump and the
// `remaining` countdown, while `run` keeps the closure alive and blocks.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A fixed set of threads that run one job at a time; the calling thread takes part as thread 0.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
    run_lock: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` threads in all (the caller plus `n_threads - 1` workers); 0 means 1.
    pub fn new(n_threads: usize) -> ThreadPool {
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
        });
        let workers = (1..n_threads)
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("ferrolm-worker-{index}"))
                    .spawn(move || worker_loop(&shared, index, n_threads))
                    .expect("failed to spawn a worker thread")
            })
            .collect();
        ThreadPool { shared, workers, n_threads, run_lock: Mutex::new(()) }
    }

    /// The number of threads a job runs on.
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Calls `job(i, n)` once on each of the `n` threads and returns when all have finished.
    pub fn run<'a>(&self, job: &'a (dyn Fn(usize, usize) + Sync + 'a)) {
        if self.n_threads == 1 {
            job(0, 1);
            return;
        }
        let _serial = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        // Erase the lifetime: the pointer is not used after this function returns.
        let job_ptr: *const Job = unsafe { std::mem::transmute::<&'a (dyn Fn(usize, usize) + Sync + 'a), &'static Job>(job) };
        unsafe { *shared.job.get() = Some(job_ptr) };
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
        let own = catch_unwind(AssertUnwindSafe(|| job(0, self.n_threads)));
        let mut spins = 0u32;
        while shared.remaining.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        unsafe { *shared.job.get() = None };
        if let Err(payload) = own {
            std::panic::resume_unwind(payload);
        }
        if shared.panicked.swap(false, Ordering::Relaxed) {
            panic!("a worker thread panicked while running a kernel");
        }
    }
}

fn worker_loop(shared: &Shared, index: usize, n_threads: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin first, then sleep.
        let mut spins = 0u32;
        loop {
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            if shared.generation.load(Ordering::Acquire) != seen {
                break;
            }
            if spins < SPIN_ITERATIONS {
                spins += 1;
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
        if let Some(job) = unsafe { *shared.job.get() } {
            let job = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| job(index, n_threads))).is_err() {
                shared.panicked.store(true, Ordering::Relaxed);
            }
        }
        shared.remaining.fetch_sub(1, Ordering::Release);
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
        let pool = ThreadPool::new(3);
        for _ in 0..1000 {
            let hits = AtomicUsize::new(0);
            let mask = AtomicUsize::new(0);
            pool.run(&|i, n| {
                assert_eq!(n, 3);
                hits.fetch_add(1, Ordering::Relaxed);
                mask.fetch_or(1 << i, Ordering::Relaxed);
            });
            assert_eq!(hits.load(Ordering::Relaxed), 3);
            assert_eq!(mask.load(Ordering::Relaxed), 0b111);
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
