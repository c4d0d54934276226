//! conc: threads, memory-mapped files, shared memory between processes and
//! child processes for C and C++, through one small, safe C ABI.
//!
//! The C header `include/conc.h` is generated from this crate by cbindgen
//! (see `build.rs`); the doc comments of the exported functions are the
//! documentation C users read. One module per concept:
//!
//! - [`cpus`]: how many CPUs the process may use, found without allocating;
//! - [`error`]: `conc_status`, the thread-local last error, the version;
//! - [`ffi`]: the boundary helpers every exported function goes through;
//! - [`handle`]: the generational handles behind every opaque pointer;
//! - [`thread`]: threads; [`mmap`]: memory-mapped files;
//! - [`shm`]: shared memory; [`process`]: child processes;
//! - [`list`]: shared typed lists;
//! - [`sync`]: the futex wait/wake helper and the robust synchronization
//!   primitives (mutex, condition variable, semaphore, barrier, event);
//! - [`pool`]: thread pools, tasks and parallel loops;
//! - [`queue`]: message queues between processes;
//! - [`tsan`]: ThreadSanitizer annotations for the edges conc creates.

#![deny(unsafe_op_in_unsafe_fn)]
// `error::Error` carries its message inline (256 bytes) so that building
// one never allocates, even with the heap exhausted. Results are returned
// through memory either way; the success path never copies the error.
#![allow(clippy::result_large_err)]

pub mod cpus;
pub mod error;
pub mod ffi;
mod fork;
pub mod handle;
pub mod list;
pub mod mmap;
pub mod pool;
pub mod process;
pub mod queue;
pub mod shm;
pub mod sigbus;
pub mod sync;
pub mod thread;
pub mod tsan;
