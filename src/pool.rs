//! Thread pools, tasks and parallel loops (issue: "Thread pools, tasks and
//! parallel loops"). Not written yet.
