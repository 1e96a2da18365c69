//! SHA-256 certificate fingerprints as users type and read them.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// SHA-256 digest of a DER certificate (or of an SSH public key blob).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

/// Why a fingerprint string was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FingerprintParseError {
    /// Not 64 hex digits (after removing `:` separators and an optional `sha256:` prefix).
    #[error("a SHA-256 fingerprint is 64 hex digits (colons allowed), got {0} digits")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("invalid hex digit {0:?} in fingerprint")]
    Digit(char),
}

impl fmt::Display for Fingerprint {
    /// Lower-case hex, no separators: the form `--fingerprint` takes and the server prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    /// Accepts `ab12…`, `AB:12:…` and `sha256:ab12…`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let s = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("SHA256:"))
            .unwrap_or(s);
        let digits: Vec<char> = s.chars().filter(|c| *c != ':').collect();
        if digits.len() != 64 {
            return Err(FingerprintParseError::Length(digits.len()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let hi = pair[0]
                .to_digit(16)
                .ok_or(FingerprintParseError::Digit(pair[0]))?;
            let lo = pair[1]
                .to_digit(16)
                .ok_or(FingerprintParseError::Digit(pair[1]))?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_printed_form_and_colon_form() {
        let fp = Fingerprint([0xab; 32]);
        let printed = fp.to_string();
        assert_eq!(printed.len(), 64);
        assert_eq!(printed.parse::<Fingerprint>(), Ok(fp));
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(colons.parse::<Fingerprint>(), Ok(fp));
        assert_eq!(format!("sha256:{printed}").parse::<Fingerprint>(), Ok(fp));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            "abc".parse::<Fingerprint>(),
            Err(FingerprintParseError::Length(3))
        );
        let bad = format!("{}zz", "0".repeat(62));
        assert_eq!(
            bad.parse::<Fingerprint>(),
            Err(FingerprintParseError::Digit('z'))
        );
    }
}
