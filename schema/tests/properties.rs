//! Properties of the codec over generated records and arbitrary bytes.

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use xclog_schema::{
    Encoding, FsmEvent, FsmInstance, InputPart, InstanceSnapshot, InstanceStatus, Limits,
    PendingTimeout, PersistedEvent, Record, SnapshotDeletion, decode, encode_with_traceparent,
    headers,
};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map("\\PC{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map("\\PC{0,8}", json_value(), 0..5).prop_map(|m| m.into_iter().collect())
}

/// Optional JSON data: `None` and `Some(null)` mean the same on the wire, so only `None` is made.
fn opt_data() -> impl Strategy<Value = Option<Value>> {
    option::of(json_value().prop_filter("null means absent", |v| !v.is_null()))
}

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9-]{1,36}"
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,16}"
}

fn fsm_event() -> impl Strategy<Value = FsmEvent> {
    (
        text().prop_filter("non-empty", |s| !s.is_empty()),
        json_object(),
        option::of(any::<i64>()),
        json_object(),
    )
        .prop_map(|(event_type, payload, timestamp, mut extra)| {
            for k in ["type", "payload", "timestamp"] {
                extra.remove(k);
            }
            FsmEvent {
                event_type,
                payload: Value::Object(payload),
                timestamp,
                extra,
            }
        })
}

prop_compose! {
    fn persisted_event()(
        ids in (id(), id(), id(), text()),
        event in fsm_event(),
        states in (text(), text()),
        persisted_at in any::<i64>(),
        caused_by in vec(id(), 0..4),
        caused in vec(id(), 0..4),
        components in (option::of(text()), option::of(text())),
        public_member_snapshot in opt_data(),
        sequence in option::of(any::<u64>()),
    ) -> PersistedEvent {
        PersistedEvent {
            id: ids.0,
            instance_id: ids.1,
            machine_name: ids.2,
            component_name: ids.3,
            event,
            state_before: states.0,
            state_after: states.1,
            persisted_at,
            caused_by,
            caused,
            source_component_name: components.0,
            target_component_name: components.1,
            public_member_snapshot,
            sequence,
        }
    }
}

fn status() -> impl Strategy<Value = InstanceStatus> {
    prop_oneof![
        Just(InstanceStatus::Active),
        Just(InstanceStatus::Completed),
        Just(InstanceStatus::Error)
    ]
}

prop_compose! {
    fn instance_snapshot()(
        ids in (id(), id(), text()),
        context in json_value(),
        members in (opt_data(), opt_data()),
        times in (any::<i64>(), any::<i64>(), any::<i64>()),
        status in status(),
        is_entry_point in option::of(any::<bool>()),
        parent in (option::of(id()), option::of(id())),
        last_event_id in text(),
        pending_timeouts in option::of(vec((text(), text(), any::<i64>()), 0..3)),
        sequence in option::of(any::<u64>()),
    ) -> InstanceSnapshot {
        InstanceSnapshot {
            instance: FsmInstance {
                id: ids.0,
                machine_name: ids.1,
                current_state: ids.2,
                context,
                public_member: members.0,
                internal_member: members.1,
                created_at: times.0,
                updated_at: times.1,
                status,
                is_entry_point,
                parent_instance_id: parent.0,
                parent_machine_name: parent.1,
            },
            snapshot_at: times.2,
            last_event_id,
            pending_timeouts: pending_timeouts.map(|items| {
                items
                    .into_iter()
                    .map(|(state_key, event_type, remaining_ms)| PendingTimeout { state_key, event_type, remaining_ms })
                    .collect()
            }),
            sequence,
        }
    }
}

