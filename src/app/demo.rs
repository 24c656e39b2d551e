//! `nearcast demo`: an hour in the example store, simulated, with a
//! temporary database and the console channel, narrated as it happens and
//! summed up at the end. The same seed gives the same output.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Error, database_path, open_database, output, worker_with};
use crate::channel::SendResult;
use crate::channel::{Adapter, Deliver, Outgoing, Providers, SendFuture, Worker, console};
use crate::channel::{AdapterSettings, TwilioSettings, WhatsAppSettings};
use crate::config;
use crate::core::campaign::{Outcome, Reason};
use crate::core::identity::Identity;
use crate::core::types::Timestamp;
use crate::credentials::Env;
use crate::credentials::SecretRef;
use crate::source::SimSettings;
use crate::source::sim::{SimConfig, SimCustomer, Simulator};
use crate::store::Store;

/// The example configuration, built into the binary so `nearcast demo`
/// works from anywhere.
pub const EMBEDDED: [(&str, &str); 4] = [
    (
        config::DAEMON_FILE,
        include_str!("../../config/nearcast.toml"),
    ),
    (config::ZONES_FILE, include_str!("../../config/zones.toml")),
    (
        config::CAMPAIGNS_FILE,
        include_str!("../../config/campaigns.toml"),
    ),
    ("customers.csv", include_str!("../../config/customers.csv")),
];

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// A config directory instead of the embedded example.
    pub config: Option<PathBuf>,
    /// Shoppers in the hour (default: the sim source's `shoppers_per_hour`).
    pub shoppers: Option<u32>,
    /// Simulated seconds per real second; 0 runs as fast as possible.
    pub speed: f64,
    /// Random seed (default: the sim source's).
    pub seed: Option<u64>,
    /// Simulated start (default: Friday 2026-11-20, 10:00 store time).
    pub start: Option<Timestamp>,
    /// Simulated minutes of shoppers arriving.
    pub minutes: u32,
    /// Keep the database here instead of a temporary directory.
    pub db: Option<PathBuf>,
    /// Deliver through the real provider adapters to this base URL (a local
    /// stand-in such as `nearcast stand-in`) instead of the console.
    pub provider: Option<String>,
}

impl Default for DemoOptions {
    fn default() -> DemoOptions {
        DemoOptions {
            config: None,
            shoppers: None,
            speed: 300.0,
            seed: None,
            start: None,
            minutes: 60,
            db: None,
            provider: None,
        }
    }
}

/// What a message costs, roughly, by the example store's channel names, in
/// euro cents: an aggregator's SMS and MMS to German numbers and Meta's
/// marketing-template rate for Germany. Only the demo's summary uses them;
/// a store's real prices differ.
const INDICATIVE_CENTS: [(&str, f64); 3] = [("sms", 8.0), ("mms", 20.0), ("whatsapp", 12.0)];

/// What the demo did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemoSummary {
    /// Shoppers simulated.
    pub shoppers: u32,
    /// Enrolled customers among the shoppers.
    pub enrolled: u32,
    /// Distinct customers recognised (arrived).
    pub recognised: usize,
    /// BLE sightings and Wi-Fi reports processed.
    pub observations: u64,
    /// Decisions that acted (a message, points or both), by campaign.
    pub acted: Vec<(String, u64)>,
    /// Decisions held back, by campaign and reason.
    pub held_back: Vec<(String, Reason, u64)>,
    /// What became of every message queued.
    pub messages: Fates,
    /// Points awarded.
    pub points: u64,
    /// Visits on file at the end.
    pub visits: i64,
    /// Of those, visits seeded as history before the hour.
    pub seeded_visits: i64,
}

/// What became of the messages queued during the demo: every message is
/// in exactly one of `sent`, `failed`, `expired`, `dead` and `pending`;
/// `fell_over` counts moves to a customer's next channel on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fates {
    /// Messages queued.
    pub queued: u64,
    /// Accepted by their channel (sent, delivered or read).
    pub sent: u64,
    /// Sent, by channel: what a provider would bill.
    pub sent_by_channel: Vec<(String, u64)>,
    /// Reported delivered or read by a provider.
    pub delivered: u64,
    /// Moves to the customer's next channel (a message can move more than
    /// once).
    pub fell_over: u64,
    /// Failed for good, by error.
    pub failed: Vec<(String, u64)>,
    /// Past their time to live, never sent.
    pub expired: u64,
    /// Given up after their last attempt.
    pub dead: u64,
    /// Still queued or being sent at the end.
    pub pending: u64,
}

