//! Logical field paths shared by both encodings (`event.type`, `causedBy[1]`).
//!
//! Invariant: a path names a field the same way whichever encoding the record came in, so an
//! error message does not depend on the wire format.

use std::fmt;
use std::ops::Range;

use crate::error::DecodeErrorKind;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A logical path from the record root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Path(pub(crate) Vec<Seg>);

impl Path {
    pub(crate) fn root() -> Self {
        Path(Vec::new())
    }

    pub(crate) fn key(&self, key: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    pub(crate) fn index(&self, i: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(record)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// An error found while converting a parsed record into the typed model, before its byte
/// range is known. `inner` is the precise range, when the parser that found the error knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub(crate) kind: DecodeErrorKind,
    pub(crate) path: Path,
    pub(crate) expected: String,
    pub(crate) found: String,
    pub(crate) inner: Option<Range<usize>>,
    /// `None`: `inner` is relative to the whole record value. `Some(field)`: `inner` is
    /// relative to the bytes of that (embedded JSON) field.
    pub(crate) base: Option<Path>,
}

impl FieldError {
    pub(crate) fn malformed(
        path: Path,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        FieldError {
            kind: DecodeErrorKind::Malformed,
            path,
            expected: expected.into(),
            found: found.into(),
            inner: None,
            base: None,
        }
    }
}
