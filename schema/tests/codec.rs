//! Behaviour of `encode`/`decode` on hand-picked records.

use serde_json::json;
use xclog_schema::{
    DecodeErrorKind, Encoding, FsmEvent, FsmInstance, InstanceSnapshot, InstanceStatus, Limits,
    PendingTimeout, PersistedEvent, Record, RecordKind, SnapshotDeletion, decode, encode,
    encode_with_traceparent, headers,
};

fn event() -> Record {
    let mut extra = serde_json::Map::new();
    extra.insert("_sourceComponent".into(), json!("Billing"));
    Record::Event(PersistedEvent {
        id: "0190b6d2-6c4e-7b3a-9f1e-2a5c8d9e0f11".into(),
        instance_id: "order-42".into(),
        machine_name: "Order".into(),
        component_name: "Orders".into(),
        event: FsmEvent {
            event_type: "SUBMIT".into(),
            payload: json!({"amount": 12.5, "items": [1, 2, 3], "big": 9007199254740993_i64}),
            timestamp: Some(1_700_000_000_000),
            extra,
        },
        state_before: "Draft".into(),
        state_after: "Submitted".into(),
        persisted_at: 1_700_000_000_001,
        caused_by: vec!["a".into()],
        caused: vec![],
        source_component_name: Some("Billing".into()),
        target_component_name: None,
        public_member_snapshot: Some(json!({"amount": 12.5})),
        sequence: Some(7),
    })
}

fn snapshot() -> Record {
    Record::Snapshot(InstanceSnapshot {
        instance: FsmInstance {
            id: "order-42".into(),
            machine_name: "Order".into(),
            current_state: "Submitted".into(),
            context: json!({}),
            public_member: Some(json!({"amount": 12.5})),
            internal_member: None,
            created_at: 1,
            updated_at: 2,
            status: InstanceStatus::Completed,
            is_entry_point: Some(false),
            parent_instance_id: None,
            parent_machine_name: None,
        },
        snapshot_at: 3,
        last_event_id: String::new(),
        pending_timeouts: Some(vec![PendingTimeout {
            state_key: "Submitted".into(),
            event_type: "TIMEOUT".into(),
            remaining_ms: 500,
        }]),
        sequence: None,
    })
}

fn deletion() -> Record {
    Record::SnapshotDeletion(SnapshotDeletion {
        instance_id: "order-42".into(),
        snapshot_deleted_at: 1_700_000_000_009,
        sequence: Some(7),
    })
}

fn decode_encoded(
    r: &Record,
    encoding: Encoding,
) -> Result<xclog_schema::Decoded, xclog_schema::DecodeError> {
    let enc = encode_with_traceparent(
        r,
        encoding,
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    let hs: Vec<(&str, &[u8])> = enc
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_slice()))
        .collect();
    decode(
        &hs,
        Some(enc.key.as_bytes()),
        &enc.value,
        &Limits::default(),
    )
}

#[test]
fn events_and_snapshots_round_trip_through_both_encodings() {
    for r in [event(), snapshot()] {
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            let d = decode_encoded(&r, encoding).expect("decodes");
            assert_eq!(d.record, r);
            assert_eq!(d.encoding, encoding);
            assert_eq!(d.schema_version, 1);
            assert_eq!(
                d.traceparent.as_deref(),
                Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            );
        }
    }
}

#[test]
fn encode_sets_the_key_to_the_instance_id_and_writes_the_three_headers() {
    let enc = encode(&snapshot(), Encoding::Json);
    assert_eq!(enc.key, "order-42");
    let names: Vec<&str> = enc.headers.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        names,
        [
            headers::CONTENT_TYPE,
            headers::KIND,
            headers::SCHEMA_VERSION
        ]
    );
    assert_eq!(enc.headers[1].1, b"snapshot");
}

