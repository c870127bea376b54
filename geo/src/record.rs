//! Reading country and ASN fields from the records of any supported database layout.
//!
//! The MaxMind DB format lets a writer store a number in any integer type (uint16, uint32,
//! uint64, uint128, int32) and databases differ in field names, so records are read
//! leniently: the few fields this crate needs are decoded as values of any type and then
//! converted; every other field is skipped. Supported layouts:
//!
//! | layout | country | ASN |
//! |---|---|---|
//! | MaxMind GeoLite2/GeoIP2 Country, City; DB-IP lite | `country.iso_code`, else `registered_country.iso_code` | — |
//! | MaxMind GeoLite2-ASN, GeoIP2-ISP; DB-IP lite ASN; ip-location-db ASN | — | `autonomous_system_number`, `autonomous_system_organization` |
//! | GeoIP2-Enterprise | as City | `traits.autonomous_system_number`, `traits.autonomous_system_organization` |
//! | ip-location-db country and city | `country_code` | — |
//! | IPinfo lite | `country_code` | `asn` (`"AS13335"`), `as_name` |
//! | IPinfo legacy country / ASN | `country` (the code) | `asn`, `name` |
//!
//! Country codes are returned upper case; a value that is not two ASCII letters is not a
//! country code. A valid record whose fields are of another type is not an error: it has no
//! answer, and [`describe`] names what it holds for an "unsupported layout" message.

use std::fmt::{self, Write as _};

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A decoded value of any MaxMind DB type (strings borrowed from the database).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Any<'a> {
    /// UTF-8 string.
    Str(&'a str),
    /// Any unsigned integer type, with its type name.
    UInt(u128, &'static str),
    /// int32.
    Int(i64),
    /// float or double.
    Float(f64, &'static str),
    /// Boolean.
    Bool(bool),
    /// Bytes.
    Bytes,
    /// Map, in file order.
    Map(Vec<(&'a str, Any<'a>)>),
    /// Array.
    Array(Vec<Any<'a>>),
    /// A string the decoder could not lend (never produced by `maxminddb`).
    Other,
}

impl<'a> Any<'a> {
    /// The value's MaxMind DB type name, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Any::Str(_) | Any::Other => "string",
            Any::UInt(_, k) | Any::Float(_, k) => k,
            Any::Int(_) => "int32",
            Any::Bool(_) => "boolean",
            Any::Bytes => "bytes",
            Any::Map(_) => "map",
            Any::Array(_) => "array",
        }
    }

    fn get(&self, key: &str) -> Option<&Any<'a>> {
        match self {
            Any::Map(entries) => entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&'a str> {
        match self {
            Any::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An AS number in any integer type, or a string `"13335"` / `"AS13335"`.
    fn as_asn(&self) -> Option<u32> {
        match self {
            Any::UInt(n, _) => u32::try_from(*n).ok(),
            Any::Int(n) => u32::try_from(*n).ok(),
            Any::Str(s) => {
                let s = s.trim();
                let digits = match s.get(..2) {
                    Some(p) if p.eq_ignore_ascii_case("AS") => &s[2..],
                    _ => s,
                };
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits.parse().ok()
            }
            _ => None,
        }
    }

    /// An ISO 3166-1 alpha-2 code (two ASCII letters), upper case.
    fn as_country_code(&self) -> Option<String> {
        let s = self.as_str()?.trim();
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic())).then(|| s.to_ascii_uppercase())
    }
}

struct AnyVisitor;

macro_rules! visit_uint {
    ($($method:ident: $t:ty => $name:literal),*) => {$(
        fn $method<E: de::Error>(self, v: $t) -> Result<Any<'de>, E> {
            Ok(Any::UInt(u128::from(v), $name))
        }
    )*};
}

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Any<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MaxMind DB value")
    }

    visit_uint!(visit_u16: u16 => "uint16", visit_u32: u32 => "uint32",
        visit_u64: u64 => "uint64", visit_u128: u128 => "uint128");

    fn visit_i32<E: de::Error>(self, v: i32) -> Result<Any<'de>, E> {
        Ok(Any::Int(i64::from(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Any<'de>, E> {
        Ok(Any::Int(v))
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<Any<'de>, E> {
        Ok(Any::Float(f64::from(v), "float"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Any<'de>, E> {
        Ok(Any::Float(v, "double"))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Any<'de>, E> {
        Ok(Any::Bool(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Any<'de>, E> {
        Ok(Any::Str(v))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Any<'de>, E> {
        Ok(Any::Other)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Any<'de>, E> {
        Ok(Any::Bytes)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Any<'de>, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<&'de str>()? {
            entries.push((key, map.next_value::<Any<'de>>()?));
        }
        Ok(Any::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Any<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Any<'de>>()? {
            items.push(v);
        }
        Ok(Any::Array(items))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Any<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor)
    }
}

/// The fields of a record this crate reads; everything else is skipped undecoded. A record
/// that is not a map has none of them.
#[derive(Debug, Default)]
pub(crate) struct GeoRecord<'a> {
    country_code: Option<Any<'a>>,
    country: Option<Any<'a>>,
    registered_country: Option<Any<'a>>,
    autonomous_system_number: Option<Any<'a>>,
    autonomous_system_organization: Option<Any<'a>>,
    asn: Option<Any<'a>>,
    as_name: Option<Any<'a>>,
    name: Option<Any<'a>>,
    traits: Option<Any<'a>>,
}

macro_rules! visit_nothing {
    ($($method:ident: $t:ty),*) => {$(
        fn $method<E: de::Error>(self, _: $t) -> Result<GeoRecord<'de>, E> {
            Ok(GeoRecord::default())
        }
    )*};
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = GeoRecord<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MaxMind DB record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GeoRecord<'de>, A::Error> {
        let mut r = GeoRecord::default();
        while let Some(key) = map.next_key::<&'de str>()? {
            let slot = match key {
                "country_code" => &mut r.country_code,
                "country" => &mut r.country,
                "registered_country" => &mut r.registered_country,
                "autonomous_system_number" => &mut r.autonomous_system_number,
                "autonomous_system_organization" => &mut r.autonomous_system_organization,
                "asn" => &mut r.asn,
                "as_name" => &mut r.as_name,
                "name" => &mut r.name,
                "traits" => &mut r.traits,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Any<'de>>()?);
        }
        Ok(r)
    }

    // A record that is not a map is valid data without any of the fields.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<GeoRecord<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(GeoRecord::default())
    }

    visit_nothing!(visit_bool: bool, visit_i32: i32, visit_i64: i64, visit_u16: u16, visit_u32: u32, visit_u64: u64, visit_u128: u128, visit_f32: f32,
        visit_f64: f64, visit_str: &str, visit_bytes: &[u8]);
}

impl<'de: 'a, 'a> Deserialize<'de> for GeoRecord<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RecordVisitor)
    }
}

