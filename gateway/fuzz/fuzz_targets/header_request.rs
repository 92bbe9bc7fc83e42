//! Request decoding never panics, respects its bounds, and re-encodes exactly (in the
//! lowest version that carries the request, never a higher one than received).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait_gateway::proto::header::*;

fuzz_target!(|input: &[u8]| {
    match decode_entry_request(input) {
        Ok(Progress::Complete(d)) => {
            assert!(d.consumed <= input.len().min(MAX_FRAME_LEN));
            assert!((1..=VERSION).contains(&d.version));
            let mut again = Vec::new();
            encode_entry_request(d.frame.link.as_ref(), &d.frame.request, &mut again);
            assert!(again[4] <= d.version);
            let mut canonical = input[..d.consumed].to_vec();
            canonical[4] = again[4];
            assert_eq!(again, canonical);
        }
        Ok(Progress::Incomplete { needed }) => assert!(needed > input.len() && needed <= MAX_FRAME_LEN),
        Err(_) => {}
    }
});
