//! The DNS answer walker shared by the kernel programs and userspace.
//!
//! A [`DnsWalk`] holds the first [`DNS_MSG_MAX`] bytes of a message and walks them one
//! [`DnsWalk::step`] at a time: the header, one label of the question name per step, one byte
//! of the trie key per step, then one label or one record of the answer section per step. The
//! kernel drives the steps from `bpf_loop` (the verifier checks one step, not an unrolled walk),
//! userspace from a plain loop ([`DnsWalk::run`]). Every index into a buffer is masked to the
//! buffer's power-of-two size after the bounds check, so the verifier sees the bound.
//!
//! What it accepts and yields:
//! - a response (QR = 1) of opcode 0 with exactly one question;
//! - the question name in canonical form (ASCII lowercase, dotted, no trailing dot, labels of
//!   [`is_name_byte`] bytes only, at most [`NAME_MAX`] bytes); a compressed question name, a
//!   byte outside the set, an empty name or a longer one is [`DnsError::Name`];
//! - its reversed trie key ([`lookup_key`]) in [`DnsWalk::key`];
//! - every A (4 bytes) and AAAA (16 bytes) record of class IN in the answer section, whatever
//!   its owner name (so a CNAME chain binds to the question name), with its TTL, at most
//!   [`DNS_MAX_ADDRS`]; further ones are ignored.
//!
//! Owner names of answer records are skipped, never decoded: a pointer ends them, labels are
//! stepped over one per step; no pointer is ever followed, so there is no decompression loop.
//! The records the first [`DNS_MSG_MAX`] bytes hold whole are read; a record cut off there (or
//! by the end of the message) ends the walk, keeping the addresses before it. An A or AAAA
//! record of class IN whose data has another length than its type's makes the whole answer
//! [`DnsError::Record`]: a message that lies about one record is not trusted for the others.

use super::{
    DNS_MAX_ADDRS, DNS_MSG_MAX, DOMAIN_KEY_LEN, DnsAddr, DnsEvent, NAME_MAX, is_name_byte,
};
use crate::{FAMILY_IPV4, FAMILY_IPV6};

/// Bytes of the DNS header.
pub const DNS_HEADER_LEN: usize = 12;
/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// Class IN.
pub const CLASS_IN: u16 = 1;

/// Steps a walk of any message takes at most: the header, at most 128 labels of the question
/// name, [`DOMAIN_KEY_LEN`] key bytes, then answer steps that each consume at least one byte
/// of the message. A walk that has not ended after that many steps is an error.
pub const WALK_MAX_STEPS: u32 = (1 + 128 + DOMAIN_KEY_LEN + DNS_MSG_MAX + 2) as u32;

/// Mask of an index into the message.
const MSG_MASK: usize = DNS_MSG_MAX - 1;
/// Mask of an index into a name or a key.
const NAME_MASK: usize = DOMAIN_KEY_LEN - 1;
/// Longest label.
const LABEL_MAX: usize = 63;
/// Bytes of a record after its owner name: type, class, TTL, data length.
const RR_FIXED: usize = 10;
/// Bytes after the question name: type and class.
const QUESTION_FIXED: usize = 4;

const _: () = assert!(DNS_MSG_MAX.is_power_of_two());
const _: () = assert!(DOMAIN_KEY_LEN.is_power_of_two() && DOMAIN_KEY_LEN > NAME_MAX + 1);

/// Phase: the header is next.
pub const PHASE_HEADER: u32 = 0;
/// Phase: a label of the question name is next.
pub const PHASE_QNAME: u32 = 1;
/// Phase: the trie key and the zero padding of the name and addresses are being written.
pub const PHASE_KEY: u32 = 2;
/// Phase: the owner name of an answer record is next (or the rest of it).
pub const PHASE_OWNER: u32 = 3;
/// Phase: the fixed part and the data of an answer record are next.
pub const PHASE_RECORD: u32 = 4;
/// Phase: the walk has ended (see [`DnsWalk::outcome`]).
pub const PHASE_DONE: u32 = 5;

