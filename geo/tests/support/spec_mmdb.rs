//! A small MaxMind DB encoder written from the format specification
//! (<https://maxmind.github.io/MaxMind-DB/>, version 2.0), independent of the `mmdb-writer`
//! crate the project uses, so tests can read databases whose encodings differ from what the
//! project itself writes: any integer width, 24/28/32-bit records, IPv4 or IPv6 trees, and
//! pointers for repeated keys, strings and records (as MaxMind's and DB-IP's writers do).

#![allow(dead_code)] // Each test file uses a part of it.

use std::collections::HashMap;

use ipnet::IpNet;

/// A data-section value; each variant is written with its own type number.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    /// UTF-8 string (type 2).
    Str(String),
    /// Double (type 3).
    F64(f64),
    /// Bytes (type 4).
    Bytes(Vec<u8>),
    /// uint16 (type 5).
    U16(u16),
    /// uint32 (type 6).
    U32(u32),
    /// Map (type 7), keys in the given order.
    Map(Vec<(String, V)>),
    /// int32 (type 8).
    I32(i32),
    /// uint64 (type 9).
    U64(u64),
    /// uint128 (type 10).
    U128(u128),
    /// Array (type 11).
    Array(Vec<V>),
    /// Boolean (type 14).
    Bool(bool),
    /// Float (type 15).
    F32(f32),
}

/// A string value.
pub fn s(v: &str) -> V {
    V::Str(v.to_owned())
}

