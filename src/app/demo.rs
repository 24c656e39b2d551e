//! `nearcast demo`: an hour in the example store, simulated, with a
//! temporary database and the console channel, narrated as it happens and
//! summed up at the end. The same seed gives the same output.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Error, database_path, open_database, output, worker};
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
    /// Messages delivered, by campaign.
    pub sent_by_campaign: Vec<(String, i64)>,
    /// Suppressed decisions, by reason.
    pub suppressed: Vec<(String, u64)>,
    /// Points awarded.
    pub points: u64,
    /// Messages expired unsent.
    pub expired: u64,
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
            .map_or(Timestamp::from_secs(1_763_629_200), |z| {
                Timestamp(z.timestamp().as_millisecond())
            })
    });
    let csv_text = std::fs::read(&customers_csv).map_err(|e| Error::io(&customers_csv, e))?;
    let report = store.import_customers(csv_text.as_slice(), &hasher, start)?;
    let customers = sim_customers(&customers_csv)?;
    // Some history, so that visit-count and win-back campaigns have
    // something to find: every third customer has been here four times in
    // the last weeks, every seventh last came six weeks ago.
    for (i, (id, _)) in customers.iter().enumerate() {
        let past = |days: i64| Timestamp(start.0 - days * 86_400_000);
        if i % 3 == 0 {
            for days in [7, 14, 21, 28] {
                store.import_visit(id, past(days), Some(Timestamp(past(days).0 + 1_200_000)))?;
            }
        } else if i % 7 == 1 {
            store.import_visit(id, past(42), Some(Timestamp(past(42).0 + 900_000)))?;
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
             (simulated store, temporary database, {})\n\n",
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
        None => worker(&config, &db, out.clone())?,
        Some(url) => Worker::new(
            Store::open(&db)?,
            config.engine.clone(),
            config.layout.store_name.clone(),
            provider_adapters(&config, url, &out)?,
            config.daemon.outbox.lease,
            config.daemon.outbox.batch,
        ),
    };

    let engine = config.engine.clone();
    let mut recognised = BTreeSet::new();
    let mut suppressed: Vec<(Reason, u64)> = Vec::new();
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
                super::Output::Decision { committed, .. } => {
                    if let Outcome::Suppressed(r) = committed.decision.outcome {
                        match suppressed.iter_mut().find(|(x, _)| *x == r) {
                            Some(e) => e.1 += 1,
                            None => suppressed.push((r, 1)),
                        }
                    }
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
    suppressed.sort();
    let summary = DemoSummary {
        shoppers: sim_config.shoppers,
        enrolled,
        recognised: recognised.len(),
        observations,
        sent_by_campaign: worker.store().sent_by_campaign()?,
        suppressed: suppressed
            .iter()
            .map(|(r, n)| (r.name().to_owned(), *n))
            .collect(),
        points: counters.points,
        expired: worker.totals.expired,
    };
    let _ = engine;
    let mut s = String::from("\n── summary ─────────────────────────────────────────────\n");
    s.push_str(&format!(
        "shoppers simulated      {} ({} enrolled customers among them)\n",
        summary.shoppers, summary.enrolled
    ));
    s.push_str(&format!(
        "observations            {} (frames decoded {}, rejected {})\n",
        observations,
        counters.decode.ibeacon + counters.decode.altbeacon + counters.decode.eddystone,
        counters.decode.rejected()
    ));
    s.push_str(&format!("customers recognised    {}\n", summary.recognised));
    let e = counters.events;
    s.push_str(&format!(
        "presence events         arrived {}, entered {}, dwelled {}, exited {}, left {}\n",
        e[0], e[1], e[2], e[3], e[4]
    ));
    let list = |v: &[(String, i64)]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    s.push_str(&format!(
        "messages sent           {}\n",
        list(&summary.sent_by_campaign)
    ));
    let sup: Vec<(String, i64)> = summary
        .suppressed
        .iter()
        .map(|(k, n)| (k.clone(), i64::try_from(*n).unwrap_or(i64::MAX)))
        .collect();
    s.push_str(&format!("suppressed              {}\n", list(&sup)));
    s.push_str(&format!("messages expired        {}\n", summary.expired));
    s.push_str(&format!("points awarded          {}\n", summary.points));
    s.push_str(&format!("visits on record        {}\n", stats.visits));
    write(&out, &s);
    Ok(summary)
}
