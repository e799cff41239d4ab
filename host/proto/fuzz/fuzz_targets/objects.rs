//! The signed JSON objects the server parses must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = serde_json::from_slice::<cleanroom_proto::policy::SignedPolicy>(data) {
        let _ = p.verify();
    }
    let _ = serde_json::from_slice::<cleanroom_proto::RunRequest>(data);
    if let Ok(r) = serde_json::from_slice::<cleanroom_proto::SignedReceipt>(data) {
        let _ = r.verify(None);
    }
});
