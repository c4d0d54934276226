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
//! A thread with neither name nor stack size runs the caller's function
//! itself (no allocation). A named thread starts in a small trampoline that
//! sets the name from inside the new thread, then calls the function.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock, PoisonError};
use std::time::Duration;

use crate::error::{
    conc_status, Error, Result, CONC_ERR_DEADLOCK, CONC_ERR_INVALID_STATE,
    CONC_ERR_RESOURCE_EXHAUSTED,
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
}

/// Ids are uniformly mixed already (and chosen by conc, not by callers),
/// so the map uses each id as its own hash.
#[derive(Default)]
struct IdHasher(u64);

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
    /// Room reserved in `threads` for spawns under way (see [`Reservation`]).
    reserved: usize,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    counter: 0,
    threads: None,
    reserved: 0,
});

/// Bumped in the child after every `fork`.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static FORK_HANDLER: Once = Once::new();

fn registry() -> MutexGuard<'static, Registry> {
    // Nothing panics while holding the lock, and the map stays consistent
    // whatever happens, so a poisoned lock is still good.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Holds the thread registry's lock until the returned guard is dropped.
/// `conc_process_spawn` holds it across `fork`, so that the child never
/// inherits it locked by a thread that does not exist there.
pub(crate) fn lock_registry_for_fork() -> impl Sized {
    registry()
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
                threads.insert(id, Entry { thread, generation });
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
        self.reserved += 1;
        Ok(())
    }

    /// Takes `id` out of the registry for a join or a detach by the calling
    /// thread: its `pthread_t`, which the caller now owns.
    fn take(&mut self, id: u64, op: &str, joining: bool) -> Result<libc::pthread_t> {
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
        // SAFETY: pthread_equal and pthread_self have no preconditions.
        if joining && unsafe { libc::pthread_equal(entry.thread, libc::pthread_self()) } != 0 {
            return Err(Error::os(
                format_args!("{op}(thread {id:#x}): a thread cannot join itself"),
                libc::EDEADLK,
            )
            .with_status(CONC_ERR_DEADLOCK));
        }
        let entry = threads.remove(&id).map(|e| e.thread);
        Ok(entry.expect("the entry was just found"))
    }
}

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Makes sure a fork invalidates the handles of threads that the child
/// does not have (joining one there would wait forever).
fn watch_forks() {
    FORK_HANDLER.call_once(|| {
        // SAFETY: the handler is a plain function that only bumps an atomic,
        // which is async-signal-safe as a child handler must be. A failure
        // (ENOMEM) only loses that protection.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
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
    watch_forks();
    id_key();
    get_minstack();
}

/// Whether every lazy initialisation of this module is complete.
#[cfg(test)]
pub(crate) fn lazy_statics_ready() -> bool {
    FORK_HANDLER.is_completed() && KEY.get().is_some() && GET_MINSTACK.get().is_some()
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
    watch_forks();
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

/// Waits for `thread` to finish and writes what its function returned (or
/// passed to `pthread_exit`) to `*result`; `result` may be NULL to discard
/// it. The handle, and every copy of it, is then spent.
///
/// Returns `CONC_OK`; `CONC_ERR_INVALID_STATE` if the handle is not
/// joinable: already joined or detached, a copy of such a handle, zero,
/// forged, or from before a `fork` (that thread does not exist in the
/// child). When several threads join one handle at once, exactly one gets
/// `CONC_OK` and the others `CONC_ERR_INVALID_STATE`.
/// `CONC_ERR_DEADLOCK` if `thread` is the calling thread itself: the
/// handle then stays joinable by another thread. `*result` is written only
/// on success.
///
/// # Safety
/// `result` must be NULL or point to writable memory for a `void *`.
#[no_mangle]
pub unsafe extern "C" fn conc_thread_join(
    thread: conc_thread,
    result: *mut *mut c_void,
) -> conc_status {
    const OP: &str = "conc_thread_join";
    guard(OP, || {
        let pthread = registry().take(thread.id, OP, true)?;
        let mut value = std::ptr::null_mut();
        // SAFETY: the registry entry was joinable and is now ours alone.
        let rc = unsafe { libc::pthread_join(pthread, &mut value) };
        if rc != 0 {
            return Err(Error::os(
                format_args!("{OP}(thread {:#x}): pthread_join", thread.id),
                rc,
            ));
        }
        // SAFETY: result is NULL or writable, per the caller's contract.
        if let Some(result) = unsafe { opt_out_ref(result) } {
            *result = value;
        }
        Ok(())
    })
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
        let pthread = registry().take(thread.id, OP, false)?;
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
            reserved: 0,
        };
        let generation = FORK_GENERATION.load(Ordering::Relaxed);
        let id = reg.insert(0, generation, 77);
        let e = reg.take(id.wrapping_add(1), "op", true).unwrap_err();
        assert_eq!(e.status, CONC_ERR_INVALID_STATE);
        assert!(e.message.starts_with("op(thread 0x"), "{}", e.message);
        assert_eq!(
            reg.take(0, "op", false).unwrap_err().status,
            CONC_ERR_INVALID_STATE
        );
        assert!(reg.take(id, "op", false).is_ok());
        assert_eq!(
            reg.take(id, "op", false).unwrap_err().status,
            CONC_ERR_INVALID_STATE
        );
        // An entry from an older fork generation is refused and dropped.
        let old = reg.insert(0, generation.wrapping_sub(1), 77);
        let e = reg.take(old, "op", true).unwrap_err();
        assert_eq!(e.status, CONC_ERR_INVALID_STATE);
        assert!(e.message.contains("before a fork"), "{}", e.message);
        assert!(reg.threads.as_ref().is_some_and(|t| t.is_empty()));
    }

    #[test]
    fn registry_take_refuses_self_join_and_keeps_entry() {
        let mut reg = Registry {
            counter: 0,
            threads: None,
            reserved: 0,
        };
        // SAFETY: no preconditions.
        let me = unsafe { libc::pthread_self() };
        let id = reg.insert(me, FORK_GENERATION.load(Ordering::Relaxed), 5);
        let e = reg.take(id, "conc_thread_join", true).unwrap_err();
        assert_eq!(e.status, CONC_ERR_DEADLOCK);
        assert!(e.message.contains("cannot join itself"), "{}", e.message);
        assert!(reg.threads.as_ref().is_some_and(|t| t.contains_key(&id)));
        // Detaching oneself is fine.
        assert_eq!(reg.take(id, "op", false).unwrap(), me);
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

    #[test]
    fn cpu_count_at_least_one() {
        assert!(conc_cpu_count() >= 1);
    }
}
