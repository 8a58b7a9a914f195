//! open_clip's caption clean-up before BPE (`open_clip.tokenizer`, `clean='lower'`):
//! `basic_clean` (ftfy's `fix_text`, then `html.unescape` twice, then strip), `whitespace_clean`
//! (runs of whitespace to one space) and lower-casing.
//!
//! [`fix_text`] is the deterministic part of ftfy 6's default `fix_text`: per line, until
//! nothing changes, HTML entities (only those ending in `;`, and not on a line with `<` or any
//! line after one), C1 controls read as Windows-1252, Latin ligatures, full- and half-width
//! forms, curly quotes, line breaks, terminal escapes, control characters, then NFC. What it
//! does not reproduce is ftfy's mojibake repair (`fix_encoding`: re-decoding text that was
//! UTF-8 read as Latin-1 or Windows-1252, such as `sÃ³` → `só`); such captions clean differently
//! from open_clip's. Checked against ftfy on `tests/fixtures/golden/openclip/ftfy.json`.

use unicode_normalization::UnicodeNormalization;

/// open_clip's `whitespace_clean(basic_clean(text)).lower()`.
pub fn open_clip_clean(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    let words: Vec<&str> = unescaped.split(py_isspace).filter(|w| !w.is_empty()).collect();
    words.join(" ").to_lowercase()
}

/// Python's `str.isspace`: Unicode White_Space plus the information separators U+1C–U+1F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Rounds of fixes per line. ftfy repeats until nothing changes, which takes one round per
/// level of nested escaping (`&amp;amp;…`): a hostile 64 KiB caption could ask for 16,000
/// rounds over the whole line. Real text settles in two or three.
const MAX_ROUNDS: usize = 64;

/// ftfy's default `fix_text`, without mojibake repair (see the module header), and at most
/// [`MAX_ROUNDS`] rounds per line.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    for segment in text.split_inclusive('\n') {
        // ftfy's `unescape_html="auto"`: off from the first line containing `<` on.
        if segment.contains('<') {
            unescape = false;
        }
        let mut s = segment.to_string();
        for _ in 0..MAX_ROUNDS {
            let before = s.clone();
            if unescape {
                s = ftfy_unescape(&s);
            }
            s = fix_c1_controls(&s);
            s = s.chars().flat_map(ligature).collect();
            s = s.chars().map(width).collect::<Vec<String>>().concat();
            s = s.chars().map(uncurl).collect();
            s = s.replace("\r\n", "\n").replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
            s = remove_terminal_escapes(&s);
            s = s.chars().filter(|&c| !is_control(c)).collect();
            s = s.nfc().collect();
            if s == before {
                break;
            }
        }
        out.push_str(&s);
    }
    out
}

/// ftfy's `unescape_html`: each `&#?[0-9A-Za-z]{1,24};` that is a whole HTML5 entity (or an
/// upper-cased lower-case one that is not itself an entity), or a numeric reference.
fn ftfy_unescape(s: &str) -> String {
    replace_refs(s, |name, semicolon| {
        if !semicolon || name.is_empty() || name.len() > 24 + usize::from(name.starts_with('#')) {
            return None;
        }
        let body = name.strip_prefix('#').unwrap_or(name);
        if body.is_empty() || !body.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        if name.starts_with('#') {
            // ftfy keeps a reference whose value still has a `;` (`&#59;`).
            return numeric_ref(body).filter(|r| !r.contains(';'));
        }
        whole_entity(name).or_else(|| {
            let lower = name.to_ascii_lowercase();
            let upper = format!("&{name};");
            let upper_undecodable = htmlize::unescape(&upper) == upper;
            if name.bytes().all(|b| !b.is_ascii_lowercase()) && upper_undecodable {
                whole_entity(&lower).map(|c| c.to_uppercase())
            } else {
                None
            }
        })
    })
}

/// The value of `&name;` when it is one whole HTML5 named reference.
fn whole_entity(name: &str) -> Option<String> {
    let r = format!("&{name};");
    let out = htmlize::unescape(&r);
    // A partial match (`&notit;` → `¬it;`) leaves the `;`; only `&semi;` decodes to one.
    (out != r && (out == ";" || !out.ends_with(';'))).then(|| out.into_owned())
}

/// Python's `html.unescape`: named references (the WHATWG table, with or without `;`, longest
/// prefix) through htmlize, numeric ones with Python's own rules.
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    replace_refs(s, |name, semicolon| {
        if let Some(body) = name.strip_prefix('#') {
            return numeric_ref(body);
        }
        let r = format!("&{name}{}", if semicolon { ";" } else { "" });
        let out = htmlize::unescape(&r);
        (out != r).then(|| out.into_owned())
    })
}

