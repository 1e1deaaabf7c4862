//! Any bytes given to the vector index reader are an error or an index whose every id and
//! vector reads back and which can be searched.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = retrieve::VectorIndex::from_bytes(data) {
        for i in 0..index.len() {
            let _ = index.id(i);
            assert_eq!(index.vector(i).len(), index.dim());
        }
        let pool = kernels::ThreadPool::new(1);
        let hits = index.search(&pool, kernels::Level::current(), &vec![1.0; index.dim()], 2).expect("a query of the index's dimension");
        assert_eq!(hits[0].len(), index.len().min(2));
    }
});
