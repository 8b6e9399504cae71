//! Unit tests of the parser: one group per syntax rule.

use super::*;
use crate::dump::dump;

fn dumped(source: &str) -> String {
    match parse(source) {
        Ok(file) => dump(&file),
        Err(error) => panic!("parse failed: {error}"),
    }
}

#[test]
fn simple_file() {
    assert_eq!(
        dumped("FROM busybox\nRUN echo hi\n"),
        "(from \"busybox\")\n(run \"echo hi\")\n"
    );
}
