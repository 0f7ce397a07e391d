//! Each limit is enforced, in both encodings, with the field and bytes that broke it.

use serde_json::json;
use xclog_schema::{
    DecodeErrorKind, Encoding, FsmEvent, Limits, PersistedEvent, Record, decode, encode,
};

fn event_with(payload: serde_json::Value, caused_by: Vec<String>, component: &str) -> Record {
    Record::Event(PersistedEvent {
        id: "e1".into(),
        instance_id: "i1".into(),
        machine_name: "M".into(),
        component_name: component.into(),
        event: FsmEvent {
            event_type: "GO".into(),
            payload,
            timestamp: None,
            extra: serde_json::Map::new(),
        },
        state_before: String::new(),
        state_after: "A".into(),
        persisted_at: 1,
        caused_by,
        caused: vec![],
        source_component_name: None,
        target_component_name: None,
        public_member_snapshot: None,
        sequence: None,
    })
}

fn rejected(r: &Record, limits: &Limits) -> Vec<(Encoding, xclog_schema::DecodeError, Vec<u8>)> {
    [Encoding::Json, Encoding::Protobuf]
        .into_iter()
        .map(|enc| {
            let value = encode(r, enc).value;
            let err = decode(&[], None, &value, limits).expect_err("the limit rejects the record");
            (enc, err, value)
        })
        .collect()
}

#[test]
fn a_record_larger_than_max_record_bytes_is_rejected_whole() {
    let r = event_with(json!({"blob": "x".repeat(300)}), vec![], "C");
    let limits = Limits {
        max_record_bytes: 200,
        ..Limits::default()
    };
    for (enc, err, value) in rejected(&r, &limits) {
        assert_eq!(err.kind(), DecodeErrorKind::LimitExceeded, "{enc:?}");
        assert_eq!(err.field(), "(record)");
        assert_eq!(err.range(), 0..value.len());
    }
}

#[test]
fn nesting_deeper_than_max_depth_is_rejected_at_the_first_level_too_deep() {
    // root (1) > event (2) > payload (3) > a (4) > b (5)
    let r = event_with(json!({"a": {"b": {}}}), vec![], "C");
    let limits = Limits {
        max_depth: 4,
        ..Limits::default()
    };
    for (enc, err, value) in rejected(&r, &limits) {
        assert_eq!(err.kind(), DecodeErrorKind::LimitExceeded, "{enc:?}");
        assert_eq!(err.field(), "event.payload.a.b", "{enc:?}");
        assert_eq!(&value[err.range()], b"{", "{enc:?}: {err}");
        assert!(err.to_string().contains("at most 4 levels"), "{err}");
    }
    let ok = Limits {
        max_depth: 5,
        ..Limits::default()
    };
    for enc in [Encoding::Json, Encoding::Protobuf] {
        assert!(decode(&[], None, &encode(&r, enc).value, &ok).is_ok());
    }
}

#[test]
fn a_string_longer_than_max_string_bytes_is_rejected_with_its_field() {
    let r = event_with(json!({}), vec![], "a-component-name-that-is-long");
    // 20 bytes still admits the longest field name, `publicMemberSnapshot`.
    let limits = Limits {
        max_string_bytes: 20,
        ..Limits::default()
    };
    for (enc, err, value) in rejected(&r, &limits) {
        assert_eq!(err.kind(), DecodeErrorKind::LimitExceeded, "{enc:?}");
        assert_eq!(err.field(), "componentName", "{enc:?}");
        let bytes = String::from_utf8_lossy(&value[err.range()]).into_owned();
        assert!(
            bytes.contains("a-component-name-that-is-long"),
            "{enc:?}: {bytes}"
        );
    }
}

#[test]
fn an_array_longer_than_max_array_len_is_rejected_with_its_field() {
    let r = event_with(json!({}), vec!["a".into(), "b".into(), "c".into()], "C");
    let limits = Limits {
        max_array_len: 2,
        ..Limits::default()
    };
    for (enc, err, _) in rejected(&r, &limits) {
        assert_eq!(err.kind(), DecodeErrorKind::LimitExceeded, "{enc:?}");
        assert!(err.field().starts_with("causedBy"), "{enc:?}: {err}");
    }
}

#[test]
fn a_payload_array_longer_than_max_array_len_is_rejected_in_both_encodings() {
    let r = event_with(json!({"items": [1, 2, 3]}), vec![], "C");
    let limits = Limits {
        max_array_len: 2,
        ..Limits::default()
    };
    for (enc, err, _) in rejected(&r, &limits) {
        assert_eq!(err.kind(), DecodeErrorKind::LimitExceeded, "{enc:?}");
        assert_eq!(err.field(), "event.payload.items", "{enc:?}: {err}");
    }
}

#[test]
fn a_max_depth_above_serde_json_recursion_limit_still_reports_a_depth_limit() {
    let deep = format!(
        r#"{{"id":"e1","instanceId":"i1","machineName":"M","componentName":"C","event":{{"type":"GO","payload":{{"d":{}{}}}}},"stateBefore":"","stateAfter":"A","persistedAt":1}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let limits = Limits {
        max_depth: 10_000,
        ..Limits::default()
    };
    let err = decode(&[], None, deep.as_bytes(), &limits).expect_err("too deep");
    assert_eq!(err.kind(), DecodeErrorKind::LimitExceeded, "{err}");
    assert!(err.to_string().contains("at most 127 levels"), "{err}");
}
