//! Messages and their variants: `rich` (chat apps: template, media,
//! buttons), `medium` (MMS: image and text) and `plain` (SMS), rendering of
//! `{first_name}`-style placeholders, and SMS segment counting.
//!
//! Pure: templates are rendered from values passed in; nothing here knows
//! which provider will carry the result.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use tinytemplate::TinyTemplate;

use super::types::MessageId;

/// How rich a message a channel can carry, poorest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// SMS text.
    Plain,
    /// MMS: image and text.
    Medium,
    /// Chat app: approved template with media and buttons.
    Rich,
}

impl Variant {
    /// `plain`, `medium` or `rich`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Medium => "medium",
            Variant::Rich => "rich",
        }
    }

    /// Parses a variant name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Variant> {
        match s {
            "plain" => Some(Variant::Plain),
            "medium" => Some(Variant::Medium),
            "rich" => Some(Variant::Rich),
            _ => None,
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The MMS variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Medium {
    /// Text (template).
    pub text: String,
    /// Image URL (https).
    pub image: String,
}

/// The chat-app variant: a pre-approved template and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rich {
    /// Template name as approved by the provider.
    pub template: String,
    /// Template language code (`de`, `en_US`).
    pub language: String,
    /// Body parameters (each a template).
    pub params: Vec<String>,
    /// Header image URL, if the template has one.
    pub image: Option<String>,
    /// Quick-reply button labels, if the template has them.
    pub buttons: Vec<String>,
    /// The text as the customer will see it (template), for previews and
    /// the console channel.
    pub preview: String,
}

/// A message with its variants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Id from `campaigns.toml`.
    pub id: MessageId,
    /// Not sent after this long from the decision; expired instead.
    pub ttl: Duration,
    /// SMS text (template); every message has one.
    pub plain: String,
    /// Allow the plain text to take more than one SMS segment.
    pub max_segments: u32,
    /// MMS variant.
    pub medium: Option<Medium>,
    /// Chat-app variant.
    pub rich: Option<Rich>,
}

impl Message {
    /// The richest variant this message has that `channel` can carry.
    #[must_use]
    pub fn best_for(&self, channel: Variant) -> Variant {
        match channel {
            Variant::Rich if self.rich.is_some() => Variant::Rich,
            Variant::Rich | Variant::Medium if self.medium.is_some() => Variant::Medium,
            _ => Variant::Plain,
        }
    }

    /// The personal placeholders (see [`PERSONAL`]) that the variant a
    /// channel carrying `variant` gets actually shows, in [`PERSONAL`] order.
    /// Found by rendering, not by searching the text, so every template
    /// syntax that shows a value counts.
    #[must_use]
    pub fn personal_data(&self, variant: Variant) -> Vec<&'static str> {
        let templates: Vec<&str> = match self.best_for(variant) {
            Variant::Rich => self.rich.as_ref().map_or_else(Vec::new, |r| {
                std::iter::once(r.preview.as_str())
                    .chain(r.params.iter().map(String::as_str))
                    .collect()
            }),
            Variant::Medium => self
                .medium
                .as_ref()
                .map_or_else(Vec::new, |m| vec![m.text.as_str()]),
            Variant::Plain => vec![self.plain.as_str()],
        };
        PERSONAL
            .into_iter()
            .filter(|field| templates.iter().any(|t| shows(t, field)))
            .collect()
    }

    /// Renders `variant` (falling back to poorer ones it doesn't have).
    ///
    /// # Errors
    /// [`RenderError`] when a template refers to an unknown placeholder or
    /// is malformed (config validation renders every template once, so this
    /// does not happen at send time).
    pub fn render(&self, variant: Variant, vars: &Vars) -> Result<Rendered, RenderError> {
        match self.best_for(variant) {
            Variant::Rich => {
                let rich = self
                    .rich
                    .as_ref()
                    .ok_or(RenderError("no rich variant".into()))?;
                Ok(Rendered {
                    variant: Variant::Rich,
                    text: render(&rich.preview, vars)?,
                    image: rich.image.clone(),
                    template: Some(TemplateCall {
                        name: rich.template.clone(),
                        language: rich.language.clone(),
                        params: rich
                            .params
                            .iter()
                            .map(|p| render(p, vars))
                            .collect::<Result<_, _>>()?,
                        buttons: rich.buttons.clone(),
                    }),
                })
            }
            Variant::Medium => {
                let medium = self
                    .medium
                    .as_ref()
                    .ok_or(RenderError("no medium variant".into()))?;
                Ok(Rendered {
                    variant: Variant::Medium,
                    text: render(&medium.text, vars)?,
                    image: Some(medium.image.clone()),
                    template: None,
                })
            }
            Variant::Plain => Ok(Rendered {
                variant: Variant::Plain,
                text: render(&self.plain, vars)?,
                image: None,
                template: None,
            }),
        }
    }
}

