//! Threads: `conc_thread_spawn`, `conc_thread_join` and their companions,
//! made directly with `pthread_create`/`pthread_join` so that they cost
//! what raw pthreads cost.
//!
//! A `conc_thread` is a copyable 64-bit id. Every joinable thread has an
//! entry in one registry, keyed by its id, holding its `pthread_t`. Join and
//! detach take the entry out under the registry's lock, so of two racing
//! joiners exactly one finds it; an id that is not in the registry (zero,
//! forged, joined, detached, or a copy of one of those) is refused with
//! `CONC_ERR_INVALID_STATE` instead of reaching pthreads as a dangling
//! `pthread_t`.
//!
//! Ids are a bijective mix of a counter XOR a per-process random key: never
//! 0, never reused, and not guessable from one another, so `{id + 1}` of a
//! live handle names nothing.
//!
//! Joins that would never return are refused: a thread joining itself, or
//! closing a cycle of joins (A joins B while B joins A, or longer). Each
//! join in progress records who waits on whom in the registry, so the
//! joiner follows the chain from its target under the lock: if it leads
//! back to the joiner, the join is `CONC_ERR_DEADLOCK`.
//!
//! A timed join marks the entry as being joined (so that other joins are
//! refused meanwhile), waits with `pthread_clockjoin_np` on the monotonic
//! clock, and clears the mark on time-out: the handle stays joinable.
//!
//! A thread with neither name nor stack size runs the caller's function
//! itself (no allocation). A named thread starts in a small trampoline that
//! sets the name from inside the new thread, then calls the function.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use crate::error::{
    conc_status, Error, Result, CONC_ERR_DEADLOCK, CONC_ERR_INVALID_STATE,
    CONC_ERR_RESOURCE_EXHAUSTED, CONC_ERR_TIMED_OUT,
};
use crate::ffi::{c_str, guard, guard_value, opt_out_ref, out_ref};

/// The function a new thread runs, with the same shape as a pthread start
/// routine: it receives the `arg` given to `conc_thread_spawn`, and what it
/// returns is handed to `conc_thread_join`. A thread may also end with
/// `pthread_exit(value)`, which `conc_thread_join` reports the same way.
#[allow(non_camel_case_types)]
pub type conc_thread_fn = Option<unsafe extern "C" fn(arg: *mut c_void) -> *mut c_void>;

/// A thread handle: a small value that may be copied freely, like
/// `pthread_t`. Exactly one `conc_thread_join` or `conc_thread_detach` of
/// it (or of any copy) succeeds; afterwards every copy is refused with
/// `CONC_ERR_INVALID_STATE`. Id 0 is never valid, so a zeroed handle is
/// refused too, as is any id conc did not hand out.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct conc_thread {
    /// Opaque: compare handles by it, never compute one.
    pub id: u64,
}

/// How to start a thread (`conc_thread_spawn_with`). Zero-initialise it
/// (`conc_thread_options opts = {0};`) and set what you need.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct conc_thread_options {
    /// The thread's name, visible to debuggers, `top -H` and
    /// `pthread_getname_np`; NULL: none (the thread keeps the name Linux
    /// gives it, its creator's); `""` clears that. Copied: it need not
    /// outlive the call. Longer than the OS allows (15 bytes on Linux):
    /// truncated at a UTF-8 character boundary. The new thread sets it
    /// itself, before its function runs.
    pub name: *const c_char,
    /// The stack size in bytes. 0: the platform default (8 MiB on most
    /// Linux systems). Below the minimum the platform needs (about 16 KiB
    /// plus the thread-local storage and the guard page): raised to it.
    /// Rounded up to whole pages.
    pub stack_size: usize,
}

/// Linux keeps 15 bytes of a thread name (16 with the NUL).
const NAME_MAX: usize = 15;

/// One joinable thread.
struct Entry {
    thread: libc::pthread_t,
    /// The fork generation it was started in: a handle from before a fork
    /// names a thread that does not exist in the child.
    generation: u64,
    /// A thread is joining it now (a timed join may give it back).
    joining: bool,
}

/// A join in progress: `waiter` waits for `target` to end.
#[derive(Clone, Copy)]
struct Wait {
    waiter: libc::pthread_t,
    target: libc::pthread_t,
}

/// Ids are uniformly mixed already (and chosen by conc, not by callers),
/// so the map uses each id as its own hash.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Threads = HashMap<u64, Entry, BuildHasherDefault<IdHasher>>;

/// The joinable threads. A hash map keeps its capacity when entries leave,
/// so a spawn+join cycle allocates nothing here once it has grown.
struct Registry {
    /// The last counter value used to make an id.
    counter: u64,
    /// Made on the first spawn (a `HashMap` cannot be built in a `static`).
    threads: Option<Threads>,
    /// The joins in progress. Few: a Vec that keeps its capacity.
    waits: Vec<Wait>,
    /// Room reserved in `threads` for spawns under way (see [`Reservation`]).
    reserved: usize,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    counter: 0,
    threads: None,
    waits: Vec::new(),
    reserved: 0,
});

/// Bumped in the child after every `fork`.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// The registry, locked. ThreadSanitizer cannot see the std mutex inside
/// this uninstrumented library, so the guard announces the unlock → lock
/// edge (its memory is malloc'd and realloc'd under the lock, which TSan
/// does see).
struct RegistryGuard(MutexGuard<'static, Registry>);

impl std::ops::Deref for RegistryGuard {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        &self.0
    }
}

impl std::ops::DerefMut for RegistryGuard {
    fn deref_mut(&mut self) -> &mut Registry {
        &mut self.0
    }
}

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        // Runs before the inner guard unlocks.
        crate::tsan::release(std::ptr::addr_of!(REGISTRY).cast());
    }
}

fn registry() -> RegistryGuard {
    // Nothing panics while holding the lock, and the map stays consistent
    // whatever happens, so a poisoned lock is still good.
    let guard = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    crate::tsan::acquire(std::ptr::addr_of!(REGISTRY).cast());
    RegistryGuard(guard)
}

