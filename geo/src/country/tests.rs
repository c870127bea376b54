use super::*;

#[test]
fn two_letters_any_case() {
    assert_eq!(
        CountryCode::parse("cn").map(String::from),
        Ok("CN".to_owned())
    );
    assert_eq!(
        CountryCode::parse("Us").map(|c| c.to_string()),
        Ok("US".to_owned())
    );
    for bad in ["", "C", "CHN", "C1", " CN", "ÄÖ"] {
        assert_eq!(
            CountryCode::parse(bad),
            Err(InvalidCountryCode(bad.to_owned()))
        );
    }
}
