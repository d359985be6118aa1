//! How many SMS segments a text costs, and how to cut a text down to a budget.
//!
//! A text that uses only the GSM 03.38 alphabet travels as GSM-7: 160 septets in a single
//! message, 153 per part once it is split (each part carries a 7-septet concatenation
//! header). The extension-table characters `^ { } \ [ ~ ] | €` and form feed cost two septets
//! (an escape and the character), and the pair is never split across parts. Any other
//! character switches the whole message to UCS-2: 70 UTF-16 units alone, 67 per part, and a
//! character outside the Basic Multilingual Plane (most emoji) costs two units that are never
//! split either. One curly apostrophe therefore more than halves the capacity, which is why
//! [`normalize`] replaces the usual typographic look-alikes first.

/// How the text is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    /// Units (septets or UTF-16 units) that fit in one unsplit message.
    pub const fn single(self) -> usize {
        match self {
            Encoding::Gsm7 => 160,
            Encoding::Ucs2 => 70,
        }
    }

    /// Units per part of a concatenated message.
    pub const fn per_part(self) -> usize {
        match self {
            Encoding::Gsm7 => 153,
            Encoding::Ucs2 => 67,
        }
    }

    /// The ellipsis that marks a cut without changing the encoding.
    pub const fn ellipsis(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "...",
            Encoding::Ucs2 => "…",
        }
    }
}

/// The GSM 03.38 basic character set, without the escape code itself.
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Reached through the escape code: two septets each.
const GSM_EXTENSION: &str = "^{}\\[~]|€\u{0C}";

/// Septets a character costs in GSM-7, or `None` if GSM-7 cannot carry it.
pub fn gsm7_septets(c: char) -> Option<usize> {
    if c.is_ascii_alphanumeric() || c == ' ' || GSM_BASIC.contains(c) {
        Some(1)
    } else if GSM_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// The encoding `text` needs.
pub fn encoding(text: &str) -> Encoding {
    if text.chars().all(|c| gsm7_septets(c).is_some()) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// What a text costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 units (UCS-2).
    pub units: usize,
    /// Message parts; 0 for an empty text.
    pub segments: usize,
}

/// Measures `text`.
pub fn measure(text: &str) -> Measure {
    measure_as(text, encoding(text))
}

fn units_of(c: char, encoding: Encoding) -> usize {
    match encoding {
        Encoding::Gsm7 => gsm7_septets(c).unwrap_or(1),
        Encoding::Ucs2 => c.len_utf16(),
    }
}

fn measure_as(text: &str, encoding: Encoding) -> Measure {
    let units: usize = text.chars().map(|c| units_of(c, encoding)).sum();
    let segments = if units == 0 {
        0
    } else if units <= encoding.single() {
        1
    } else {
        // Pack greedily: a character that does not fit whole starts the next part, because an
        // escape pair or a surrogate pair is never split.
        let (mut parts, mut used) = (1, 0);
        for c in text.chars() {
            let u = units_of(c, encoding);
            if used + u > encoding.per_part() {
                parts += 1;
                used = 0;
            }
            used += u;
        }
        parts
    };
    Measure {
        encoding,
        units,
        segments,
    }
}

/// Message parts `text` needs; 0 for an empty text.
pub fn segments(text: &str) -> usize {
    measure(text).segments
}

/// A text cut to a segment budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    pub text: String,
    pub encoding: Encoding,
    pub segments: usize,
    /// Whether anything was cut.
    pub truncated: bool,
}

/// `text` unchanged if it fits in `max_segments` (at least 1), otherwise its longest prefix
/// that ends at a word boundary and fits together with an ellipsis in the text's encoding.
/// A single word longer than the budget is cut inside the word.
pub fn fit(text: &str, max_segments: usize) -> Fitted {
    let max_segments = max_segments.max(1);
    let whole = measure(text);
    if whole.segments <= max_segments {
        return Fitted {
            text: text.to_owned(),
            encoding: whole.encoding,
            segments: whole.segments,
            truncated: false,
        };
    }
    // The cut keeps the encoding: a UCS-2 text keeps its "…", which is itself UCS-2, so a cut
    // that happens to remove the only non-GSM character cannot change the arithmetic.
    let encoding = whole.encoding;
    let ellipsis = encoding.ellipsis();
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let fits = |chars: usize| {
        let mut candidate = text[..byte_at(text, &boundaries, chars)]
            .trim_end()
            .to_owned();
        candidate.push_str(ellipsis);
        measure_as(&candidate, encoding).segments <= max_segments
    };
    // The longest fitting prefix, in characters; fitting is monotone in the prefix length.
    let (mut lo, mut hi) = (0, boundaries.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) { lo = mid } else { hi = mid - 1 }
    }
    let cut = byte_at(text, &boundaries, lo);
    let prefix = &text[..cut];
    let at_boundary = text[cut..].starts_with(char::is_whitespace);
    let kept = if at_boundary {
        prefix
    } else {
        match prefix.rfind(char::is_whitespace) {
            Some(space) if !prefix[..space].trim().is_empty() => &prefix[..space],
            _ => prefix,
        }
    };
    let mut out = kept
        .trim_end_matches(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':' | '-'))
        .to_owned();
    out.push_str(ellipsis);
    let fitted = measure_as(&out, encoding);
    Fitted {
        text: out,
        encoding,
        segments: fitted.segments,
        truncated: true,
    }
}

fn byte_at(text: &str, boundaries: &[usize], chars: usize) -> usize {
    boundaries.get(chars).copied().unwrap_or(text.len())
}

/// Replaces typographic characters that have a plain GSM-7 equivalent (curly quotes, dashes,
/// the ellipsis character, non-breaking spaces), so one pasted apostrophe does not turn the
/// whole message into UCS-2. Twilio's "smart encoding" does the same, but only for messaging
/// services that enable it.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{2032}' => out.push('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{2033}' => out.push('"'),
            '\u{2010}'..='\u{2015}' | '\u{2212}' => out.push('-'),
            '\u{2026}' => out.push_str("..."),
            '\u{00A0}' | '\u{2007}' | '\u{202F}' | '\u{2009}' => out.push(' '),
            '\t' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
