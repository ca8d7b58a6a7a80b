//! What the service's integration tests share.

use wmlicense_core::crypto::{self, SealedKey};
use wmlicense_core::format::{Header, VERSION};
use wmlicense_core::service::ServiceKey;

/// A backup header over `lineages` (the first one the backup's own), sealed to `key`: what a
/// client that holds a backup sends, and what anyone can forge with the service's public key.
pub fn sealed_header(key: &ServiceKey, lineages: &[[u8; 16]]) -> Header {
    let mut h = Header {
        version: VERSION,
        backup_id: crypto::random_array().unwrap(),
        lineage_id: lineages[0],
        source_device_id: [3; 16],
        created_at: 1,
        license_count: 0,
        service_key_id: key.key_id,
        chunk_size: 4096,
        lineages: lineages.to_vec(),
        sealed_data_key: SealedKey {
            encapped: [0; 32],
            ciphertext: [0; 48],
        },
    };
    h.seal_data_key(&key.public_key, &[7; 32]).unwrap();
    h
}
