//! Thread pools, tasks and parallel loops: `conc_pool_*`, `conc_task_*`
//! and `conc_parallel_for`.
//!
//! # Design
//!
//! **Queues.** Each pool has one queue per worker thread and one
//! *injector* queue. A task spawned by a worker of the pool goes to the
//! back of that worker's own queue, which the worker pops from the back
//! (LIFO: the newest, cache-warm, task first, and a recursive computation
//! stays depth-first, so its memory stays bounded). A task spawned from
//! outside the pool goes to the back of the injector. An idle worker looks
//! in its own queue, then the injector (front), then *steals* from the
//! front of the other workers' queues (the oldest, usually biggest, piece
//! of work). Each queue is a `VecDeque` behind a small lock that spins,
//! then yields (it guards a few instructions; its unlock is a plain
//! store), with the queue's length mirrored in an atomic so that empty
//! queues are skipped without locking. A lock-free Chase-Lev deque would
//! save a little per push or pop, but needs epoch-based reclamation for
//! its buffer; the tasks here are meant to cost microseconds, and a lock
//! is easy to get right and to make fork-safe.
//!
//! **Cost.** An atomic read-modify-write costs ~25 ns on the development
//! machine, so the common path counts them: a spawn followed by a join
//! that takes the task back does five (two registry locks, two queue
//! locks, the spawn's fence) plus a `malloc`/`free`. The default pool is
//! never freed, so its tasks take no reference on it, and ids come from
//! per-thread blocks of the counter.
//!
//! **Tasks** are heap objects with a reference count (one reference for
//! the queue entry, one for the handle) and a state word: queued, running,
//! done (or cancelled, for the internal tasks of `conc_parallel_for`). Any
//! thread *claims* a queued task with one compare-and-swap before running
//! it, so a task runs exactly once whoever finds it first; a queue entry
//! whose task was already claimed elsewhere is simply dropped.
//!
//! **Joins help.** A thread that joins a task which is still queued takes
//! it back and runs it itself (the fast path of a spawn followed by a
//! join: no other thread is involved). While the task runs elsewhere, the
//! joiner runs other queued tasks of the same pool, then spins a short
//! while, then sleeps on the task's state word. `conc_parallel_for`
//! likewise: the calling thread claims ranges like the pool's threads do,
//! then helps until the others' ranges are done. So tasks that spawn and
//! join tasks, or run `conc_parallel_for`, never wait for a thread that is
//! busy waiting for them: every nested wait runs the queued work it
//! depends on, to any depth, even on a pool of one thread. The price is
//! stack: helping runs tasks on top of the waiter's stack. Pool threads
//! get [`STACK_SIZE`] (64 MiB of address space, touched only as used), so
//! they hold about 100,000 nested levels of a small task that spawns and
//! joins the next (measured: 100,000 pass, 200,000 overflow the stack;
//! 30,000 pass under AddressSanitizer); a thread outside the pool that
//! joins runs tasks on its own stack (8 MiB for a usual main thread, so
//! about an eighth of that). One pattern helping cannot
//! serve (as in TBB): a task that waits for something that only the task
//! *under it* on the same stack can provide (an event it sets after its
//! join returns).
//!
//! **Sleeping.** An idle worker spins for at most [`IDLE_SPIN_NS`] (10 µs)
//! watching the lengths of the pool's queues, then announces itself
//! as a sleeper and sleeps on the pool's `epoch` futex word
//! (`crate::sync::futex`, private scope). A spawn wakes one sleeper only
//! when no worker is already spinning (that one will find the task), so a
//! steady stream of spawns costs no system call; a worker that finds work
//! while more is queued wakes the next sleeper, so parallelism ramps up in
//! a chain. The sleeper re-checks the queues after announcing itself, and
//! the spawner checks for sleepers after queueing (both sequentially
//! consistent), so a wakeup is never lost. An idle pool uses no CPU.
//!
//! **Handles.** `conc_pool *` goes through [`crate::handle`] (kind Pool),
//! so a closed or forged pool is refused. `conc_task` ids follow
//! `conc_thread`'s rules: a registry (16 locked shards, keyed by id) maps
//! each joinable id to its task; ids are a bijective mix of a counter and
//! a per-process random key, never 0, never reused, not guessable from one
//! another. A joiner marks the task as being joined under the shard's
//! lock, so of two racing joiners exactly one wins (the other gets
//! `CONC_ERR_INVALID_STATE`); the winner removes the id when the task is
//! done, and a timed-out join unmarks it, so it stays joinable.
//!
//! **Lifetime.** The pool's shared state is reference counted: the
//! handle, each worker thread, and each task hold a reference. So a task
//! handle stays joinable after its pool is closed (the task keeps its
//! result), and nothing is freed under a thread still inside it.
//!
//! **Fork.** A forked child has none of the parent's pool threads. The
//! child bumps a fork generation: every pool and task from before the fork
//! is refused there (`CONC_ERR_INVALID_STATE`, like a thread handle from
//! before a fork), except that closing such a pool releases its handle.
//! The default pool is forgotten (deliberately leaked, as its locks and
//! queues are the parent's), so the child's first use makes a fresh one.
//! The only locks the child can touch afterwards are the registry's shards
//! and the default pool's creation lock: [`fork_prepare`] takes them,
//! [`fork_parent`] and [`fork_child`] release them, so no child inherits
//! them held by a thread that does not exist there.

use std::cell::{Cell, UnsafeCell};
use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;
use std::hash::BuildHasherDefault;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::ptr::{self, NonNull};
use std::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*,
};

use crate::error::{
    conc_status, Error, Result, CONC_ERR_DEADLOCK, CONC_ERR_INVALID_STATE,
    CONC_ERR_RESOURCE_EXHAUSTED, CONC_ERR_TIMED_OUT,
};
use crate::ffi::{guard, guard_value, out_ref};
use crate::handle;
use crate::sync::futex::{self, Deadline, Scope};
use crate::thread::conc_thread_fn;
use crate::tsan;

/// The stack of each pool thread: helping runs nested tasks on it.
pub const STACK_SIZE: usize = 64 << 20;
/// How long an idle worker spins before it sleeps.
const IDLE_SPIN_NS: u64 = 10_000;
/// How many pause rounds a joiner spins before it sleeps.
const JOIN_SPIN: u32 = 2_000;
/// The most threads one pool may have.
const MAX_THREADS: usize = 4096;
/// How many ranges per participating thread `conc_parallel_for` makes
/// when `grain` is 0.
const CHUNKS_PER_THREAD: usize = 16;

// ---------------------------------------------------------------------------
// A small lock (fork-resettable, usable in statics). It guards a few
// instructions at a time (a queue push or pop, a registry insert), so it
// spins, then yields to a preempted holder; unlocking is a plain store,
// not a read-modify-write (each costs ~25 ns on the development machine,
// and a spawn+join takes several locks).

struct Lock<T> {
    /// 0 free, 1 held.
    word: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock gives one thread at a time access to the value.
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Lock<T> {}

struct LockGuard<'a, T>(&'a Lock<T>);

impl<T> Lock<T> {
    const fn new(value: T) -> Lock<T> {
        Lock {
            word: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    fn raw_lock(&self) {
        if self.word.compare_exchange(0, 1, Acquire, Relaxed).is_err() {
            self.lock_slow();
        }
        tsan::acquire(self as *const Self as *const ());
    }

    #[cold]
    fn lock_slow(&self) {
        loop {
            for _ in 0..100 {
                if self.word.load(Relaxed) == 0
                    && self.word.compare_exchange(0, 1, Acquire, Relaxed).is_ok()
                {
                    return;
                }
                std::hint::spin_loop();
            }
            // The holder was preempted: let it run.
            std::thread::yield_now();
        }
    }

    #[inline]
    fn raw_unlock(&self) {
        tsan::release(self as *const Self as *const ());
        self.word.store(0, Release);
    }

    #[inline]
    fn lock(&self) -> LockGuard<'_, T> {
        self.raw_lock();
        LockGuard(self)
    }
}

impl<T> Deref for LockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.0.value.get() }
    }
}

