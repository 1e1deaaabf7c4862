//! Any byte string must parse to a `GgufFile` or a `GgufError`, never panic, and a file that
//! parses must hand out every key and exactly `n_bytes` of data for every tensor.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = gguf::GgufFile::from_bytes(data.to_vec()) {
        for (key, value) in &file.metadata {
            assert!(file.get(key).is_some_and(|got| std::ptr::eq(got, value)));
        }
        for info in &file.tensors {
            assert!(file.tensor(&info.name).is_some());
            assert_eq!(file.tensor_data(info).len() as u64, info.n_bytes);
        }
    }
});
