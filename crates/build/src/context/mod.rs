//! Build context scanning (being written).
