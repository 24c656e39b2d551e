//! Replay parsing throughput: `cargo bench --bench replay`.
//!
//! Parses a recording of the simulated store (an hour, 100 shoppers, three
//! scanners: mostly bystanders' phones, as in a real shop) from memory, so
//! the number is the parser's, not the disk's: once as written (the fast
//! path), once with every line's keys reordered (the serde_json path that
//! any other line takes). `nearcast replay` must stay well above 1,000,000
//! lines/s on one core for the whole pipeline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark set-up, not an input path"
)]

use std::hint::black_box;
use std::io::BufReader;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nearcast::core::identity::Identity;
use nearcast::core::types::Observation;
use nearcast::core::zones::{Layout, Scanner};
use nearcast::source::replay::{Reader, Writer};
use nearcast::source::sim::{SimConfig, SimCustomer, Simulator};

fn layout() -> Arc<Layout> {
    let mut l = Layout::single("Bench store", "door");
    l.scanners[0].path_loss_exponent = 2.5;
    for (id, position) in [("shoes", (20.0, 0.0)), ("cafe", (20.0, 15.0))] {
        l.scanners.push(Scanner {
            id: id.into(),
            position,
            rssi_offset: 0.0,
            path_loss_exponent: 2.5,
        });
    }
    Arc::new(l)
}

fn recording(layout: &Arc<Layout>) -> (Vec<u8>, u64) {
    let customers = (0..20u16)
        .map(|i| SimCustomer {
            identities: vec![Identity::IBeacon {
                uuid: [0xE2; 16],
                major: 1,
                minor: i,
            }],
        })
        .collect();
    let config = SimConfig {
        shoppers: 100,
        opted_in_share: 0.2,
        ..SimConfig::default()
    };
    let sim = Simulator::new(config, Arc::clone(layout), customers).unwrap();
    let mut w = Writer::new(Vec::new(), layout);
    let mut lines = 0;
    for obs in sim {
        w.write(&obs).unwrap();
        lines += 1;
    }
    (w.into_inner(), lines)
}

fn replay(c: &mut Criterion) {
    let layout = layout();
    let (bytes, lines) = recording(&layout);
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(lines));
    group.bench_function("parse", |b| {
        b.iter(|| {
            let mut n = 0u64;
            // As from a file: through a 64 KiB buffer, so some lines straddle it.
            let file = BufReader::with_capacity(1 << 16, black_box(bytes.as_slice()));
            for obs in Reader::new(file, &layout) {
                if let Ok(Observation::Ble(s)) = obs {
                    n += u64::from(s.rssi.0.unsigned_abs());
                }
            }
            n
        });
    });
    // The same recording with each line's keys in another order, as another
    // tool might write it: every line takes the general (serde_json) route.
    let reordered = reorder_keys(&bytes);
    group.bench_function("parse_other_key_order", |b| {
        b.iter(|| {
            let mut n = 0u64;
            let file = BufReader::with_capacity(1 << 16, black_box(reordered.as_slice()));
            for obs in Reader::new(file, &layout) {
                if let Ok(Observation::Ble(s)) = obs {
                    n += u64::from(s.rssi.0.unsigned_abs());
                }
            }
            n
        });
    });
    let observations: Vec<Observation> = Reader::new(bytes.as_slice(), &layout)
        .map(Result::unwrap)
        .collect();
    assert_eq!(observations.len() as u64, lines);
    group.bench_function("write", |b| {
        b.iter(|| {
            let mut w = Writer::new(Vec::with_capacity(bytes.len()), &layout);
            for obs in &observations {
                w.write(black_box(obs)).unwrap();
            }
            w.into_inner().len()
        });
    });
    group.finish();
}

/// Each line of `bytes` with its members in reverse order.
fn reorder_keys(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).unwrap();
        out.push(b'{');
        for (i, (key, value)) in map.iter().rev().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, key).unwrap();
            out.push(b':');
            serde_json::to_writer(&mut out, value).unwrap();
        }
        out.extend_from_slice(b"}\n");
    }
    out
}

/// The floor set by serde_json itself: tokenizing each line into nothing.
fn serde_json_floor(c: &mut Criterion) {
    let layout = layout();
    let (bytes, lines) = recording(&layout);
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(lines));
    group.bench_function("serde_json_floor", |b| {
        b.iter(|| {
            for line in black_box(bytes.as_slice()).split(|&b| b == b'\n') {
                if !line.is_empty() {
                    let v: serde::de::IgnoredAny = serde_json::from_slice(line).unwrap();
                    black_box(v);
                }
            }
        });
    });
    group.finish();
}

criterion_group!(benches, replay, serde_json_floor);
criterion_main!(benches);