impl<'a> GeoRecord<'a> {
    /// The country code (upper case), in any supported layout.
    pub(crate) fn country(&self) -> Option<String> {
        let iso = |v: &Option<Any<'a>>| v.as_ref()?.get("iso_code")?.as_country_code();
        self.country_code
            .as_ref()
            .and_then(Any::as_country_code)
            .or_else(|| iso(&self.country))
            // IPinfo's older country file stores the code itself in `country`.
            .or_else(|| self.country.as_ref().and_then(Any::as_country_code))
            .or_else(|| iso(&self.registered_country))
    }

    /// The AS number and organisation, in any supported layout.
    pub(crate) fn asn(&self) -> Option<(u32, Option<&'a str>)> {
        let str_of = |v: &Option<Any<'a>>| v.as_ref().and_then(Any::as_str);
        if let Some(n) = self.autonomous_system_number.as_ref().and_then(Any::as_asn) {
            return Some((n, str_of(&self.autonomous_system_organization)));
        }
        if let Some(n) = self.asn.as_ref().and_then(Any::as_asn) {
            return Some((n, str_of(&self.as_name).or_else(|| str_of(&self.name))));
        }
        let traits = self.traits.as_ref()?;
        let n = traits.get("autonomous_system_number")?.as_asn()?;
        Some((
            n,
            traits
                .get("autonomous_system_organization")
                .and_then(Any::as_str),
        ))
    }
}

/// The top-level fields of a record with their types, one level of nested keys included,
/// e.g. `city (map: geoname_id, names), location (map: latitude, longitude)`.
pub(crate) fn describe(record: &Any<'_>) -> String {
    let Any::Map(entries) = record else {
        return format!("a {} instead of a map", record.kind());
    };
    if entries.is_empty() {
        return "an empty map".to_owned();
    }
    let mut out = String::new();
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{k} ({}", v.kind());
        if let Any::Map(inner) = v
            && !inner.is_empty()
        {
            out.push_str(": ");
            let keys: Vec<&str> = inner.iter().map(|(k, _)| *k).collect();
            out.push_str(&keys.join(", "));
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests;
