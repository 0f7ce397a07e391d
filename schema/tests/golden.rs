//! Golden files: every file in `testdata/v1/` is decoded and compared with its expectation.
//!
//! * `xclog/NAME.json` and `xclog/NAME.pb` are what xclog writes for the canonical record
//!   `NAME` below: each must decode to that record and re-encode to the identical bytes.
//! * Any other input `FILE` needs a sibling `FILE.expect` (the decoded record in xclog JSON)
//!   or `FILE.error` (the exact `DecodeError` text). An input without one fails the test.
//! * An optional `FILE.headers` holds Kafka headers, one `name: value` per line; the pseudo
//!   header `@key` is the Kafka key.
//!
//! `XCLOG_BLESS=1 cargo test -p xclog-schema --test golden` writes the `xclog/` files, the
//! generated malformed protobuf inputs, and missing expectations; review them before committing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;
use xclog_schema::{
    Encoding, FsmEvent, FsmInstance, InstanceSnapshot, InstanceStatus, Limits, PendingTimeout,
    PersistedEvent, Record, SnapshotDeletion, decode, encode,
};

const SIDECARS: [&str; 3] = [".expect", ".error", ".headers"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/v1")
}

fn blessing() -> bool {
    std::env::var_os("XCLOG_BLESS").is_some_and(|v| v == "1")
}

fn canonical() -> BTreeMap<&'static str, Record> {
    let mut extra = serde_json::Map::new();
    extra.insert("_sourceComponent".into(), json!("PaymentComponent"));
    let event = Record::Event(PersistedEvent {
        id: "019b6f4e-2c3a-7d10-8a2b-3c4d5e6f7081".into(),
        instance_id: "order-2026-0042".into(),
        machine_name: "Order".into(),
        component_name: "OrderComponent".into(),
        event: FsmEvent {
            event_type: "PAYMENT_CONFIRMED".into(),
            payload: json!({"paymentId": "PAY-9", "amount": 120.5, "lines": [{"sku": "A-1", "qty": 2}]}),
            timestamp: Some(1_767_225_600_000),
            extra,
        },
        state_before: "Validated".into(),
        state_after: "Paid".into(),
        persisted_at: 1_767_225_600_012,
        caused_by: vec!["019b6f4e-2b00-7000-8000-000000000001".into()],
        caused: vec![],
        source_component_name: Some("PaymentComponent".into()),
        target_component_name: None,
        public_member_snapshot: Some(json!({"orderId": "ORD-42", "amount": 120.5, "paid": true})),
        sequence: Some(3),
    });
    let creation = Record::Event(PersistedEvent {
        id: "019b6f4e-2a00-7000-8000-000000000000".into(),
        instance_id: "order-2026-0042".into(),
        machine_name: "Order".into(),
        component_name: "OrderComponent".into(),
        event: FsmEvent {
            event_type: "INSTANCE_CREATED".into(),
            payload: json!({"triggerEvent": "manual create", "initialContext": {"orderId": "ORD-42"}}),
            timestamp: None,
            extra: serde_json::Map::new(),
        },
        state_before: String::new(),
        state_after: "Created".into(),
        persisted_at: 1_767_225_599_000,
        caused_by: vec![],
        caused: vec![],
        source_component_name: None,
        target_component_name: None,
        public_member_snapshot: None,
        sequence: Some(1),
    });
    let snapshot = Record::Snapshot(InstanceSnapshot {
        instance: FsmInstance {
            id: "order-2026-0042".into(),
            machine_name: "Order".into(),
            current_state: "Paid".into(),
            context: json!({}),
            public_member: Some(json!({"orderId": "ORD-42", "amount": 120.5, "paid": true})),
            internal_member: Some(json!({})),
            created_at: 1_767_225_599_000,
            updated_at: 1_767_225_600_012,
            status: InstanceStatus::Active,
            is_entry_point: Some(false),
            parent_instance_id: None,
            parent_machine_name: None,
        },
        snapshot_at: 1_767_225_600_020,
        last_event_id: "019b6f4e-2c3a-7d10-8a2b-3c4d5e6f7081".into(),
        pending_timeouts: Some(vec![PendingTimeout {
            state_key: "Paid".into(),
            event_type: "SHIP_TIMEOUT".into(),
            remaining_ms: 86_400_000,
        }]),
        sequence: Some(3),
    });
    let deletion = Record::SnapshotDeletion(SnapshotDeletion {
        instance_id: "order-2026-0042".into(),
        snapshot_deleted_at: 1_767_225_600_030,
        sequence: Some(3),
    });
    BTreeMap::from([
        ("event", event),
        ("creation-event", creation),
        ("snapshot", snapshot),
        ("snapshot-deletion", deletion),
    ])
}