/// Why a message was not learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[repr(u32)]
pub enum DnsError {
    /// Shorter than a DNS header, or the question is cut off.
    #[error("the message is shorter than its header and question")]
    Short = 1,
    /// Not a response, not a standard query, or not exactly one question.
    #[error("not a response of a standard query with one question")]
    Header = 2,
    /// The question name is compressed, empty, too long, or has a byte a canonical name
    /// does not have.
    #[error("the question name is not a canonical name")]
    Name = 3,
    /// An answer record is malformed (an A/AAAA with the wrong data length, a label type that
    /// does not exist).
    #[error("an answer record is malformed")]
    Record = 4,
    /// The walk did not end within [`WALK_MAX_STEPS`] steps (never for a walk driven to the
    /// end; a caller's loop was cut short).
    #[error("the walk did not end")]
    Unfinished = 5,
}

impl DnsError {
    const fn from_code(code: u32) -> Self {
        match code {
            1 => Self::Short,
            2 => Self::Header,
            3 => Self::Name,
            4 => Self::Record,
            _ => Self::Unfinished,
        }
    }
}

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// More steps are needed.
    Continue,
    /// The walk has ended.
    Done,
}

/// A key for the `DOMAINS_*` tries, laid out as the kernel's LPM trie key (prefix length in
/// bits, then the data).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupKey {
    /// Prefix length in bits: the whole key.
    pub prefix_len: u32,
    /// The reversed name and its terminator, zero padded ([`lookup_key`](super::lookup_key)).
    pub data: [u8; DOMAIN_KEY_LEN],
}

/// State of one walk over a message, and what it found. Large (a few KiB): the kernel keeps it
/// in a per-CPU map, userspace on the heap or the stack.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsWalk {
    /// The message; bytes past `len` are not looked at.
    pub msg: [u8; DNS_MSG_MAX],
    /// Bytes of `msg` in use.
    pub len: u32,
    /// Offset of the next byte to read.
    pub off: u32,
    /// `PHASE_*`.
    pub phase: u32,
    /// Answer records not yet read.
    pub answers_left: u32,
    /// Bytes of the owner name being skipped so far.
    pub owner_len: u32,
    /// Key bytes written so far ([`PHASE_KEY`]).
    pub key_pos: u32,
    /// 0, or the [`DnsError`] code the walk ended with.
    pub error: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// The trie key of the question name, once past [`PHASE_KEY`].
    pub key: LookupKey,
    /// Reserved, zero (keeps `event` 8-byte aligned without implicit padding).
    pub reserved2: u32,
    /// What the walk found: `name`, `name_len`, `addrs` (TTLs as in the records) and
    /// `n_addrs`; the other fields are the caller's. `name` and `addrs` are zero past their
    /// lengths once the walk is past [`PHASE_KEY`].
    pub event: DnsEvent,
}

const _: () = assert!(core::mem::offset_of!(DnsWalk, event) % 8 == 0);

impl DnsWalk {
    /// A walk over nothing (for a scratch buffer that [`reset`](Self::reset) fills).
    pub const fn empty() -> Self {
        Self {
            msg: [0; DNS_MSG_MAX],
            len: 0,
            off: 0,
            phase: PHASE_HEADER,
            answers_left: 0,
            owner_len: 0,
            key_pos: 0,
            error: 0,
            reserved: 0,
            key: LookupKey {
                prefix_len: 0,
                data: [0; DOMAIN_KEY_LEN],
            },
            reserved2: 0,
            event: DnsEvent {
                header: crate::EventHeader {
                    ts_boot_ns: 0,
                    kind: 0,
                    size: 0,
                },
                server: [0; 16],
                server_family: 0,
                proto: 0,
                n_addrs: 0,
                name_len: 0,
                addrs: [DnsAddr {
                    addr: [0; 16],
                    family: 0,
                    ttl_s: 0,
                }; DNS_MAX_ADDRS],
                name: [0; DOMAIN_KEY_LEN],
            },
        }
    }

    /// A walk over `message` (its first [`DNS_MSG_MAX`] bytes).
    pub fn new(message: &[u8]) -> Self {
        let mut w = Self::empty();
        let n = message.len().min(DNS_MSG_MAX);
        w.msg[..n].copy_from_slice(&message[..n]);
        w.reset(n as u32);
        w
    }