static FORK_HELD: crate::fork::Slot<RegistryGuard> = crate::fork::Slot::new();

/// The fork prepare handler's part: takes the registry, so that the child
/// never inherits it locked by a thread that does not exist there.
pub(crate) fn fork_lock() {
    let guard = registry();
    // SAFETY: called by the prepare handler only.
    unsafe { FORK_HELD.put(guard) };
}

/// The parent and child handlers' part. In the child, every handle from
/// before the fork names a thread that does not exist there (the new
/// generation makes joins refuse them), and no thread of the parent is
/// joining anything (clear() keeps the buffer: no allocation).
pub(crate) fn fork_unlock(in_child: bool) {
    // SAFETY: called by the parent or child handler only.
    if let Some(mut reg) = unsafe { FORK_HELD.take() } {
        if in_child {
            FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
            reg.waits.clear();
        }
    }
}

/// The splitmix64 finalizer: a bijection of `u64` that scatters
/// neighbouring inputs over the whole range.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The per-process random key ids are made with (see [`id_key`]).
static KEY: OnceLock<u64> = OnceLock::new();

/// The per-process random key ids are made with.
fn id_key() -> u64 {
    *KEY.get_or_init(|| {
        let mut key = 0u64;
        // SAFETY: the buffer is the 8 bytes of `key`.
        let got = unsafe { libc::getrandom((&mut key as *mut u64).cast(), 8, 0) };
        if got != 8 {
            // No getrandom (very old kernel): still differ between runs.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            key = mix(now ^ (u64::from(std::process::id()) << 32) ^ (&key as *const u64 as u64));
        }
        key
    })
}

impl Registry {
    /// Registers a started thread and returns its new id (never 0, never
    /// used before in this process).
    fn insert(&mut self, thread: libc::pthread_t, generation: u64, key: u64) -> u64 {
        loop {
            self.counter = self.counter.wrapping_add(1);
            let id = mix(self.counter ^ key);
            // mix is a bijection, so exactly one counter value gives 0.
            if id != 0 {
                let threads = self.threads.get_or_insert_with(Threads::default);
                threads.insert(
                    id,
                    Entry {
                        thread,
                        generation,
                        joining: false,
                    },
                );
                self.reserved = self.reserved.saturating_sub(1);
                return id;
            }
        }
    }

    /// Makes room for one more entry, so that registering a thread after
    /// it has started cannot fail: with memory short, the spawn fails
    /// before anything runs.
    fn reserve(&mut self, op: &str) -> Result<()> {
        let threads = self.threads.get_or_insert_with(Threads::default);
        threads
            .try_reserve(self.reserved + 1)
            .map_err(|_| Error::no_memory(format_args!("{op}: the thread registry")))?;
        // Each joinable thread can have one join in progress: room for all
        // of them now, so that a join never needs memory.
        let joins = threads.len() + self.reserved + 1;
        self.waits
            .try_reserve(joins.saturating_sub(self.waits.len()))
            .map_err(|_| Error::no_memory(format_args!("{op}: the thread registry")))?;
        self.reserved += 1;
        Ok(())
    }

    /// Takes `id` out of the registry for a detach: its `pthread_t`, which
    /// the caller now owns.
    fn take(&mut self, id: u64, op: &str) -> Result<libc::pthread_t> {
        let entry = self.find(id, op)?;
        let thread = entry.thread;
        if let Some(threads) = self.threads.as_mut() {
            threads.remove(&id);
        }
        Ok(thread)
    }

    /// The joinable entry `id`, not being joined by another thread.
    fn find(&mut self, id: u64, op: &str) -> Result<&mut Entry> {
        let threads = self.threads.get_or_insert_with(Threads::default);
        let Some(entry) = threads.get(&id) else {
            return Err(Error::new(
                CONC_ERR_INVALID_STATE,
                format_args!(
                    "{op}(thread {id:#x}): not a joinable thread (already joined or detached, \
                     a copy of such a handle, or never made by conc_thread_spawn)"
                ),
            ));
        };
        if entry.generation != FORK_GENERATION.load(Ordering::Relaxed) {
            threads.remove(&id);
            return Err(Error::new(
                CONC_ERR_INVALID_STATE,
                format_args!(
                    "{op}(thread {id:#x}): the thread was started before a fork and does not \
                     exist in this process"
                ),
            ));
        }
        if entry.joining {
            return Err(Error::new(
                CONC_ERR_INVALID_STATE,
                format_args!("{op}(thread {id:#x}): another thread is joining it"),
            ));
        }
        Ok(threads.get_mut(&id).expect("the entry was just found"))
    }

    /// Claims `id` for a join by the calling thread `me`: marks it as being
    /// joined and records that `me` waits for it. Refuses a join of
    /// oneself, and one that would close a cycle of joins.
    fn claim(&mut self, id: u64, op: &str, me: libc::pthread_t) -> Result<libc::pthread_t> {
        self.waits.try_reserve(1).map_err(|_| {
            Error::os(
                format_args!("{op}(thread {id:#x}): no memory"),
                libc::ENOMEM,
            )
            .with_status(CONC_ERR_RESOURCE_EXHAUSTED)
        })?;
        let target = self.find(id, op)?.thread;
        // Follow who the target waits for, and so on: each thread waits
        // for at most one, so this is a chain, at most as long as the list.
        let mut next = target;
        for _ in 0..=self.waits.len() {
            // SAFETY: pthread_equal has no preconditions.
            if unsafe { libc::pthread_equal(next, me) } != 0 {
                let what = if next == target {
                    "a thread cannot join itself".to_string()
                } else {
                    "joining it would close a cycle of joins (it waits, directly or through \
                     other threads, for the calling thread)"
                        .to_string()
                };
                return Err(
                    Error::os(format_args!("{op}(thread {id:#x}): {what}"), libc::EDEADLK)
                        .with_status(CONC_ERR_DEADLOCK),
                );
            }
            // SAFETY: as above.
            match self
                .waits
                .iter()
                .find(|w| unsafe { libc::pthread_equal(w.waiter, next) } != 0)
            {
                Some(w) => next = w.target,
                None => break,
            }
        }
        self.find(id, op)?.joining = true;
        self.waits.push(Wait { waiter: me, target });
        Ok(target)
    }

