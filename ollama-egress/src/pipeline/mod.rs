//! The event pipeline: ring buffer → decoded [`EventRecord`](crate::logstore::EventRecord)s →
//! the log.

mod decode;
mod kernel_log;
mod names;
mod reader;

pub use decode::{BootClock, Decoder, GenerationInfo, boot_now_ns};
pub use kernel_log::forward_kernel_log;
pub use names::{
    DnsEventError, LearnedAnswer, NameBinding, NamesTable, binding_key, bound_form,
    decode_dns_event,
};
pub use reader::{DRAIN_INTERVAL, EventSink, ExeCache, PipelineStats, drain, run_reader};
