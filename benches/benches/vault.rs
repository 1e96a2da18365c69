//! Cost of the key vault: deriving a key (SLIP-0010, three hardened steps below the seed,
//! plus the Ed25519 public key) and unlocking a vault file (Argon2id of the password, then
//! AES-256-GCM), at the default Argon2id cost (64 MiB, 3 passes, 1 lane) and at the
//! minimum a file may have (8 MiB, 1 pass).

use std::hint::black_box;

use alknet_vault::{parse_mnemonic, KdfParams, KeyPurpose, Vault};
use criterion::{criterion_group, criterion_main, Criterion};

const WORDS: &str = "legal winner thank year wave sausage worth useful legal winner thank yellow";
const PASSWORD: &[u8] = b"correct horse battery staple";

fn vault_with(dir: &std::path::Path, name: &str, params: KdfParams) -> Vault {
    let mnemonic = parse_mnemonic(WORDS).expect("words");
    Vault::create(&dir.join(name), &mnemonic, "", PASSWORD, params).expect("create")
}

fn derivation(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let minimum = KdfParams {
        memory_kib: alknet_vault::file::MIN_KDF_MEMORY_KIB,
        iterations: 1,
        lanes: 1,
    };
    let vault = vault_with(dir.path(), "v", minimum);
    let purpose = KeyPurpose::Client("alice".into());
    c.bench_function("vault/derive_client_key", |b| {
        b.iter(|| black_box(vault.derive(black_box(&purpose))))
    });
}

fn unlock(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let minimum = KdfParams {
        memory_kib: alknet_vault::file::MIN_KDF_MEMORY_KIB,
        iterations: 1,
        lanes: 1,
    };
    let cases = [
        ("vault/unlock_default_64MiB_t3", KdfParams::DEFAULT),
        ("vault/unlock_minimum_8MiB_t1", minimum),
    ];
    let mut group = c.benchmark_group("unlock");
    // each unlock takes tens to hundreds of milliseconds by design
    group.sample_size(10);
    for (name, params) in cases {
        let path = vault_with(dir.path(), name.replace('/', "_").as_str(), params)
            .path()
            .to_path_buf();
        group.bench_function(name, |b| {
            b.iter(|| black_box(Vault::open(&path, PASSWORD).expect("open")))
        });
    }
    group.finish();
}

criterion_group!(benches, derivation, unlock);
criterion_main!(benches);