impl Fates {
    /// Messages failed for good.
    #[must_use]
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().map(|f| f.1).sum()
    }
}

fn write(out: &Arc<Mutex<dyn Write + Send>>, s: &str) {
    if let Ok(mut o) = out.lock() {
        let _ = o.write_all(s.as_bytes());
    }
}

/// Reads the enrolled customers' identities (in clear) from the demo's
/// customers file, for the simulator to advertise.
pub(crate) fn sim_customers(path: &Path) -> Result<Vec<(String, SimCustomer)>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let mut out = Vec::new();
    for rec in r.records().flatten() {
        let identities: Vec<Identity> = rec
            .get(6)
            .unwrap_or("")
            .split(';')
            .filter_map(|s| Identity::parse(s).ok())
            .collect();
        out.push((
            rec.get(0).unwrap_or("").to_owned(),
            SimCustomer { identities },
        ));
    }
    Ok(out)
}

/// The variable the demo's dummy credentials are read from: in process
/// only, never the environment.
const DEMO_TOKEN: &str = "NEARCAST_DEMO_TOKEN";

/// Dummy credentials for a local stand-in.
struct DemoCredentials;

impl Env for DemoCredentials {
    fn var(&self, name: &str) -> Option<String> {
        (name == DEMO_TOKEN).then(|| "demo-token-for-a-local-stand-in".to_owned())
    }
}

/// `--provider URL`: the demo's channels on the real adapters at `url`:
/// `whatsapp` on the WhatsApp Cloud API, `sms` and `mms` on Twilio, with
/// dummy credentials; any other channel stays on the console. Each send is
/// narrated with the provider's answer.
fn provider_adapters(
    config: &config::Config,
    url: &str,
    out: &Arc<Mutex<dyn Write + Send>>,
) -> Result<HashMap<String, Adapter>, Error> {
    let url = url.trim_end_matches('/');
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| {
            url.strip_prefix(p)
                .is_some_and(|r| r.is_empty() || r.starts_with(':') || r.starts_with('/'))
        });
    if !loopback && !url.starts_with("https://") {
        return Err(Error::Usage(format!(
            "--provider {url}: use a local stand-in (http://127.0.0.1:PORT, see `nearcast stand-in`) or an https:// URL"
        )));
    }
    let providers = Providers::with_env(Arc::new(DemoCredentials))?;
    let token = SecretRef::Env(DEMO_TOKEN.into());
    let timeout = Duration::from_secs(10);
    let mut adapters = super::adapters(config, out)?;
    for c in &config.daemon.channels {
        let settings = match c.name.as_str() {
            "whatsapp" => AdapterSettings::WhatsApp(WhatsAppSettings {
                base_url: url.to_owned(),
                api_version: "v23.0".into(),
                phone_number_id: "100000000000000".into(),
                token: token.clone(),
                allow_text: false,
                timeout,
            }),
            "sms" | "mms" => AdapterSettings::Twilio(TwilioSettings {
                base_url: url.to_owned(),
                account_sid: format!("AC{}", "0".repeat(32)),
                api_key: None,
                token: token.clone(),
                from: Some("+15005550006".into()),
                messaging_service_sid: None,
                whatsapp: false,
                content_sids: std::collections::BTreeMap::new(),
                allow_text: false,
                status_callback: None,
                timeout,
            }),
            _ => continue,
        };
        let narrated: Adapter = Arc::new(Narrated {
            inner: providers.adapter(&settings),
            out: out.clone(),
            tz: config.engine.rules.tz.clone(),
        });
        adapters.insert(c.name.clone(), narrated);
    }
    Ok(adapters)
}

/// Prints each message as the console would, with the provider's answer.
struct Narrated {
    inner: Adapter,
    out: Arc<Mutex<dyn Write + Send>>,
    tz: jiff::tz::TimeZone,
}

