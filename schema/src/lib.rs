//! The xclog wire contract (being written).
