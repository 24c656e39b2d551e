//! `nearcast record FILE --sim`: writes the simulator's observations as a
//! recording (`formats/replay.md`), for benchmarks, tests and trying a
//! config change on a known day.

use std::io::BufWriter;
use std::path::Path;
use std::time::Duration;

use super::Error;
use crate::config::{Config, SourceConfig};
use crate::core::types::Timestamp;
use crate::source::replay::Writer;
use crate::source::sim::{SimConfig, Simulator};

/// Records `minutes` of the configured simulator into `file`; returns the
/// number of observations written.
///
/// # Errors
/// A config without a sim source, or IO failures.
pub fn record_sim(
    config: &Config,
    file: &Path,
    minutes: u32,
    shoppers: Option<u32>,
    seed: Option<u64>,
) -> Result<u64, Error> {
    let Some((per_hour, default_seed, share, customers)) =
        config.daemon.sources.iter().find_map(|s| match s {
            SourceConfig::Sim {
                shoppers_per_hour,
                seed,
                opted_in_share,
                customers,
            } => Some((
                *shoppers_per_hour,
                *seed,
                *opted_in_share,
                customers.clone(),
            )),
            SourceConfig::Replay { .. } => None,
        })
    else {
        return Err(Error::Usage(
            "the configuration has no [[source]] kind = \"sim\" to record".into(),
        ));
    };
    let customers = super::demo::sim_customers(&customers)?
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let start = config
        .engine
        .rules
        .local(Timestamp::from_secs(1_763_629_200))
        .day_start
        .saturating_add(Duration::from_secs(10 * 3600));
    let cfg = SimConfig {
        seed: seed.unwrap_or(default_seed),
        shoppers: shoppers.unwrap_or(per_hour.saturating_mul(minutes) / 60),
        start,
        duration: Duration::from_secs(u64::from(minutes) * 60),
        opted_in_share: share,
        ..SimConfig::default()
    };
    let f = std::fs::File::create(file).map_err(|e| Error::io(file, e))?;
    let mut w = Writer::new(BufWriter::with_capacity(1 << 20, f), &config.layout);
    let mut n = 0u64;
    for obs in Simulator::new(cfg, config.layout.clone(), customers)? {
        w.write(&obs)
            .map_err(|e| Error::io(file, std::io::Error::other(e.to_string())))?;
        n += 1;
    }
    w.flush()
        .map_err(|e| Error::io(file, std::io::Error::other(e.to_string())))?;
    Ok(n)
}
