//! Hyphenation points for the pages: long German compounds ("Führerscheinangelegenheiten")
//! must break at a syllable on a narrow wall display or kiosk button, never mid-syllable and
//! never out of their box. Browsers hyphenate only where they ship dictionaries (headless
//! Chromium on Debian does not), so the daemon computes the points once from the catalog's
//! texts with Knuth–Liang patterns (the `hyphenation` crate, TeX's de-1996 and en-us patterns)
//! and serves them at `GET /api/v1/hyphenation`; the pages put soft hyphens (U+00AD) into
//! those words. The API's data stays plain text.

use std::collections::BTreeMap;

use hyphenation::{Hyphenator, Language, Load, Standard};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::config::Text;

/// Words shorter than this are never broken.
const MIN_WORD_CHARS: usize = 8;

/// Per language: each long word of the catalog's texts → the same word with soft hyphens.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HyphenationMap {
    /// German words.
    pub de: BTreeMap<String, String>,
    /// English words.
    pub en: BTreeMap<String, String>,
}

/// Soft hyphens in one word at the pattern's points ("Füh\u{ad}rer\u{ad}schein…").
fn hyphenate_word(dictionary: &Standard, word: &str) -> String {
    dictionary
        .hyphenate(word)
        .into_iter()
        .segments()
        .collect::<Vec<_>>()
        .join("\u{ad}")
}

fn add_words(dictionary: Option<&Standard>, text: &str, out: &mut BTreeMap<String, String>) {
    let Some(dictionary) = dictionary else {
        return;
    };
    for word in text.split(|c: char| !c.is_alphabetic()) {
        if word.chars().count() < MIN_WORD_CHARS || out.contains_key(word) {
            continue;
        }
        let hyphenated = hyphenate_word(dictionary, word);
        if hyphenated != word {
            out.insert(word.to_string(), hyphenated);
        }
    }
}

impl HyphenationMap {
    /// The hyphenation of every long word in the texts a page shows: site, departments,
    /// waiting areas, services, documents and desk labels.
    pub fn for_catalog(catalog: &Catalog) -> HyphenationMap {
        let german = Standard::from_embedded(Language::German1996).ok();
        let english = Standard::from_embedded(Language::EnglishGB).ok();
        let mut texts: Vec<&Text> = Vec::new();
        for department in catalog.departments.values() {
            texts.push(&department.name);
            texts.push(&department.waiting_area);
        }
        for service in catalog.services.values() {
            texts.push(&service.name);
            texts.extend(service.documents.iter());
        }
        for desk in catalog.desks.values() {
            texts.push(&desk.label);
        }
        let mut map = HyphenationMap::default();
        add_words(german.as_ref(), &catalog.site_name, &mut map.de);
        add_words(german.as_ref(), &catalog.town, &mut map.de);
        for text in texts {
            add_words(german.as_ref(), &text.de, &mut map.de);
            add_words(english.as_ref(), &text.en, &mut map.en);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_german_compounds_break_at_syllables_and_short_words_not_at_all() {
        let german = Standard::from_embedded(Language::German1996).expect("embedded");
        let mut out = BTreeMap::new();
        add_words(
            Some(&german),
            "Führerscheinangelegenheiten, Pass und Ausweis",
            &mut out,
        );
        assert_eq!(
            out.get("Führerscheinangelegenheiten").map(String::as_str),
            Some("Füh\u{ad}rer\u{ad}schein\u{ad}an\u{ad}ge\u{ad}le\u{ad}gen\u{ad}hei\u{ad}ten")
        );
        assert!(!out.contains_key("Ausweis"), "{out:?}");
        assert!(!out.contains_key("Pass"), "{out:?}");
    }
}