#[test]
fn a_typescript_runtime_event_without_headers_decodes_as_an_event() {
    let value = br#"{"id":"e1","instanceId":"i1","machineName":"M","componentName":"C",
        "event":{"type":"GO","payload":{}},"stateBefore":"","stateAfter":"A","persistedAt":5,
        "caused":[],"publicMemberSnapshot":null}"#;
    let d = decode(&[], None, value, &Limits::default()).expect("decodes");
    assert_eq!(d.record.kind(), RecordKind::Event);
    assert_eq!(d.encoding, Encoding::Json);
    let Record::Event(e) = d.record else {
        unreachable!()
    };
    assert_eq!(e.event.timestamp, None);
    assert!(e.caused_by.is_empty());
    assert_eq!(e.public_member_snapshot, None);
}

#[test]
fn a_key_that_differs_from_the_instance_id_is_a_key_mismatch() {
    let enc = encode(&event(), Encoding::Protobuf);
    let err = decode(&[], Some(b"other"), &enc.value, &Limits::default()).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::KeyMismatch);
    assert_eq!(err.field(), "key");
}

#[test]
fn an_invalid_traceparent_is_left_out_on_encode_and_ignored_on_decode() {
    let enc = encode_with_traceparent(&event(), Encoding::Json, Some("00-not-a-trace"));
    assert!(enc.headers.iter().all(|(k, _)| *k != headers::TRACEPARENT));
    let hs: [(&str, &[u8]); 1] = [(
        headers::TRACEPARENT,
        b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
    )];
    let d = decode(&hs, None, &enc.value, &Limits::default()).expect("decodes");
    assert_eq!(d.traceparent, None);
    assert!(xclog_schema::is_valid_traceparent(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ));
    assert!(!xclog_schema::is_valid_traceparent(
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ));
    assert!(!xclog_schema::is_valid_traceparent(
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"
    ));
}

#[test]
fn a_newer_schema_version_is_refused_so_the_consumer_can_be_upgraded() {
    let enc = encode(&event(), Encoding::Protobuf);
    let hs: [(&str, &[u8]); 1] = [(headers::SCHEMA_VERSION, b"2")];
    let err = decode(&hs, None, &enc.value, &Limits::default()).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::UnsupportedVersion);
    assert_eq!(
        err.part(),
        &xclog_schema::InputPart::Header(headers::SCHEMA_VERSION.into())
    );
}

#[test]
fn headerless_json_with_leading_whitespace_is_recognised_as_json() {
    let mut value = b"\n  ".to_vec();
    value.extend(encode(&snapshot(), Encoding::Json).value);
    let d = decode(&[], None, &value, &Limits::default()).expect("decodes");
    assert_eq!(d.encoding, Encoding::Json);
    assert_eq!(d.record, snapshot());
}

#[test]
fn headerless_protobuf_whose_length_byte_is_an_open_brace_stays_protobuf() {
    // An event message of exactly 123 (0x7b, `{`) bytes: the value starts "\n{".
    let mut r = event();
    let Record::Event(e) = &mut r else {
        unreachable!()
    };
    e.event.payload = json!({});
    e.public_member_snapshot = None;
    e.event.extra.clear();
    e.caused_by.clear();
    e.source_component_name = None;
    e.sequence = None;
    let base = encode(&r, Encoding::Protobuf).value.len();
    let Record::Event(e) = &mut r else {
        unreachable!()
    };
    e.component_name = "x".repeat(123 + 2 + e.component_name.len() - base);
    let value = encode(&r, Encoding::Protobuf).value;
    assert_eq!(&value[..2], b"\n{");
    let d = decode(&[], None, &value, &Limits::default()).expect("decodes");
    assert_eq!(d.encoding, Encoding::Protobuf);
    assert_eq!(d.record, r);
}

#[test]
fn two_different_values_for_one_header_are_an_error() {
    let enc = encode(&event(), Encoding::Json);
    let hs: [(&str, &[u8]); 2] = [(headers::KIND, b"event"), (headers::KIND, b"snapshot")];
    let err = decode(&hs, None, &enc.value, &Limits::default()).unwrap_err();
    assert_eq!(err.field(), headers::KIND);
}

#[test]
fn new_event_ids_are_time_ordered_uuid_v7() {
    let a = xclog_schema::new_event_id();
    let b = xclog_schema::new_event_id();
    let ua = uuid::Uuid::parse_str(&a).expect("a uuid");
    assert_eq!(ua.get_version_num(), 7);
    assert!(a <= b, "{a} then {b}");
}