impl<T> DerefMut for LockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.0.value.get() }
    }
}

impl<T> Drop for LockGuard<'_, T> {
    fn drop(&mut self) {
        self.0.raw_unlock();
    }
}

// ---------------------------------------------------------------------------
// Tasks.

const QUEUED: u32 = 0;
const RUNNING: u32 = 1;
const DONE: u32 = 2;
const CANCELLED: u32 = 3;
const STATE: u32 = 3;
/// Set in the state word by a joiner that sleeps on it.
const WAITER: u32 = 4;

type TaskFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;

/// The function `conc_parallel_for` calls on each range `[begin, end)`,
/// with the `ctx` it was given.
#[allow(non_camel_case_types)]
pub type conc_for_fn = Option<unsafe extern "C" fn(begin: usize, end: usize, ctx: *mut c_void)>;

enum Work {
    /// A task spawned by `conc_task_spawn`.
    User { f: TaskFn, arg: *mut c_void },
    /// A helper of `conc_parallel_for`, claiming ranges of its loop.
    For(*const Job),
}

struct Task {
    /// QUEUED, RUNNING, DONE or CANCELLED, plus WAITER; a futex word.
    state: AtomicU32,
    refs: AtomicU32,
    /// Set while one `conc_task_join*` waits for it.
    joining: AtomicBool,
    /// The queue it was pushed to: 0 the injector, `i + 1` worker `i`.
    home: usize,
    work: Work,
    result: UnsafeCell<*mut c_void>,
    pool: PoolRef,
}

/// A task pointer that holds one of its references.
#[derive(Clone, Copy, PartialEq, Eq)]
struct TaskPtr(NonNull<Task>);

// SAFETY: tasks are shared between threads through atomics; the raw
// pointers inside (`arg`, the job) are the program's to make thread-safe,
// as with pthread_create's argument.
unsafe impl Send for TaskPtr {}

impl TaskPtr {
    fn new(pool: &PoolRef, home: usize, work: Work) -> Result<TaskPtr> {
        let task = handle::try_box(Task {
            state: AtomicU32::new(QUEUED),
            refs: AtomicU32::new(2),
            joining: AtomicBool::new(false),
            home,
            work,
            result: UnsafeCell::new(ptr::null_mut()),
            pool: pool.clone(),
        })?;
        Ok(TaskPtr(NonNull::from(Box::leak(task))))
    }

    fn get(&self) -> &Task {
        // SAFETY: a TaskPtr holds a reference, so the task is alive.
        unsafe { self.0.as_ref() }
    }

    fn addr(&self) -> *const () {
        self.0.as_ptr() as *const ()
    }

    /// Drops one reference; the last frees the task.
    fn release(self) {
        tsan::release(self.addr());
        if self.get().refs.fetch_sub(1, Release) == 1 {
            fence(Acquire);
            tsan::acquire(self.addr());
            // SAFETY: that was the last reference; the task came from
            // Box::leak in `new`.
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        }
    }

    /// Claims a queued task for running it (or, with `to`, cancelling it).
    fn claim(&self, to: u32) -> bool {
        self.get()
            .state
            .compare_exchange(QUEUED, to, Acquire, Relaxed)
            .is_ok()
    }

    fn is_done(&self) -> bool {
        self.get().state.load(Acquire) & STATE == DONE
    }
}

// ---------------------------------------------------------------------------
// The pool's shared state.

#[repr(align(128))]
struct Queue {
    tasks: Lock<VecDeque<TaskPtr>>,
    /// What idle workers poll, on its own cache line: their polling does
    /// not take the lock's line away from the thread pushing and popping.
    signal: Padded<Signal>,
}

struct Signal {
    /// The queue's length, mirrored (stored under the lock).
    len: AtomicUsize,
    /// Pushes so far (changed under the lock, so a plain store), for idle
    /// workers to see activity even when a joiner takes its task back
    /// before they look.
    pushes: AtomicUsize,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            tasks: Lock::new(VecDeque::new()),
            signal: Padded(Signal {
                len: AtomicUsize::new(0),
                pushes: AtomicUsize::new(0),
            }),
        }
    }

    fn push(&self, t: TaskPtr) -> Result<()> {
        let mut q = self.tasks.lock();
        q.try_reserve(1).map_err(|_| {
            Error::new(
                CONC_ERR_RESOURCE_EXHAUSTED,
                "out of memory for a task queue",
            )
        })?;
        q.push_back(t);
        self.signal.len.store(q.len(), Relaxed);
        self.signal
            .pushes
            .store(self.signal.pushes.load(Relaxed).wrapping_add(1), Relaxed);
        Ok(())
    }

    fn pop(&self, back: bool) -> Option<TaskPtr> {
        if self.signal.len.load(Relaxed) == 0 {
            return None;
        }
        let mut q = self.tasks.lock();
        let t = if back { q.pop_back() } else { q.pop_front() };
        self.signal.len.store(q.len(), Relaxed);
        t
    }

    /// Takes `t` out if it is the newest entry (it usually is, for a join
    /// or a cancel right after the spawn).
    fn take_back(&self, t: TaskPtr) -> bool {
        let mut q = self.tasks.lock();
        if q.back() == Some(&t) {
            q.pop_back();
            self.signal.len.store(q.len(), Relaxed);
            true
        } else {
            false
        }
    }
}

struct Shared {
    refs: Padded<AtomicUsize>,
    /// The default pool: never freed, never closed, so neither its
    /// references nor its pending tasks are counted.
    immortal: bool,
    threads: usize,
    /// The fork generation it was made in.
    fork_gen: u64,
    /// Queue 0 is the injector, queue `i + 1` worker `i`'s.
    queues: Box<[Queue]>,
    /// Workers spinning for work.
    searching: Padded<AtomicU32>,
    /// Workers asleep (or about to sleep) on `epoch`.
    sleepers: AtomicU32,
    /// Bumped to wake sleepers; their futex word.
    epoch: AtomicU32,
    /// Tasks spawned and not finished, plus `conc_parallel_for` calls under way.
    pending: Padded<AtomicUsize>,
    /// Bumped when `pending` reaches 0 during a close; the closer's futex word.
    close_word: AtomicU32,
    closing: AtomicBool,
    shutdown: AtomicBool,
    /// The worker threads, for the close to join.
    handles: Lock<Vec<libc::pthread_t>>,
    /// Chains default pools forgotten by forks (kept reachable).
    orphan_next: AtomicPtr<Shared>,
}

/// A value on its own cache lines (the hot counters are written by
/// different threads).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A counted reference to a pool's shared state.
struct PoolRef(NonNull<Shared>);

// SAFETY: Shared is only used through atomics and locks.
unsafe impl Send for PoolRef {}
// SAFETY: as above.
unsafe impl Sync for PoolRef {}

impl Clone for PoolRef {
    fn clone(&self) -> PoolRef {
        pool_ref(self)
    }
}

impl Deref for PoolRef {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        // SAFETY: a PoolRef holds a reference, so the state is alive.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for PoolRef {
    fn drop(&mut self) {
        if self.immortal {
            return;
        }
        tsan::release(self.0.as_ptr() as *const ());
        if self.refs.fetch_sub(1, Release) == 1 {
            fence(Acquire);
            tsan::acquire(self.0.as_ptr() as *const ());
            // SAFETY: the last reference; made by Box::leak in `Shared::start`.
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        }
    }
}

impl Shared {
    fn queue(&self, home: usize) -> &Queue {
        &self.queues[home]
    }

    /// Whether any queue has entries (claimed or not). Sequentially
    /// consistent loads: see `notify` and the worker's way to sleep.
    #[inline]
    fn has_work(&self) -> bool {
        self.queues.iter().any(|q| q.signal.len.load(SeqCst) != 0)
    }

    /// Wakes a sleeping worker if no worker is looking for work already.
    #[inline]
    fn notify(&self) {
        fence(SeqCst);
        if self.sleepers.load(SeqCst) > 0 && self.searching.load(SeqCst) == 0 {
            self.epoch.fetch_add(1, SeqCst);
            futex::wake(&self.epoch, 1, Scope::Private);
        }
    }