impl Deliver for Narrated {
    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            let result = self.inner.send(msg).await;
            let line = console::format_message(msg, &self.tz);
            let answer = match &result {
                SendResult::Sent { provider_id } => {
                    format!("sent {}", provider_id.as_deref().unwrap_or("-"))
                }
                SendResult::Retry { error, .. } => format!("retry later: {error}"),
                SendResult::Fallback { error } => format!("falls over: {error}"),
                SendResult::Failed { error } | SendResult::Misconfigured { error } => {
                    format!("failed: {error}")
                }
            };
            write(&self.out, &format!("{}  ⇒ {answer}\n", line.trim_end()));
            result
        })
    }
}

/// How to read the narrative, printed once before it starts.
const LEGEND: &str = "\
How to read it (times are store time):
  →  arrived in the store, or entered a zone      ←  left, or exited a zone
  ⏱  stayed in a zone that long                   ✓  a campaign acted: message queued, points
  ·  a campaign held back, and why (each kind shown once; the summary counts them all)
  ✉  a message going out, as the customer would see it; ⇒ what the channel answered
";

/// The console channels, except that a `whatsapp` channel keeps
/// WhatsApp's rule: a message without an approved template (its `rich`
/// variant) is not free text to anyone, it falls over to the customer's
/// next channel, as the real adapter would make it (see `--provider`).
fn console_with_whatsapp_rule(
    config: &config::Config,
    out: &Arc<Mutex<dyn Write + Send>>,
) -> Result<HashMap<String, Adapter>, Error> {
    let mut adapters = super::adapters(config, out)?;
    if let Some(console) = adapters.remove("whatsapp") {
        let ruled: Adapter = Arc::new(WhatsAppRule {
            console,
            out: out.clone(),
            tz: config.engine.rules.tz.clone(),
        });
        adapters.insert("whatsapp".into(), ruled);
    }
    Ok(adapters)
}

/// A console channel named `whatsapp` under WhatsApp's template rule.
struct WhatsAppRule {
    console: Adapter,
    out: Arc<Mutex<dyn Write + Send>>,
    tz: jiff::tz::TimeZone,
}

impl Deliver for WhatsAppRule {
    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            let settings = WhatsAppSettings {
                base_url: "http://127.0.0.1".into(),
                api_version: "v23.0".into(),
                phone_number_id: "100000000000000".into(),
                token: SecretRef::Env(DEMO_TOKEN.into()),
                allow_text: false,
                timeout: Duration::from_secs(10),
            };
            let token = crate::credentials::Secret::new("demo");
            match crate::channel::whatsapp::build_request(msg, &settings, &token) {
                Err(refused) => {
                    let line = console::format_message(msg, &self.tz);
                    if let SendResult::Fallback { error } | SendResult::Failed { error } = &refused
                    {
                        write(
                            &self.out,
                            &format!("{}  ⇒ falls over: {error}\n", line.trim_end()),
                        );
                    }
                    refused
                }
                Ok(_) => self.console.send(msg).await,
            }
        })
    }

    fn dedupes(&self) -> bool {
        self.console.dedupes()
    }
}

/// What became of every message in the demo's outbox.
fn fates(store: &Store, fell_over: u64) -> Result<Fates, Error> {
    use crate::store::OutboxState as S;
    let mut f = Fates {
        fell_over,
        ..Fates::default()
    };
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_channel: BTreeMap<String, u64> = BTreeMap::new();
    for r in store.outbox_rows(None, u32::MAX)? {
        f.queued += 1;
        if matches!(r.state, S::Sent | S::Delivered | S::Read) {
            *by_channel.entry(r.channel.to_string()).or_default() += 1;
        }
        match r.state {
            S::Sent => f.sent += 1,
            S::Delivered | S::Read => {
                f.sent += 1;
                f.delivered += 1;
            }
            S::Failed => *failed.entry(r.error.unwrap_or_default()).or_default() += 1,
            S::Expired => f.expired += 1,
            S::Dead => f.dead += 1,
            S::Queued | S::Sending => f.pending += 1,
        }
    }
    f.failed = failed.into_iter().collect();
    f.sent_by_channel = by_channel.into_iter().collect();
    Ok(f)
}

