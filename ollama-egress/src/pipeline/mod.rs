//! The event pipeline: ring buffer → decoded [`EventRecord`]s → the log.

mod decode;
mod reader;

pub use decode::{BootClock, Decoder, GenerationInfo};
pub use reader::{EventSink, PipelineStats, drain, run_reader};
