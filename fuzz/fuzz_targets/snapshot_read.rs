//! Fuzz target: the snapshot reader. Nothing may panic or allocate without bound; whatever
//! decodes re-encodes to the same bytes (one encoding per snapshot), and importing it into an
//! engine with small limits keeps the engine's limits and its tables consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ppsp_tracker::engine::{Engine, EngineConfig, Time};
use ppsp_tracker::snapshot::{decode, encode, Body, HEADER_LEN, MAGIC};

fuzz_target!(|data: &[u8]| {
    // Half the inputs get a valid header around the fuzzer's payload, so that the payload
    // decoder and the import are reached, not only the header checks.
    let framed;
    let bytes = match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => {
            let mut f = Vec::with_capacity(HEADER_LEN + rest.len());
            f.extend_from_slice(&MAGIC);
            f.extend_from_slice(&1u32.to_le_bytes());
            f.extend_from_slice(&(rest.len() as u64).to_le_bytes());
            f.extend_from_slice(&crc32fast::hash(rest).to_le_bytes());
            f.extend_from_slice(rest);
            framed = f;
            &framed[..]
        }
        _ => data,
    };
    if let Ok(body) = decode(bytes) {
        let again = encode(&body);
        assert_eq!(decode(&again).as_ref(), Ok(&body));
        let config = EngineConfig {
            max_peers: 64,
            max_swarms: 16,
            max_swarms_per_peer: 4,
            ..EngineConfig::default()
        };
        let engine = Engine::new(&config);
        let report = engine.import_registrations(&body.registrations, Time::from_secs(10));
        assert_eq!(
            report.imported + report.expired + report.refused,
            body.registrations.len()
        );
        let counts = engine.audit().expect("consistent tables after an import");
        assert!(counts.peers <= 64 && counts.swarms <= 16);
        let _: &Body = &body;
    }
});
