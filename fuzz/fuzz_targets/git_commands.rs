//! The gix backend's conversation after the request line, for both services: upload-pack
//! v2 (`command=ls-refs` / `command=fetch` and their arguments), upload-pack v0 (wants,
//! haves, done) and receive-pack (ref updates, push options, the pack), the `filter`
//! spec of partial clone on its own and the pattern file of its `sparse:oid=`, fed arbitrary
//! bytes against an empty bare repository. Nothing may panic; whatever is pushed must not
//! leave a quarantine or change a ref when refused.
#![no_main]

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use alknet_git::native::filter::{self, ObjectFilter, Place};
use alknet_git::native::sparse::{self, SparsePatterns};
use alknet_git::native::{NativeCommand, NativeLimits};
use alknet_git::Service;
use libfuzzer_sys::fuzz_target;

fn repo() -> &'static std::path::Path {
    static DIR: OnceLock<(tempfile::TempDir, std::path::PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo =
            alknet_git::repo::create_bare(tmp.path(), "fuzz.git", "main").expect("create");
        (tmp, repo.dir)
    })
    .1
}

/// Levels of `combine:` and sub-filters, all levels together.
fn shape(filter: &ObjectFilter) -> (usize, usize) {
    match filter {
        ObjectFilter::Combine(subs) => subs.iter().fold((1, subs.len()), |(d, n), s| {
            let (sd, sn) = shape(s);
            (d.max(sd + 1), n + sn)
        }),
        _ => (0, 0),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let (service, version) = match which % 5 {
        0 => (Service::UploadPack, 2),
        1 => (Service::UploadPack, 0),
        2 => (Service::ReceivePack, 0),
        3 => {
            // a fetch's `filter <spec>` (partial clone) on its own: whatever parses stays
            // within the stated bounds of `combine:` nesting and width; its `sparse:oid=`
            // names are read as pattern files
            if let Ok(mut filter) = ObjectFilter::parse(input) {
                let (depth, subs) = shape(&filter);
                assert!(depth <= filter::MAX_FILTER_DEPTH, "{filter:?}");
                assert!(subs <= filter::MAX_COMBINED_FILTERS, "{filter:?}");
                let loaded = filter.load_sparse(&mut |name| {
                    SparsePatterns::parse(
                        name.as_bytes(),
                        sparse::MAX_SPARSE_FILE_BYTES,
                        sparse::MAX_SPARSE_PATTERNS,
                    )
                    .map_err(|e| e.to_string())
                });
                if loaded.is_ok() && filter.needs_paths() {
                    let marks = filter.marks_of_dir(&Place::ROOT);
                    let _ = filter.marks_of_dir(&Place {
                        depth: 1,
                        path: b"a/b",
                        marks,
                    });
                }
            }
            return;
        }
        _ => {
            // a `sparse:oid=` pattern file: bounded, and matching any path terminates
            // (small bounds, so that the fuzzer reaches them)
            match SparsePatterns::parse(input, 4096, 64) {
                Ok(patterns) => {
                    assert!(patterns.len() <= 64);
                    for path in input.split(|b| *b == b'\n').take(8) {
                        let path = path.strip_prefix(b"/").unwrap_or(path);
                        patterns.decide(path, true);
                        patterns.decide(path, false);
                    }
                }
                Err(_) => assert!(
                    input.len() > 4096 || input.iter().filter(|b| **b == b'\n').count() >= 64
                ),
            }
            return;
        }
    };
    let command = NativeCommand {
        service,
        dir: repo().to_path_buf(),
        version,
        allow_force_push: false,
        limits: NativeLimits {
            max_negotiation_lines: 64,
            max_object_bytes: 1 << 20,
            max_check_objects: 1024,
            ..NativeLimits::default()
        },
    };
    let mut output = Vec::new();
    let mut input = input;
    let _ = command.run(&mut input, &mut output, &AtomicBool::new(false));
});