    fn begin_pending(&self) {
        if !self.immortal {
            self.pending.fetch_add(1, SeqCst);
        }
    }

    fn end_pending(&self) {
        if !self.immortal && self.pending.fetch_sub(1, SeqCst) == 1 && self.closing.load(SeqCst) {
            self.close_word.fetch_add(1, SeqCst);
            futex::wake_all(&self.close_word, Scope::Private);
        }
    }

    /// Pops any task and claims it; drops entries claimed elsewhere.
    fn find_task(&self, me: Option<usize>) -> Option<TaskPtr> {
        loop {
            let t = self.pop_any(me)?;
            if t.claim(RUNNING) {
                return Some(t);
            }
            t.release();
        }
    }

    fn pop_any(&self, me: Option<usize>) -> Option<TaskPtr> {
        if let Some(i) = me {
            if let Some(t) = self.queues[i + 1].pop(true) {
                return Some(t);
            }
        }
        if let Some(t) = self.queues[0].pop(false) {
            return Some(t);
        }
        let n = self.threads;
        let start = me.map_or(0, |i| i + 1);
        for k in 0..n {
            let j = (start + k) % n;
            if Some(j) != me {
                if let Some(t) = self.queues[j + 1].pop(false) {
                    return Some(t);
                }
            }
        }
        None
    }

    /// Queues a claimed-nowhere task: on the calling worker's own queue if
    /// it is one of this pool's, else on the injector.
    fn push(&self, pool: &PoolRef, work: Work) -> Result<TaskPtr> {
        let home = current_worker(self).map_or(0, |i| i + 1);
        let t = TaskPtr::new(pool, home, work)?;
        if let Err(e) = self.queue(home).push(t) {
            t.release();
            t.release();
            return Err(e);
        }
        Ok(t)
    }
}

// ---------------------------------------------------------------------------
// Thread-local context.

/// A task (or a `conc_parallel_for` share) running on this thread.
struct Frame {
    pool: *const Shared,
    prev: *const Frame,
}

thread_local! {
    /// The pool this thread works for, and its index there.
    static WORKER: Cell<(*const Shared, usize)> = const { Cell::new((ptr::null(), 0)) };
    /// The innermost task running on this thread.
    static RUNNING_FRAME: Cell<*const Frame> = const { Cell::new(ptr::null()) };
    /// This thread's block of id counter values: (next, end).
    static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// How deep this thread is in the fork hooks (they may be called twice).
    static FORK_DEPTH: Cell<u32> = const { Cell::new(0) };
}

fn current_worker(pool: &Shared) -> Option<usize> {
    let (p, i) = WORKER.with(Cell::get);
    ptr::eq(p, pool).then_some(i)
}

/// Whether this thread is a worker of `pool` or runs one of its tasks.
fn inside(pool: &Shared) -> bool {
    if current_worker(pool).is_some() {
        return true;
    }
    let mut f = RUNNING_FRAME.with(Cell::get);
    while !f.is_null() {
        // SAFETY: frames live on this thread's stack below the current
        // one, and are unlinked before they go out of scope.
        let frame = unsafe { &*f };
        if ptr::eq(frame.pool, pool) {
            return true;
        }
        f = frame.prev;
    }
    false
}

/// Runs `body` with a frame saying that this thread runs work of `pool`.
#[inline]
fn in_frame<R>(pool: &Shared, body: impl FnOnce() -> R) -> R {
    let frame = Frame {
        pool,
        prev: RUNNING_FRAME.with(Cell::get),
    };
    RUNNING_FRAME.with(|c| c.set(&frame));
    let r = body();
    RUNNING_FRAME.with(|c| c.set(frame.prev));
    r
}

// ---------------------------------------------------------------------------
// Running and waiting.

/// Runs a task this thread has claimed, then marks it done.
fn run_task(t: TaskPtr, exclusive: bool) {
    let task = t.get();
    let pool = &*task.pool;
    match task.work {
        Work::User { f, arg } => {
            tsan::acquire(t.addr());
            // SAFETY: `f` and `arg` are what the program gave
            // conc_task_spawn for this task.
            let r = in_frame(pool, || unsafe { f(arg) });
            // SAFETY: only the thread that claimed the task writes the
            // result, before publishing DONE (release).
            unsafe { *task.result.get() = r };
            tsan::release(t.addr());
            if exclusive {
                // Nobody else can be waiting for it.
                task.state.store(DONE, Release);
            } else {
                finish(task);
            }
            pool.end_pending();
        }
        Work::For(job) => {
            // SAFETY: the caller of conc_parallel_for keeps the job alive
            // until this helper is done or cancelled.
            let job = unsafe { &*job };
            tsan::acquire(job as *const Job as *const ());
            in_frame(pool, || job.work());
            tsan::release(job as *const Job as *const ());
            finish(task);
        }
    }
}

fn finish(task: &Task) {
    if task.state.swap(DONE, Release) & WAITER != 0 {
        futex::wake_all(&task.state, Scope::Private);
    }
}

/// Waits until the running (or done) task `t` is done, running other
/// queued work of its pool meanwhile if `help`. False if `deadline`
/// passed first.
fn wait_done(t: TaskPtr, deadline: Deadline, help: bool) -> bool {
    let task = t.get();
    let pool = &*task.pool;
    let me = current_worker(pool);
    loop {
        if t.is_done() {
            return true;
        }
        if help {
            if let Some(other) = pool.find_task(me) {
                run_task(other, false);
                other.release();
                continue;
            }
        }
        if futex::spin_until(JOIN_SPIN, || t.is_done() || (help && pool.has_work())) {
            continue;
        }
        if deadline.expired() {
            return false;
        }
        let s = task.state.load(Acquire);
        if s & STATE == DONE {
            return true;
        }
        if s & WAITER == 0
            && task
                .state
                .compare_exchange(s, s | WAITER, Relaxed, Relaxed)
                .is_err()
        {
            continue;
        }
        // Slices: a helper re-checks the queues now and then.
        let until = if help { deadline.slice(10) } else { deadline };
        futex::wait(&task.state, s | WAITER, until, Scope::Private);
    }
}

/// Takes a queued task back for the calling thread, which then runs or
/// cancels it: true if it was still queued.
fn take_back(t: TaskPtr, to: u32) -> Took {
    let task = t.get();
    let pool = &*task.pool;
    if task.state.load(Relaxed) & STATE != QUEUED {
        return Took::No;
    }
    if pool.queue(task.home).take_back(t) {
        // Out of every queue, so only the caller (its one joiner, or the
        // caller of conc_parallel_for) can claim it: no compare-and-swap.
        task.state.store(to, Relaxed);
        return Took::Exclusive;
    }
    if t.claim(to) {
        Took::Claimed
    } else {
        Took::No
    }
}

/// What `take_back` got.
#[derive(PartialEq, Eq)]
enum Took {
    /// Nothing: the task was claimed by another thread.
    No,
    /// The task, claimed, and its queue entry: the caller holds every
    /// reference to it.
    Exclusive,
    /// The task, claimed; a stale queue entry still refers to it.
    Claimed,
}

/// Frees a task whose every reference the caller holds (see `Took`).
fn free_exclusive(t: TaskPtr) {
    // SAFETY: no other thread can reach the task any more; it came from
    // Box::leak in TaskPtr::new.
    drop(unsafe { Box::from_raw(t.0.as_ptr()) });
}

// ---------------------------------------------------------------------------
// Worker threads.

struct WorkerStart {
    pool: PoolRef,
    index: usize,
}

extern "C" fn worker_main(start: *mut c_void) -> *mut c_void {
    // SAFETY: the Box<WorkerStart> leaked by `start_thread` for this thread.
    let WorkerStart { pool, index } = *unsafe { Box::from_raw(start.cast::<WorkerStart>()) };
    WORKER.with(|w| w.set((&*pool as *const Shared, index)));
    worker_loop(&pool, index);
    WORKER.with(|w| w.set((ptr::null(), 0)));
    drop(pool);
    ptr::null_mut()
}