/// Placeholders that carry personal data: they never go over a channel
/// that is not private enough. `{points}` (what the campaign awards, the
/// same for everyone) and `{store}` are not personal.
pub const PERSONAL: [&str; 2] = ["first_name", "balance"];

/// Whether `template` shows the value of `field`: it renders differently
/// when only that value changes.
fn shows(template: &str, field: &str) -> bool {
    let a = Vars::sample();
    let mut b = a.clone();
    match field {
        "first_name" => b.first_name = "Zoe".into(),
        "balance" => b.balance = 987,
        _ => return false,
    }
    render(template, &a).ok() != render(template, &b).ok()
}

/// The values placeholders can use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Vars {
    /// `{first_name}`.
    pub first_name: String,
    /// `{points}` awarded by this decision.
    pub points: u32,
    /// `{balance}` after this decision.
    pub balance: i64,
    /// `{store}` name.
    pub store: String,
}

impl Vars {
    /// Values that exercise every placeholder, for validating templates.
    #[must_use]
    pub fn sample() -> Vars {
        Vars {
            first_name: "Maximilian".into(),
            points: 100,
            balance: 12_345,
            store: "Store".into(),
        }
    }
}

/// A chat-app template invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateCall {
    /// Template name.
    pub name: String,
    /// Language code.
    pub language: String,
    /// Rendered body parameters.
    pub params: Vec<String>,
    /// Quick-reply button labels.
    pub buttons: Vec<String>,
}

/// A message ready for a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Which variant this is.
    pub variant: Variant,
    /// The text the customer reads.
    pub text: String,
    /// Image URL, for MMS and rich messages.
    pub image: Option<String>,
    /// Template call, for rich messages.
    pub template: Option<TemplateCall>,
}

/// A template that could not be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

/// Renders one template (`Hi {first_name}!`, `{{ if points }}…{{ endif }}`).
///
/// # Errors
/// [`RenderError`] for unknown placeholders or malformed syntax.
pub fn render(template: &str, vars: &Vars) -> Result<String, RenderError> {
    let mut tt = TinyTemplate::new();
    tt.set_default_formatter(&tinytemplate::format_unescaped);
    tt.add_template("t", template)
        .map_err(|e| RenderError(e.to_string()))?;
    tt.render("t", vars).map_err(|e| RenderError(e.to_string()))
}

/// How a text is encoded as SMS and how many segments it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmsSize {
    /// GSM 03.38 default alphabet (7-bit); otherwise UCS-2.
    pub gsm7: bool,
    /// Septets (GSM-7, extension characters count two) or UTF-16 units (UCS-2).
    pub units: usize,
    /// Segments on the air.
    pub segments: usize,
}

