//! Engine tests with a fake clock.

use super::*;

#[test]
fn new_engine_is_empty_and_consistent() {
    let engine = Engine::new(&EngineConfig::default());
    assert_eq!(engine.audit(), Ok(TableCounts::default()));
}
