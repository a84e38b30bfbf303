//! The lock the stream table uses: `std`'s, or loom's when the model-checking tests run
//! (feature `loom`, never enabled in a build that ships), so that loom can explore every
//! interleaving of the code that opens and closes streams.

#[cfg(feature = "loom")]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(feature = "loom"))]
pub(crate) use std::sync::{Mutex, MutexGuard};
