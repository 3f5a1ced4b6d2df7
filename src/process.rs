//! Child processes that attach to queues by name (spawn, join, pools, joinable queues).
//!
//! Being built; see issue 3.
