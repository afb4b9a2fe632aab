//! Unicode simple case folding, the comparison rule of case-insensitive filters.

/// Folds one character with Unicode simple case folding (`CaseFolding.txt`
/// statuses C and S): every character maps to exactly one character.
#[inline]
pub fn simple_fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    unicode_case_mapping::case_folded(c)
        .and_then(|folded| char::from_u32(folded.get()))
        .unwrap_or(c)
}

/// Appends `text` folded with [`simple_fold`] to `out`.
pub fn simple_fold_into(text: &str, out: &mut String) {
    if text.is_ascii() {
        let start = out.len();
        out.push_str(text);
        out[start..].make_ascii_lowercase();
    } else {
        out.extend(text.chars().map(simple_fold));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_like_unicode_simple_case_folding() {
        for (c, folded) in [
            ('A', 'a'),
            ('z', 'z'),
            ('\u{212A}', 'k'), // KELVIN SIGN
            ('\u{017F}', 's'), // LATIN SMALL LETTER LONG S
            ('\u{1E9E}', 'ß'), // CAPITAL SHARP S (simple, not "ss")
            ('Σ', 'σ'),
            ('ς', 'σ'),
            ('É', 'é'),
            ('\u{0130}', '\u{0130}'), // İ has only full and Turkic foldings
            ('ı', 'ı'),
            ('.', '.'),
        ] {
            assert_eq!(simple_fold(c), folded, "{c:?}");
        }
        let mut out = String::new();
        simple_fold_into("Logs.ÉVÉNEMENTS", &mut out);
        assert_eq!(out, "logs.événements");
    }
}
