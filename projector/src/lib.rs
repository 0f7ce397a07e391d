//! The xclog projector (being written).
