//! adoptd: a supervisor that follows every daemon to its real main process.
