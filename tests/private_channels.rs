//! Personal data (`{first_name}`, `{balance}`) never goes over a channel that
//! is not private enough: `check-config` refuses such a configuration with
//! file, line and column, and the worker refuses to send it (falling over to
//! the customer's next channel) should one slip past.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nearcast::app::broadcast::{BroadcastOptions, ProgressStyle, Sink, broadcast};
use nearcast::channel::SendResult;
use nearcast::channel::{Adapter, Deliver, Outgoing, SendFuture};
use nearcast::config;
use nearcast::core::types::Timestamp;
use nearcast::store::OutboxState;
use support::TestClock;

const DAEMON: &str = r#"
[database]
path = "nearcast.db"

[channels.whatsapp]
adapter = "console"

[channels.sms]
adapter = "console"

# A shared inbox at the retailer: colleagues read it.
[channels.crm]
adapter = "console"
private = false
"#;

const CAMPAIGNS: &str = r#"
[[campaign]]
id = "welcome"
trigger = "arrive"
message = "welcome"
cooldown = "12h"
purpose = "welcome"

[[campaign]]
id = "flash-sale"
trigger = "broadcast"
message = "flash"
cooldown = "7d"
purpose = "offers"
not_private = ["whatsapp"]

[[message]]
id = "welcome"
ttl = "5m"
plain = "Hello, welcome to {store}!"

[message.rich]
template = "welcome"
language = "en"
params = ["{first_name}"]
preview = "Welcome {first_name}!"

[[message]]
id = "flash"
ttl = "1h"
plain = "Flash sale at {store} until 14:00!"

[message.rich]
template = "flash"
language = "en"
preview = "Flash sale until 14:00!"
"#;

/// The flash sale's rich variant by name.
fn flash_by_name(campaigns: &str) -> String {
    campaigns.replace(
        "preview = \"Flash sale until 14:00!\"",
        "params = [\"{first_name}\"]\npreview = \"{first_name}, flash sale until 14:00!\"",
    )
}

fn write(dir: &std::path::Path, daemon: &str, campaigns: &str) {
    std::fs::write(dir.join(config::DAEMON_FILE), daemon).unwrap();
    std::fs::write(dir.join(config::ZONES_FILE), support::ZONES).unwrap();
    std::fs::write(dir.join(config::CAMPAIGNS_FILE), campaigns).unwrap();
}

/// 1-based line and column of the `n`th (0-based) occurrence of `needle`.
fn position(text: &str, needle: &str, n: usize) -> (usize, usize) {
    let at = text.match_indices(needle).nth(n).unwrap().0;
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[test]
fn check_config_refuses_personal_data_over_a_channel_not_private_enough() {
    let tmp = tempfile::tempdir().unwrap();
    // The plain variants carry no personal data: the shared inbox may have them.
    write(tmp.path(), DAEMON, CAMPAIGNS);
    let ok = config::load(tmp.path());
    assert!(ok.is_ok(), "{}", ok.unwrap_err());

    // A welcome by name to the shared inbox (plain), and a flash sale by name
    // over WhatsApp, which the campaign says is not private enough for it.
    let campaigns = flash_by_name(&CAMPAIGNS.replace(
        "plain = \"Hello, welcome to {store}!\"",
        "plain = \"Hello {first_name}, welcome to {store}! Balance {balance}.\"",
    ));
    write(tmp.path(), DAEMON, &campaigns);
    let errors = config::load(tmp.path()).unwrap_err().to_string();
    let file = tmp.path().join("campaigns.toml").display().to_string();
    let (l1, c1) = position(&campaigns, "\"welcome\"\ncooldown", 0);
    let (l2, c2) = position(&campaigns, "\"flash\"\ncooldown", 0);
    assert!(
        errors.contains(&format!(
            "{file}:{l1}:{c1}: campaign `welcome` would send {{first_name}} and {{balance}} (message `welcome`, plain variant) over channel `crm`, which is not private enough (nearcast.toml [channels.crm] has private = false)"
        )),
        "{errors}"
    );
    assert!(
        errors.contains(&format!(
            "{file}:{l2}:{c2}: campaign `flash-sale` would send {{first_name}} (message `flash`, rich variant) over channel `whatsapp`, which is not private enough (the campaign lists it in not_private)"
        )),
        "{errors}"
    );
    assert!(
        errors.contains("hint: take {first_name} out of that variant of message `flash`"),
        "{errors}"
    );
    assert_eq!(errors.matches("not private enough").count(), 2, "{errors}");

    // A misspelt channel in not_private is refused too.
    let campaigns = CAMPAIGNS.replace(
        "not_private = [\"whatsapp\"]",
        "not_private = [\"whatsap\"]",
    );
    write(tmp.path(), DAEMON, &campaigns);
    let errors = config::load(tmp.path()).unwrap_err().to_string();
    assert!(
        errors.contains("unknown channel `whatsap` in not_private"),
        "{errors}"
    );
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String, String)>>);

impl Deliver for Recorder {
    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        self.0.lock().unwrap().push((
            msg.item.customer.clone(),
            msg.item.channel.to_string(),
            msg.rendered.text.clone(),
        ));
        Box::pin(std::future::ready(SendResult::Sent { provider_id: None }))
    }
}

#[tokio::test]
async fn the_worker_refuses_personal_data_on_a_channel_not_private_enough_and_falls_over() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = DAEMON.replace("private = false\n", "");
    let campaigns = flash_by_name(&CAMPAIGNS.replace("not_private = [\"whatsapp\"]\n", ""));
    write(tmp.path(), &daemon, &campaigns);
    let mut config = config::load(tmp.path()).unwrap();
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    store
        .import_customers(
            support::CUSTOMERS.as_bytes(),
            &hasher,
            Timestamp::from_secs(1_767_261_600),
        )
        .unwrap();
    drop(store);
    // A configuration that slipped past check-config (say, an engine built
    // by other means): WhatsApp marked not private after the decision.
    let mut engine = (*config.engine).clone();
    engine
        .channels
        .iter_mut()
        .find(|c| c.name.as_str() == "whatsapp")
        .unwrap()
        .private = false;
    config.engine = Arc::new(engine);

    let recorder = Arc::new(Recorder::default());
    let adapters: HashMap<String, Adapter> = ["whatsapp", "sms", "crm"]
        .into_iter()
        .map(|n| (n.to_owned(), recorder.clone() as Adapter))
        .collect();
    let opts = BroadcastOptions {
        campaign: "flash-sale".into(),
        segment: Some("gold".into()),
        dry_run: false,
        db: None,
        progress: ProgressStyle::Off,
    };
    let sink: Sink = Arc::new(Mutex::new(std::io::sink()));
    let s = broadcast(
        &config,
        &opts,
        &TestClock::fixed(support::at(11, 0, 0)),
        adapters,
        sink,
    )
    .await
    .unwrap();
    // Anna (gold, whatsapp|sms) was decided for WhatsApp's rich variant with
    // her name; the worker refused it there and sent the plain one by SMS.
    assert_eq!(s.queued_total(), 1);
    assert_eq!((s.sent, s.fell_over, s.failed), (1, 1, 0));
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [(
            "anna".to_owned(),
            "sms".to_owned(),
            "Flash sale at Teststore until 14:00!".to_owned()
        )]
    );
    let store = nearcast::store::Store::open(&tmp.path().join("nearcast.db")).unwrap();
    let rows = store.outbox_rows(Some(OutboxState::Sent), 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].channel.as_str(), rows[0].variant.name()),
        ("sms", "plain")
    );
}