    /// Ends the join of `id` by `me`: forgets the entry once joined, or
    /// gives it back (still joinable) after a time-out.
    fn unclaim(&mut self, id: u64, me: libc::pthread_t, joined: bool) {
        // SAFETY: pthread_equal has no preconditions.
        if let Some(i) = self
            .waits
            .iter()
            .position(|w| unsafe { libc::pthread_equal(w.waiter, me) } != 0)
        {
            self.waits.swap_remove(i);
        }
        if let Some(threads) = self.threads.as_mut() {
            if joined {
                threads.remove(&id);
            } else if let Some(e) = threads.get_mut(&id) {
                e.joining = false;
            }
        }
    }
}

/// What the trampoline of a named thread needs; boxed by the spawner and
/// freed by the new thread before it calls `f`.
struct Start {
    f: unsafe extern "C-unwind" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
    name: [c_char; NAME_MAX + 1],
}

/// The start routine of named threads. "C-unwind" and nothing to drop
/// while `f` runs, so a `pthread_exit` inside `f` unwinds through here.
extern "C-unwind" fn start_named(start: *mut c_void) -> *mut c_void {
    // SAFETY: `start` is the Box<Start> the spawner leaked for this thread,
    // and only this thread takes it back.
    let Start { f, arg, name } = *unsafe { Box::from_raw(start.cast::<Start>()) };
    // SAFETY: `name` is NUL-terminated. A failure to set the name is not
    // worth failing the thread for, and there is nobody to tell.
    unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
    // SAFETY: `f` and `arg` are what the caller of conc_thread_spawn_with
    // gave for this thread.
    unsafe { f(arg) }
}

/// The longest prefix of `name` that the OS keeps, cut at a UTF-8
/// character boundary (before any continuation byte that would be split).
fn truncate_name(name: &[u8]) -> &[u8] {
    if name.len() <= NAME_MAX {
        return name;
    }
    let mut end = NAME_MAX;
    while end > 0 && name[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    &name[..end]
}

type GetMinstack = unsafe extern "C" fn(*const libc::pthread_attr_t) -> usize;

/// glibc's `__pthread_get_minstack`, looked up once (see [`get_minstack`]).
static GET_MINSTACK: OnceLock<Option<GetMinstack>> = OnceLock::new();

/// glibc's `__pthread_get_minstack`, if the C library has it.
fn get_minstack() -> Option<GetMinstack> {
    *GET_MINSTACK.get_or_init(|| {
        // glibc's own answer (PTHREAD_STACK_MIN plus the static TLS and the
        // guard page), as Rust's std asks it; absent on other C libraries.
        // SAFETY: dlsym with a NUL-terminated name has no other precondition.
        let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__pthread_get_minstack".as_ptr()) };
        // SAFETY: when present, the symbol is this function.
        (!sym.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, GetMinstack>(sym) })
    })
}

/// Completes every lazy initialisation of this module now, for
/// `conc_process_spawn` to call before it forks. A fork while another
/// thread is inside one of them would leave it "under way" forever in the
/// child, whose first conc call to need it would then wait forever.
pub(crate) fn init_lazy_statics() {
    // Both TSan look-ups (dlsym) happen here, never in a fork handler.
    crate::tsan::acquire(std::ptr::addr_of!(REGISTRY).cast());
    crate::tsan::release(std::ptr::addr_of!(REGISTRY).cast());
    id_key();
    get_minstack();
    clockjoin();
}

/// Whether every lazy initialisation of this module is complete.
#[cfg(test)]
pub(crate) fn lazy_statics_ready() -> bool {
    crate::fork::registered()
        && KEY.get().is_some()
        && GET_MINSTACK.get().is_some()
        && CLOCKJOIN.get().is_some()
}

/// The smallest stack the platform accepts for a thread made with `attr`.
fn min_stack_size(attr: *const libc::pthread_attr_t) -> usize {
    match get_minstack() {
        // SAFETY: attr is an initialised attribute object.
        Some(get) => unsafe { get(attr) },
        None => {
            // SAFETY: sysconf has no preconditions.
            let min = unsafe { libc::sysconf(libc::_SC_THREAD_STACK_MIN) };
            usize::try_from(min)
                .unwrap_or(0)
                .max(libc::PTHREAD_STACK_MIN)
        }
    }
}

/// `requested` raised to `min` and rounded up to whole pages; `None` if
/// that does not fit in the address space.
fn round_stack_size(requested: usize, min: usize, page: usize) -> Option<usize> {
    requested.max(min).checked_next_multiple_of(page.max(1))
}

/// Calls `pthread_create`, mapping its error to a conc error.
///
/// # Safety
/// `attr` is NULL or initialised; `start` is a valid start routine for `arg`.
unsafe fn create(
    attr: *const libc::pthread_attr_t,
    start: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
    context: &dyn Fn() -> crate::error::Message,
) -> Result<libc::pthread_t> {
    let mut thread = MaybeUninit::<libc::pthread_t>::uninit();
    // SAFETY: per the caller's contract; `thread` is writable.
    let rc = unsafe { libc::pthread_create(thread.as_mut_ptr(), attr, start, arg) };
    if rc != 0 {
        let err = Error::os(format_args!("{}: pthread_create", context()), rc);
        return Err(if rc == libc::EAGAIN || rc == libc::ENOMEM {
            err.with_status(CONC_ERR_RESOURCE_EXHAUSTED)
        } else {
            err
        });
    }
    // SAFETY: pthread_create succeeded, so it wrote the id.
    Ok(unsafe { thread.assume_init() })
}

