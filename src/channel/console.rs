//! The console channel: prints each message as the customer would see it.
//! For `nearcast demo` and dry runs; prints the customer's id and first
//! name, never their phone number.

use std::io::Write;
use std::sync::{Arc, Mutex};

use jiff::tz::TimeZone;

use super::{Outgoing, SendResult};
use crate::core::message::Variant;

/// Where console output goes.
pub type Sink = Arc<Mutex<dyn Write + Send>>;

/// The console adapter.
pub struct Console {
    out: Sink,
    tz: TimeZone,
}

impl Console {
    /// Prints to `out`, with times in `tz`.
    #[must_use]
    pub fn new(out: Sink, tz: TimeZone) -> Console {
        Console { out, tz }
    }

    /// Prints the message; "sent" unless the output is gone.
    pub fn print(&self, msg: &Outgoing<'_>) -> SendResult {
        let line = format_message(msg, &self.tz);
        let ok = self.out.lock().map(|mut o| {
            o.write_all(line.as_bytes())
                .and_then(|()| o.flush())
                .is_ok()
        });
        match ok {
            Ok(true) => SendResult::Sent {
                provider_id: Some(format!("console-{}", msg.item.id)),
            },
            _ => SendResult::Retry {
                after: std::time::Duration::from_secs(1),
                error: "console not writable".into(),
            },
        }
    }
}

impl super::Deliver for Console {
    /// A line printed twice on a terminal reaches no customer.
    fn dedupes(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> super::SendFuture<'a> {
        Box::pin(std::future::ready(self.print(msg)))
    }
}

/// `10:03:12  ✉ whatsapp/rich → Anna (c-1001) [welcome] Hallo Anna …`
#[must_use]
pub fn format_message(msg: &Outgoing<'_>, tz: &TimeZone) -> String {
    let i = msg.item;
    let r = msg.rendered;
    let mut line = format!(
        "{}  ✉ {}/{} → {} ({}) [{}] {}",
        clock(msg.at, tz),
        i.channel,
        r.variant,
        i.first_name,
        i.customer,
        i.campaign,
        r.text.replace('\n', " ")
    );
    match (&r.template, &r.image) {
        (Some(t), _) if r.variant == Variant::Rich => {
            line.push_str(&format!("  (template {}/{}", t.name, t.language));
            if let Some(img) = &r.image {
                line.push_str(&format!(", image {img}"));
            }
            if !t.buttons.is_empty() {
                line.push_str(&format!(", buttons: {}", t.buttons.join(" | ")));
            }
            line.push(')');
        }
        (_, Some(img)) => line.push_str(&format!("  (image {img})")),
        _ => {}
    }
    line.push('\n');
    line
}

/// `HH:MM:SS` in the store's time zone.
#[must_use]
pub fn clock(at: crate::core::types::Timestamp, tz: &TimeZone) -> String {
    jiff::Timestamp::from_millisecond(at.0).map_or_else(
        |_| "--:--:--".into(),
        |t| t.to_zoned(tz.clone()).strftime("%H:%M:%S").to_string(),
    )
}
