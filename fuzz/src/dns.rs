//! The DNS answer walker (`ollama_egress_common::dns::DnsWalk`, shared with the kernel) against
//! a reference decoder built on `hickory-proto`.
//!
//! The reference decodes the header and the question with hickory, then the answer section
//! record by record: owner names with hickory's `Name::read` (decompressing), A and AAAA data
//! of class IN with hickory's `RData::read`; the data of other types is stepped over (it binds
//! nothing). It stops at the first record it cannot read. An owner name hickory cannot decode
//! (a pointer to garbage, a name too long once decompressed) is stepped over by its wire
//! extent instead: the walker binds every A/AAAA of the answer section to the question name,
//! whatever its owner, so only where the owner name ends matters.
//!
//! Checked, for any bytes:
//! - the walker never panics and always ends;
//! - when it accepts a message, the reference accepts its header (a response, opcode QUERY,
//!   one question) and question, and the question names are the same (the reference's
//!   lowercased);
//! - every address the walker yields (family, bytes, TTL) is an A/AAAA answer of class IN the
//!   reference sees, at the same position among them;
//! - completeness: when hickory decodes the whole message, it fits the examined bytes, its
//!   question is canonical and uncompressed and no address record has a wrong length, the
//!   walker accepts it and yields exactly the reference's addresses (the first
//!   `DNS_MAX_ADDRS`).

use std::net::IpAddr;

use hickory_proto::{
    op::{Header, MessageType, OpCode, Query},
    rr::{Name, RData, RecordType},
    serialize::binary::{BinDecodable as _, BinDecoder, Restrict},
};
use ollama_egress_common::{
    FAMILY_IPV4, FAMILY_IPV6,
    dns::{
        CLASS_IN, DNS_MAX_ADDRS, DNS_MSG_MAX, DnsWalk, NAME_MAX, TYPE_A, TYPE_AAAA, is_name_byte,
    },
};

/// An address answer as the reference sees it: family, address bytes (IPv4 in the first
/// four), TTL.
pub type Answer = (u32, [u8; 16], u32);

/// What the reference decoder found.
#[derive(Debug)]
pub struct Reference {
    /// The question name's labels, lowercased, joined by dots.
    pub name: Vec<u8>,
    /// The A/AAAA answers of class IN, in order, up to the first record that could not be read.
    pub answers: Vec<Answer>,
    /// Whether an A/AAAA record of class IN had data of another length (hickory reads empty
    /// data as an update placeholder).
    pub odd_length: bool,
}

/// Decodes `data` the reference way; `None` when the header or the question cannot be read or
/// the header is not a response of a standard query with one question.
pub fn reference(data: &[u8]) -> Option<Reference> {
    let mut d = BinDecoder::new(data);
    let header = Header::read(&mut d).ok()?;
    if header.metadata.message_type != MessageType::Response
        || header.metadata.op_code != OpCode::Query
        || header.counts.queries != 1
    {
        return None;
    }
    let query = Query::read(&mut d).ok()?;
    let name = labels(query.name());
    let mut answers = Vec::new();
    let mut odd_length = false;
    for _ in 0..header.counts.answers {
        let start = d.index();
        if Name::read(&mut d).is_err() {
            let Some(end) = owner_extent(data, start) else {
                break;
            };
            d = d.clone(end as u16);
        }
        let Some(fixed) = d.read_slice(10).ok().map(Restrict::unverified) else {
            break;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]);
        if usize::from(rdlen) > d.len() {
            break;
        }
        let address = class == CLASS_IN && (rtype == TYPE_A || rtype == TYPE_AAAA);
        if !address {
            let _ = d.read_slice(usize::from(rdlen));
            continue;
        }
        let want = if rtype == TYPE_A { 4 } else { 16 };
        if usize::from(rdlen) != want {
            odd_length = true;
        }
        if rdlen == 0 {
            continue;
        }
        let Ok(rdata) = RData::read(&mut d, RecordType::from(rtype), Restrict::new(rdlen)) else {
            break;
        };
        let ip = match rdata {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => break,
        };
        answers.push(answer(ip, ttl));
    }
    Some(Reference {
        name,
        answers,
        odd_length,
    })
}

