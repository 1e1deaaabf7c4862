//! Any byte string must load as an `HfTokenizer` or give an `HfError`, never panic; a tokenizer
//! that loads must encode and decode without panicking, with every offset inside the text on
//! character boundaries. The input's first line is also encoded, so the fuzzer steers the text
//! as well as the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenizer::hf::HfTokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(tok) = HfTokenizer::from_json(data) else {
        return;
    };
    let first_line = String::from_utf8_lossy(data.split(|&b| b == b'\n').next().unwrap_or(&[]));
    for text in [
        "",
        "Hello, World! [MASK] naïve 中文 123",
        first_line.as_ref(),
    ] {
        for add_special in [false, true] {
            let encoding = tok.encode_with_offsets(text, add_special);
            assert_eq!(encoding.ids.len(), encoding.offsets.len());
            for &(start, end) in &encoding.offsets {
                assert!(start <= end && end <= text.len());
                assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
            }
            let _ = tok.decode(&encoding.ids, !add_special);
        }
    }
});
