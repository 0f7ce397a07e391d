//! The one place that decides what a MongoDB error means for the pipeline: retry the batch,
//! dead-letter a record, or stop.

use crate::sink::SinkError;

/// The one place that decides what a MongoDB error means for the pipeline.
///
/// * network, pool, server selection, shutdown, not-primary, interrupted, timeouts, write
///   conflicts, unsatisfied write concern, anything labelled `RetryableWriteError`, and
///   `InternalError` (code 1: FerretDB's answer while its backend is down):
///   [`SinkError::Transient`] (retry the same batch);
/// * the server refuses a document's content (too large, bad field names, validation,
///   duplicate key where one is not expected, BSON it cannot take): [`SinkError::Rejected`];
/// * authentication, authorization, bad arguments, unsupported commands: [`SinkError::Fatal`].
pub fn classify(error: mongodb::error::Error, context: &'static str) -> SinkError {
    use mongodb::error::{ErrorKind, WriteFailure};
    if error.contains_label("RetryableWriteError")
        || error.contains_label("TransientTransactionError")
    {
        return SinkError::Transient {
            context,
            source: Box::new(error),
        };
    }
    let code = match error.kind.as_ref() {
        ErrorKind::Command(c) => Some((c.code, c.message.clone())),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some((w.code, w.message.clone())),
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => {
            return SinkError::Transient {
                context,
                source: Box::new(error),
            };
        }
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|w| w.first())
            .map(|w| (w.code, w.message.clone())),
        _ => None,
    };
    if let Some((code, message)) = code {
        return match code_class(code) {
            CodeClass::Transient => SinkError::Transient {
                context,
                source: Box::new(error),
            },
            CodeClass::Content => SinkError::Rejected {
                context,
                reason: format!("code {code}: {message}"),
            },
            CodeClass::Fatal => SinkError::Fatal {
                context,
                source: Box::new(error),
            },
        };
    }
    match error.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::InvalidResponse { .. }
        | ErrorKind::Shutdown
        | ErrorKind::Write(_)
        | ErrorKind::InsertMany(_) => SinkError::Transient {
            context,
            source: Box::new(error),
        },
        ErrorKind::BsonSerialization(_) => SinkError::Rejected {
            context,
            reason: error.to_string(),
        },
        _ => SinkError::Fatal {
            context,
            source: Box::new(error),
        },
    }
}

/// [`classify`] for a server error code read from a bulk reply's `writeErrors`.
pub(super) fn classify_code(code: i32, message: String, context: &'static str) -> SinkError {
    let class = match code_class(code) {
        // FerretDB answers InternalError both while its PostgreSQL backend is unreachable and
        // for a PostgreSQL error it does not translate (FerretDB-only; MongoDB's rare
        // InternalError is retried like any other transient one); the latter quotes the SQLSTATE, and a
        // data-class one (22 data exception, 23 integrity, 54 program limit such as an index
        // entry too large) is the record's content, not an outage: retrying would never end.
        CodeClass::Transient if code == 1 && names_content_sqlstate(&message) => CodeClass::Content,
        class => class,
    };
    match class {
        CodeClass::Transient => SinkError::Transient {
            context,
            source: format!("code {code}: {message}").into(),
        },
        CodeClass::Content => SinkError::Rejected {
            context,
            reason: format!("code {code}: {message}"),
        },
        CodeClass::Fatal => SinkError::Fatal {
            context,
            source: format!("code {code}: {message}").into(),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeClass {
    Transient,
    Content,
    Fatal,
}

/// Whether a server message quotes a PostgreSQL SQLSTATE of class 22, 23 or 54.
fn names_content_sqlstate(message: &str) -> bool {
    message.match_indices("SQLSTATE ").any(|(at, m)| {
        let code = &message[at + m.len()..];
        ["22", "23", "54"]
            .iter()
            .any(|class| code.starts_with(class))
    })
}

fn code_class(code: i32) -> CodeClass {
    match code {
        // HostUnreachable, HostNotFound, LockTimeout, LockBusy, MaxTimeMSExpired,
        // WriteConcernFailed, NetworkTimeout, ShutdownInProgress, WriteConflict,
        // ConflictingOperationInProgress, ReadConcernMajorityNotAvailableYet,
        // PrimarySteppedDown, NetworkInterfaceExceededTimeLimit, ExceededTimeLimit,
        // SocketException, NotWritablePrimary, InterruptedAtShutdown, Interrupted,
        // InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary,
        // StaleConfig, CursorKilled, ...
        // InternalError: what FerretDB answers while its PostgreSQL backend is unreachable.
        1 | 6 | 7 | 24 | 46 | 50 | 64 | 89 | 91 | 112 | 117 | 134 | 189 | 202 | 262 | 9001
        | 10107 | 11600 | 11601 | 11602 | 13435 | 13436 | 13388 | 237 => CodeClass::Transient,
        // BadValue, Overflow, InvalidLength, InvalidBSON, DollarPrefixedFieldName,
        // EmptyFieldName, DottedFieldName, DocumentValidationFailure, BSONObjectTooLarge,
        // DuplicateKey, KeyTooLong, document too large, too deeply nested, ...
        2 | 15 | 16 | 22 | 52 | 55 | 56 | 57 | 121 | 10334 | 11000 | 17280 | 17419 | 17420
        | 15983 => CodeClass::Content,
        _ => CodeClass::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::ErrorClass;

    #[test]
    fn an_internal_error_quoting_a_data_class_sqlstate_is_the_records_content_else_transient() {
        let too_long = "ERROR: index row size 3016 exceeds btree version 4 maximum 2704 for \
                        index \"events_x\" (SQLSTATE 54000)";
        assert_eq!(
            classify_code(1, too_long.into(), "t").class(),
            ErrorClass::Rejected
        );
        assert_eq!(
            classify_code(1, "invalid byte sequence (SQLSTATE 22021)".into(), "t").class(),
            ErrorClass::Rejected
        );
        assert_eq!(
            classify_code(
                1,
                "failed to connect to `host=127.0.0.1` (SQLSTATE 08006)".into(),
                "t"
            )
            .class(),
            ErrorClass::Transient
        );
        assert_eq!(
            classify_code(1, "connection refused".into(), "t").class(),
            ErrorClass::Transient
        );
    }

    #[test]
    fn server_codes_are_classified_by_what_the_pipeline_must_do() {
        for code in [
            1, 6, 7, 89, 91, 189, 10107, 11600, 11602, 13435, 112, 262, 9001,
        ] {
            assert_eq!(code_class(code), CodeClass::Transient, "{code}");
        }
        for code in [2, 52, 56, 57, 121, 10334, 11000, 17419] {
            assert_eq!(code_class(code), CodeClass::Content, "{code}");
        }
        for code in [13, 18, 26, 59, 238, 0] {
            assert_eq!(code_class(code), CodeClass::Fatal, "{code}");
        }
        assert_eq!(
            classify_code(10334, "too big".into(), "t").class(),
            ErrorClass::Rejected
        );
    }
}
