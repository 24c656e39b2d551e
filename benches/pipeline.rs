//! Criterion benchmarks of the in-memory hot path: frame decoding, the
//! presence tracker, and decode → identify → presence → campaign over a
//! busy store (2,000 devices in view, 100,000 enrolled customers).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nearcast::app::Pipeline;
use nearcast::core::advert::{self, DecodeStats, Frame};
use nearcast::core::campaign::MemoryLedger;
use nearcast::core::identity::{CustomerInfo, CustomerKey, Directory, Hasher, Identity};
use nearcast::core::presence::Tracker;
use nearcast::core::types::{
    BdAddr, ManufacturerData, Observation, Purposes, Rssi, ScannerIdx, Sighting, Timestamp,
};

const CUSTOMERS: u32 = 100_000;
const DEVICES: u32 = 2_000;
const APP: &str = "e2c56db5dffb48d2b060d0f5a71096e0";
const APP_UUID: [u8; 16] = 0xe2c5_6db5_dffb_48d2_b060_d0f5_a710_96e0_u128.to_be_bytes();
const NAMESPACE: [u8; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

fn config() -> nearcast::config::Config {
    nearcast::config::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .unwrap()
}

/// Device `i`'s advertisement: a mix like a busy shop floor. A quarter are
/// enrolled app users (iBeacon minor = customer number), a tenth enrolled
/// Eddystone-UID, the rest strangers: other apps' iBeacons, Apple
/// continuity chatter, bare addresses.
fn sighting(i: u32, t: i64, rng: &mut fastrand::Rng) -> Observation {
    let addr = BdAddr([0x40 | (i >> 16) as u8, (i >> 8) as u8, i as u8, 1, 2, 3]);
    let mut s = Sighting::new(
        Timestamp(t),
        ScannerIdx(rng.u16(0..3)),
        addr,
        Rssi(rng.i16(-95..-45)),
    );
    match i % 20 {
        0..=4 => {
            let minor = (i * 37) % CUSTOMERS;
            let frame = Frame::IBeacon {
                uuid: APP_UUID,
                major: u16::try_from(minor >> 16).unwrap_or(0),
                minor: u16::try_from(minor & 0xffff).unwrap_or(0),
                measured_power: -59,
            };
            frame.encode().unwrap().add_to(&mut s);
        }
        5 | 6 => {
            let n = u64::from(CUSTOMERS - 1 - (i % CUSTOMERS));
            let frame = Frame::EddystoneUid {
                ranging: -24,
                namespace: NAMESPACE,
                instance: n.to_be_bytes()[2..].try_into().unwrap_or_default(),
            };
            frame.encode().unwrap().add_to(&mut s);
        }
        7..=10 => {
            let frame = Frame::IBeacon {
                uuid: (u128::from(i) * 7919).to_be_bytes(),
                major: 1,
                minor: u16::try_from(i).unwrap_or(0),
                measured_power: -69,
            };
            frame.encode().unwrap().add_to(&mut s);
        }
        11..=17 => {
            s.manufacturer_data.push(ManufacturerData {
                company: 76,
                data: [0x10, 0x05, 0x03, 0x1c, 0x2a, 0x7b, 0x3e]
                    .into_iter()
                    .collect(),
            });
        }
        _ => {}
    }
    Observation::Ble(s)
}

/// `n` sightings, devices round-robin, 1 ms apart (each device heard every 2 s).
fn stream(n: usize) -> Vec<Observation> {
    let mut rng = fastrand::Rng::with_seed(7);
    let t0 = 1_763_712_000_000; // a Friday, 09:00 Berlin
    (0..n)
        .map(|k| sighting((k as u32) % DEVICES, t0 + k as i64, &mut rng))
        .collect()
}

fn directory(hasher: &Hasher) -> Directory {
    let mut d = Directory::default();
    for n in 0..CUSTOMERS {
        let ib = Identity::parse(&format!("ibeacon:{APP}:{}:{}", n >> 16, n & 0xffff)).unwrap();
        let ed = Identity::parse(&format!("eddystone-uid:0102030405060708090a:{n:012x}")).unwrap();
        d.insert(
            CustomerInfo {
                key: CustomerKey(n + 1),
                id: format!("c{n}").as_str().into(),
                segments: Box::new([]),
                channels: Box::new([("sms".into(), Purposes::ALL)]),
            },
            [hasher.hash(&ib), hasher.hash(&ed)],
        );
    }
    d
}

fn benches(c: &mut Criterion) {
    let obs = stream(200_000);
    let sightings: Vec<&Sighting> = obs
        .iter()
        .filter_map(|o| {
            if let Observation::Ble(s) = o {
                Some(s)
            } else {
                None
            }
        })
        .collect();

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(sightings.len() as u64));
    g.bench_function("mixed store traffic", |b| {
        b.iter(|| {
            let mut stats = DecodeStats::default();
            let mut n = 0u32;
            for s in &sightings {
                advert::decode(s, &mut stats, |f| {
                    black_box(&f);
                    n += 1;
                });
            }
            black_box((n, stats))
        });
    });
    g.finish();

    let config = config();
    let mut g = c.benchmark_group("presence");
    g.throughput(Throughput::Elements(sightings.len() as u64));
    g.bench_function("500 customers in view", |b| {
        b.iter(|| {
            let mut t = Tracker::new(config.layout.clone());
            let mut out = Vec::new();
            for (i, s) in sightings.iter().enumerate() {
                // Ticks run as the daemon runs them, before each sighting.
                while let Some(due) = t.poll_timeout().filter(|d| *d <= s.at) {
                    t.handle_timeout(due, &mut out);
                }
                t.observe_ble(s.at, CustomerKey((i % 500) as u32), s.scanner, s.rssi, -59);
                out.clear();
            }
            black_box(t.stats())
        });
    });
    g.finish();

    let hasher = Hasher::new(&[7; 32]);
    let dir = Arc::new(directory(&hasher));
    if std::env::var_os("PIPELINE_COUNTS").is_some() {
        let mut p = Pipeline::new(
            config.layout.clone(),
            config.engine.clone(),
            hasher.clone(),
            dir.clone(),
            MemoryLedger::new(),
        );
        for o in &obs {
            p.handle(o, &mut |_| {}).unwrap();
        }
        eprintln!("{:?}", p.counters());
    }
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(obs.len() as u64));
    g.sample_size(20);
    g.bench_function(
        "decode+identify+presence+campaign, 2000 devices, 100k customers",
        |b| {
            b.iter(|| {
                let mut p = Pipeline::new(
                    config.layout.clone(),
                    config.engine.clone(),
                    hasher.clone(),
                    dir.clone(),
                    MemoryLedger::new(),
                );
                let mut events = 0u64;
                for o in &obs {
                    p.handle(o, &mut |_| events += 1).unwrap();
                }
                black_box((events, p.counters()))
            });
        },
    );
    // The same with every customer also holding an app-token key: rotating
    // ids are looked up per frame, so that lookup must stay O(1).
    let app: Vec<(CustomerKey, nearcast::core::rotating::RotatingKey)> = (0..CUSTOMERS)
        .map(|n| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&n.to_be_bytes());
            (
                CustomerKey(n + 1),
                nearcast::core::rotating::RotatingKey::App { key },
            )
        })
        .collect();
    let t0 = Timestamp(1_763_712_000_000);
    g.bench_function("the same with 100k app-token keys", |b| {
        b.iter_batched(
            || {
                nearcast::core::rotating::RotatingIndex::build(
                    std::time::Duration::from_secs(900),
                    app.iter().copied(),
                    t0,
                )
            },
            |index| {
                let mut p = Pipeline::new(
                    config.layout.clone(),
                    config.engine.clone(),
                    hasher.clone(),
                    dir.clone(),
                    MemoryLedger::new(),
                );
                p.set_rotating(
                    index,
                    nearcast::core::identity::AppBeacons {
                        ibeacon_uuid: Some([0x5a; 16]),
                        eddystone_namespace: None,
                    },
                );
                let mut events = 0u64;
                for o in &obs {
                    p.handle(o, &mut |_| events += 1).unwrap();
                }
                black_box((events, p.counters()))
            },
            criterion::BatchSize::LargeInput,
        );
    });
    g.finish();
}