fn worker_loop(pool: &Shared, me: usize) {
    // Just woken: look through `spin_for_work` first, which leaves a lone
    // task to a joiner about to take it back (the spawn that woke us).
    let mut woken = false;
    loop {
        if woken {
            woken = false;
        } else if let Some(t) = pool.find_task(Some(me)) {
            if pool.has_work() {
                pool.notify();
            }
            run_task(t, false);
            t.release();
            continue;
        }
        if pool.shutdown.load(Acquire) {
            return;
        }
        pool.searching.fetch_add(1, SeqCst);
        if spin_for_work(pool) {
            pool.searching.fetch_sub(1, SeqCst);
            continue;
        }
        let epoch = pool.epoch.load(SeqCst);
        pool.sleepers.fetch_add(1, SeqCst);
        pool.searching.fetch_sub(1, SeqCst);
        if !pool.has_work() && !pool.shutdown.load(SeqCst) {
            futex::wait(&pool.epoch, epoch, Deadline::NEVER, Scope::Private);
            woken = true;
        }
        pool.sleepers.fetch_sub(1, SeqCst);
    }
}

/// Spins at most [`IDLE_SPIN_NS`] until work is queued or the pool shuts
/// down. Pushes it saw (even of tasks taken back by their joiners before
/// it could look) restart the bound: work is still arriving.
///
/// A lone queued task is taken only once it has stayed queued for a short
/// look (64 pause rounds) with no push since: a thread that spawns a task
/// and joins it at once takes it back within that time, and runs it
/// without the round trip to another core that a steal would cost. Two or
/// more queued tasks are a backlog: taken at once.
fn spin_for_work(pool: &Shared) -> bool {
    let pushes = || {
        pool.queues
            .iter()
            .fold(0usize, |n, q| n.wrapping_add(q.signal.pushes.load(Relaxed)))
    };
    let backlog = || {
        pool.queues
            .iter()
            .map(|q| q.signal.len.load(Relaxed))
            .sum::<usize>()
    };
    let mut start = futex::now();
    let mut seen = pushes();
    loop {
        if futex::spin_until(64, || pool.has_work() || pool.shutdown.load(Relaxed)) {
            if pool.shutdown.load(Relaxed) || backlog() >= 2 {
                return true;
            }
            let at = pushes();
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if pool.has_work() && (pushes() == at || backlog() >= 2) {
                return true;
            }
        }
        let now = futex::now();
        let latest = pushes();
        if latest != seen {
            seen = latest;
            start = now;
            continue;
        }
        let ns = (now.tv_sec - start.tv_sec) * 1_000_000_000 + (now.tv_nsec - start.tv_nsec);
        if ns >= IDLE_SPIN_NS as i64 {
            return false;
        }
    }
}

fn start_thread(pool: &PoolRef, index: usize) -> Result<libc::pthread_t> {
    let start = handle::try_box(WorkerStart {
        pool: pool.clone(),
        index,
    })?;
    let start = Box::into_raw(start);
    let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: attr is storage for an attribute object, initialised here and
    // destroyed below; the start routine takes the box it is given.
    let rc = unsafe {
        let mut rc = libc::pthread_attr_init(attr.as_mut_ptr());
        if rc == 0 {
            libc::pthread_attr_setstacksize(attr.as_mut_ptr(), STACK_SIZE);
            let mut thread = MaybeUninit::<libc::pthread_t>::uninit();
            rc = libc::pthread_create(
                thread.as_mut_ptr(),
                attr.as_ptr(),
                worker_main,
                start.cast(),
            );
            libc::pthread_attr_destroy(attr.as_mut_ptr());
            if rc == 0 {
                return Ok(thread.assume_init());
            }
        }
        rc
    };
    // SAFETY: the thread was not started, so the box is still ours.
    drop(unsafe { Box::from_raw(start) });
    Err(Error::os(
        format_args!("conc_pool_create: pthread_create (thread {index})"),
        rc,
    )
    .with_status(CONC_ERR_RESOURCE_EXHAUSTED))
}

