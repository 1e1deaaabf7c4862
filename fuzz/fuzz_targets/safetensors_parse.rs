//! Any bytes given to the safetensors reader are an error or a file whose every tensor reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = safetensors_file::SafeTensors::from_bytes(data.to_vec()) {
        for info in file.tensors() {
            let bytes = file.bytes(&info.name).expect("a listed tensor is found");
            assert_eq!(bytes.len() as u64 * 8, info.elements() * info.dtype.bits());
            if let Ok(values) = file.to_f32_vec(&info.name) {
                assert_eq!(values.len() as u64, info.elements());
            }
        }
    }
});