/// Replaces each reference Python's `html.unescape` regex finds,
/// `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)`, by `f(name, has_semicolon)`,
/// or leaves it where `f` says `None`.
fn replace_refs(s: &str, f: impl Fn(&str, bool) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let len = if let Some(num) = after.strip_prefix('#') {
            let hex = num.starts_with(['x', 'X']);
            let digits = if hex {
                num[1..].bytes().take_while(u8::is_ascii_hexdigit).count()
            } else {
                num.bytes().take_while(u8::is_ascii_digit).count()
            };
            if digits == 0 {
                0
            } else {
                1 + usize::from(hex) + digits
            }
        } else {
            after
                .char_indices()
                .take_while(|&(_, c)| !matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';'))
                .take(32)
                .last()
                .map_or(0, |(j, c)| j + c.len_utf8())
        };
        if len == 0 {
            out.push('&');
            rest = after;
            continue;
        }
        let semicolon = after[len..].starts_with(';');
        let whole = len + usize::from(semicolon);
        match f(&after[..len], semicolon) {
            Some(r) => out.push_str(&r),
            None => out.push_str(&rest[i..i + 1 + whole]),
        }
        rest = &after[whole..];
    }
    out.push_str(rest);
    out
}

/// A numeric reference's text as Python's `html.unescape` decodes it (`body` without `#`).
fn numeric_ref(body: &str) -> Option<String> {
    let num = match body.strip_prefix(['x', 'X']) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => body.parse::<u32>().ok(),
    }
    .unwrap_or(u32::MAX);
    if let Some(c) = windows_1252(num) {
        return Some(c.to_string());
    }
    if num == 0 || (0xD800..=0xDFFF).contains(&num) || num > 0x10FFFF {
        return Some('\u{FFFD}'.to_string());
    }
    let invalid = (0x1..=0x8).contains(&num)
        || (0xE..=0x1F).contains(&num)
        || (0x7F..=0x9F).contains(&num)
        || (0xFDD0..=0xFDEF).contains(&num)
        || num == 0xB
        || (num & 0xFFFE) == 0xFFFE;
    if invalid {
        return Some(String::new());
    }
    char::from_u32(num).map(String::from)
}

/// Python's `html._invalid_charrefs`: references to C1 code points read as Windows-1252
/// (`&#128;` → `€`; the five undefined ones stay C1), and `&#13;` → `\r`.
fn windows_1252(num: u32) -> Option<char> {
    if num == 0x0D {
        return Some('\r');
    }
    if !(0x80..=0x9F).contains(&num) {
        return None;
    }
    Some(cp1252(num as u8))
}

/// Windows-1252 for bytes 0x80–0x9F, the five undefined ones mapped to themselves (ftfy's
/// "sloppy" codec).
fn cp1252(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D,
        0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A,
        0x0153, 0x9D, 0x017E, 0x0178,
    ];
    char::from_u32(HIGH[(b - 0x80) as usize] as u32).expect("valid code points")
}

/// ftfy's `fix_c1_controls`: C1 control characters read as Windows-1252.
fn fix_c1_controls(s: &str) -> String {
    s.chars().map(|c| if ('\u{80}'..='\u{9f}').contains(&c) { cp1252(c as u8) } else { c }).collect()
}

/// ftfy's `LIGATURES` table.
fn ligature(c: char) -> Vec<char> {
    let s: &str = match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        other => return vec![other],
    };
    s.chars().collect()
}

/// ftfy's `WIDTH_MAP`: U+3000 to a space, U+FF01–U+FFEF to their NFKC forms.
fn width(c: char) -> String {
    match c {
        '\u{3000}' => " ".into(),
        '\u{FF01}'..='\u{FFEF}' => std::iter::once(c).nfkc().collect(),
        _ => c.to_string(),
    }
}

/// ftfy's `uncurl_quotes`.
fn uncurl(c: char) -> char {
    match c {
        '\u{02BC}' | '\u{2018}'..='\u{201B}' => '\'',
        '\u{201C}'..='\u{201F}' => '"',
        _ => c,
    }
}

/// ftfy's `remove_terminal_escapes`: `ESC [ (digits or ;)* letter`.
fn remove_terminal_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\x1b[") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let n = after.bytes().take_while(|b| b.is_ascii_digit() || *b == b';').count();
        if after[n..].starts_with(|c: char| c.is_ascii_alphabetic()) {
            rest = &after[n + 1..];
        } else {
            out.push_str("\x1b[");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// ftfy's `CONTROL_CHARS`.
fn is_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{B}' | '\u{E}'..='\u{1F}' | '\u{7F}' | '\u{206A}'..='\u{206F}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFC}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_html_unescape_edge_cases() {
        for (i, o) in [
            ("&amp;amp;", "&amp;"),
            ("&ampx", "&x"),
            ("&#128;", "€"),
            ("&#0;", "\u{FFFD}"),
            ("&#1;", ""),
            ("&#65", "A"),
            ("&notit;", "¬it;"),
            ("&NotAnEntity;", "&NotAnEntity;"),
            ("a & b &; &#; &#x;", "a & b &; &#; &#x;"),
            ("&#99999999999999;", "\u{FFFD}"),
        ] {
            assert_eq!(html_unescape(i), o, "{i}");
        }
    }

    #[test]
    fn deeply_nested_escapes_stop_after_max_rounds() {
        let hostile = format!("&{}; tail", "amp;".repeat(16_000));
        let t = std::time::Instant::now();
        let out = fix_text(&hostile);
        assert!(out.ends_with("; tail") && out.len() < hostile.len());
        assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
        assert_eq!(fix_text("&amp;amp;amp;amp; x"), "& x", "real nesting still settles");
    }

    #[test]
    fn curly_apostrophes_become_straight() {
        assert_eq!(open_clip_clean("  Don\u{2019}t\tSTOP  "), "don't stop");
    }
}
