//! [`CountryCode`]: an ISO 3166-1 alpha-2 code, the one check of "two ASCII letters" that the
//! policy, the event log's `--country` filter, the metrics labels and the geo expansion share.

use std::fmt;
use std::str::FromStr;

/// An ISO 3166-1 alpha-2 country code, stored in upper case (`CN`, `US`). Any two ASCII
/// letters are accepted (`cn` becomes `CN`); whether the code is assigned is left to the
/// databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

/// A string that is not two ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid country code {0:?}: use an ISO 3166-1 alpha-2 code such as \"CN\" or \"US\"")]
pub struct InvalidCountryCode(pub String);

impl CountryCode {
    /// Two ASCII letters in any case, nothing around them.
    pub fn parse(s: &str) -> Result<CountryCode, InvalidCountryCode> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Ok(CountryCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => Err(InvalidCountryCode(s.to_owned())),
        }
    }

    /// The code in upper case.
    pub fn as_str(&self) -> &str {
        // Two ASCII letters: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for CountryCode {
    type Err = InvalidCountryCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CountryCode::parse(s)
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<CountryCode> for String {
    fn from(cc: CountryCode) -> String {
        cc.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests;
