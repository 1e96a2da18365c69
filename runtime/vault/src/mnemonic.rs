//! BIP39 mnemonics (English word list) through the `bip39` crate: new ones from the OS
//! random source, typed ones checked word by word with messages a person can act on.

use bip39::{Language, Mnemonic};
use zeroize::Zeroizing;

use crate::VaultError;

/// Word counts `alknet vault init` offers: 12 words (128 bits of entropy) or 24 (256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordCount {
    Twelve,
    TwentyFour,
}

impl WordCount {
    /// From a number of words; only 12 and 24 are offered for new mnemonics.
    pub fn from_words(n: usize) -> Option<Self> {
        match n {
            12 => Some(Self::Twelve),
            24 => Some(Self::TwentyFour),
            _ => None,
        }
    }

    fn entropy_len(self) -> usize {
        match self {
            Self::Twelve => 16,
            Self::TwentyFour => 32,
        }
    }
}

/// A new mnemonic from the operating system's random source.
pub fn generate_mnemonic(words: WordCount) -> Result<Mnemonic, VaultError> {
    let mut entropy = Zeroizing::new([0u8; 32]);
    let entropy = &mut entropy[..words.entropy_len()];
    getrandom::getrandom(entropy).map_err(|e| VaultError::Random(e.to_string()))?;
    Mnemonic::from_entropy_in(Language::English, entropy)
        .map_err(|e| VaultError::Mnemonic(e.to_string()))
}

/// A mnemonic typed or pasted by a person: words separated by any whitespace, any case.
/// Every valid BIP39 length (12, 15, 18, 21 or 24 words) is accepted, so words made by
/// other tools restore too.
pub fn parse_mnemonic(text: &str) -> Result<Mnemonic, VaultError> {
    let normalized = Zeroizing::new(
        text.split_whitespace()
            .map(|w| w.to_lowercase())
            .collect::<Vec<_>>()
            .join(" "),
    );
    let words: Vec<&str> = normalized.split(' ').filter(|w| !w.is_empty()).collect();
    if ![12, 15, 18, 21, 24].contains(&words.len()) {
        return Err(VaultError::Mnemonic(format!(
            "a mnemonic has 12, 15, 18, 21 or 24 words, not {}",
            words.len()
        )));
    }
    Mnemonic::parse_in_normalized(Language::English, &normalized).map_err(|e| match e {
        bip39::Error::UnknownWord(i) => VaultError::Mnemonic(format!(
            "word {} ({:?}) is not in the BIP39 English word list",
            i + 1,
            words.get(i).copied().unwrap_or("")
        )),
        bip39::Error::InvalidChecksum => VaultError::Mnemonic(
            "the checksum does not match: a word is wrong or out of order".into(),
        ),
        other => VaultError::Mnemonic(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    /// The English vectors of trezor/python-mnemonic (source named in the file): entropy
    /// -> mnemonic, and mnemonic + passphrase "TREZOR" -> seed.
    const VECTORS: &str = include_str!("../tests/data/bip39-vectors-english.json");

    #[test]
    fn bip39_english_vectors() {
        let doc: serde_json::Value = serde_json::from_str(VECTORS).expect("json");
        let vectors = doc["english"].as_array().expect("english list");
        assert_eq!(vectors.len(), 24);
        for v in vectors {
            let entropy = hex::decode(v[0].as_str().expect("entropy")).expect("hex");
            let words = v[1].as_str().expect("mnemonic");
            let seed = v[2].as_str().expect("seed");
            let made = Mnemonic::from_entropy_in(Language::English, &entropy).expect("entropy");
            assert_eq!(made.to_string(), words);
            let parsed = parse_mnemonic(words).expect("parse");
            assert_eq!(parsed.to_entropy(), entropy);
            assert_eq!(hex::encode(&parsed.to_seed("TREZOR")), seed, "{words}");
        }
    }

    #[test]
    fn generated_mnemonics_have_the_asked_length() {
        let twelve = generate_mnemonic(WordCount::Twelve).expect("12");
        assert_eq!(twelve.word_count(), 12);
        let twenty_four = generate_mnemonic(WordCount::TwentyFour).expect("24");
        assert_eq!(twenty_four.word_count(), 24);
        assert_ne!(
            generate_mnemonic(WordCount::Twelve)
                .expect("12")
                .to_string(),
            twelve.to_string()
        );
        assert_eq!(WordCount::from_words(18), None);
    }

    #[test]
    fn typed_mnemonics_are_normalized_and_errors_say_what_is_wrong() {
        let words = "abandon abandon abandon abandon abandon abandon abandon abandon abandon \
                     abandon abandon about";
        let messy = format!("  {}\n", words.to_uppercase().replace(' ', " \t "));
        assert_eq!(parse_mnemonic(&messy).expect("messy").to_string(), words);

        let e = parse_mnemonic(&words.replace("about", "abandon")).expect_err("checksum");
        assert!(e.to_string().contains("checksum"), "{e}");
        let e = parse_mnemonic(&words.replace("about", "aboot")).expect_err("unknown word");
        assert!(e.to_string().contains("word 12 (\"aboot\")"), "{e}");
        let e = parse_mnemonic("abandon about").expect_err("two words");
        assert!(e.to_string().contains("not 2"), "{e}");
        assert!(parse_mnemonic("").is_err());
    }
}
