use super::*;

#[test]
fn asn_strings_and_ranges() {
    assert_eq!(Any::Str("AS13335").as_asn(), Some(13335));
    assert_eq!(Any::Str("as13335").as_asn(), Some(13335));
    assert_eq!(Any::Str(" 13335 ").as_asn(), Some(13335));
    assert_eq!(Any::Str("AS").as_asn(), None);
    assert_eq!(Any::Str("AS-1").as_asn(), None);
    assert_eq!(Any::Str("AS+1").as_asn(), None);
    assert_eq!(Any::Str("AS99999999999").as_asn(), None);
    assert_eq!(Any::UInt(u128::from(u32::MAX) + 1, "uint64").as_asn(), None);
    assert_eq!(Any::Int(-5).as_asn(), None);
    assert_eq!(Any::Float(5.0, "double").as_asn(), None);
}

#[test]
fn country_codes() {
    assert_eq!(Any::Str("cn").as_country_code().as_deref(), Some("CN"));
    assert_eq!(Any::Str("China").as_country_code(), None);
    assert_eq!(Any::Str("").as_country_code(), None);
    assert_eq!(Any::Str("Ç").as_country_code(), None);
    assert_eq!(Any::UInt(86, "uint16").as_country_code(), None);
}

#[test]
fn describe_names_fields_and_types() {
    let rec = Any::Map(vec![
        ("city", Any::Map(vec![("names", Any::Map(vec![]))])),
        ("country_code", Any::UInt(86, "uint32")),
    ]);
    assert_eq!(describe(&rec), "city (map: names), country_code (uint32)");
    assert_eq!(describe(&Any::Str("x")), "a string instead of a map");
}