/// Septets a character takes in the GSM 03.38 default alphabet and its
/// extension table, or `None` if it needs UCS-2.
#[must_use]
pub fn gsm7_septets(c: char) -> Option<usize> {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                         ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENSION: &str = "^{}\\[~]|€\u{000C}";
    if BASIC.contains(c) {
        Some(1)
    } else if EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Counts SMS segments: one segment holds 160 GSM-7 septets or 70 UCS-2
/// units; concatenated segments hold 153 septets (an escape pair is never
/// split across two) or 67 units.
#[must_use]
pub fn sms_size(text: &str) -> SmsSize {
    let septets: Option<Vec<usize>> = text.chars().map(gsm7_septets).collect();
    match septets {
        Some(per_char) => {
            let units: usize = per_char.iter().sum();
            let segments = if units <= 160 {
                usize::from(units > 0)
            } else {
                pack(&per_char, 153)
            };
            SmsSize {
                gsm7: true,
                units,
                segments,
            }
        }
        None => {
            let per_char: Vec<usize> = text.chars().map(char::len_utf16).collect();
            let units: usize = per_char.iter().sum();
            // A surrogate pair is not split either.
            let segments = if units <= 70 {
                usize::from(units > 0)
            } else {
                pack(&per_char, 67)
            };
            SmsSize {
                gsm7: false,
                units,
                segments,
            }
        }
    }
}

fn pack(sizes: &[usize], per_segment: usize) -> usize {
    let (mut segments, mut used) = (1, 0);
    for &s in sizes {
        if used + s > per_segment {
            segments += 1;
            used = 0;
        }
        used += s;
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            id: "welcome".into(),
            ttl: Duration::from_secs(600),
            plain: "Hi {first_name}, welcome to {store}!{{ if points }} +{points} points, balance {balance}.{{ endif }}".into(),
            max_segments: 1,
            medium: Some(Medium { text: "Hi {first_name}!".into(), image: "https://example.com/w.jpg".into() }),
            rich: None,
        }
    }

    #[test]
    fn personal_data_is_found_per_variant_by_rendering() {
        let mut m = message();
        assert_eq!(m.personal_data(Variant::Plain), ["first_name", "balance"]);
        assert_eq!(m.personal_data(Variant::Medium), ["first_name"]);
        m.medium = Some(Medium {
            text: "Fresh pretzels at {store}, +{points} points".into(),
            image: "https://example.com/w.jpg".into(),
        });
        assert!(m.personal_data(Variant::Medium).is_empty());
        // A rich channel gets the medium variant when there is no rich one.
        assert!(m.personal_data(Variant::Rich).is_empty());
        m.rich = Some(Rich {
            template: "t".into(),
            language: "en".into(),
            params: vec!["{ balance }".into()],
            image: None,
            buttons: Vec::new(),
            preview: "Your balance".into(),
        });
        assert_eq!(m.personal_data(Variant::Rich), ["balance"]);
    }

    #[test]
    fn renders_placeholders_and_conditionals() {
        let mut vars = Vars {
            first_name: "Anna".into(),
            points: 10,
            balance: 110,
            store: "Hauptstraße".into(),
        };
        let r = message().render(Variant::Plain, &vars).unwrap();
        assert_eq!(
            r.text,
            "Hi Anna, welcome to Hauptstraße! +10 points, balance 110."
        );
        vars.points = 0;
        assert_eq!(
            message().render(Variant::Plain, &vars).unwrap().text,
            "Hi Anna, welcome to Hauptstraße!"
        );
        // Names are not HTML-escaped: this is not a web page.
        vars.first_name = "Zoë & <Max>".into();
        assert!(
            message()
                .render(Variant::Plain, &vars)
                .unwrap()
                .text
                .starts_with("Hi Zoë & <Max>,")
        );
    }

    #[test]
    fn degrades_to_the_richest_variant_present() {
        let m = message();
        assert_eq!(m.best_for(Variant::Rich), Variant::Medium);
        assert_eq!(m.best_for(Variant::Medium), Variant::Medium);
        assert_eq!(m.best_for(Variant::Plain), Variant::Plain);
        let r = m.render(Variant::Rich, &Vars::sample()).unwrap();
        assert_eq!(
            (r.variant, r.image.as_deref()),
            (Variant::Medium, Some("https://example.com/w.jpg"))
        );
    }

    #[test]
    fn unknown_placeholders_are_errors() {
        assert!(render("Hi {frist_name}", &Vars::sample()).is_err());
        assert!(render("{{ if points }}unterminated", &Vars::sample()).is_err());
    }

    #[test]
    fn sms_segments_gsm7_and_ucs2() {
        assert_eq!(
            sms_size(""),
            SmsSize {
                gsm7: true,
                units: 0,
                segments: 0
            }
        );
        assert_eq!(sms_size(&"a".repeat(160)).segments, 1);
        assert_eq!(sms_size(&"a".repeat(161)).segments, 2);
        assert_eq!(sms_size(&"a".repeat(306)).segments, 2);
        assert_eq!(sms_size(&"a".repeat(307)).segments, 3);
        // Extension characters take two septets: 80 euro signs fill one segment.
        assert_eq!(
            sms_size(&"€".repeat(80)),
            SmsSize {
                gsm7: true,
                units: 160,
                segments: 1
            }
        );
        assert_eq!(sms_size(&"€".repeat(81)).segments, 2);
        // 152 septets then an escape pair: the pair moves to the next segment.
        assert_eq!(
            sms_size(&format!("{}€{}", "a".repeat(152), "a".repeat(10))).segments,
            2
        );
        assert_eq!(
            sms_size(&format!("{}€{}", "a".repeat(152), "a".repeat(152))).segments,
            3
        );
        // German umlauts ä ö ü are GSM-7; ß too; but 'ç' lowercase is not.
        assert!(sms_size("Grüße aus Köln").gsm7);
        assert_eq!(
            sms_size("ça va"),
            SmsSize {
                gsm7: false,
                units: 5,
                segments: 1
            }
        );
        assert_eq!(sms_size(&"ç".repeat(70)).segments, 1);
        assert_eq!(sms_size(&"ç".repeat(71)).segments, 2);
        assert_eq!(
            sms_size(&"😀".repeat(35)),
            SmsSize {
                gsm7: false,
                units: 70,
                segments: 1
            }
        );
    }
}
