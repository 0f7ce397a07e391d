//! The xclog producer (being written).
