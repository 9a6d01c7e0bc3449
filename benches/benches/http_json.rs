//! criterion benches of the HTTP layer's JSON for transfers: reading a batch of 1,000 transfer
//! requests and a single one, and writing their answers, by the strict reader (a
//! `serde_json::Value` walked field by field) and serializer (`TransferBody` through serde),
//! and by the fast path of `api::http::transfer_json` that the routes use first.
//!
//! Run: `cargo bench -p benches --bench http_json`.

use std::hint::black_box;

use actors::BatchItemResult;
use api::http::RequestLimits;
use api::http::json::TextLimits;
use api::http::transfer_json;
use api::http::transfers::{BatchItemBody, BatchResponse, TransferBody, parse_transfer_request};
use benches::id;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use engine::{Currency, Transfer, TransferStatus};
use serde_json::Value;

fn limits() -> RequestLimits {
    RequestLimits {
        amount_max: 1_000_000_000_000_000,
        batch_max: 8190,
        history_limit_max: 1000,
        text: TextLimits {
            metadata_entries_max: 16,
            metadata_key_chars_max: 64,
            metadata_value_chars_max: 256,
            description_chars_max: 256,
        },
    }
}

fn item(index: usize) -> String {
    format!(
        r#"{{"id":"r1a2b3c4-c7-{index}","debit_account":"r1a2b3c4-a{}","credit_account":"r1a2b3c4-a{}","amount":"{}"}}"#,
        index * 7 % 10_000,
        index * 13 % 10_000,
        1 + index % 100
    )
}

fn batch_body(items: usize) -> Vec<u8> {
    let items: Vec<String> = (0..items).map(item).collect();
    format!(r#"{{"transfers":[{}],"atomic":false}}"#, items.join(",")).into_bytes()
}

fn strict_batch(limits: &RequestLimits, body: &[u8]) -> usize {
    let value: Value = serde_json::from_slice(body).expect("JSON");
    let items = value["transfers"].as_array().expect("an array");
    items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_transfer_request(limits, item, &format!("transfers[{index}]")).expect("valid"))
        .count()
}

fn transfer(index: u64) -> Transfer {
    Transfer {
        id: id(&format!("r1a2b3c4-c7-{index}")),
        debit_account: id(&format!("r1a2b3c4-a{}", index % 10_000)),
        credit_account: id(&format!("r1a2b3c4-a{}", (index + 1) % 10_000)),
        amount: engine::Amount::from_minor_units(i128::from(1 + index % 100)),
        currency: Currency::new("USD", 2),
        pending: false,
        timeout_seconds: 0,
        description: String::new(),
        metadata: Default::default(),
        created_at_ms: 1_795_341_600_123,
        seq: 1_000_000 + index,
        status: TransferStatus::Posted,
        posted_amount: engine::Amount::from_minor_units(i128::from(1 + index % 100)),
        last_seq: 1_000_000 + index,
    }
}

fn read(criterion: &mut Criterion) {
    let limits = limits();
    let mut group = criterion.benchmark_group("http_read");
    for items in [1_usize, 1000] {
        group.throughput(Throughput::Elements(u64::try_from(items).expect("small")));
        if items == 1 {
            let body = item(1).into_bytes();
            group.bench_with_input(BenchmarkId::new("strict_transfer", items), &body, |bencher, body| {
                bencher.iter(|| {
                    let value: Value = serde_json::from_slice(black_box(body)).expect("JSON");
                    parse_transfer_request(&limits, &value, "").expect("valid")
                });
            });
            group.bench_with_input(BenchmarkId::new("fast_transfer", items), &body, |bencher, body| {
                bencher.iter(|| transfer_json::read_transfer(&limits, black_box(body)).expect("valid"));
            });
        } else {
            let body = batch_body(items);
            group.bench_with_input(BenchmarkId::new("strict_batch", items), &body, |bencher, body| {
                bencher.iter(|| strict_batch(&limits, black_box(body)));
            });
            group.bench_with_input(BenchmarkId::new("fast_batch", items), &body, |bencher, body| {
                bencher.iter(|| transfer_json::read_batch(&limits, black_box(body)).expect("valid").0.len());
            });
        }
    }
    group.finish();
}

fn write(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("http_write");
    for items in [1_u64, 1000] {
        group.throughput(Throughput::Elements(items));
        let outcomes: Vec<BatchItemResult> =
            (0..items).map(|index| BatchItemResult::Created(std::sync::Arc::new(transfer(index)))).collect();
        group.bench_with_input(BenchmarkId::new("serde_transfer_bodies", items), &outcomes, |bencher, outcomes| {
            bencher.iter(|| {
                let results = outcomes
                    .iter()
                    .map(|outcome| match outcome {
                        BatchItemResult::Created(transfer) => {
                            BatchItemBody::Created { transfer: TransferBody::new(transfer) }
                        }
                        _ => unreachable!("only created items here"),
                    })
                    .collect();
                serde_json::to_vec(&BatchResponse { results }).expect("serializes").len()
            });
        });
        group.bench_with_input(BenchmarkId::new("direct_writer", items), &outcomes, |bencher, outcomes| {
            bencher.iter(|| transfer_json::batch_bytes(black_box(outcomes)).len());
        });
    }
    group.finish();
}

criterion_group!(http_json, read, write);
criterion_main!(http_json);