    /// Starts a walk over the first `len` bytes of `msg` (already written), forgetting what
    /// an earlier walk found (the padding is rewritten by [`PHASE_KEY`]).
    #[inline(always)]
    pub fn reset(&mut self, len: u32) {
        self.len = if len as usize > DNS_MSG_MAX {
            DNS_MSG_MAX as u32
        } else {
            len
        };
        self.off = 0;
        self.phase = PHASE_HEADER;
        self.answers_left = 0;
        self.owner_len = 0;
        self.key_pos = 0;
        self.error = 0;
        self.event.n_addrs = 0;
        self.event.name_len = 0;
    }

    /// Runs the walk to its end.
    pub fn run(&mut self) -> Result<(), DnsError> {
        for _ in 0..WALK_MAX_STEPS {
            if self.step() == Step::Done {
                break;
            }
        }
        self.outcome()
    }

    /// How the walk ended: `Ok` when the header and question were good (the addresses found
    /// are in `event`), else why not.
    pub fn outcome(&self) -> Result<(), DnsError> {
        if self.phase != PHASE_DONE {
            return Err(DnsError::Unfinished);
        }
        if self.error != 0 {
            return Err(DnsError::from_code(self.error));
        }
        Ok(())
    }

    /// The question name found (empty until the question was read).
    pub fn name(&self) -> &[u8] {
        let n = (self.event.name_len as usize).min(NAME_MAX);
        &self.event.name[..n]
    }

    /// The addresses found.
    pub fn addrs(&self) -> &[DnsAddr] {
        let n = (self.event.n_addrs as usize).min(DNS_MAX_ADDRS);
        &self.event.addrs[..n]
    }

    /// Performs one step.
    #[inline(always)]
    pub fn step(&mut self) -> Step {
        match self.phase {
            PHASE_HEADER => self.header(),
            PHASE_QNAME => self.qname_label(),
            PHASE_KEY => self.key_byte(),
            PHASE_OWNER => self.owner_label(),
            PHASE_RECORD => self.record(),
            _ => Step::Done,
        }
    }

    #[inline(always)]
    fn fail(&mut self, e: DnsError) -> Step {
        self.error = e as u32;
        self.done()
    }

    #[inline(always)]
    fn done(&mut self) -> Step {
        self.phase = PHASE_DONE;
        Step::Done
    }

    /// The byte at `at`, which the caller checked is below `len`.
    #[inline(always)]
    fn byte(&self, at: usize) -> u8 {
        self.msg[at & MSG_MASK]
    }

