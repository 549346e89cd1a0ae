//! The one identity rule for names: which characters this PKI's names may use (the
//! repertoire), and who a name designates (the person key). Pure code, no I/O.
//!
//! Used by the issuance policy's subject check (at the CA, so at RA submission too, which runs
//! the policy), by the RA at designation and bootstrap, and by every comparison of persons
//! (one operator role per person, the two-person rule, acting on one's own card).
//!
//! **Repertoire.** Person names (GN, SN, CN) are written with the Latin letters of French and of
//! the EU's official languages written in the Latin script ([`NAME_LETTERS`], precomposed, both
//! cases), space, hyphen-minus and the apostrophe (U+0027, and U+2019 as typed by word
//! processors); SN and CN also take the ASCII digits (numbered service and test identities;
//! the person key folds 0 onto O and 1 onto l, so a digit makes no second person). The other
//! attributes (C, O, OU, organizationIdentifier, serialNumber) take printable ASCII and the same
//! letters. Everything else is refused, naming the attribute and the character: letters of
//! other scripts (Cyrillic, Greek), other Latin letters (U+01C0 ǀ, U+01CD Ǎ, ı, ð, ŋ...),
//! combining marks (NFD), invisible characters, other punctuation.
//!
//! **Person key.** The key folds what must not tell two persons apart: case, accents, spacing
//! and punctuation, and look-alike letters by Unicode's confusable skeleton (UTS #39, the
//! `unicode-security` crate's data). It is computed from stored certificates as well, which
//! may predate the repertoire, so it folds any character, not only allowed ones. A key too
//! coarse makes namesakes one person, and the rules then fail closed; a key too fine would let
//! a look-alike be a second person. So I, l, i and 1 fold together (UTS #39 holds I for l,
//! case holds I for i), as do m and rn, and "Lise" and "Ilse" are one person: two such
//! operators cannot both hold a role, nor approve each other's requests.
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::x509::name::{Attribute, DistinguishedName};

/// The accented letters of person names, both cases: French (à â æ ç é è ê ë î ï ô œ ù û ü ÿ),
/// and those of the EU's official languages in the Latin script — German, Danish, Swedish,
/// Finnish, Estonian, Dutch, Spanish, Portuguese, Italian, Irish, Hungarian, Polish, Czech,
/// Slovak, Slovenian, Croatian, Latvian, Lithuanian, Maltese, Romanian. Romanian's comma-below
/// ș ț come with the cedilla ş ţ that older systems wrote for them (one person either way: the
/// key strips both). ß has no single-letter capital here (written SS). Not included: letters of
/// languages that are not EU official (Turkish ğ ı İ, Icelandic ð þ, Welsh ŵ ŷ), and Latin
/// letters that are not in any of these alphabets (phonetic, African, Pinyin: ǀ ǃ Ǎ ɑ ...).
pub const NAME_LETTERS: &str = concat!(
    // Latin-1 Supplement
    "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝ",
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿß",
    // Latin Extended-A
    "ĀāĂăĄąĆćČčĊċĎďĐđĒēĖėĘęĚěĢģĠġĦħĪīĮįĶķĹĺĻļĽľŁłŃńŅņŇňŐőŒœŔŕŘřŚśŞşŠšŢţŤťŪūŮůŰűŲųŸŹźŻżŽž",
    // Latin Extended-B: Romanian with comma below
    "ȘșȚț",
);

/// The longest run of characters a name value may hold before its check stops (the policy
/// bounds values far below this).
const CHECKED: usize = 1024;

/// The kind of value an attribute holds, for its repertoire.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// A given name: letters, space, hyphen, apostrophe.
    Given,
    /// A surname or a common name: the same, and ASCII digits.
    Surname,
    /// Organisation, unit, country, identifiers: printable ASCII and the letters.
    Other,
}

fn kind(attribute: Attribute) -> Kind {
    match attribute {
        Attribute::GivenName => Kind::Given,
        Attribute::Surname | Attribute::CommonName => Kind::Surname,
        _ => Kind::Other,
    }
}

/// Whether `c` is a letter of person names: A-Z, a-z and [`NAME_LETTERS`].
pub fn is_name_letter(c: char) -> bool {
    c.is_ascii_alphabetic() || (!c.is_ascii() && NAME_LETTERS.contains(c))
}

/// Whether `c` may appear in a value of `attribute`.
pub fn allowed(attribute: Attribute, c: char) -> bool {
    match kind(attribute) {
        Kind::Given => is_name_letter(c) || matches!(c, ' ' | '-' | '\'' | '\u{2019}'),
        Kind::Surname => {
            is_name_letter(c) || c.is_ascii_digit() || matches!(c, ' ' | '-' | '\'' | '\u{2019}')
        }
        Kind::Other => matches!(c, ' '..='~') || is_name_letter(c),
    }
}

