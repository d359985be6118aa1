use super::*;

fn gsm(n: usize) -> String {
    "a".repeat(n)
}

#[test]
fn encoding_follows_the_gsm_alphabet() {
    assert_eq!(
        encoding("Hello @ £5, ¿Qué? Ελλάδα ΔΦ"),
        Encoding::Ucs2,
        "lowercase Greek is not GSM"
    );
    assert_eq!(encoding("Hello @ £5 ¿Qué? ΔΦΓ ÄÖÑÜ äöñüà"), Encoding::Gsm7);
    assert_eq!(encoding("price: 5€ [x] {y} ~z | a\\b ^"), Encoding::Gsm7);
    assert_eq!(encoding("We’re on it"), Encoding::Ucs2, "curly apostrophe");
    assert_eq!(encoding("ç"), Encoding::Ucs2, "only capital Ç is GSM");
    assert_eq!(encoding("fire 🔥"), Encoding::Ucs2);
    assert_eq!(encoding(""), Encoding::Gsm7);
}

#[test]
fn extension_characters_cost_two_septets() {
    for c in ['^', '{', '}', '\\', '[', '~', ']', '|', '€', '\u{0C}'] {
        assert_eq!(gsm7_septets(c), Some(2), "{c:?}");
    }
    assert_eq!(gsm7_septets('a'), Some(1));
    assert_eq!(gsm7_septets('\u{1B}'), None, "the escape code is not text");
    assert_eq!(measure("€€").units, 4);
}

#[test]
fn gsm7_boundaries_at_160_and_161() {
    assert_eq!(segments(""), 0);
    assert_eq!(segments(&gsm(1)), 1);
    assert_eq!(segments(&gsm(160)), 1);
    assert_eq!(segments(&gsm(161)), 2);
    assert_eq!(segments(&gsm(306)), 2);
    assert_eq!(segments(&gsm(307)), 3);
    // 158 + one extension character = 160 septets: still one message; one more is two.
    assert_eq!(segments(&format!("{}€", gsm(158))), 1);
    assert_eq!(segments(&format!("{}€", gsm(159))), 2);
}

#[test]
fn an_extension_pair_is_not_split_across_parts() {
    // 152 septets then '€': the pair would straddle the 153 boundary, so it moves to part two.
    let text = format!("{}€{}", gsm(152), gsm(152));
    assert_eq!(measure(&text).units, 306);
    assert_eq!(
        segments(&text),
        3,
        "306 septets would fit 2 parts if the pair could split"
    );
    // 151 then '€' ends exactly at 153.
    let text = format!("{}€{}", gsm(151), gsm(153));
    assert_eq!(segments(&text), 2);
}

#[test]
fn ucs2_boundaries_at_70_and_71() {
    let u = |n: usize| "ж".repeat(n);
    assert_eq!(
        measure(&u(70)),
        Measure {
            encoding: Encoding::Ucs2,
            units: 70,
            segments: 1
        }
    );
    assert_eq!(segments(&u(71)), 2);
    assert_eq!(segments(&u(134)), 2);
    assert_eq!(segments(&u(135)), 3);
}

#[test]
fn emoji_count_two_units_and_are_not_split() {
    assert_eq!(measure("🔥").units, 2);
    assert_eq!(segments(&format!("{}🔥", "ж".repeat(68))), 1, "68 + 2 = 70");
    assert_eq!(segments(&format!("{}🔥", "ж".repeat(69))), 2);
    // 66 units then an emoji: it would straddle 67, so part two starts with it.
    let text = format!("{}🔥{}", "ж".repeat(66), "ж".repeat(66));
    assert_eq!(measure(&text).units, 134);
    assert_eq!(segments(&text), 3);
}

#[test]
fn fit_leaves_a_fitting_text_alone() {
    let f = fit(&gsm(160), 1);
    assert_eq!(
        f,
        Fitted {
            text: gsm(160),
            encoding: Encoding::Gsm7,
            segments: 1,
            truncated: false
        }
    );
}

#[test]
fn fit_cuts_at_a_word_with_a_gsm_ellipsis() {
    let words = "Payments are failing for some customers in Europe ".repeat(5);
    let f = fit(&words, 1);
    assert!(f.truncated);
    assert_eq!(f.encoding, Encoding::Gsm7);
    assert_eq!(f.segments, 1);
    assert!(f.text.ends_with("..."), "{}", f.text);
    assert!(f.text.len() <= 160);
    let body = f.text.trim_end_matches("...");
    assert!(words.starts_with(body));
    assert!(
        words[body.len()..].starts_with(' '),
        "cut at a word boundary: {:?}",
        f.text
    );
    assert!(f.text.len() > 140, "uses the room it has: {}", f.text.len());
}

#[test]
fn fit_uses_the_unicode_ellipsis_in_ucs2() {
    let text = "Сервис платежей недоступен для некоторых клиентов в Европе. ".repeat(3);
    let f = fit(&text, 1);
    assert!(f.truncated);
    assert_eq!(f.encoding, Encoding::Ucs2);
    assert!(f.text.ends_with('…'), "{}", f.text);
    assert!(measure(&f.text).units <= 70);
    assert_eq!(f.segments, 1);
}

#[test]
fn fit_respects_multi_part_budgets() {
    let words = "word ".repeat(200);
    for max in 1..=4 {
        let f = fit(&words, max);
        assert_eq!(f.segments, max, "{max}");
        assert_eq!(segments(&f.text), f.segments);
        assert!(f.text.ends_with("word..."), "{}", f.text);
    }
}

#[test]
fn fit_never_splits_an_emoji_or_an_extension_pair() {
    let f = fit(&format!("{}🔥🔥🔥", "ж".repeat(66)), 1);
    assert!(f.truncated);
    assert!(measure(&f.text).units <= 70);
    assert!(!f.text.contains('\u{FFFD}'));
    let f = fit(&format!("{}€€€€", gsm(150)), 1);
    assert!(measure(&f.text).units <= 160, "{}", f.text);
}

#[test]
fn fit_cuts_inside_a_word_longer_than_the_budget() {
    let f = fit(&gsm(400), 1);
    assert_eq!(f.text, format!("{}...", gsm(157)));
    assert_eq!(f.segments, 1);
}

#[test]
fn fit_drops_dangling_punctuation_before_the_ellipsis() {
    let text = format!("{}, {}", gsm(150), "b".repeat(20));
    let f = fit(&text, 1);
    assert_eq!(f.text, format!("{}...", gsm(150)));
}

#[test]
fn normalize_turns_typography_into_gsm() {
    let n = normalize("We’re “on it” – fixing… now\u{00A0}ok");
    assert_eq!(n, "We're \"on it\" - fixing... now ok");
    assert_eq!(encoding(&n), Encoding::Gsm7);
}
