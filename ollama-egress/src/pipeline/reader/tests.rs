use ollama_egress_common::{EVENT_KIND_CONNECT, dns::DnsEvent};

use super::*;

#[test]
fn records_are_dispatched_by_their_header_kind() {
    let header = |kind: u32, size: usize| {
        let h = EventHeader {
            ts_boot_ns: 5,
            kind,
            size: size as u32,
        };
        // SAFETY: `EventHeader` is plain old data without padding.
        unsafe {
            std::slice::from_raw_parts(
                (&h as *const EventHeader).cast::<u8>(),
                size_of::<EventHeader>(),
            )
        }
        .to_vec()
    };
    assert_eq!(
        event_kind(&header(EVENT_KIND_DNS, DnsEvent::SIZE)),
        Some(EVENT_KIND_DNS)
    );
    assert_eq!(
        event_kind(&header(EVENT_KIND_CONNECT, ConnectEvent::SIZE)),
        Some(EVENT_KIND_CONNECT)
    );
    assert_eq!(event_kind(&[0u8; 11]), None);
}