fn rotating(c: &mut Criterion) {
    use nearcast::core::rotating::{RotatingIndex, RotatingKey};
    let now = Timestamp(1_763_712_000_000);
    let app: Vec<(CustomerKey, RotatingKey)> = (0..CUSTOMERS)
        .map(|n| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&n.to_be_bytes());
            (CustomerKey(n + 1), RotatingKey::App { key })
        })
        .collect();
    let eid: Vec<(CustomerKey, RotatingKey)> = (0..CUSTOMERS)
        .map(|n| {
            let mut identity_key = [7u8; 16];
            identity_key[..4].copy_from_slice(&n.to_be_bytes());
            (
                CustomerKey(n + 1),
                RotatingKey::Eid {
                    identity_key,
                    exponent: 10,
                    epoch: 1_763_000_000,
                },
            )
        })
        .collect();
    let slot = std::time::Duration::from_secs(900);
    let mut g = c.benchmark_group("rotating");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(CUSTOMERS)));
    g.bench_function("precompute app tokens, 100k customers (3 slots)", |b| {
        b.iter(|| black_box(RotatingIndex::build(slot, app.iter().copied(), now).len()));
    });
    g.bench_function(
        "precompute Eddystone-EIDs, 100k customers (3 windows)",
        |b| {
            b.iter(|| black_box(RotatingIndex::build(slot, eid.iter().copied(), now).len()));
        },
    );
    g.finish();
}

criterion_group!(pipeline, benches, rotating);
criterion_main!(pipeline);
