//! Queues between processes (issue: "Queues between processes"). Not
//! written yet.