/// A map value.
pub fn map(entries: Vec<(&str, V)>) -> V {
    V::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

/// A `names` map as MaxMind/DB-IP records carry it.
pub fn names(en: &str) -> V {
    map(vec![
        ("de", s(en)),
        ("en", s(en)),
        ("ja", s(en)),
        ("zh-CN", s(en)),
    ])
}

const TYPE_POINTER: u8 = 1;
const TYPE_STRING: u8 = 2;
const TYPE_DOUBLE: u8 = 3;
const TYPE_BYTES: u8 = 4;
const TYPE_UINT16: u8 = 5;
const TYPE_UINT32: u8 = 6;
const TYPE_MAP: u8 = 7;
const TYPE_INT32: u8 = 8;
const TYPE_UINT64: u8 = 9;
const TYPE_UINT128: u8 = 10;
const TYPE_ARRAY: u8 = 11;
const TYPE_BOOL: u8 = 14;
const TYPE_FLOAT: u8 = 15;

/// Data-section encoder; `pointers` makes repeated strings (keys and values) and repeated
/// records pointers to their first copy.
struct DataWriter {
    buf: Vec<u8>,
    pointers: bool,
    strings: HashMap<String, usize>,
}

impl DataWriter {
    fn control(&mut self, type_num: u8, size: usize) {
        let (first, extra): (u8, Vec<u8>) = if size < 29 {
            (size as u8, vec![])
        } else if size < 29 + 256 {
            (29, vec![(size - 29) as u8])
        } else if size < 285 + 65536 {
            let n = size - 285;
            (30, vec![(n >> 8) as u8, n as u8])
        } else {
            let n = size - 65821;
            (31, vec![(n >> 16) as u8, (n >> 8) as u8, n as u8])
        };
        if type_num <= 7 {
            self.buf.push((type_num << 5) | first);
        } else {
            self.buf.push(first);
            self.buf.push(type_num - 7);
        }
        self.buf.extend(extra);
    }

    fn pointer(&mut self, offset: usize) {
        let p = TYPE_POINTER << 5;
        if offset < 2048 {
            self.buf.push(p | ((offset >> 8) as u8));
            self.buf.push(offset as u8);
        } else if offset < 2048 + 524_288 {
            let n = offset - 2048;
            self.buf.push(p | (1 << 3) | ((n >> 16) as u8));
            self.buf.extend([(n >> 8) as u8, n as u8]);
        } else if offset < 526_336 + 134_217_728 {
            let n = offset - 526_336;
            self.buf.push(p | (2 << 3) | ((n >> 24) as u8));
            self.buf.extend([(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        } else {
            self.buf.push(p | (3 << 3));
            self.buf.extend((offset as u32).to_be_bytes());
        }
    }

    /// Big-endian without leading zero bytes, as the specification allows.
    fn uint(&mut self, type_num: u8, v: u128, max_bytes: usize) {
        let bytes = v.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let payload = &bytes[skip.max(16 - max_bytes)..];
        self.control(type_num, payload.len());
        self.buf.extend_from_slice(payload);
    }

    fn string(&mut self, v: &str) {
        if self.pointers
            && let Some(&at) = self.strings.get(v)
        {
            self.pointer(at);
            return;
        }
        let at = self.buf.len();
        self.control(TYPE_STRING, v.len());
        self.buf.extend_from_slice(v.as_bytes());
        if self.pointers && v.len() > 2 {
            self.strings.insert(v.to_owned(), at);
        }
    }

    fn value(&mut self, v: &V) {
        match v {
            V::Str(x) => self.string(x),
            V::F64(x) => {
                self.control(TYPE_DOUBLE, 8);
                self.buf.extend(x.to_be_bytes());
            }
            V::Bytes(x) => {
                self.control(TYPE_BYTES, x.len());
                self.buf.extend_from_slice(x);
            }
            V::U16(x) => self.uint(TYPE_UINT16, u128::from(*x), 2),
            V::U32(x) => self.uint(TYPE_UINT32, u128::from(*x), 4),
            V::U64(x) => self.uint(TYPE_UINT64, u128::from(*x), 8),
            V::U128(x) => self.uint(TYPE_UINT128, *x, 16),
            V::I32(x) => {
                // Negative values need all four bytes; others may drop leading zeros.
                if *x < 0 {
                    self.control(TYPE_INT32, 4);
                    self.buf.extend(x.to_be_bytes());
                } else {
                    self.uint(TYPE_INT32, *x as u128, 4);
                }
            }
            V::Map(entries) => {
                self.control(TYPE_MAP, entries.len());
                for (k, v) in entries {
                    self.string(k);
                    self.value(v);
                }
            }
            V::Array(items) => {
                self.control(TYPE_ARRAY, items.len());
                for v in items {
                    self.value(v);
                }
            }
            V::Bool(x) => self.control(TYPE_BOOL, usize::from(*x)),
            V::F32(x) => {
                self.control(TYPE_FLOAT, 4);
                self.buf.extend(x.to_be_bytes());
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Child {
    Empty,
    Node(usize),
    Data(usize),
}

/// A database to write: networks with their records, and the layout of the file.
pub struct SpecMmdb {
    /// 4 or 6. IPv4 networks in an IPv6 tree are stored under `::/96`.
    pub ip_version: u16,
    /// 24, 28 or 32.
    pub record_size: u16,
    /// The metadata's `database_type`.
    pub database_type: String,
    /// Use pointers for repeated strings and records.
    pub pointers: bool,
    entries: Vec<(IpNet, V)>,
}

impl SpecMmdb {
    /// An IPv6 database with 28-bit records and pointers (as MaxMind's own files are).
    pub fn new(database_type: &str) -> Self {
        SpecMmdb {
            ip_version: 6,
            record_size: 28,
            database_type: database_type.to_owned(),
            pointers: true,
            entries: Vec::new(),
        }
    }

    /// Map `net` to `record`; networks must not overlap.
    pub fn insert(&mut self, net: &str, record: V) -> &mut Self {
        let net: IpNet = net.parse().expect("test network");
        self.entries.push((net, record));
        self
    }

    fn bits(&self, net: &IpNet) -> (u128, u8, u8) {
        match (net, self.ip_version) {
            (IpNet::V4(n), 4) => (u128::from(u32::from(n.network())), n.prefix_len(), 32),
            (IpNet::V4(n), _) => (u128::from(u32::from(n.network())), 96 + n.prefix_len(), 128),
            (IpNet::V6(n), 6) => (u128::from(n.network()), n.prefix_len(), 128),
            (IpNet::V6(_), _) => panic!("IPv6 network in an IPv4 database"),
        }
    }

    /// The database file.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Data section: one copy per distinct record when pointers are on.
        let mut data = DataWriter {
            buf: Vec::new(),
            pointers: self.pointers,
            strings: HashMap::new(),
        };
        let mut offsets = Vec::new();
        let mut seen: Vec<(V, usize)> = Vec::new();
        for (_, v) in &self.entries {
            if self.pointers
                && let Some((_, at)) = seen.iter().find(|(sv, _)| sv == v)
            {
                offsets.push(*at);
                continue;
            }
            let at = data.buf.len();
            data.value(v);
            offsets.push(at);
            seen.push((v.clone(), at));
        }

        // Search tree: node 0 is the root.
        let mut nodes: Vec<[Child; 2]> = vec![[Child::Empty; 2]];
        for ((net, _), &offset) in self.entries.iter().zip(&offsets) {
            let (addr, len, width) = self.bits(net);
            assert!(len > 0, "a /0 network is not supported by this writer");
            let mut node = 0;
            for depth in 0..len {
                let bit = ((addr >> (width - 1 - depth)) & 1) as usize;
                if depth == len - 1 {
                    nodes[node][bit] = Child::Data(offset);
                } else {
                    node = match nodes[node][bit] {
                        Child::Node(n) => n,
                        Child::Empty => {
                            nodes.push([Child::Empty; 2]);
                            let n = nodes.len() - 1;
                            nodes[node][bit] = Child::Node(n);
                            n
                        }
                        Child::Data(_) => panic!("overlapping test networks"),
                    };
                }
            }
        }
        let node_count = nodes.len();
        let record = |c: Child| -> u32 {
            match c {
                Child::Empty => node_count as u32,
                Child::Node(n) => n as u32,
                Child::Data(off) => (node_count + 16 + off) as u32,
            }
        };
        let mut out = Vec::new();
        for [l, r] in &nodes {
            let (l, r) = (record(*l), record(*r));
            match self.record_size {
                24 => {
                    out.extend(&l.to_be_bytes()[1..]);
                    out.extend(&r.to_be_bytes()[1..]);
                }
                28 => {
                    out.extend(&l.to_be_bytes()[1..]);
                    out.push((((l >> 24) & 0x0f) << 4) as u8 | ((r >> 24) & 0x0f) as u8);
                    out.extend(&r.to_be_bytes()[1..]);
                }
                32 => {
                    out.extend(l.to_be_bytes());
                    out.extend(r.to_be_bytes());
                }
                n => panic!("unsupported record size {n}"),
            }
        }
        out.extend([0u8; 16]);
        out.extend(&data.buf);

        // Metadata, without pointers.
        out.extend(b"\xab\xcd\xefMaxMind.com");
        let mut meta = DataWriter {
            buf: Vec::new(),
            pointers: false,
            strings: HashMap::new(),
        };
        meta.value(&map(vec![
            ("binary_format_major_version", V::U16(2)),
            ("binary_format_minor_version", V::U16(0)),
            ("build_epoch", V::U64(1_700_000_000)),
            ("database_type", s(&self.database_type)),
            (
                "description",
                map(vec![("en", s("independent test fixture"))]),
            ),
            ("ip_version", V::U16(self.ip_version)),
            ("languages", V::Array(vec![s("en")])),
            ("node_count", V::U32(node_count as u32)),
            ("record_size", V::U16(self.record_size)),
        ]));
        out.extend(meta.buf);
        out
    }

    /// Write the database to `path`.
    pub fn write(&self, path: &std::path::Path) {
        std::fs::write(path, self.to_bytes()).expect("write test database");
    }
}