/// Starts a thread with a name and/or a stack size.
///
/// # Safety
/// `f(arg)` must be safe to call on a new thread.
unsafe fn create_with(
    name: Option<&[u8]>,
    stack_size: usize,
    f: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
    context: &dyn Fn() -> crate::error::Message,
) -> Result<libc::pthread_t> {
    let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: attr is writable storage for an attribute object.
    let rc = unsafe { libc::pthread_attr_init(attr.as_mut_ptr()) };
    if rc != 0 {
        return Err(
            Error::os(format_args!("{}: pthread_attr_init", context()), rc)
                .with_status(CONC_ERR_RESOURCE_EXHAUSTED),
        );
    }
    let attr = attr.as_mut_ptr();
    let result = (|| {
        if stack_size != 0 {
            // SAFETY: sysconf has no preconditions.
            let page =
                usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
            let size =
                round_stack_size(stack_size, min_stack_size(attr), page).ok_or_else(|| {
                    Error::os(
                        format_args!("{}: the stack does not fit in memory", context()),
                        libc::ENOMEM,
                    )
                })?;
            // SAFETY: attr is initialised.
            let rc = unsafe { libc::pthread_attr_setstacksize(attr, size) };
            if rc != 0 {
                let err = Error::os(format_args!("{}: pthread_attr_setstacksize", context()), rc);
                return Err(err.with_status(CONC_ERR_RESOURCE_EXHAUSTED));
            }
        }
        let Some(name) = name else {
            // SAFETY: f has the pthread start routine's ABI and shape; the
            // caller vouches for f(arg).
            let start = unsafe {
                std::mem::transmute::<
                    unsafe extern "C" fn(*mut c_void) -> *mut c_void,
                    extern "C" fn(*mut c_void) -> *mut c_void,
                >(f)
            };
            // SAFETY: attr is initialised; see above for start.
            return unsafe { create(attr, start, arg, context) };
        };
        let mut start = Start {
            // SAFETY: the same function; "C-unwind" only tells Rust that a
            // pthread_exit may unwind out of it.
            f: unsafe {
                std::mem::transmute::<
                    unsafe extern "C" fn(*mut c_void) -> *mut c_void,
                    unsafe extern "C-unwind" fn(*mut c_void) -> *mut c_void,
                >(f)
            },
            arg,
            name: [0; NAME_MAX + 1],
        };
        for (dst, &src) in start.name.iter_mut().zip(truncate_name(name)) {
            *dst = src as c_char;
        }
        let start = Box::into_raw(crate::handle::try_box(start)?);
        // SAFETY: start_named unwinds only by pthread_exit's forced unwind,
        // which pthreads handle; the ABIs are otherwise the same.
        let routine = unsafe {
            std::mem::transmute::<
                extern "C-unwind" fn(*mut c_void) -> *mut c_void,
                extern "C" fn(*mut c_void) -> *mut c_void,
            >(start_named)
        };
        // SAFETY: attr is initialised; the new thread owns `start`.
        let created = unsafe { create(attr, routine, start.cast(), context) };
        if created.is_err() {
            // SAFETY: no thread was started, so `start` is still ours.
            drop(unsafe { Box::from_raw(start) });
        }
        created
    })();
    // SAFETY: attr is initialised and no longer used.
    unsafe { libc::pthread_attr_destroy(attr) };
    result
}

/// Room for one thread in the registry, taken before `pthread_create` and
/// given back on drop unless the thread was registered ([`Registry::insert`]
/// consumes it).
struct Reservation;

impl Reservation {
    fn take(op: &str) -> Result<Reservation> {
        registry().reserve(op)?;
        Ok(Reservation)
    }

    /// The thread was registered, which used the room up.
    fn used(self) {
        std::mem::forget(self);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut r = registry();
        r.reserved = r.reserved.saturating_sub(1);
    }
}

/// The body of both spawn functions.
///
/// # Safety
/// As for `conc_thread_spawn_with`.
unsafe fn spawn(
    op: &'static str,
    out: *mut conc_thread,
    options: *const conc_thread_options,
    f: conc_thread_fn,
    arg: *mut c_void,
) -> Result<()> {
    // SAFETY: out is NULL or writable, per the caller's contract.
    let out = unsafe { out_ref(out, op, "out") }?;
    *out = conc_thread { id: 0 };
    let Some(f) = f else {
        return Err(Error::null(op, "fn"));
    };
    crate::fork::ensure_registered();
    let reservation = Reservation::take(op)?;
    // SAFETY: options is NULL or valid, per the caller's contract.
    let options = unsafe { options.as_ref() };
    let name = match options {
        Some(o) if !o.name.is_null() => {
            // SAFETY: a non-NULL name is a NUL-terminated string.
            Some(unsafe { c_str(o.name, op, "options->name") }?.to_bytes())
        }
        _ => None,
    };
    let stack_size = options.map_or(0, |o| o.stack_size);
    let thread = if name.is_none() && stack_size == 0 {
        // SAFETY: f has the pthread start routine's ABI and shape; the
        // caller vouches for f(arg).
        let start = unsafe {
            std::mem::transmute::<
                unsafe extern "C" fn(*mut c_void) -> *mut c_void,
                extern "C" fn(*mut c_void) -> *mut c_void,
            >(f)
        };
        // SAFETY: NULL attributes are the defaults.
        unsafe { create(std::ptr::null(), start, arg, &|| crate::msg!("{op}")) }?
    } else {
        let context = || {
            let mut c = crate::msg!("{op}(");
            if let Some(name) = name {
                c += &crate::msg!("name \"{}\"", String::from_utf8_lossy(name).escape_debug());
                if stack_size != 0 {
                    c += ", ";
                }
            }
            if stack_size != 0 {
                c += &crate::msg!("stack_size {stack_size}");
            }
            c + ")"
        };
        // SAFETY: the caller vouches for f(arg).
        unsafe { create_with(name, stack_size, f, arg, &context) }?
    };
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    let key = id_key();
    out.id = registry().insert(thread, generation, key);
    reservation.used();
    Ok(())
}

