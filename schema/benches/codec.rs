//! Encode and decode rates for a typical event (about 500 bytes of payload), both encodings,
//! next to plain `serde_json::to_vec` / `from_slice` of the same struct as the reference.
//!
//! Run: `cargo bench -p xclog-schema --bench codec -- --measurement-time 3 --warm-up-time 1`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use xclog_schema::{Encoding, FsmEvent, Limits, PersistedEvent, Record, decode, encode};

fn typical_event() -> PersistedEvent {
    let payload = json!({
        "orderId": "ORD-2026-000042",
        "customer": {"id": "CUST-981", "name": "Ada Lovelace", "tier": "gold", "email": "ada@example.invalid"},
        "lines": [
            {"sku": "SKU-1001", "description": "Widget, blue", "qty": 2, "unitPrice": 19.99},
            {"sku": "SKU-2002", "description": "Gadget, large", "qty": 1, "unitPrice": 149.5},
            {"sku": "SKU-3003", "description": "Gizmo, refurbished", "qty": 4, "unitPrice": 7.25}
        ],
        "shipping": {"method": "express", "address": "12 Example Street, 75001 Paris, France"},
        "total": 218.48,
        "currency": "EUR",
        "approved": true
    });
    PersistedEvent {
        id: "019b6f4e-2c3a-7d10-8a2b-3c4d5e6f7081".into(),
        instance_id: "7b0e5c1a-3f2d-4e8b-9a6c-1d2e3f4a5b6c".into(),
        machine_name: "Order".into(),
        component_name: "OrderComponent".into(),
        event: FsmEvent {
            event_type: "PAYMENT_CONFIRMED".into(),
            payload,
            timestamp: Some(1_767_225_600_000),
            extra: serde_json::Map::new(),
        },
        state_before: "Validated".into(),
        state_after: "Paid".into(),
        persisted_at: 1_767_225_600_012,
        caused_by: vec!["019b6f4e-2b00-7000-8000-000000000001".into()],
        caused: vec![],
        source_component_name: None,
        target_component_name: None,
        public_member_snapshot: None,
        sequence: Some(3),
    }
}

fn bench(c: &mut Criterion) {
    let event = typical_event();
    let payload_len = serde_json::to_vec(&event.event.payload)
        .map(|v| v.len())
        .unwrap_or(0);
    let record = Record::Event(event.clone());
    let limits = Limits::default();

    let mut group = c.benchmark_group(format!("encode/event_payload_{payload_len}B"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("protobuf", |b| {
        b.iter(|| encode(black_box(&record), Encoding::Protobuf))
    });
    group.bench_function("json", |b| {
        b.iter(|| encode(black_box(&record), Encoding::Json))
    });
    group.bench_function("reference_serde_json_to_vec", |b| {
        b.iter(|| {
            serde_json::to_vec(black_box(&event))
                .map(|v| v.len())
                .unwrap_or(0)
        })
    });
    group.finish();

    let mut group = c.benchmark_group(format!("decode/event_payload_{payload_len}B"));
    group.throughput(Throughput::Elements(1));
    for encoding in [Encoding::Protobuf, Encoding::Json] {
        let enc = encode(&record, encoding);
        let headers: Vec<(&str, &[u8])> = enc
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_slice()))
            .collect();
        let name = match encoding {
            Encoding::Protobuf => format!("protobuf_{}B", enc.value.len()),
            Encoding::Json => format!("json_{}B", enc.value.len()),
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                decode(
                    black_box(&headers),
                    Some(enc.key.as_bytes()),
                    black_box(&enc.value),
                    &limits,
                )
                .is_ok()
            })
        });
    }
    let json = serde_json::to_vec(&event).unwrap_or_default();
    group.bench_function("reference_serde_json_from_slice", |b| {
        b.iter(|| serde_json::from_slice::<PersistedEvent>(black_box(&json)).is_ok())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
