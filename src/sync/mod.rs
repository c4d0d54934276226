//! Synchronization: the futex wait/wake helper shared by every blocking
//! wait in conc, and (to come) the robust primitives that C programs place
//! in their own memory: mutex, condition variable, semaphore, barrier and
//! event.

pub mod futex;
