//! What an inbound reply means, as pure functions: the sender's phone in
//! the store's E.164 form, and whether the text is an opt-out (STOP …) or
//! a double opt-in confirmation (JA …).
//!
//! Opt-out words (any case, surrounding whitespace and punctuation
//! ignored, inner spaces too, so "Stop all" and "opt-out!" count): the
//! carriers' and providers' English set STOP, STOPALL, UNSUBSCRIBE, CANCEL,
//! END, QUIT, OPTOUT, and the German STOPP, ABMELDEN, ABBESTELLEN,
//! AUSTRAGEN, ENDE, KÜNDIGEN (also written KUENDIGEN). Confirmations: JA,
//! J, YES, Y, START. Anything else is an ordinary reply.

/// Words that opt the customer out of everything.
pub const OPT_OUT_WORDS: [&str; 14] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "OPTOUT",
    "STOPP",
    "ABMELDEN",
    "ABBESTELLEN",
    "AUSTRAGEN",
    "ENDE",
    "KÜNDIGEN",
    "KUENDIGEN",
];

/// Words that confirm a pending consent (double opt-in).
pub const CONFIRM_WORDS: [&str; 5] = ["JA", "J", "YES", "Y", "START"];

/// What a reply asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Opt out on every channel.
    OptOut,
    /// Confirm pending consents on the channel it came by.
    Confirm,
    /// An ordinary message.
    Other,
}

/// Classifies a reply's text (or button title).
#[must_use]
pub fn intent(text: &str) -> Intent {
    let word: String = text
        .trim_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation())
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-' && *c != '_')
        .flat_map(char::to_uppercase)
        .collect();
    if OPT_OUT_WORDS.contains(&word.as_str()) {
        Intent::OptOut
    } else if CONFIRM_WORDS.contains(&word.as_str()) {
        Intent::Confirm
    } else {
        Intent::Other
    }
}

/// A sender's number as the store keeps it: `+` and digits. Accepts
/// `whatsapp:+49…`, `+49 151 …`, and WhatsApp's and Vonage's bare digits.
#[must_use]
pub fn normalise_phone(from: &str) -> Option<String> {
    let s = from.trim();
    let s = s
        .strip_prefix("whatsapp:")
        .or_else(|| s.strip_prefix("viber:"))
        .or_else(|| s.strip_prefix("messenger:"))
        .unwrap_or(s);
    let digits: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '+' | '.'))
        .collect();
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then(|| format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_out_and_confirm_words_in_any_case_and_dress() {
        for t in [
            "STOP",
            "stop",
            " Stop! ",
            "stopp",
            "Abmelden",
            "kündigen",
            "KÜNDIGEN",
            "Stop all",
            "opt-out",
            "ENDE.",
            "unsubscribe\n",
        ] {
            assert_eq!(intent(t), Intent::OptOut, "{t:?}");
        }
        for t in ["JA", "ja", "Ja!", "yes", "Y", "start"] {
            assert_eq!(intent(t), Intent::Confirm, "{t:?}");
        }
        for t in [
            "stop sending me coffee offers please",
            "Jaja",
            "",
            "🙂",
            "Danke",
        ] {
            assert_eq!(intent(t), Intent::Other, "{t:?}");
        }
    }

    #[test]
    fn phones_are_normalised_to_e164() {
        assert_eq!(
            normalise_phone("whatsapp:+4915112345678").as_deref(),
            Some("+4915112345678")
        );
        assert_eq!(
            normalise_phone("4915112345678").as_deref(),
            Some("+4915112345678")
        );
        assert_eq!(
            normalise_phone("+49 151 1234 5678").as_deref(),
            Some("+4915112345678")
        );
        assert_eq!(normalise_phone("015112345678"), None);
        assert_eq!(normalise_phone("Vodafone"), None);
    }
}