/// A character a value may not hold: where and which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub attribute: Attribute,
    pub character: char,
}

impl core::fmt::Display for Refused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = match kind(self.attribute) {
            Kind::Given => {
                "a given name is written with the Latin letters of French and the EU's official languages (accents precomposed), spaces, hyphens and apostrophes"
            }
            Kind::Surname => {
                "a surname or common name is written with the Latin letters of French and the EU's official languages (accents precomposed), digits, spaces, hyphens and apostrophes"
            }
            Kind::Other => {
                "this attribute is written in printable ASCII and the Latin letters of French and the EU's official languages"
            }
        };
        write!(
            f,
            "{} has the character U+{:04X} {:?}: {what}",
            self.attribute, self.character as u32, self.character
        )
    }
}

/// The first character of `value` that `attribute` may not hold, if any.
pub fn check_value(attribute: Attribute, value: &str) -> Option<Refused> {
    value
        .chars()
        .take(CHECKED)
        .find(|c| !allowed(attribute, *c))
        .map(|character| Refused {
            attribute,
            character,
        })
}

/// Every attribute of `dn` that holds a character outside its repertoire (the first such
/// character of each).
pub fn check_name(dn: &DistinguishedName) -> Vec<Refused> {
    dn.attributes()
        .iter()
        .filter_map(|(attribute, value)| check_value(*attribute, value))
        .collect()
}

/// Who a subject names, as a person: the country, the first given name and the surname, each
/// [folded](fold). The organisation, the units, serialNumber, the common name and further
/// given names are left out, so that two cards of one person (a second card, a renewal, a unit
/// or an organisation added, "Chloé" or "CHLOE", "Jean-Pierre" or "Jean Pierre") have the same
/// key. Namesakes share a key: the rules then fail closed. The holder id is compared too.
pub fn person_key(subject: &DistinguishedName) -> String {
    let value = |attribute| subject.first(attribute).unwrap_or_default();
    // The first given name, split after folding: a look-alike of a space or a hyphen splits
    // like the real one.
    let given = fold_keeping_separators(value(Attribute::GivenName));
    let first = given
        .split(' ')
        .find(|token| !token.is_empty())
        .unwrap_or_default();
    [
        fold(value(Attribute::Country)),
        first.to_owned(),
        fold(value(Attribute::Surname)),
    ]
    .join("\u{1f}")
}

/// `text` folded for comparing persons: letters and digits only, compatibility forms
/// decomposed, accents stripped, look-alikes mapped by the UTS #39 skeleton, case folded.
pub fn fold(text: &str) -> String {
    fold_keeping_separators(text).replace(' ', "")
}

/// [`fold`], with every run of separators (spaces, hyphens, apostrophes and their look-alikes)
/// left as one space.
fn fold_keeping_separators(text: &str) -> String {
    // Letters of the repertoire whose capital is two letters (ß: SS) are read as their capitals
    // first, so that a name and its capitals (as CN writes the surname) fold alike. (Other
    // scripts' expanding capitals, such as Greek iota subscripts, are left to the skeleton.)
    let mut folded: String = text
        .chars()
        .take(CHECKED)
        .flat_map(|c| {
            let upper: Vec<char> = c.to_uppercase().collect();
            if upper.len() > 1 && is_name_letter(c) {
                upper
            } else {
                vec![c]
            }
        })
        .collect();
    // Case and confusables do not commute ("I" is a look-alike of "l", "i" is not; "m" of
    // "rn", "M" of nothing): a few rounds reach the closure of both (a test checks that the
    // result is stable).
    for _ in 0..8 {
        let next = round(&folded);
        if next == folded {
            break;
        }
        folded = next;
    }
    let mut out = String::with_capacity(folded.len());
    let mut gap = false;
    for c in folded.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.push(c);
        } else if c.is_whitespace() || c.is_ascii_punctuation() {
            // After the skeleton, look-alikes of spaces, hyphens and apostrophes are these.
            gap = true;
        }
        // Anything else (zero-width and other format characters, symbols) shows nothing of
        // a name: left out, not read as a separator.
    }
    out
}

/// One round of folding: the skeleton (which decomposes first, so that a letter like U+017F ſ
/// is read as the "f" it looks like, not the "s" it stands for), then compatibility forms
/// decomposed and marks dropped; then the same for the upper case and for the lower case.
fn round(text: &str) -> String {
    let bare = |s: String| -> String { s.nfkd().filter(|c| !is_combining_mark(*c)).collect() };
    let skeleton = |s: &str| -> String { bare(unicode_security::skeleton(s).collect()) };
    let folded = skeleton(text);
    let upper = skeleton(&folded.to_uppercase());
    skeleton(&upper.to_lowercase()).to_lowercase()
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