/// Malformed protobuf inputs, built from valid encodings so that they stay meaningful.
fn malformed_protobuf() -> Vec<(&'static str, Vec<u8>)> {
    let records = canonical();
    let event = encode(&records["event"], Encoding::Protobuf).value;
    let snapshot = encode(&records["snapshot"], Encoding::Protobuf).value;
    let mut truncated = event.clone();
    truncated.truncate(event.len() / 2);
    // Record.event { id (field 1) = bytes that are not UTF-8 }
    let bad_utf8 = vec![0x0a, 0x05, 0x0a, 0x03, 0x66, 0xff, 0x6f];
    // Record.event { id = "e1", instanceId = "i1", machineName = "M", event { type = "GO",
    // payload_json = "{nope" } }
    let mut bad_payload = vec![0x0a, 0x00];
    let inner: Vec<u8> = [
        &[0x0a, 0x02, b'e', b'1'][..],
        &[0x12, 0x02, b'i', b'1'],
        &[0x1a, 0x01, b'M'],
        &[
            0x2a, 0x0b, 0x0a, 0x02, b'G', b'O', 0x12, 0x05, b'{', b'n', b'o', b'p', b'e',
        ],
    ]
    .concat();
    bad_payload[1] = u8::try_from(inner.len()).expect("short");
    bad_payload.extend_from_slice(&inner);
    // A snapshot whose status varint (FsmInstance field 9) is 7.
    let mut bad_status = snapshot.clone();
    let status_at =
        find_subslice(&bad_status, &[0x48, 0x01]).expect("status ACTIVE is encoded as 48 01");
    bad_status[status_at + 1] = 0x07;
    // Field 3 with wire type 3 (start group) at the top level.
    let group = vec![0x1b, 0x00];
    // An event whose id is empty (field 1 absent).
    let mut no_id = records["creation-event"].clone();
    if let Record::Event(e) = &mut no_id {
        e.id.clear();
    }
    let no_id = encode(&no_id, Encoding::Protobuf).value;
    // A snapshot deletion whose instance id is empty (field 1 absent).
    let mut no_instance = records["snapshot-deletion"].clone();
    if let Record::SnapshotDeletion(d) = &mut no_instance {
        d.instance_id.clear();
    }
    let no_instance = encode(&no_instance, Encoding::Protobuf).value;
    vec![
        ("truncated-event.pb", truncated),
        ("id-not-utf8.pb", bad_utf8),
        ("payload-not-json.pb", bad_payload),
        ("unknown-status.pb", bad_status),
        ("group-wire-type.pb", group),
        ("event-without-id.pb", no_id),
        ("snapshot-deletion-without-instance-id.pb", no_instance),
        ("empty-value.pb", Vec::new()),
    ]
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn inputs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("testdata directory exists")
        .map(|e| e.expect("readable entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if path.is_dir() {
            inputs(&path, out);
        } else if name != "README.md" && !SIDECARS.iter().any(|s| name.ends_with(s)) {
            out.push(path);
        }
    }
}

fn sidecar(input: &Path, suffix: &str) -> PathBuf {
    let mut s = input.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

struct KafkaMeta {
    headers: Vec<(String, Vec<u8>)>,
    key: Option<Vec<u8>>,
}

fn meta(input: &Path) -> KafkaMeta {
    let mut m = KafkaMeta {
        headers: Vec::new(),
        key: None,
    };
    if let Ok(text) = fs::read_to_string(sidecar(input, ".headers")) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line
                .split_once(": ")
                .expect("header lines are `name: value`");
            if name == "@key" {
                m.key = Some(value.as_bytes().to_vec());
            } else {
                m.headers.push((name.to_owned(), value.as_bytes().to_vec()));
            }
        }
    }
    m
}

fn decode_file(input: &Path) -> Result<xclog_schema::Decoded, xclog_schema::DecodeError> {
    let value = fs::read(input).expect("readable input");
    let m = meta(input);
    let headers: Vec<(&str, &[u8])> = m
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    decode(&headers, m.key.as_deref(), &value, &Limits::default())
}