/// The summary a store manager reads: who came, what each campaign did,
/// what was held back and why, and what became of every message.
fn story(
    s: &DemoSummary,
    counters: &super::Counters,
    minutes: u32,
    provider: Option<&str>,
) -> String {
    use std::fmt::Write as _;
    let mut t = String::from("\n── what happened ───────────────────────────────────────\n");
    let _ = writeln!(
        t,
        "Shoppers    {} came in over {minutes} minutes; {} of them enrolled customers, {} recognised",
        s.shoppers, s.enrolled, s.recognised
    );
    let _ = writeln!(
        t,
        "            ({} radio observations; {} frames from other devices or unreadable, ignored)",
        s.observations,
        counters.decode.rejected()
    );
    let e = counters.events;
    let _ = writeln!(
        t,
        "Presence    arrived {}, entered a zone {}, stayed in one {}, exited {}, left {}",
        e[0], e[1], e[2], e[3], e[4]
    );
    let acted: Vec<String> = s.acted.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let _ = writeln!(
        t,
        "Campaigns   acted {} times: {}",
        s.acted.iter().map(|a| a.1).sum::<u64>(),
        if acted.is_empty() {
            "none".to_owned()
        } else {
            acted.join(", ")
        }
    );
    let held: u64 = s.held_back.iter().map(|h| h.2).sum();
    let _ = writeln!(t, "Held back   {held} times, each for a reason:");
    let mut by_count = s.held_back.clone();
    by_count.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    for (campaign, reason, n) in &by_count {
        let _ = writeln!(
            t,
            "            {n:>5}  {campaign}: {} [{reason}]",
            reason.describe()
        );
    }
    let m = &s.messages;
    let _ = writeln!(
        t,
        "Messages    {} queued, and what became of each:",
        m.queued
    );
    let sent_note = match provider {
        None => "printed above by the console channel; no provider involved",
        Some(_) => "accepted by the provider",
    };
    let _ = writeln!(t, "            {:>5}  sent ({sent_note})", m.sent);
    if !m.sent_by_channel.is_empty() {
        let channels: Vec<String> = m
            .sent_by_channel
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let _ = writeln!(
            t,
            "                   by channel, as a provider bills them: {}",
            channels.join(", ")
        );
        let cents: f64 = m
            .sent_by_channel
            .iter()
            .filter_map(|(c, n)| {
                let (_, price) = INDICATIVE_CENTS.iter().find(|(k, _)| k == c)?;
                #[allow(clippy::cast_precision_loss)]
                Some(price * *n as f64)
            })
            .sum();
        let _ = writeln!(
            t,
            "                   costing about €{:.2} at indicative German list prices \
             (sms €0.08, mms €0.20, whatsapp marketing template €0.12 each)",
            cents / 100.0
        );
    }
    for (error, n) in &m.failed {
        let _ = writeln!(t, "            {n:>5}  failed: {error}");
    }
    if m.failed.is_empty() {
        let _ = writeln!(t, "            {:>5}  failed", 0);
    }
    let _ = writeln!(
        t,
        "            {:>5}  expired (past their time to live; never sent late)",
        m.expired
    );
    if m.dead > 0 {
        let _ = writeln!(
            t,
            "            {:>5}  given up after their last attempt",
            m.dead
        );
    }
    if m.pending > 0 {
        let _ = writeln!(t, "            {:>5}  still waiting to be sent", m.pending);
    }
    let _ = writeln!(
        t,
        "            on the way, {} moved to the customer's next channel (falls over)",
        m.fell_over
    );
    let _ = writeln!(
        t,
        "            delivered and read: {} reported (providers report them by webhook; the demo runs none)",
        m.delivered
    );
    let _ = writeln!(t, "Points      {} awarded", s.points);
    let _ = writeln!(
        t,
        "Visits      {} on file: {} today, {} from the history before the hour",
        s.visits,
        s.visits - s.seeded_visits,
        s.seeded_visits
    );
    t
}

