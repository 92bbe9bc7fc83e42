//! Request decoding never panics, respects its bounds, and re-encodes exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait_gateway::proto::header::*;

fuzz_target!(|input: &[u8]| {
    match decode_request(input) {
        Ok(Progress::Complete(d)) => {
            assert!(d.consumed <= input.len().min(MAX_FRAME_LEN));
            let mut again = Vec::new();
            encode_request(&d.frame, &mut again);
            assert_eq!(again, &input[..d.consumed]);
        }
        Ok(Progress::Incomplete { needed }) => assert!(needed > input.len() && needed <= MAX_FRAME_LEN),
        Err(_) => {}
    }
});