    /// The big-endian `u16` at `at`; the caller checked `at + 2 <= len`.
    #[inline(always)]
    fn u16_at(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.byte(at), self.byte(at + 1)])
    }

    fn header(&mut self) -> Step {
        if (self.len as usize) < DNS_HEADER_LEN {
            return self.fail(DnsError::Short);
        }
        let flags = self.byte(2);
        let response = flags & 0x80 != 0;
        let opcode = (flags >> 3) & 0x0f;
        if !response || opcode != 0 || self.u16_at(4) != 1 {
            return self.fail(DnsError::Header);
        }
        self.answers_left = u32::from(self.u16_at(6));
        self.off = DNS_HEADER_LEN as u32;
        self.phase = PHASE_QNAME;
        Step::Continue
    }

    /// One label of the question name, lowercased into `event.name`; or the root label and
    /// the question's type and class.
    fn qname_label(&mut self) -> Step {
        let len = self.len as usize;
        let off = self.off as usize;
        if off >= len {
            return self.fail(DnsError::Short);
        }
        let l = usize::from(self.byte(off));
        if l == 0 {
            if self.event.name_len == 0 {
                return self.fail(DnsError::Name);
            }
            if off + 1 + QUESTION_FIXED > len {
                return self.fail(DnsError::Short);
            }
            self.off = (off + 1 + QUESTION_FIXED) as u32;
            self.phase = PHASE_KEY;
            return Step::Continue;
        }
        // A pointer (compression) or a reserved label type.
        if l > LABEL_MAX {
            return self.fail(DnsError::Name);
        }
        if off + 1 + l > len {
            return self.fail(DnsError::Short);
        }
        let mut pos = self.event.name_len as usize;
        let dot = usize::from(pos != 0);
        if pos + dot + l > NAME_MAX {
            return self.fail(DnsError::Name);
        }
        if dot != 0 {
            self.event.name[pos & NAME_MASK] = b'.';
            pos += 1;
        }
        let src = off + 1;
        for i in 0..LABEL_MAX {
            if i >= l {
                break;
            }
            let b = self.byte(src + i).to_ascii_lowercase();
            if !is_name_byte(b) {
                return self.fail(DnsError::Name);
            }
            self.event.name[(pos + i) & NAME_MASK] = b;
        }
        self.event.name_len = (pos + l) as u32;
        self.off = (src + l) as u32;
        Step::Continue
    }

    /// One byte of the trie key (the name reversed, then the terminator and zeros); past the
    /// name, zeros into the name's padding; the addresses' slots are cleared on the way.
    fn key_byte(&mut self) -> Step {
        let i = self.key_pos as usize;
        if i >= DOMAIN_KEY_LEN {
            self.key.prefix_len = (DOMAIN_KEY_LEN * 8) as u32;
            self.phase = PHASE_OWNER;
            self.owner_len = 0;
            return self.next_record();
        }
        let n = self.event.name_len as usize;
        let i = i & NAME_MASK;
        self.key.data[i] = if i < n {
            self.event.name[(n - 1 - i) & NAME_MASK]
        } else {
            self.event.name[i] = 0;
            0
        };
        if i < DNS_MAX_ADDRS {
            self.event.addrs[i] = DnsAddr::default();
        }
        self.key_pos = (i + 1) as u32;
        Step::Continue
    }

    /// Starts the next answer record, or ends the walk.
    #[inline(always)]
    fn next_record(&mut self) -> Step {
        if self.answers_left == 0 || self.event.n_addrs as usize >= DNS_MAX_ADDRS {
            return self.done();
        }
        self.answers_left -= 1;
        self.owner_len = 0;
        self.phase = PHASE_OWNER;
        Step::Continue
    }

    /// One label of an answer's owner name, skipped; a pointer or the root label ends it.
    fn owner_label(&mut self) -> Step {
        let len = self.len as usize;
        let off = self.off as usize;
        if off >= len {
            return self.done();
        }
        let l = usize::from(self.byte(off));
        if l == 0 {
            self.off = (off + 1) as u32;
            self.phase = PHASE_RECORD;
            return Step::Continue;
        }
        if l & 0xc0 == 0xc0 {
            if off + 2 > len {
                return self.done();
            }
            self.off = (off + 2) as u32;
            self.phase = PHASE_RECORD;
            return Step::Continue;
        }
        if l > LABEL_MAX {
            return self.fail(DnsError::Record);
        }
        // A name is at most 255 bytes on the wire, root label included.
        let owner = self.owner_len as usize + 1 + l;
        if owner + 1 > 255 {
            return self.fail(DnsError::Record);
        }
        self.owner_len = owner as u32;
        self.off = (off + 1 + l) as u32;
        Step::Continue
    }

    /// The fixed part and the data of an answer record.
    fn record(&mut self) -> Step {
        let len = self.len as usize;
        let off = self.off as usize;
        if off + RR_FIXED > len {
            return self.done();
        }
        let rtype = self.u16_at(off);
        let class = self.u16_at(off + 2);
        let ttl = u32::from_be_bytes([
            self.byte(off + 4),
            self.byte(off + 5),
            self.byte(off + 6),
            self.byte(off + 7),
        ]);
        let rdlen = usize::from(self.u16_at(off + 8));
        let data = off + RR_FIXED;
        if data + rdlen > len {
            return self.done();
        }
        if class == CLASS_IN && (rtype == TYPE_A || rtype == TYPE_AAAA) {
            let (want, family) = if rtype == TYPE_A {
                (4, FAMILY_IPV4)
            } else {
                (16, FAMILY_IPV6)
            };
            if rdlen != want {
                return self.fail(DnsError::Record);
            }
            let n = self.event.n_addrs as usize;
            if n < DNS_MAX_ADDRS {
                let mut addr = [0u8; 16];
                for (i, a) in addr.iter_mut().enumerate() {
                    if i < want {
                        *a = self.byte(data + i);
                    }
                }
                self.event.addrs[n & (DNS_MAX_ADDRS - 1)] = DnsAddr {
                    addr,
                    family,
                    ttl_s: ttl,
                };
                self.event.n_addrs = (n + 1) as u32;
            }
        }
        self.off = (data + rdlen) as u32;
        self.next_record()
    }
}

const _: () = assert!(DNS_MAX_ADDRS.is_power_of_two());