/// Runs the demo, narrating to `out`.
///
/// # Errors
/// Config, database or IO failures.
pub async fn demo(
    opts: DemoOptions,
    out: Arc<Mutex<dyn Write + Send>>,
) -> Result<DemoSummary, Error> {
    let tmp = tempfile::Builder::new()
        .prefix("nearcast-demo-")
        .tempdir()
        .map_err(|e| Error::io(&std::env::temp_dir(), e))?;
    let config_dir = match &opts.config {
        Some(d) => d.clone(),
        None => {
            let d = tmp.path().join("config");
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            for (name, text) in EMBEDDED {
                std::fs::write(d.join(name), text).map_err(|e| Error::io(&d.join(name), e))?;
            }
            d
        }
    };
    let config = config::load(&config_dir)?;
    let sim = config.daemon.sim().cloned().unwrap_or_else(|| SimSettings {
        shoppers_per_hour: 120,
        seed: 7,
        opted_in_share: 0.35,
        customers: config_dir.join("customers.csv"),
    });
    let SimSettings {
        shoppers_per_hour,
        seed,
        opted_in_share: share,
        customers: customers_csv,
    } = sim;
    let db = opts
        .db
        .clone()
        .unwrap_or_else(|| tmp.path().join("nearcast.db"));
    let db = database_path(&config, Some(&db));
    let (mut store, hasher) = open_database(&config, Some(&db))?;

    let tz = config.engine.rules.tz.clone();
    let start = opts.start.unwrap_or_else(|| {
        jiff::civil::date(2026, 11, 20)
            .at(10, 0, 0, 0)
            .to_zoned(tz.clone())
            .map_or(Timestamp::from_secs(1_795_165_200), |z| {
                Timestamp(z.timestamp().as_millisecond())
            })
    });
    let csv_text = std::fs::read(&customers_csv).map_err(|e| Error::io(&customers_csv, e))?;
    let report = store.import_customers(csv_text.as_slice(), &hasher, start)?;
    let customers = sim_customers(&customers_csv)?;
    // Some history, so that visit-count and win-back campaigns have
    // something to find: every third customer has been here once a week
    // for four weeks, every seventh (of the others) last came six weeks
    // ago. The narrative says so before the hour starts.
    let (mut weekly, mut lapsed, mut seeded_visits) = (0u32, 0u32, 0i64);
    for (i, (id, _)) in customers.iter().enumerate() {
        let past = |days: i64| Timestamp(start.0 - days * 86_400_000);
        if i % 3 == 0 {
            for days in [7, 14, 21, 28] {
                store.import_visit(id, past(days), Some(Timestamp(past(days).0 + 1_200_000)))?;
                seeded_visits += 1;
            }
            weekly += 1;
        } else if i % 7 == 1 {
            store.import_visit(id, past(42), Some(Timestamp(past(42).0 + 900_000)))?;
            seeded_visits += 1;
            lapsed += 1;
        }
    }
    let registry = super::load_registry(&store, &config, start)?;
    let sim_config = SimConfig {
        seed: opts.seed.unwrap_or(seed),
        shoppers: opts
            .shoppers
            .unwrap_or(shoppers_per_hour.saturating_mul(opts.minutes) / 60),
        start,
        duration: Duration::from_secs(u64::from(opts.minutes) * 60),
        opted_in_share: share,
        ..SimConfig::default()
    };
    write(
        &out,
        &format!(
            "nearcast demo: {} ({}), {} shoppers over {} minutes from {}, seed {}; {} customers enrolled\n\
             (simulated store, temporary database, {})\n\n\
             History on file before the hour: {weekly} customers came once a week for the last \
             four weeks, so today is their fifth visit;\n{lapsed} last came six weeks ago; the \
             others have no visits yet. A customer can be greeted and rewarded in the same second.\n\n\
             {LEGEND}\n",
            config.layout.store_name,
            config.store_id,
            sim_config.shoppers,
            opts.minutes,
            jiff::Timestamp::from_millisecond(start.0)
                .map(|t| t
                    .to_zoned(tz.clone())
                    .strftime("%a %Y-%m-%d %H:%M %Z")
                    .to_string())
                .unwrap_or_default(),
            sim_config.seed,
            report.added,
            opts.provider.as_deref().map_or_else(
                || "console channel".to_owned(),
                |url| format!("providers' APIs at {url}")
            ),
        ),
    );

    let sim = Simulator::new(
        sim_config.clone(),
        config.layout.clone(),
        customers.into_iter().map(|(_, c)| c).collect(),
    )?;
    let enrolled = u32::try_from(
        sim.shoppers()
            .iter()
            .filter(|s| s.customer.is_some())
            .count(),
    )
    .unwrap_or(u32::MAX);
    let mut pipeline = super::pipeline(&config, hasher, registry, store);
    let mut worker = match &opts.provider {
        None => worker_with(&config, &db, console_with_whatsapp_rule(&config, &out)?)?,
        Some(url) => Worker::new(
            Store::open(&db)?,
            config.engine.clone(),
            config.layout.store_name.clone(),
            provider_adapters(&config, url, &out)?,
            config.daemon.outbox.lease,
            config.daemon.outbox.batch,
        ),
    };

    let mut recognised = BTreeSet::new();
    let mut acted: BTreeMap<String, u64> = BTreeMap::new();
    let mut held_back: BTreeMap<(String, Reason), u64> = BTreeMap::new();
    let mut observations = 0u64;
    let wall_start = tokio::time::Instant::now();
    let mut next_tick = start;
    let end = start.saturating_add(Duration::from_secs(u64::from(opts.minutes) * 60));
    {
        let mut sink = |o: super::Output<'_>| {
            match &o {
                super::Output::Event {
                    event, customer, ..
                } => {
                    if event.kind == crate::core::presence::EventKind::Arrived {
                        recognised.insert(customer.id.clone());
                    }
                }
                super::Output::Decision {
                    committed,
                    customer,
                    ..
                } => {
                    let d = &committed.decision;
                    let campaign = d.campaign_id.to_string();
                    if let Outcome::Suppressed(r) = d.outcome {
                        // Each kind once, explained; the summary counts them all.
                        let n = held_back.entry((campaign.clone(), r)).or_default();
                        *n += 1;
                        if *n == 1 {
                            write(
                                &out,
                                &format!(
                                    "{}  · {:<18} {campaign}: held back: {} [{r}] \
                                     (shown once; the summary counts all)\n",
                                    crate::channel::console::clock(d.at, &tz),
                                    customer.id.as_str(),
                                    r.describe()
                                ),
                            );
                        }
                        return;
                    }
                    *acted.entry(campaign).or_default() += 1;
                }
            }
            write(&out, &output::human(&o, &tz));
        };
        for obs in sim {
            let at = obs.at();
            if opts.speed > 0.0 {
                let virtual_ms = u64::try_from(at.0.saturating_sub(start.0).max(0)).unwrap_or(0);
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                let real = Duration::from_micros((virtual_ms as f64 * 1000.0 / opts.speed) as u64);
                tokio::time::sleep_until(wall_start + real).await;
            }
            super::tick_until(
                &mut pipeline,
                &mut worker,
                &mut next_tick,
                at,
                super::Ticks::Jump,
                &mut sink,
            )
            .await?;
            pipeline.handle(&obs, &mut sink)?;
            observations += 1;
        }
        // Everyone still in the store leaves (or times out) and the last
        // messages go out.
        let flush_until = end
            .max(next_tick)
            .saturating_add(Duration::from_secs(15 * 60));
        super::tick_until(
            &mut pipeline,
            &mut worker,
            &mut next_tick,
            flush_until,
            super::Ticks::Jump,
            &mut sink,
        )
        .await?;
    }

    let stats = worker.store().stats()?;
    let counters = pipeline.counters();
    let summary = DemoSummary {
        shoppers: sim_config.shoppers,
        enrolled,
        recognised: recognised.len(),
        observations,
        acted: acted.into_iter().collect(),
        held_back: held_back.into_iter().map(|((c, r), n)| (c, r, n)).collect(),
        messages: fates(worker.store(), worker.totals.fell_over)?,
        points: counters.points,
        visits: stats.visits,
        seeded_visits,
    };
    let s = story(&summary, &counters, opts.minutes, opts.provider.as_deref());
    write(&out, &s);
    Ok(summary)
}