impl Shared {
    /// Makes a pool and starts all its threads, or nothing.
    fn start(threads: usize, immortal: bool) -> Result<PoolRef> {
        if threads > MAX_THREADS {
            return Err(Error::new(
                CONC_ERR_RESOURCE_EXHAUSTED,
                format_args!("conc_pool_create: {threads} threads (at most {MAX_THREADS})"),
            ));
        }
        let oom = |_| {
            Error::new(
                CONC_ERR_RESOURCE_EXHAUSTED,
                "conc_pool_create: out of memory",
            )
        };
        let mut queues = Vec::new();
        queues.try_reserve_exact(threads + 1).map_err(oom)?;
        queues.extend((0..=threads).map(|_| Queue::new()));
        let mut handles = Vec::new();
        handles.try_reserve_exact(threads).map_err(oom)?;
        let shared = handle::try_box(Shared {
            refs: Padded(AtomicUsize::new(1)),
            immortal,
            threads,
            fork_gen: FORK_GEN.load(Relaxed),
            queues: queues.into_boxed_slice(),
            searching: Padded(AtomicU32::new(0)),
            sleepers: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
            pending: Padded(AtomicUsize::new(0)),
            close_word: AtomicU32::new(0),
            closing: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            handles: Lock::new(handles),
            orphan_next: AtomicPtr::new(ptr::null_mut()),
        })?;
        let pool = PoolRef(NonNull::from(Box::leak(shared)));
        watch_forks();
        for i in 0..threads {
            match start_thread(&pool, i) {
                Ok(t) => pool.handles.lock().push(t),
                Err(e) => {
                    pool.stop();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// Ends the threads (once nothing is pending) and drops stale entries.
    fn stop(&self) {
        self.shutdown.store(true, SeqCst);
        self.epoch.fetch_add(1, SeqCst);
        futex::wake_all(&self.epoch, Scope::Private);
        let handles = std::mem::take(&mut *self.handles.lock());
        for t in handles {
            // SAFETY: a thread this pool started and nobody else joins.
            unsafe { libc::pthread_join(t, ptr::null_mut()) };
        }
        for q in self.queues.iter() {
            while let Some(t) = q.pop(false) {
                t.release();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The default pool and fork handling.

static FORK_GEN: AtomicU64 = AtomicU64::new(0);
static DEFAULT: AtomicPtr<Shared> = AtomicPtr::new(ptr::null_mut());
static DEFAULT_LOCK: Lock<()> = Lock::new(());
/// Default pools forgotten in forked children, kept reachable.
static ORPHANS: AtomicPtr<Shared> = AtomicPtr::new(ptr::null_mut());

/// The default pool, made on first use.
fn default_pool() -> Result<&'static Shared> {
    let p = DEFAULT.load(Acquire);
    if !p.is_null() {
        // SAFETY: the default pool holds a reference that is never dropped.
        return Ok(unsafe { &*p });
    }
    default_pool_slow()
}

#[cold]
fn default_pool_slow() -> Result<&'static Shared> {
    watch_forks();
    let _g = DEFAULT_LOCK.lock();
    let mut p = DEFAULT.load(Acquire);
    if p.is_null() {
        let pool = Shared::start(crate::thread::conc_cpu_count(), true)?;
        p = pool.0.as_ptr();
        std::mem::forget(pool);
        DEFAULT.store(p, Release);
    }
    // SAFETY: as in default_pool.
    Ok(unsafe { &*p })
}

/// A `PoolRef` for a pool known to be alive (the caller holds one).
fn pool_ref(pool: &Shared) -> PoolRef {
    if !pool.immortal {
        pool.refs.fetch_add(1, Relaxed);
    }
    PoolRef(NonNull::from(pool))
}

/// Makes sure conc's `pthread_atfork` handlers (`crate::fork`), which
/// call the hooks below, are registered before a pool is first used. The
/// hooks nest, so a second caller of them is harmless.
fn watch_forks() {
    crate::fork::ensure_registered();
}

/// Called by conc's `pthread_atfork` prepare handler, before any other
/// conc lock is taken: takes the pool's own locks.
pub(crate) fn fork_prepare() {
    let depth = FORK_DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get()
    });
    if depth == 1 {
        DEFAULT_LOCK.raw_lock();
        for s in REGISTRY.iter() {
            s.map.raw_lock();
        }
    }
}

/// Called by conc's `pthread_atfork` parent handler: releases them.
pub(crate) fn fork_parent() {
    if leave_fork_hook() {
        for s in REGISTRY.iter().rev() {
            s.map.raw_unlock();
        }
        DEFAULT_LOCK.raw_unlock();
    }
}

/// Called by conc's `pthread_atfork` child handler: the child has no pool
/// threads; forget them, so that the default pool starts fresh threads
/// on first use.
pub(crate) fn fork_child() {
    if leave_fork_hook() {
        FORK_GEN.fetch_add(1, SeqCst);
        let old = DEFAULT.swap(ptr::null_mut(), SeqCst);
        if !old.is_null() {
            orphan(old);
        }
        // Only this thread exists now, and it holds these locks.
        for s in REGISTRY.iter() {
            s.map.word.store(0, SeqCst);
        }
        DEFAULT_LOCK.word.store(0, SeqCst);
    }
}

/// Keeps a pool from before a fork reachable, never to be used or freed
/// (its locks and threads are the parent's). Called by the child's only
/// thread in the fork hook, or by a close under the handle's rules.
fn orphan(pool: *mut Shared) {
    // SAFETY: the caller holds a reference it gives up to this list.
    let o = unsafe { &*pool };
    let mut head = ORPHANS.load(Relaxed);
    loop {
        o.orphan_next.store(head, Relaxed);
        match ORPHANS.compare_exchange(head, pool, Release, Relaxed) {
            Ok(_) => return,
            Err(now) => head = now,
        }
    }
}

/// True when the outermost fork hook returns.
fn leave_fork_hook() -> bool {
    FORK_DEPTH.with(|d| {
        let depth = d.get().saturating_sub(1);
        d.set(depth);
        depth == 0
    })
}

fn check_fork(pool: &Shared, op: &str) -> Result<()> {
    if pool.fork_gen != FORK_GEN.load(Relaxed) {
        return Err(Error::new(
            CONC_ERR_INVALID_STATE,
            format_args!(
                "{op}: the pool was made before a fork; its threads do not exist in this process"
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The task registry.

type Tasks = HashMap<u64, TaskPtr, BuildHasherDefault<crate::thread::IdHasher>>;

const SHARDS: usize = 16;

#[repr(align(128))]
struct Shard {
    map: Lock<Option<Tasks>>,
}

static REGISTRY: [Shard; SHARDS] = [const {
    Shard {
        map: Lock::new(None),
    }
}; SHARDS];
static COUNTER: AtomicU64 = AtomicU64::new(0);
static KEY: AtomicU64 = AtomicU64::new(0);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn key() -> u64 {
    let k = KEY.load(Relaxed);
    if k != 0 {
        return k;
    }
    let mut k = 0u64;
    // SAFETY: the buffer is the 8 bytes of `k`.
    let got = unsafe { libc::getrandom((&mut k as *mut u64).cast(), 8, libc::GRND_NONBLOCK) };
    if got != 8 {
        k = mix(futex::now().tv_nsec as u64 ^ (u64::from(std::process::id()) << 32));
    }
    k |= 1;
    match KEY.compare_exchange(0, k, Relaxed, Relaxed) {
        Ok(_) => k,
        Err(other) => other,
    }
}

/// Counter values are taken from [`COUNTER`] in blocks, per thread.
const ID_BLOCK: u64 = 1024;

/// The next counter value an id is made from: never the same twice in a
/// process.
fn next_counter() -> u64 {
    IDS.with(|c| {
        let (next, end) = c.get();
        let (value, end) = if next < end {
            (next, end)
        } else {
            let block = COUNTER.fetch_add(ID_BLOCK, Relaxed);
            (block, block + ID_BLOCK)
        };
        c.set((value + 1, end));
        value
    })
}

fn shard(id: u64) -> &'static Shard {
    &REGISTRY[(id >> 60) as usize % SHARDS]
}

/// Registers a task (taking over one of its references) under a new id.
fn register(t: TaskPtr) -> Result<u64> {
    let key = key();
    loop {
        let id = mix(next_counter() ^ key);
        if id == 0 {
            continue;
        }
        let mut map = shard(id).map.lock();
        let map = map.get_or_insert_with(Tasks::default);
        map.try_reserve(1).map_err(|_| {
            Error::new(
                CONC_ERR_RESOURCE_EXHAUSTED,
                "conc_task_spawn: out of memory",
            )
        })?;
        map.insert(id, t);
        return Ok(id);
    }
}

fn not_joinable(op: &str, id: u64, why: &str) -> Error {
    Error::new(
        CONC_ERR_INVALID_STATE,
        format_args!("{op}(task {id:#x}): {why}"),
    )
}

/// Takes the task `id` out of the registry for the caller's join
/// (`take`), or marks it as being joined by the caller.
fn begin_join(id: u64, op: &str, take: bool) -> Result<TaskPtr> {
    let mut map = shard(id).map.lock();
    let map = map.get_or_insert_with(Tasks::default);
    let Some(&t) = map.get(&id) else {
        return Err(not_joinable(
            op,
            id,
            "not a joinable task (already joined, a copy of such a handle, or never made by conc_task_spawn)",
        ));
    };
    if t.get().pool.fork_gen != FORK_GEN.load(Relaxed) {
        map.remove(&id);
        return Err(not_joinable(
            op,
            id,
            "the task was spawned before a fork and does not exist in this process",
        ));
    }
    // The flag changes under the shard's lock (or, to clear it, by the
    // one thread that set it), so no read-modify-write is needed.
    if t.get().joining.load(Acquire) {
        return Err(not_joinable(op, id, "another thread is joining it"));
    }
    if take {
        map.remove(&id);
    } else {
        t.get().joining.store(true, Relaxed);
    }
    Ok(t)
}

fn end_join(id: u64) {
    let mut map = shard(id).map.lock();
    if let Some(map) = map.as_mut() {
        map.remove(&id);
    }
}

// ---------------------------------------------------------------------------
// parallel_for.

struct Job {
    next: AtomicUsize,
    chunks: usize,
    begin: usize,
    len: usize,
    grain: usize,
    f: unsafe extern "C" fn(usize, usize, *mut c_void),
    ctx: *mut c_void,
}

impl Job {
    #[inline]
    fn claim(&self) -> Option<usize> {
        if self.chunks <= usize::MAX / 2 {
            // At most one overshoot per participant: no wrap-around.
            let k = self.next.fetch_add(1, Relaxed);
            (k < self.chunks).then_some(k)
        } else {
            let mut k = self.next.load(Relaxed);
            loop {
                if k >= self.chunks {
                    return None;
                }
                match self.next.compare_exchange_weak(k, k + 1, Relaxed, Relaxed) {
                    Ok(_) => return Some(k),
                    Err(now) => k = now,
                }
            }
        }
    }

    fn work(&self) {
        while let Some(k) = self.claim() {
            // k <= (len - 1) / grain, so k * grain <= len - 1: no overflow.
            let off = k * self.grain;
            let b = self.begin + off;
            let e = b + self.grain.min(self.len - off);
            // SAFETY: the program's function and context for this loop.
            unsafe { (self.f)(b, e, self.ctx) };
        }
    }
}

/// Splits `[begin, end)` on `pool`; see `conc_parallel_for`.
fn parallel_for(
    pool: &Shared,
    begin: usize,
    end: usize,
    grain: usize,
    f: unsafe extern "C" fn(usize, usize, *mut c_void),
    ctx: *mut c_void,
) -> Result<()> {
    if begin >= end {
        return Ok(());
    }
    let len = end - begin;
    let me = current_worker(pool);
    let participants = pool.threads + usize::from(me.is_none());
    let grain = if grain != 0 {
        grain
    } else {
        len.div_ceil(participants.saturating_mul(CHUNKS_PER_THREAD))
            .max(1)
    };
    let chunks = (len - 1) / grain + 1;
    if chunks == 1 || participants == 1 {
        in_frame(pool, || {
            let job = Job {
                next: AtomicUsize::new(0),
                chunks,
                begin,
                len,
                grain,
                f,
                ctx,
            };
            job.work();
        });
        return Ok(());
    }
    let job = Job {
        next: AtomicUsize::new(0),
        chunks,
        begin,
        len,
        grain,
        f,
        ctx,
    };
    let this = pool_ref(pool);
    pool.begin_pending();
    let helpers = (participants - 1).min(chunks - 1);
    // The helpers' handles: on the stack for small pools (no allocation
    // on the path of a tiny loop), else on the heap; fewer helpers when
    // memory is short (the caller does the rest).
    let mut small = [None::<TaskPtr>; 8];
    let mut big: Vec<Option<TaskPtr>> = Vec::new();
    let slots: &mut [Option<TaskPtr>] = if helpers <= small.len() {
        &mut small[..helpers]
    } else if big.try_reserve_exact(helpers).is_ok() {
        big.resize(helpers, None);
        &mut big[..]
    } else {
        &mut small[..]
    };
    tsan::release(&job as *const Job as *const ());
    for slot in slots.iter_mut() {
        match pool.push(&this, Work::For(&job)) {
            Ok(t) => *slot = Some(t),
            Err(_) => break,
        }
    }
    pool.notify();
    in_frame(pool, || job.work());
    for &t in slots.iter().rev().flatten() {
        match take_back(t, CANCELLED) {
            Took::Exclusive => free_exclusive(t),
            Took::Claimed => t.release(),
            Took::No => {
                wait_done(t, Deadline::NEVER, true);
                t.release();
            }
        }
    }
    tsan::acquire(&job as *const Job as *const ());
    pool.end_pending();
    Ok(())
}

/// Runs `f(begin, end)` over `[0, n)` in ranges of at most `grain` on the
/// default pool (serially if it cannot be made). For conc's own loops.
pub(crate) fn for_ranges<F: Fn(usize, usize) + Sync>(n: usize, grain: usize, f: &F) {
    unsafe extern "C" fn call<F: Fn(usize, usize) + Sync>(b: usize, e: usize, ctx: *mut c_void) {
        // SAFETY: ctx is the &F given below, alive for the whole loop.
        let f = unsafe { &*(ctx as *const F) };
        f(b, e);
    }
    let ctx = f as *const F as *mut c_void;
    match default_pool() {
        Ok(pool) => {
            if parallel_for(pool, 0, n, grain, call::<F>, ctx).is_err() {
                f(0, n);
            }
        }
        Err(_) => f(0, n),
    }
}

// ---------------------------------------------------------------------------
// The C API.

/// A thread pool: a fixed set of threads that run tasks
/// (`conc_task_spawn`) and share out loops (`conc_parallel_for`). Made by
/// `conc_pool_create`, released by `conc_pool_close`. Every function
/// taking a pool accepts NULL for the *default pool*, made on first use
/// with `conc_cpu_count()` threads and never closed.
#[allow(non_camel_case_types)]
pub struct conc_pool {
    shared: PoolRef,
}

impl handle::Object for conc_pool {
    const KIND: handle::Kind = handle::Kind::Pool;
}

/// A task handle: a small value that may be copied freely, like
/// `conc_thread`. Exactly one `conc_task_join` (or successful
/// `conc_task_join_timeout`) of it, or of any copy, succeeds; afterwards
/// every copy is refused with `CONC_ERR_INVALID_STATE`. Id 0 is never
/// valid.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct conc_task {
    /// Opaque: compare handles by it, never compute one.
    pub id: u64,
}

/// The pool behind `pool` (NULL: the default pool), refused when closed,
/// forged or from before a fork.
///
/// # Safety
/// `pool` is NULL or a pointer conc may check.
fn resolve<'a>(pool: *const conc_pool, op: &str) -> Result<&'a Shared> {
    let shared: &Shared = if pool.is_null() {
        default_pool()?
    } else {
        &handle::get(pool, op, "pool")?.shared
    };
    check_fork(shared, op)?;
    Ok(shared)
}

fn refuse_closing(op: &str) -> Error {
    Error::new(
        CONC_ERR_INVALID_STATE,
        format_args!("{op}: the pool is being closed"),
    )
}

/// Makes a pool of `threads` threads (0: `conc_cpu_count()`) and stores
/// it in `*out`. All its threads are started before it returns; each has
/// a 64 MiB stack (address space, used as needed), which nested tasks
/// share (see `conc_task_join`).
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `out` is NULL;
/// `CONC_ERR_RESOURCE_EXHAUSTED` when memory or threads run out (or
/// `threads` is over 4096): then no thread is left running and `*out` is
/// NULL.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn conc_pool_create(out: *mut *mut conc_pool, threads: usize) -> conc_status {
    const OP: &str = "conc_pool_create";
    guard(OP, || {
        // SAFETY: `out` is NULL or writable, per the contract.
        let out = unsafe { out_ref(out, OP, "out") }?;
        *out = ptr::null_mut();
        let n = if threads == 0 {
            crate::thread::conc_cpu_count()
        } else {
            threads
        };
        let shared = Shared::start(n, false)?;
        let keep = pool_ref(&shared);
        match handle::publish(conc_pool { shared }) {
            Ok(p) => {
                drop(keep);
                *out = p;
                Ok(())
            }
            Err(e) => {
                keep.stop();
                Err(e)
            }
        }
    })
}

/// The number of threads of `pool`; NULL: of the default pool (what it
/// has, or will be made with). 0 for a closed or forged pool.
///
/// # Safety
/// `pool` must be NULL or a pointer conc may check.
#[no_mangle]
pub unsafe extern "C" fn conc_pool_threads(pool: *const conc_pool) -> usize {
    guard_value("conc_pool_threads", 0, || {
        if pool.is_null() {
            let p = DEFAULT.load(Acquire);
            if p.is_null() {
                return crate::thread::conc_cpu_count();
            }
            // SAFETY: the default pool is never freed.
            return unsafe { &*p }.threads;
        }
        handle::lookup(pool).map_or(0, |p| p.shared.threads)
    })
}

/// Closes a pool: refuses new spawns from outside the pool's tasks, waits
/// until every task queued on it has finished (tasks that are running may
/// still spawn subtasks, which it waits for too), ends its threads and
/// frees it. Handles of tasks not yet joined stay joinable and keep their
/// results. Returns after the pool's threads have ended. Closing NULL is a
/// no-op (the default pool is never closed). A pool made before a `fork`,
/// closed in the child, only has its handle released.
///
/// Errors: `CONC_ERR_DEADLOCK` when called from a task (or a
/// `conc_parallel_for` range) running on this pool; `CONC_ERR_INVALID_STATE`
/// if `pool` is closed or forged, or another thread is closing it.
///
/// # Safety
/// `pool` must be NULL or a pointer conc may check.
#[no_mangle]
pub unsafe extern "C" fn conc_pool_close(pool: *mut conc_pool) -> conc_status {
    const OP: &str = "conc_pool_close";
    guard(OP, || {
        if pool.is_null() {
            return Ok(());
        }
        let p = handle::get(pool, OP, "pool")?;
        let shared = &*p.shared;
        if check_fork(shared, OP).is_err() {
            // Its threads and locks are the parent's: leave it be (kept
            // reachable, as the default pool forgotten by the fork is).
            let conc_pool { shared } = *handle::release(pool, OP, "pool")?;
            let p = shared.0.as_ptr();
            std::mem::forget(shared);
            orphan(p);
            return Ok(());
        }
        if inside(shared) {
            return Err(Error::os(
                format_args!("{OP}: called from a task of the pool it closes"),
                libc::EDEADLK,
            )
            .with_status(CONC_ERR_DEADLOCK));
        }
        if shared.closing.swap(true, SeqCst) {
            return Err(Error::new(
                CONC_ERR_INVALID_STATE,
                format_args!("{OP}: another thread is closing this pool"),
            ));
        }
        loop {
            let w = shared.close_word.load(SeqCst);
            if shared.pending.load(SeqCst) == 0 {
                break;
            }
            futex::wait(&shared.close_word, w, Deadline::NEVER, Scope::Private);
        }
        shared.stop();
        drop(handle::release(pool, OP, "pool")?);
        Ok(())
    })
}

/// Queues `fn(arg)` to run on one of the pool's threads (`pool` NULL: the
/// default pool) and stores the task's handle in `*out`. Join it with
/// `conc_task_join` to get what `fn` returned. `fn` must return normally
/// (not with `pthread_exit`).
///
/// A task may itself spawn and join tasks and run `conc_parallel_for`, on
/// its own pool, to any depth, even on a pool of one thread: waiting
/// threads run queued work meanwhile.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `out` or `fn` is NULL;
/// `CONC_ERR_INVALID_STATE` if `pool` is closed, forged, made before a
/// `fork`, or being closed (spawns from the pool's own running tasks are
/// still accepted then); `CONC_ERR_RESOURCE_EXHAUSTED` when memory (or,
/// for the default pool's first use, threads) runs out. On failure `*out`
/// is the zero handle.
///
/// # Safety
/// `out` must be NULL or writable; `pool` NULL or a pointer conc may
/// check; `fn(arg)` must be safe to call on another thread.
#[no_mangle]
pub unsafe extern "C" fn conc_task_spawn(
    out: *mut conc_task,
    pool: *mut conc_pool,
    r#fn: conc_thread_fn,
    arg: *mut c_void,
) -> conc_status {
    const OP: &str = "conc_task_spawn";
    guard(OP, || {
        // SAFETY: `out` is NULL or writable, per the contract.
        let out = unsafe { out_ref(out, OP, "out") }?;
        *out = conc_task { id: 0 };
        let f = r#fn.ok_or_else(|| Error::null(OP, "fn"))?;
        let shared = resolve(pool, OP)?;
        shared.begin_pending();
        if shared.closing.load(SeqCst) && !inside(shared) {
            shared.end_pending();
            return Err(refuse_closing(OP));
        }
        let this = pool_ref(shared);
        let home = current_worker(shared).map_or(0, |i| i + 1);
        let t = match TaskPtr::new(&this, home, Work::User { f, arg }) {
            Ok(t) => t,
            Err(e) => {
                shared.end_pending();
                return Err(e);
            }
        };
        let id = match register(t) {
            Ok(id) => id,
            Err(e) => {
                t.release();
                t.release();
                shared.end_pending();
                return Err(e);
            }
        };
        tsan::release(t.addr());
        if let Err(e) = shared.queue(home).push(t) {
            end_join(id);
            t.release();
            t.release();
            shared.end_pending();
            return Err(e);
        }
        shared.notify();
        *out = conc_task { id };
        Ok(())
    })
}

/// Joins `t` (registered, marked joining by us); None on timeout.
fn join(task: conc_task, deadline: Deadline, poll: bool, op: &str) -> Result<*mut c_void> {
    // A plain join takes the id out at once; a timed one marks it, so that
    // it can stay joinable.
    let timed = !deadline.is_never();
    let t = begin_join(task.id, op, !timed)?;
    let mut done = t.is_done();
    let mut took = Took::No;
    if !done && !poll {
        took = take_back(t, RUNNING);
        if took != Took::No {
            run_task(t, took == Took::Exclusive);
            done = true;
        } else {
            // Help with other work only in a plain join, or from a thread of
            // the pool (where not helping could starve it).
            let help = !timed || current_worker(&t.get().pool).is_some();
            done = wait_done(t, deadline, help);
        }
    }
    if !done {
        t.get().joining.store(false, Release);
        return Err(Error::new(
            CONC_ERR_TIMED_OUT,
            format_args!("{op}(task {:#x}): the task has not finished", task.id),
        ));
    }
    if timed {
        end_join(task.id);
    }
    tsan::acquire(t.addr());
    // SAFETY: DONE was observed (acquire), so the result is written.
    let r = unsafe { *t.get().result.get() };
    if took == Took::Exclusive {
        free_exclusive(t);
    } else {
        t.release();
    }
    Ok(r)
}

/// Waits for the task to finish and stores what its function returned in
/// `*result` (if `result` is not NULL). While it waits, the calling thread
/// runs queued tasks of the same pool (a still-queued `task` itself first),
/// so joins nest without deadlock; those run on the caller's stack. The
/// nesting limit is the stack: about 100,000 levels of a small task that
/// spawns and joins the next on a pool thread (64 MiB stacks); a thread
/// outside the pool has its own stack's limit (about 12,000 such levels in
/// an 8 MiB stack). Deeper nesting overflows the stack (SIGSEGV).
///
/// Errors: `CONC_ERR_INVALID_STATE` if the handle is not joinable (already
/// joined, a copy of a joined handle, zero, forged, from before a `fork`,
/// or being joined by another thread: of racing joiners exactly one wins).
///
/// # Safety
/// `result` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn conc_task_join(task: conc_task, result: *mut *mut c_void) -> conc_status {
    const OP: &str = "conc_task_join";
    guard(OP, || {
        let r = join(task, Deadline::NEVER, false, OP)?;
        if !result.is_null() {
            // SAFETY: non-NULL and writable, per the contract.
            unsafe { *result = r };
        }
        Ok(())
    })
}

/// Like `conc_task_join`, waiting at most `timeout_ms` milliseconds
/// (0 polls once). A task still queued is run by the caller; a thread of
/// the pool also runs other queued tasks while it waits, so it may return
/// later than the timeout.
///
/// Errors: as `conc_task_join`, plus `CONC_ERR_TIMED_OUT` when the task
/// has not finished in time: nothing changed, the task stays joinable and
/// `*result` is untouched.
///
/// # Safety
/// `result` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn conc_task_join_timeout(
    task: conc_task,
    timeout_ms: u64,
    result: *mut *mut c_void,
) -> conc_status {
    const OP: &str = "conc_task_join_timeout";
    guard(OP, || {
        let r = join(task, Deadline::after_ms(timeout_ms), timeout_ms == 0, OP)?;
        if !result.is_null() {
            // SAFETY: non-NULL and writable, per the contract.
            unsafe { *result = r };
        }
        Ok(())
    })
}

/// Calls `fn(b, e, ctx)` on disjoint, non-empty ranges `[b, e)` that
/// together cover `[begin, end)` exactly once, on the pool's threads and
/// the calling thread (`pool` NULL: the default pool), and returns when
/// all of them have returned. `grain` is the most indices one call gets;
/// 0 lets conc choose (about 16 ranges per thread, so that uneven work
/// balances). Ranges are handed out in increasing order to whichever
/// thread is free. `begin >= end`: `CONC_OK` without calling `fn`. May be
/// called from a task, nested to any depth (see `conc_task_join`).
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `fn` is NULL;
/// `CONC_ERR_INVALID_STATE` if `pool` is closed, forged, made before a
/// `fork`, or being closed (calls from the pool's own tasks are still
/// accepted then).
///
/// # Safety
/// `pool` must be NULL or a pointer conc may check; `fn` must be safe to
/// call concurrently from several threads with `ctx`.
#[no_mangle]
pub unsafe extern "C" fn conc_parallel_for(
    pool: *mut conc_pool,
    begin: usize,
    end: usize,
    grain: usize,
    r#fn: conc_for_fn,
    ctx: *mut c_void,
) -> conc_status {
    const OP: &str = "conc_parallel_for";
    guard(OP, || {
        let f = r#fn.ok_or_else(|| Error::null(OP, "fn"))?;
        let shared = resolve(pool, OP)?;
        if shared.closing.load(SeqCst) && !inside(shared) {
            return Err(refuse_closing(OP));
        }
        if begin >= end {
            return Ok(());
        }
        parallel_for(shared, begin, end, grain, f, ctx)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{CONC_ERR_TIMED_OUT, CONC_OK};
    use std::sync::atomic::AtomicUsize;

    unsafe extern "C" fn echo(arg: *mut c_void) -> *mut c_void {
        arg
    }

    fn spawn(pool: *mut conc_pool, f: TaskFn, arg: usize) -> conc_task {
        let mut t = conc_task { id: 0 };
        // SAFETY: valid out pointer.
        assert_eq!(
            unsafe { conc_task_spawn(&mut t, pool, Some(f), arg as *mut c_void) },
            CONC_OK
        );
        t
    }

    fn join_ok(t: conc_task) -> usize {
        let mut r = ptr::null_mut();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { conc_task_join(t, &mut r) }, CONC_OK);
        r as usize
    }

    #[test]
    fn results_come_back_through_join() {
        let ts: Vec<_> = (1..100).map(|i| spawn(ptr::null_mut(), echo, i)).collect();
        for (i, t) in ts.into_iter().enumerate() {
            assert_eq!(join_ok(t), i + 1);
            // SAFETY: NULL result is allowed.
            assert_eq!(
                unsafe { conc_task_join(t, ptr::null_mut()) },
                CONC_ERR_INVALID_STATE
            );
        }
        // SAFETY: as above.
        assert_eq!(
            unsafe { conc_task_join(conc_task { id: 0 }, ptr::null_mut()) },
            CONC_ERR_INVALID_STATE
        );
    }

    static DEPTH_POOL: AtomicPtr<conc_pool> = AtomicPtr::new(ptr::null_mut());

    unsafe extern "C" fn nest(arg: *mut c_void) -> *mut c_void {
        let n = arg as usize;
        if n == 0 {
            return (n + 1) as *mut c_void;
        }
        let t = spawn(DEPTH_POOL.load(Relaxed), nest, n - 1);
        (join_ok(t) + 1) as *mut c_void
    }

    #[test]
    fn nesting_on_one_thread() {
        // The joiner may run the queued outer task itself, so the nesting
        // can happen on this thread's stack: give it a pool thread's size
        // (the test harness's 2 MiB is too small for unoptimised frames).
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(nesting_on_one_thread_body)
            .unwrap()
            .join()
            .unwrap();
    }

    fn nesting_on_one_thread_body() {
        let mut p = ptr::null_mut();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { conc_pool_create(&mut p, 1) }, CONC_OK);
        DEPTH_POOL.store(p, Relaxed);
        let t = spawn(p, nest, 1000);
        assert_eq!(join_ok(t), 1001);
        // SAFETY: an open pool.
        assert_eq!(unsafe { conc_pool_close(p) }, CONC_OK);
        // SAFETY: a closed pool is refused, not touched.
        assert_eq!(unsafe { conc_pool_close(p) }, CONC_ERR_INVALID_STATE);
    }

    unsafe extern "C" fn count(b: usize, e: usize, ctx: *mut c_void) {
        // SAFETY: ctx is the counter array below.
        let hits = unsafe { &*(ctx as *const Vec<AtomicUsize>) };
        assert!(b < e);
        for h in &hits[b..e] {
            h.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn parallel_for_covers_each_index_once() {
        for n in [0usize, 1, 2, 3, 17, 100, 1000] {
            for grain in [0usize, 1, 2, 7, 1000, usize::MAX] {
                let hits: Vec<AtomicUsize> = (0..n + 5).map(|_| AtomicUsize::new(0)).collect();
                let ctx = &hits as *const _ as *mut c_void;
                // SAFETY: ctx outlives the call.
                assert_eq!(
                    unsafe {
                        conc_parallel_for(ptr::null_mut(), 5, n + 5, grain, Some(count), ctx)
                    },
                    CONC_OK
                );
                for (i, h) in hits.iter().enumerate() {
                    assert_eq!(
                        h.load(Relaxed),
                        usize::from(i >= 5),
                        "n {n} grain {grain} i {i}"
                    );
                }
            }
        }
    }

    static GATE: AtomicBool = AtomicBool::new(false);

    unsafe extern "C" fn wait_gate(arg: *mut c_void) -> *mut c_void {
        while !GATE.load(SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        arg
    }

    #[test]
    fn join_timeout_leaves_the_task_joinable_and_racing_joins_have_one_winner() {
        let mut p = ptr::null_mut();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { conc_pool_create(&mut p, 1) }, CONC_OK);
        GATE.store(false, SeqCst);
        let t = spawn(p, wait_gate, 9);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut r = 7 as *mut c_void;
        // SAFETY: valid out pointer.
        assert_eq!(
            unsafe { conc_task_join_timeout(t, 30, &mut r) },
            CONC_ERR_TIMED_OUT
        );
        assert_eq!(r as usize, 7);
        // SAFETY: as above.
        assert_eq!(
            unsafe { conc_task_join_timeout(t, 0, &mut r) },
            CONC_ERR_TIMED_OUT
        );
        let winners = AtomicUsize::new(0);
        let refused = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut r = ptr::null_mut();
                    // SAFETY: valid out pointer.
                    match unsafe { conc_task_join(t, &mut r) } {
                        CONC_OK => {
                            assert_eq!(r as usize, 9);
                            winners.fetch_add(1, SeqCst);
                        }
                        CONC_ERR_INVALID_STATE => {
                            refused.fetch_add(1, SeqCst);
                        }
                        other => panic!("unexpected status {other:?}"),
                    }
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            GATE.store(true, SeqCst);
        });
        assert_eq!(winners.load(SeqCst), 1);
        assert_eq!(refused.load(SeqCst), 3);
        // SAFETY: an open pool.
        assert_eq!(unsafe { conc_pool_close(p) }, CONC_OK);
    }

    #[test]
    fn close_waits_and_handles_outlive_the_pool() {
        let mut p = ptr::null_mut();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { conc_pool_create(&mut p, 2) }, CONC_OK);
        let ts: Vec<_> = (0..50).map(|i| spawn(p, echo, i)).collect();
        // SAFETY: an open pool.
        assert_eq!(unsafe { conc_pool_close(p) }, CONC_OK);
        for (i, t) in ts.into_iter().enumerate() {
            assert!(t.id != 0);
            // Finished before the close returned.
            let mut r = ptr::null_mut();
            // SAFETY: valid out pointer.
            assert_eq!(unsafe { conc_task_join_timeout(t, 0, &mut r) }, CONC_OK);
            assert_eq!(r as usize, i);
        }
        let mut t = conc_task { id: 5 };
        // SAFETY: a closed pool is refused without being touched.
        assert_eq!(
            unsafe { conc_task_spawn(&mut t, p, Some(echo), ptr::null_mut()) },
            CONC_ERR_INVALID_STATE
        );
        assert_eq!(t.id, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { conc_pool_threads(p) }, 0);
        let forged = 0x1230 as *mut conc_pool;
        // SAFETY: forged handles are refused without being touched.
        assert_eq!(
            unsafe { conc_parallel_for(forged, 0, 1, 1, Some(count), ptr::null_mut()) },
            CONC_ERR_INVALID_STATE
        );
    }

    #[test]
    fn ids_are_unique_and_not_neighbours() {
        let ts: Vec<_> = (0..1000).map(|i| spawn(ptr::null_mut(), echo, i)).collect();
        let mut ids: Vec<u64> = ts.iter().map(|t| t.id).collect();
        for w in ids.windows(2) {
            assert!(w[0].abs_diff(w[1]) > 1 << 20);
        }
        for t in &ts {
            let forged = conc_task {
                id: t.id.wrapping_add(1),
            };
            // SAFETY: NULL result.
            assert_eq!(
                unsafe { conc_task_join(forged, ptr::null_mut()) },
                CONC_ERR_INVALID_STATE
            );
        }
        for t in ts {
            join_ok(t);
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn for_ranges_helper() {
        let total = AtomicUsize::new(0);
        for_ranges(1000, 10, &|b, e| {
            total.fetch_add(e - b, Relaxed);
        });
        assert_eq!(total.load(Relaxed), 1000);
    }
}