fn answer(ip: IpAddr, ttl: u32) -> Answer {
    let mut b = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            b[..4].copy_from_slice(&v4.octets());
            (FAMILY_IPV4, b, ttl)
        }
        IpAddr::V6(v6) => (FAMILY_IPV6, v6.octets(), ttl),
    }
}

fn labels(name: &Name) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = name.iter().map(|l| l.to_ascii_lowercase()).collect();
    parts.join(&b'.')
}

/// Where an owner name starting at `at` ends on the wire: after labels and the root label or a
/// pointer; `None` when it runs off the message or uses a reserved label type.
fn owner_extent(data: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let l = *data.get(at)?;
        match l & 0xc0 {
            0x00 if l == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(l),
            0xc0 => return (at + 2 <= data.len()).then_some(at + 2),
            _ => return None,
        }
    }
}

/// Whether the question at offset 12 is spelled out (no pointer) and its name canonical once
/// lowercased.
fn canonical_question(data: &[u8]) -> bool {
    let mut at = 12;
    let mut len = 0usize;
    loop {
        let Some(&l) = data.get(at) else {
            return false;
        };
        if l == 0 {
            return len > 0 && len <= NAME_MAX;
        }
        if l & 0xc0 != 0 {
            return false;
        }
        let Some(label) = data.get(at + 1..at + 1 + usize::from(l)) else {
            return false;
        };
        if !label.iter().all(|b| is_name_byte(b.to_ascii_lowercase())) {
            return false;
        }
        len += usize::from(l) + usize::from(len != 0);
        at += 1 + usize::from(l);
    }
}

/// Runs the walker on `data` and checks it against the reference (see the module
/// documentation). Returns the walker's result for the seed replay's coverage counts.
pub fn check(data: &[u8]) -> Option<usize> {
    let mut w = Box::new(DnsWalk::new(data));
    let ours = w.run();
    let reference = reference(data);
    if ours.is_ok() {
        let r = reference
            .as_ref()
            .unwrap_or_else(|| panic!("the walker accepted a message the reference rejects"));
        assert_eq!(
            w.name(),
            r.name.as_slice(),
            "question names differ: {:?} vs {:?}",
            String::from_utf8_lossy(w.name()),
            String::from_utf8_lossy(&r.name)
        );
        assert!(w.addrs().len() <= DNS_MAX_ADDRS);
        for (i, a) in w.addrs().iter().enumerate() {
            let got = (a.family, a.addr, a.ttl_s);
            assert_eq!(
                r.answers.get(i),
                Some(&got),
                "address {i} is not the reference's: {got:?}, reference {:?}",
                r.answers
            );
        }
    }
    let complete = data.len() <= DNS_MSG_MAX
        && canonical_question(data)
        && hickory_proto::op::Message::from_vec(data).is_ok();
    if complete && let Some(r) = reference.as_ref().filter(|r| !r.odd_length) {
        assert_eq!(ours, Ok(()), "the walker refused a message hickory decodes");
        let want = &r.answers[..r.answers.len().min(DNS_MAX_ADDRS)];
        let got: Vec<Answer> = w
            .addrs()
            .iter()
            .map(|a| (a.family, a.addr, a.ttl_s))
            .collect();
        assert_eq!(got.as_slice(), want, "the walker missed addresses");
    }
    ours.ok().map(|()| w.addrs().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::DNSClass;

    #[test]
    fn class_in_is_hickorys_in() {
        assert_eq!(u16::from(DNSClass::IN), CLASS_IN);
        assert_eq!(u16::from(RecordType::A), TYPE_A);
        assert_eq!(u16::from(RecordType::AAAA), TYPE_AAAA);
    }
}