prop_compose! {
    fn snapshot_deletion()(
        instance_id in id(),
        snapshot_deleted_at in any::<i64>(),
        sequence in option::of(any::<u64>()),
    ) -> SnapshotDeletion {
        SnapshotDeletion { instance_id, snapshot_deleted_at, sequence }
    }
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        persisted_event().prop_map(Record::Event),
        instance_snapshot().prop_map(Record::Snapshot),
        snapshot_deletion().prop_map(Record::SnapshotDeletion)
    ]
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::Protobuf), Just(Encoding::Json)]
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(headers::CONTENT_TYPE.to_owned()),
        Just(headers::KIND.to_owned()),
        Just(headers::SCHEMA_VERSION.to_owned()),
        Just(headers::TRACEPARENT.to_owned()),
        "[a-zA-Z-]{0,12}",
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"application/json".to_vec()),
        Just(b"application/x-protobuf".to_vec()),
        Just(b"event".to_vec()),
        Just(b"snapshot".to_vec()),
        Just(b"snapshot-deletion".to_vec()),
        Just(b"1".to_vec()),
        vec(any::<u8>(), 0..16),
    ]
}

fn assert_range_within(
    e: &xclog_schema::DecodeError,
    value: &[u8],
    key: Option<&[u8]>,
    hs: &[(String, Vec<u8>)],
) {
    let len = match e.part() {
        InputPart::Value => value.len(),
        InputPart::Key => key.map_or(0, <[u8]>::len),
        InputPart::Header(name) => hs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.len())
            .max()
            .unwrap_or(0),
        _ => usize::MAX,
    };
    assert!(
        e.range().start <= e.range().end && e.range().end <= len,
        "range {:?} outside {len} bytes: {e}",
        e.range()
    );
    assert!(!e.to_string().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_valid_record_round_trips_through_both_encodings_unchanged(r in record(), enc in encoding()) {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let e = encode_with_traceparent(&r, enc, Some(tp));
        prop_assert_eq!(&e.key, r.instance_id());
        let hs: Vec<(&str, &[u8])> = e.headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let d = decode(&hs, Some(e.key.as_bytes()), &e.value, &Limits::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&d.record, &r);
        prop_assert_eq!(d.encoding, enc);
        prop_assert_eq!(d.traceparent.as_deref(), Some(tp));
        // Without any header or key, the same bytes still decode to the same record.
        let bare = decode(&[], None, &e.value, &Limits::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(bare.record, r);
    }

    #[test]
    fn the_serde_derive_reads_xclog_json_like_decode_does(r in record()) {
        let e = encode_with_traceparent(&r, Encoding::Json, None);
        let via_serde: Record = serde_json::from_slice(&e.value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(via_serde, r);
    }

    #[test]
    fn arbitrary_bytes_and_headers_never_panic_the_decoder(
        value in vec(any::<u8>(), 0..512),
        key in option::of(vec(any::<u8>(), 0..8)),
        hs in vec((header_name(), header_value()), 0..4),
    ) {
        let h: Vec<(&str, &[u8])> = hs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        if let Err(e) = decode(&h, key.as_deref(), &value, &Limits::default()) {
            assert_range_within(&e, &value, key.as_deref(), &hs);
        }
    }

    #[test]
    fn corrupted_valid_records_never_panic_and_errors_point_inside_the_value(
        r in record(),
        enc in encoding(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in option::of(any::<prop::sample::Index>()),
    ) {
        let mut value = encode_with_traceparent(&r, enc, None).value;
        for (at, byte) in flips {
            let i = at.index(value.len());
            value[i] = byte;
        }
        if let Some(cut) = cut {
            value.truncate(cut.index(value.len() + 1));
        }
        if let Err(e) = decode(&[], None, &value, &Limits::default()) {
            assert_range_within(&e, &value, None, &[]);
        }
    }

    #[test]
    fn tight_limits_never_panic_and_never_alter_an_accepted_record(
        r in record(),
        enc in encoding(),
        max_depth in 0usize..4,
        max_string_bytes in 0usize..8,
        max_array_len in 0usize..3,
    ) {
        let e = encode_with_traceparent(&r, enc, None);
        let limits = Limits { max_record_bytes: usize::MAX, max_depth, max_string_bytes, max_array_len };
        match decode(&[], None, &e.value, &limits) {
            Ok(d) => prop_assert_eq!(d.record, r),
            Err(err) => {
                prop_assert_eq!(err.kind(), xclog_schema::DecodeErrorKind::LimitExceeded, "{}", err);
                assert_range_within(&err, &e.value, None, &[]);
            }
        }
    }
}
