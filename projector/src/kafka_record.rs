//! Reading a consumed Kafka record: its bytes as read, then its decode. The projector's consumer
//! and `xclog verify` read records through this one path, so they agree on what a record is.
//!
//! Header names are read as bytes through librdkafka's C API. rdkafka's safe accessors
//! (`Headers::iter`, `try_get`) convert each name with `to_str().unwrap()`, so a record whose
//! header name is not UTF-8 (any producer can send one) would panic the consumer thread. Here
//! such a record decodes to [`ReadError::HeaderName`] and is dead-lettered like any other record
//! that cannot be read.
#![allow(unsafe_code)]

use std::ffi::CStr;

use rdkafka::Message;
use rdkafka::bindings as rdsys;
use rdkafka::message::BorrowedMessage;
use xclog_schema::{DecodeError, DecodeErrorKind, Decoded, Limits};

use crate::batch::RawRecord;

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// A header name is not UTF-8 (header index, name bytes written as lossy UTF-8).
    HeaderName { index: usize, lossy: String },
    /// The record does not decode.
    Decode(DecodeError),
}

impl ReadError {
    /// The record was written with a newer schema version than this build reads: the caller
    /// stops before it instead of dead-lettering it.
    pub(crate) fn is_unsupported_version(&self) -> bool {
        matches!(self, ReadError::Decode(e) if e.kind() == DecodeErrorKind::UnsupportedVersion)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::HeaderName { index, lossy } => write!(
                f,
                "malformed: header {index}: expected a UTF-8 header name, found bytes that are \
                 not UTF-8 (shown with replacement characters: {lossy:?})"
            ),
            ReadError::Decode(e) => std::fmt::Display::fmt(e, f),
        }
    }
}

/// A record as read: its bytes (for the dead-letter topic) and whether its header names were
/// all UTF-8.
#[derive(Debug, Clone)]
pub(crate) struct ReadRecord {
    /// Key, value and headers as read. A header name that is not UTF-8 is kept in lossy form.
    pub(crate) raw: RawRecord,
    header_error: Option<ReadError>,
}

impl ReadRecord {
    /// Copies the record out of librdkafka's buffer.
    pub(crate) fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let mut header_error = None;
        let headers = raw_headers(message)
            .into_iter()
            .enumerate()
            .map(|(index, (name, value))| {
                let name = match String::from_utf8(name) {
                    Ok(name) => name,
                    Err(e) => {
                        let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
                        header_error.get_or_insert(ReadError::HeaderName {
                            index,
                            lossy: lossy.clone(),
                        });
                        lossy
                    }
                };
                (name, value.unwrap_or_default())
            })
            .collect();
        ReadRecord {
            raw: RawRecord {
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers,
            },
            header_error,
        }
    }

    /// Decodes the record (see [`xclog_schema::decode`]).
    pub(crate) fn decode(&self, limits: &Limits) -> Result<Decoded, ReadError> {
        if let Some(error) = &self.header_error {
            return Err(error.clone());
        }
        let headers: Vec<(&str, &[u8])> = self
            .raw
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        xclog_schema::decode(
            &headers,
            self.raw.key.as_deref(),
            self.raw.value.as_deref().unwrap_or(&[]),
            limits,
        )
        .map_err(ReadError::Decode)
    }
}

/// The message's headers in order, names as bytes; a header without a value has `None`.
fn raw_headers(message: &BorrowedMessage<'_>) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut headers: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` points to the librdkafka message `message` borrows, valid for
    // this call; `rd_kafka_message_headers` only writes the headers pointer (owned by the
    // message, not to be freed) into `headers`.
    let err = unsafe { rdsys::rd_kafka_message_headers(message.ptr(), &mut headers) };
    if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return Vec::new();
    }
    // SAFETY: `headers` is the message's non-null header list, alive as long as `message`.
    let count = unsafe { rdsys::rd_kafka_header_cnt(headers) };
    let mut out = Vec::with_capacity(count);
    for idx in 0..count {
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let mut value: *const std::os::raw::c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `idx < count`; librdkafka writes pointers into its own header storage, which
        // lives as long as `message`; they are copied below before `message` can go.
        let err = unsafe {
            rdsys::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size)
        };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        // SAFETY: librdkafka stores header names NUL-terminated; `name` is non-null.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes().to_vec();
        let value = (!value.is_null()).then(|| {
            // SAFETY: `value` points to `size` bytes of the header's value (non-null checked).
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec()
        });
        out.push((name, value));
    }
    out
}