fn bless() {
    let root = root();
    for (name, record) in canonical() {
        for (ext, encoding) in [("json", Encoding::Json), ("pb", Encoding::Protobuf)] {
            let path = root.join("xclog").join(format!("{name}.{ext}"));
            fs::write(&path, encode(&record, encoding).value).expect("writable testdata");
        }
    }
    for (name, bytes) in malformed_protobuf() {
        fs::write(root.join("malformed").join(name), bytes).expect("writable testdata");
    }
    let mut all = Vec::new();
    inputs(&root, &mut all);
    for input in all.iter().filter(|p| !p.starts_with(root.join("xclog"))) {
        if sidecar(input, ".expect").exists() || sidecar(input, ".error").exists() {
            continue;
        }
        match decode_file(input) {
            Ok(d) => {
                let text = serde_json::to_string_pretty(&d.record).expect("serializable") + "\n";
                fs::write(sidecar(input, ".expect"), text).expect("writable testdata");
            }
            Err(e) => {
                fs::write(sidecar(input, ".error"), format!("{e}\n")).expect("writable testdata")
            }
        }
        eprintln!("blessed {}", input.display());
    }
}

#[test]
fn every_golden_file_decodes_to_its_expectation() {
    if blessing() {
        bless();
    }
    let root = root();
    let records = canonical();
    let mut all = Vec::new();
    inputs(&root, &mut all);
    let mut failures = Vec::new();
    let mut checked = BTreeMap::<String, usize>::new();
    for input in &all {
        let rel = input
            .strip_prefix(&root)
            .expect("under root")
            .display()
            .to_string();
        let group = rel.split('/').next().unwrap_or_default().to_owned();
        *checked.entry(group).or_default() += 1;
        let result = decode_file(input);
        if input.starts_with(root.join("xclog")) {
            let stem = input
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let encoding = match input.extension().and_then(|e| e.to_str()) {
                Some("json") => Encoding::Json,
                Some("pb") => Encoding::Protobuf,
                _ => {
                    failures.push(format!("{rel}: xclog/ holds only .json and .pb files"));
                    continue;
                }
            };
            let Some(expected) = records.get(stem) else {
                failures.push(format!(
                    "{rel}: no canonical record named {stem:?} in tests/golden.rs"
                ));
                continue;
            };
            match result {
                Ok(d) if d.record == *expected && d.encoding == encoding => {
                    let bytes = fs::read(input).expect("readable input");
                    if encode(&d.record, encoding).value != bytes {
                        failures.push(format!("{rel}: re-encoding does not reproduce the file"));
                    }
                }
                Ok(d) => failures.push(format!("{rel}: decoded to {d:?}, expected {expected:?}")),
                Err(e) => failures.push(format!("{rel}: {e}")),
            }
        } else if let Ok(expected_error) = fs::read_to_string(sidecar(input, ".error")) {
            match result {
                Ok(d) => failures.push(format!(
                    "{rel}: decoded to {d:?}, expected error {expected_error}"
                )),
                Err(e) if e.to_string() == expected_error.trim_end() => {}
                Err(e) => failures.push(format!(
                    "{rel}: error\n  {e}\nexpected\n  {}",
                    expected_error.trim_end()
                )),
            }
        } else if let Ok(expect) = fs::read(sidecar(input, ".expect")) {
            let expected = decode(&[], None, &expect, &Limits::default())
                .unwrap_or_else(|e| panic!("{rel}.expect does not decode: {e}"));
            match result {
                Ok(d) if d.record == expected.record => {}
                Ok(d) => failures.push(format!(
                    "{rel}: decoded to {:?}, expected {:?}",
                    d.record, expected.record
                )),
                Err(e) => failures.push(format!("{rel}: {e}")),
            }
        } else {
            failures.push(format!("{rel}: no .expect or .error beside it"));
        }
    }
    assert!(
        failures.is_empty(),
        "golden file failures:\n{}",
        failures.join("\n")
    );
    for group in ["xclog", "ts-runtime", "malformed"] {
        assert!(
            checked.get(group).copied().unwrap_or(0) > 0,
            "no golden files in {group}/"
        );
    }
}

#[test]
fn the_generated_golden_protobuf_inputs_match_the_committed_files() {
    let root = root();
    for (name, bytes) in malformed_protobuf() {
        let committed = fs::read(root.join("malformed").join(name)).unwrap_or_default();
        assert_eq!(
            committed, bytes,
            "malformed/{name} differs from its generator"
        );
    }
}
