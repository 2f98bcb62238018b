//! The session relay's building blocks. [`FrameCursor`] is the sans-I/O
//! frame scanner: 5-byte headers walked over a buffer, frames forwarded as
//! their bytes arrive, chosen tags collected whole.

mod cursor;

pub use cursor::{FrameCursor, SERVER_WHOLE_LIMIT, Step, Tags};