/// Starts a new thread running `fn(arg)` at once, with the default stack
/// size and no name; its handle is written to `*out`.
///
/// The thread must be joined (`conc_thread_join`) or detached
/// (`conc_thread_detach`) exactly once; until then it stays registered,
/// and a thread never joined nor detached keeps its resources after it
/// ends, as with pthreads. `arg` is passed through untouched: it must stay
/// valid for as long as the thread uses it. The thread may be running
/// before `*out` is written: to hand a thread its own handle, pass it on
/// after this call returns.
///
/// Returns `CONC_OK`; `CONC_ERR_INVALID_ARGUMENT` if `out` or `fn` is NULL;
/// `CONC_ERR_RESOURCE_EXHAUSTED` if the OS is out of threads or memory for
/// the stack (`EAGAIN`); another status for any other OS error. On failure
/// `*out` is set to the zero handle (when `out` is not NULL) and no thread
/// was started.
///
/// # Safety
/// `out` must be NULL or point to writable memory for a `conc_thread`;
/// `fn(arg)` must be safe to run on another thread.
#[no_mangle]
pub unsafe extern "C" fn conc_thread_spawn(
    out: *mut conc_thread,
    r#fn: conc_thread_fn,
    arg: *mut c_void,
) -> conc_status {
    const OP: &str = "conc_thread_spawn";
    // SAFETY: forwarded contract.
    guard(OP, || unsafe {
        spawn(OP, out, std::ptr::null(), r#fn, arg)
    })
}

/// Like `conc_thread_spawn`, with a name and a stack size from `options`
/// (see `conc_thread_options`). `options` may be NULL: the defaults, the
/// same as `conc_thread_spawn`. The options are read during the call only.
///
/// The name is set by the new thread itself before `fn` runs, truncated to
/// the 15 bytes Linux keeps, at a UTF-8 character boundary (a multibyte
/// character is never split). A named thread may end with `pthread_exit`.
///
/// Returns `CONC_OK`; `CONC_ERR_INVALID_ARGUMENT` if `out` or `fn` is NULL;
/// `CONC_ERR_RESOURCE_EXHAUSTED` if the OS is out of threads, or memory for
/// the stack (an absurd `stack_size` included); another status for any
/// other OS error. On failure `*out` is set to the zero handle (when `out`
/// is not NULL) and no thread was started.
///
/// # Safety
/// `out` must be NULL or point to writable memory for a `conc_thread`;
/// `options` must be NULL or point to a `conc_thread_options` whose `name`
/// is NULL or a NUL-terminated string; `fn(arg)` must be safe to run on
/// another thread.
#[no_mangle]
pub unsafe extern "C" fn conc_thread_spawn_with(
    out: *mut conc_thread,
    options: *const conc_thread_options,
    r#fn: conc_thread_fn,
    arg: *mut c_void,
) -> conc_status {
    const OP: &str = "conc_thread_spawn_with";
    // SAFETY: forwarded contract.
    guard(OP, || unsafe { spawn(OP, out, options, r#fn, arg) })
}

type ClockJoin = unsafe extern "C" fn(
    libc::pthread_t,
    *mut *mut c_void,
    libc::clockid_t,
    *const libc::timespec,
) -> libc::c_int;

/// glibc's `pthread_clockjoin_np` (2.31 and later), looked up once.
static CLOCKJOIN: OnceLock<Option<ClockJoin>> = OnceLock::new();

fn clockjoin() -> Option<ClockJoin> {
    *CLOCKJOIN.get_or_init(|| {
        // ThreadSanitizer does not intercept it, and would take the joined
        // thread for a live one: the polling fallback uses
        // pthread_tryjoin_np, which it does intercept.
        if crate::tsan::active() {
            return None;
        }
        // SAFETY: dlsym with a NUL-terminated name has no other precondition.
        let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"pthread_clockjoin_np".as_ptr()) };
        // SAFETY: when present, the symbol is this function.
        (!sym.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, ClockJoin>(sym) })
    })
}

/// Joins `thread` if it ends within `timeout_ms` on the monotonic clock:
/// 0, `EBUSY` (0 ms: still running) or `ETIMEDOUT`, or another error.
///
/// # Safety
/// `thread` is joinable and claimed by the caller.
unsafe fn timed_join(thread: libc::pthread_t, value: *mut *mut c_void, timeout_ms: u64) -> i32 {
    if timeout_ms == 0 {
        // SAFETY: per the contract.
        return unsafe { libc::pthread_tryjoin_np(thread, value) };
    }
    if let Some(clockjoin) = clockjoin() {
        let now = crate::sync::futex::now();
        let extra_ns = (timeout_ms % 1000) as i64 * 1_000_000 + now.tv_nsec;
        let secs = i64::try_from(timeout_ms / 1000)
            .unwrap_or(i64::MAX)
            .saturating_add(now.tv_sec)
            .saturating_add(extra_ns / 1_000_000_000);
        let at = libc::timespec {
            tv_sec: secs,
            tv_nsec: extra_ns % 1_000_000_000,
        };
        // SAFETY: per the contract; `at` is a valid absolute time.
        return unsafe { clockjoin(thread, value, libc::CLOCK_MONOTONIC, &at) };
    }
    // An older glibc: poll in short sleeps, on the monotonic clock.
    let deadline = crate::sync::futex::Deadline::after_ms(timeout_ms);
    let mut pause_ms = 1;
    loop {
        // SAFETY: per the contract.
        let rc = unsafe { libc::pthread_tryjoin_np(thread, value) };
        if rc != libc::EBUSY {
            return rc;
        }
        if deadline.expired() {
            return libc::ETIMEDOUT;
        }
        let ms = deadline.remaining_ms().unwrap_or(pause_ms).min(pause_ms);
        std::thread::sleep(Duration::from_millis(ms.max(1)));
        pause_ms = (pause_ms * 2).min(10);
    }
}

/// The body of both joins: `timeout_ms` None waits for ever.
///
/// # Safety
/// `result` must be NULL or point to writable memory for a `void *`.
unsafe fn join(
    op: &str,
    thread: conc_thread,
    timeout_ms: Option<u64>,
    result: *mut *mut c_void,
) -> Result<()> {
    // SAFETY: no preconditions.
    let me = unsafe { libc::pthread_self() };
    let pthread = registry().claim(thread.id, op, me)?;
    let mut value = std::ptr::null_mut();
    let rc = match timeout_ms {
        // SAFETY: the entry is claimed by this thread: nobody else joins or
        // detaches it meanwhile.
        None | Some(u64::MAX) => unsafe { libc::pthread_join(pthread, &mut value) },
        // SAFETY: as above.
        Some(ms) => unsafe { timed_join(pthread, &mut value, ms) },
    };
    let timed_out = rc == libc::EBUSY || rc == libc::ETIMEDOUT;
    registry().unclaim(thread.id, me, !timed_out);
    if timed_out {
        return Err(Error::new(
            CONC_ERR_TIMED_OUT,
            format_args!(
                "{op}(thread {:#x}): the thread has not ended within {} ms",
                thread.id,
                timeout_ms.unwrap_or(0)
            ),
        ));
    }
    if rc != 0 {
        return Err(Error::os(
            format_args!("{op}(thread {:#x}): pthread_join", thread.id),
            rc,
        ));
    }
    // SAFETY: result is NULL or writable, per the caller's contract.
    if let Some(result) = unsafe { opt_out_ref(result) } {
        *result = value;
    }
    Ok(())
}

/// Waits for `thread` to finish and writes what its function returned (or
/// passed to `pthread_exit`) to `*result`; `result` may be NULL to discard
/// it. The handle, and every copy of it, is then spent.
///
/// Returns `CONC_OK`; `CONC_ERR_INVALID_STATE` if the handle is not
/// joinable: already joined or detached, a copy of such a handle, zero,
/// forged, or from before a `fork` (that thread does not exist in the
/// child). When several threads join one handle at once, exactly one gets
/// `CONC_OK` and the others `CONC_ERR_INVALID_STATE`.
/// `CONC_ERR_DEADLOCK` if the join could never return: `thread` is the
/// calling thread itself, or joining it would close a cycle of joins among
/// conc threads (A joins B while B joins A, or A joins B, B joins C and C
/// joins A); the handle then stays joinable. conc sees only joins made
/// through conc: a cycle through `pthread_join` or another wait is not
/// detected. `*result` is written only on success.
///
/// # Safety
/// `result` must be NULL or point to writable memory for a `void *`.
#[no_mangle]
pub unsafe extern "C" fn conc_thread_join(
    thread: conc_thread,
    result: *mut *mut c_void,
) -> conc_status {
    const OP: &str = "conc_thread_join";
    // SAFETY: forwarded contract.
    guard(OP, || unsafe { join(OP, thread, None, result) })
}

/// Like `conc_thread_join`, but waits at most `timeout_ms` milliseconds,
/// measured on the monotonic clock (changing the wall clock neither
/// shortens nor stretches it): `CONC_ERR_TIMED_OUT` if the thread has not
/// ended by then, and the handle stays joinable. A timeout of 0 polls once;
/// `UINT64_MAX` waits for ever.
///
/// While one thread is joining (even with a timeout), another thread's
/// join or detach of the same handle gets `CONC_ERR_INVALID_STATE`.
/// Otherwise the statuses are `conc_thread_join`'s, `CONC_ERR_DEADLOCK`
/// included (joining oneself, or closing a cycle of joins). `*result` is
/// written only on `CONC_OK`.
///
/// # Safety
/// `result` must be NULL or point to writable memory for a `void *`.
#[no_mangle]
pub unsafe extern "C" fn conc_thread_join_timeout(
    thread: conc_thread,
    timeout_ms: u64,
    result: *mut *mut c_void,
) -> conc_status {
    const OP: &str = "conc_thread_join_timeout";
    // SAFETY: forwarded contract.
    guard(OP, || unsafe { join(OP, thread, Some(timeout_ms), result) })
}

/// Lets `thread` run on without ever being joined: its resources are freed
/// when it ends. The handle, and every copy of it, is then spent. A thread
/// may detach itself.
///
/// Returns `CONC_OK`; `CONC_ERR_INVALID_STATE` if the handle is not
/// joinable (already joined or detached, a copy of such a handle, zero,
/// forged, or from before a `fork`).
#[no_mangle]
pub extern "C" fn conc_thread_detach(thread: conc_thread) -> conc_status {
    const OP: &str = "conc_thread_detach";
    guard(OP, || {
        let pthread = registry().take(thread.id, OP)?;
        // SAFETY: the registry entry was joinable and is now ours alone.
        let rc = unsafe { libc::pthread_detach(pthread) };
        if rc != 0 {
            return Err(Error::os(
                format_args!("{OP}(thread {:#x}): pthread_detach", thread.id),
                rc,
            ));
        }
        Ok(())
    })
}

/// Returns the number of CPUs this process may run on: its CPU affinity
/// mask, lowered to a cgroup CPU quota if one is set. At least 1.
#[no_mangle]
pub extern "C" fn conc_cpu_count() -> usize {
    guard_value("conc_cpu_count", 1, crate::cpus::available)
}

/// Offers the rest of the calling thread's time slice to other threads
/// (`sched_yield`).
#[no_mangle]
pub extern "C" fn conc_thread_yield() {
    std::thread::yield_now();
}

/// Suspends the calling thread for at least `milliseconds` milliseconds
/// (longer if the system is busy); signals do not cut it short. 0 returns
/// at once.
#[no_mangle]
pub extern "C" fn conc_sleep_ms(milliseconds: u64) {
    guard_value("conc_sleep_ms", (), || {
        std::thread::sleep(Duration::from_millis(milliseconds))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{last_error_message, CONC_ERR_INVALID_ARGUMENT, CONC_OK};
    use std::collections::HashSet;
    use std::ptr::null_mut;

    unsafe extern "C" fn echo(arg: *mut c_void) -> *mut c_void {
        arg
    }

    fn spawn_echo(value: usize) -> conc_thread {
        let mut t = conc_thread { id: 0 };
        // SAFETY: out is a local; echo touches nothing.
        let s = unsafe { conc_thread_spawn(&mut t, Some(echo), value as *mut c_void) };
        assert_eq!(s, CONC_OK);
        assert_ne!(t.id, 0);
        t
    }

    fn join(t: conc_thread) -> (conc_status, usize) {
        let mut r = null_mut();
        // SAFETY: r is a local.
        let s = unsafe { conc_thread_join(t, &mut r) };
        (s, r as usize)
    }

    #[test]
    fn mix_is_a_bijection_on_samples() {
        let key = 0x1234_5678_9abc_def0;
        let ids: HashSet<u64> = (1..=100_000u64).map(|c| mix(c ^ key)).collect();
        assert_eq!(ids.len(), 100_000);
        assert_eq!(mix(0), 0);
        // Neighbouring counters land far apart.
        let a = mix(1 ^ key);
        let b = mix(2 ^ key);
        assert!((a ^ b).count_ones() > 10, "{a:#x} {b:#x}");
    }

    #[test]
    fn registry_ids_are_never_zero_nor_reused() {
        let mut reg = Registry {
            counter: 0,
            threads: None,
            waits: Vec::new(),
            reserved: 0,
        };
        // The key that makes counter 1 map to id 0: that value is skipped.
        let key = 1;
        let first = reg.insert(0, 0, key);
        assert_ne!(first, 0);
        assert_eq!(reg.counter, 2);
        let mut seen = HashSet::from([first]);
        for _ in 0..1000 {
            let id = reg.insert(0, 0, key);
            assert_ne!(id, 0);
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn registry_take_refuses_unknown_and_taken_ids() {
        let mut reg = Registry {
            counter: 0,
            threads: None,
            waits: Vec::new(),
            reserved: 0,
        };
        let generation = FORK_GENERATION.load(Ordering::Relaxed);
        let id = reg.insert(0, generation, 77);
        let e = reg.take(id.wrapping_add(1), "op").unwrap_err();
        assert_eq!(e.status, CONC_ERR_INVALID_STATE);
        assert!(e.message.starts_with("op(thread 0x"), "{}", e.message);
        assert_eq!(
            reg.take(0, "op").unwrap_err().status,
            CONC_ERR_INVALID_STATE
        );
        assert!(reg.take(id, "op").is_ok());
        assert_eq!(
            reg.take(id, "op").unwrap_err().status,
            CONC_ERR_INVALID_STATE
        );
        // An entry from an older fork generation is refused and dropped.
        let old = reg.insert(0, generation.wrapping_sub(1), 77);
        let e = reg.take(old, "op").unwrap_err();
        assert_eq!(e.status, CONC_ERR_INVALID_STATE);
        assert!(e.message.contains("before a fork"), "{}", e.message);
        assert!(reg.threads.as_ref().is_some_and(|t| t.is_empty()));
    }

    #[test]
    fn registry_claim_refuses_self_join_and_keeps_entry() {
        let mut reg = Registry {
            counter: 0,
            threads: None,
            waits: Vec::new(),
            reserved: 0,
        };
        // SAFETY: no preconditions.
        let me = unsafe { libc::pthread_self() };
        let id = reg.insert(me, FORK_GENERATION.load(Ordering::Relaxed), 5);
        let e = reg.claim(id, "conc_thread_join", me).unwrap_err();
        assert_eq!(e.status, CONC_ERR_DEADLOCK);
        assert!(e.message.contains("cannot join itself"), "{}", e.message);
        assert!(reg.threads.as_ref().is_some_and(|t| t.contains_key(&id)));
        assert!(reg.waits.is_empty());
        // Detaching oneself is fine.
        assert_eq!(reg.take(id, "op").unwrap(), me);
    }

    #[test]
    fn registry_claim_refuses_cycles_and_busy_entries() {
        let mut reg = Registry {
            counter: 0,
            threads: None,
            waits: Vec::new(),
            reserved: 0,
        };
        let g = FORK_GENERATION.load(Ordering::Relaxed);
        // Pretend pthread_t values 1, 2, 3 (compared only).
        let (a, b, c) = (1, 2, 3);
        let ia = reg.insert(a, g, 9);
        let ib = reg.insert(b, g, 9);
        let ic = reg.insert(c, g, 9);
        // a joins b, b joins c: c joining a closes the cycle.
        assert_eq!(reg.claim(ib, "op", a).unwrap(), b);
        assert_eq!(reg.claim(ic, "op", b).unwrap(), c);
        let e = reg.claim(ia, "op", c).unwrap_err();
        assert_eq!(e.status, CONC_ERR_DEADLOCK);
        assert!(e.message.contains("cycle of joins"), "{}", e.message);
        // A second join of b while a joins it, and a detach: refused.
        let e = reg.claim(ib, "op", c).unwrap_err();
        assert_eq!(e.status, CONC_ERR_INVALID_STATE);
        assert!(e.message.contains("another thread is joining"));
        assert_eq!(
            reg.take(ib, "op").unwrap_err().status,
            CONC_ERR_INVALID_STATE
        );
        // b's join of c times out: c is joinable again, and b waits for
        // nobody, so c may join a (a waits for b, who waits for nothing).
        reg.unclaim(ic, b, false);
        assert!(!reg.threads.as_ref().unwrap()[&ic].joining);
        assert_eq!(reg.claim(ia, "op", c).unwrap(), a);
        reg.unclaim(ia, c, true);
        reg.unclaim(ib, a, true);
        assert!(reg.waits.is_empty());
        assert_eq!(reg.threads.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn truncation_keeps_utf8_whole() {
        assert_eq!(truncate_name(b""), b"");
        assert_eq!(truncate_name(b"short"), b"short");
        assert_eq!(truncate_name(b"exactly15bytes!"), b"exactly15bytes!");
        assert_eq!(truncate_name(b"sixteen-bytes-xx"), b"sixteen-bytes-x");
        // 'é' is 2 bytes: 7 of them are 14 bytes, the 8th would split.
        let e8 = "éééééééé".as_bytes();
        assert_eq!(truncate_name(e8), "ééééééé".as_bytes());
        // '€' is 3 bytes: 5 fill 15 bytes exactly.
        assert_eq!(truncate_name("€€€€€€".as_bytes()), "€€€€€".as_bytes());
        // A 4-byte character straddling byte 15 is dropped whole.
        let s = "abcdefghijklm😀z";
        assert_eq!(truncate_name(s.as_bytes()), b"abcdefghijklm");
        // Not UTF-8 at all: still at most 15 bytes, no panic.
        assert_eq!(truncate_name(&[0x80; 20]), b"");
        assert_eq!(truncate_name(&[0xff; 20]).len(), 15);
        for cut in 0..40 {
            let name: String = "aé€😀".chars().cycle().take(cut).collect();
            let t = truncate_name(name.as_bytes());
            assert!(t.len() <= NAME_MAX);
            assert!(std::str::from_utf8(t).is_ok());
            assert!(name.as_bytes().starts_with(t));
        }
    }

    #[test]
    fn stack_size_rounding() {
        assert_eq!(round_stack_size(1, 16384, 4096), Some(16384));
        assert_eq!(round_stack_size(20000, 16384, 4096), Some(20480));
        assert_eq!(round_stack_size(1 << 20, 16384, 4096), Some(1 << 20));
        assert_eq!(round_stack_size(usize::MAX, 16384, 4096), None);
    }

    #[test]
    fn spawn_join_roundtrip_and_double_join() {
        let t = spawn_echo(42);
        assert_eq!(join(t), (CONC_OK, 42));
        assert_eq!(join(t).0, CONC_ERR_INVALID_STATE);
        assert!(last_error_message().starts_with("conc_thread_join(thread 0x"));
        assert_eq!(conc_thread_detach(t), CONC_ERR_INVALID_STATE);
    }

    #[test]
    fn detach_then_join_refused() {
        let t = spawn_echo(1);
        assert_eq!(conc_thread_detach(t), CONC_OK);
        assert_eq!(join(t).0, CONC_ERR_INVALID_STATE);
        assert_eq!(conc_thread_detach(t), CONC_ERR_INVALID_STATE);
    }

    #[test]
    fn forged_neighbour_refused() {
        let t = spawn_echo(3);
        let forged = conc_thread {
            id: t.id.wrapping_add(1),
        };
        assert_eq!(join(forged).0, CONC_ERR_INVALID_STATE);
        assert_eq!(join(conc_thread { id: 0 }).0, CONC_ERR_INVALID_STATE);
        assert_eq!(join(t), (CONC_OK, 3));
    }

    #[test]
    fn null_arguments() {
        let mut t = conc_thread { id: 99 };
        // SAFETY: out is a local; fn is NULL and must be refused.
        let s = unsafe { conc_thread_spawn(&mut t, None, null_mut()) };
        assert_eq!(s, CONC_ERR_INVALID_ARGUMENT);
        assert_eq!(t.id, 0);
        assert_eq!(
            last_error_message(),
            "conc_thread_spawn: argument `fn` is NULL"
        );
        // SAFETY: out is NULL and must be refused.
        let s = unsafe { conc_thread_spawn(null_mut(), Some(echo), null_mut()) };
        assert_eq!(s, CONC_ERR_INVALID_ARGUMENT);
    }

    #[test]
    fn absurd_stack_size_is_resource_exhausted() {
        let mut t = conc_thread { id: 99 };
        let opts = conc_thread_options {
            name: std::ptr::null(),
            stack_size: usize::MAX / 2,
        };
        // SAFETY: all pointers are locals.
        let s = unsafe { conc_thread_spawn_with(&mut t, &opts, Some(echo), null_mut()) };
        assert_eq!(s, CONC_ERR_RESOURCE_EXHAUSTED);
        assert_eq!(t.id, 0);
        let msg = last_error_message();
        assert!(
            msg.starts_with("conc_thread_spawn_with(stack_size "),
            "{msg}"
        );
    }

    unsafe extern "C" fn sleep_then_echo(arg: *mut c_void) -> *mut c_void {
        std::thread::sleep(Duration::from_millis(300));
        arg
    }

    fn join_timeout(t: conc_thread, ms: u64) -> (conc_status, usize) {
        let mut r = 7 as *mut c_void;
        // SAFETY: r is a local.
        let s = unsafe { conc_thread_join_timeout(t, ms, &mut r) };
        (s, r as usize)
    }

    #[test]
    fn join_timeout_times_out_then_joins() {
        let mut t = conc_thread { id: 0 };
        // SAFETY: out is a local; the function touches nothing.
        let s = unsafe { conc_thread_spawn(&mut t, Some(sleep_then_echo), 5 as *mut c_void) };
        assert_eq!(s, CONC_OK);
        assert_eq!(join_timeout(t, 0), (CONC_ERR_TIMED_OUT, 7));
        let start = std::time::Instant::now();
        assert_eq!(join_timeout(t, 50), (CONC_ERR_TIMED_OUT, 7));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(last_error_message().contains("within 50 ms"));
        assert_eq!(join_timeout(t, 10_000), (CONC_OK, 5));
        assert_eq!(join_timeout(t, 0).0, CONC_ERR_INVALID_STATE);
        let t = spawn_echo(8);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(join_timeout(t, 0), (CONC_OK, 8));
    }

    #[test]
    fn cpu_count_at_least_one() {
        assert!(conc_cpu_count() >= 1);
    }
}