#[test]
fn the_same_defect_is_reported_with_the_same_field_and_words_in_both_encodings() {
    let mut r = event();
    let Record::Event(e) = &mut r else {
        unreachable!()
    };
    e.event.event_type.clear();
    let messages: Vec<(String, String, String)> = [Encoding::Json, Encoding::Protobuf]
        .into_iter()
        .map(|enc| {
            let value = encode(&r, enc).value;
            let err = decode(&[], None, &value, &Limits::default()).unwrap_err();
            (
                err.field().to_owned(),
                err.expected().to_owned(),
                err.found().to_owned(),
            )
        })
        .collect();
    assert_eq!(messages[0], messages[1]);
    assert_eq!(messages[0].0, "event.type");
}

#[test]
fn a_snapshot_deletion_round_trips_through_both_encodings_with_its_kind_header() {
    for r in [
        deletion(),
        Record::SnapshotDeletion(SnapshotDeletion {
            instance_id: "i1".into(),
            snapshot_deleted_at: -1,
            sequence: None,
        }),
    ] {
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            let enc = encode(&r, encoding);
            assert_eq!(enc.key, r.instance_id());
            assert_eq!(
                enc.headers[1],
                (headers::KIND, b"snapshot-deletion".to_vec())
            );
            let d = decode_encoded(&r, encoding).expect("decodes");
            assert_eq!(d.record, r);
            assert_eq!(d.record.kind(), RecordKind::SnapshotDeletion);
            let bare = decode(&[], None, &enc.value, &Limits::default()).expect("decodes");
            assert_eq!(bare.record, r);
        }
    }
}

#[test]
fn snapshot_deletion_json_is_compact_with_its_fields_in_contract_order() {
    let enc = encode(&deletion(), Encoding::Json);
    assert_eq!(
        std::str::from_utf8(&enc.value).expect("utf-8"),
        r#"{"instanceId":"order-42","snapshotDeletedAt":1700000000009,"sequence":7}"#
    );
}

#[test]
fn headerless_json_with_snapshot_deleted_at_is_a_deletion_although_it_has_an_instance_id() {
    let value = br#"{"snapshotDeletedAt":5,"instanceId":"i1","sequence":null,"extra":true}"#;
    let d = decode(&[], Some(b"i1"), value, &Limits::default()).expect("decodes");
    assert_eq!(d.record.kind(), RecordKind::SnapshotDeletion);
    assert_eq!(d.record.sequence(), None);
}

#[test]
fn a_deletion_announced_as_an_event_is_a_kind_error_on_the_header() {
    let enc = encode(&deletion(), Encoding::Json);
    let hs: [(&str, &[u8]); 1] = [(headers::KIND, b"event")];
    let err = decode(&hs, None, &enc.value, &Limits::default()).unwrap_err();
    assert_eq!(err.field(), headers::KIND);
    assert_eq!(err.kind(), DecodeErrorKind::Malformed);
}

#[test]
fn a_deletion_whose_key_differs_from_its_instance_id_is_a_key_mismatch() {
    let enc = encode(&deletion(), Encoding::Protobuf);
    let err = decode(&[], Some(b"other"), &enc.value, &Limits::default()).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::KeyMismatch);
}

#[test]
fn a_deletion_with_an_empty_instance_id_fails_alike_in_both_encodings() {
    let mut r = deletion();
    let Record::SnapshotDeletion(d) = &mut r else {
        unreachable!()
    };
    d.instance_id.clear();
    for enc in [Encoding::Json, Encoding::Protobuf] {
        let value = encode(&r, enc).value;
        let err = decode(&[], None, &value, &Limits::default()).unwrap_err();
        assert_eq!(err.field(), "instanceId");
        assert_eq!(err.expected(), "a non-empty string");
    }
}

#[test]
fn a_fractional_snapshot_deleted_at_is_refused_like_other_epoch_fields() {
    let value = br#"{"instanceId":"i1","snapshotDeletedAt":1e3}"#;
    let err = decode(&[], None, value, &Limits::default()).unwrap_err();
    assert_eq!(err.field(), "snapshotDeletedAt");
    assert_eq!(err.expected(), "an integer (epoch milliseconds)");
}
