//! The HTTP API of the network License Management Service, as JSON bodies: one definition for
//! the client in the library and the server `wmlicense-service` (and `service/openapi.json`,
//! which a test keeps true). Byte strings travel as lower-case hex.

use super::{
    hex, hex_array, unhex, DeviceCount, Grant, GrantReply, GrantRequest, ReleaseReply,
    ReleaseRequest, ResetReply, ResetRequest, ServiceKey,
};
use crate::crypto::{SealedKey, ENCAPPED_LEN, SEALED_KEY_LEN};
use crate::error::Error;
use crate::format::Header;
use serde::{Deserialize, Serialize};

pub const PATH_SERVICE_KEY: &str = "/v1/service-key";
pub const PATH_GRANT: &str = "/v1/grant";
pub const PATH_RELEASE: &str = "/v1/release";
pub const PATH_RESET: &str = "/v1/reset";
pub const PATH_HEALTH: &str = "/v1/health";
/// Largest request body a service accepts.
pub const MAX_BODY: usize = 64 * 1024;

/// `GET /v1/service-key`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    pub key_id: String,
    pub public_key: String,
}

/// `POST /v1/grant`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub request_id: String,
    /// The backup's whole header.
    pub header: String,
    pub device_id: String,
    pub device_public_key: String,
    #[serde(default)]
    pub dry_run: bool,
}

/// 200 answer of `POST /v1/grant`.
#[derive(Serialize, Deserialize, Debug)]
pub struct GrantAnswer {
    /// "data_key", "verify_key" or "verdict".
    pub grant: String,
    /// The sealed key (encapsulated key ‖ ciphertext), absent for a verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    pub devices_used: u32,
    pub device_limit: u32,
}

/// `POST /v1/release`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    pub request_id: String,
    pub device_id: String,
    pub device_public_key: String,
    pub service_key_id: String,
    pub proof: String,
}

/// 200 answer of `POST /v1/release`.
#[derive(Serialize, Deserialize, Debug)]
pub struct ReleaseAnswer {
    pub lineages: Vec<String>,
    pub devices_used: u32,
    pub device_limit: u32,
}

/// `POST /v1/reset`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    pub request_id: String,
    pub header: String,
}

/// 200 answer of `POST /v1/reset`.
#[derive(Serialize, Deserialize, Debug)]
pub struct ResetAnswer {
    pub lineages: Vec<String>,
    pub devices_freed: u64,
    pub devices_used: u32,
    pub device_limit: u32,
}

/// Every 4xx/5xx answer.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct ErrorBody {
    /// A stable code: see [`error_code`].
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices_used: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_limit: Option<u32>,
}

/// A request body that does not say what it must: a 400.
#[derive(Debug)]
pub struct BadRequest(pub String);

fn field<const N: usize>(name: &str, v: &str) -> Result<[u8; N], BadRequest> {
    hex_array(v).ok_or_else(|| BadRequest(format!("{name} must be {} hex digits", 2 * N)))
}

fn sealed_of(name: &str, v: &str) -> Result<SealedKey, BadRequest> {
    let b: [u8; ENCAPPED_LEN + SEALED_KEY_LEN] = field(name, v)?;
    Ok(SealedKey {
        encapped: b[..ENCAPPED_LEN].try_into().unwrap(),
        ciphertext: b[ENCAPPED_LEN..].try_into().unwrap(),
    })
}

fn sealed_hex(s: &SealedKey) -> String {
    hex(&[&s.encapped[..], &s.ciphertext[..]].concat())
}

/// Parses a backup header sent in a body; a malformed one is a corrupt backup (422), not a bad
/// request: the client read it from a file.
fn header_of(v: &str) -> Result<Result<Header, Error>, BadRequest> {
    let b = unhex(v).ok_or_else(|| BadRequest("header must be hex".into()))?;
    Ok(Header::parse(&b))
}

impl GrantBody {
    pub fn of(r: &GrantRequest) -> GrantBody {
        GrantBody {
            request_id: hex(&r.request_id),
            header: hex(&r.header.to_bytes()),
            device_id: hex(&r.device_id),
            device_public_key: hex(&r.device_public_key),
            dry_run: r.dry_run,
        }
    }

    pub fn parse(&self) -> Result<Result<GrantRequest, Error>, BadRequest> {
        let request_id = field("request_id", &self.request_id)?;
        let device_id = field("device_id", &self.device_id)?;
        let device_public_key = field("device_public_key", &self.device_public_key)?;
        if !crate::crypto::is_usable_public_key(&device_public_key) {
            return Err(BadRequest(
                "device_public_key is not a usable X25519 public key".into(),
            ));
        }
        Ok(header_of(&self.header)?.map(|header| GrantRequest {
            request_id,
            header,
            device_id,
            device_public_key,
            dry_run: self.dry_run,
        }))
    }
}

impl GrantAnswer {
    pub fn of(r: &GrantReply) -> GrantAnswer {
        let (grant, sealed) = match &r.grant {
            Grant::DataKey(s) => ("data_key", Some(sealed_hex(s))),
            Grant::VerifyKey(s) => ("verify_key", Some(sealed_hex(s))),
            Grant::Verdict => ("verdict", None),
        };
        GrantAnswer {
            grant: grant.into(),
            sealed,
            devices_used: r.devices.used,
            device_limit: r.devices.limit,
        }
    }

    pub fn parse(&self) -> Result<GrantReply, BadRequest> {
        let sealed = || sealed_of("sealed", self.sealed.as_deref().unwrap_or(""));
        let grant = match self.grant.as_str() {
            "data_key" => Grant::DataKey(sealed()?),
            "verify_key" => Grant::VerifyKey(sealed()?),
            "verdict" => Grant::Verdict,
            other => return Err(BadRequest(format!("unknown grant kind {other:?}"))),
        };
        Ok(GrantReply {
            grant,
            devices: DeviceCount {
                used: self.devices_used,
                limit: self.device_limit,
            },
        })
    }
}

impl ReleaseBody {
    pub fn of(r: &ReleaseRequest) -> ReleaseBody {
        ReleaseBody {
            request_id: hex(&r.request_id),
            device_id: hex(&r.device_id),
            device_public_key: hex(&r.device_public_key),
            service_key_id: hex(&r.service_key_id),
            proof: sealed_hex(&r.proof),
        }
    }

    pub fn parse(&self) -> Result<ReleaseRequest, BadRequest> {
        Ok(ReleaseRequest {
            request_id: field("request_id", &self.request_id)?,
            device_id: field("device_id", &self.device_id)?,
            device_public_key: field("device_public_key", &self.device_public_key)?,
            service_key_id: field("service_key_id", &self.service_key_id)?,
            proof: sealed_of("proof", &self.proof)?,
        })
    }
}

fn lineages_hex(ls: &[[u8; 16]]) -> Vec<String> {
    ls.iter().map(|l| hex(l)).collect()
}

fn lineages_of(ls: &[String]) -> Result<Vec<[u8; 16]>, BadRequest> {
    ls.iter().map(|l| field("lineage", l)).collect()
}

impl ReleaseAnswer {
    pub fn of(r: &ReleaseReply) -> ReleaseAnswer {
        ReleaseAnswer {
            lineages: lineages_hex(&r.lineages),
            devices_used: r.devices.used,
            device_limit: r.devices.limit,
        }
    }

    pub fn parse(&self) -> Result<ReleaseReply, BadRequest> {
        Ok(ReleaseReply {
            lineages: lineages_of(&self.lineages)?,
            devices: DeviceCount {
                used: self.devices_used,
                limit: self.device_limit,
            },
        })
    }
}

impl ResetBody {
    pub fn of(r: &ResetRequest) -> ResetBody {
        ResetBody {
            request_id: hex(&r.request_id),
            header: hex(&r.header.to_bytes()),
        }
    }

    pub fn parse(&self) -> Result<Result<ResetRequest, Error>, BadRequest> {
        let request_id = field("request_id", &self.request_id)?;
        Ok(header_of(&self.header)?.map(|header| ResetRequest { request_id, header }))
    }
}

impl ResetAnswer {
    pub fn of(r: &ResetReply) -> ResetAnswer {
        ResetAnswer {
            lineages: lineages_hex(&r.lineages),
            devices_freed: r.devices_freed,
            devices_used: r.devices.used,
            device_limit: r.devices.limit,
        }
    }

    pub fn parse(&self) -> Result<ResetReply, BadRequest> {
        Ok(ResetReply {
            lineages: lineages_of(&self.lineages)?,
            devices_freed: self.devices_freed,
            devices: DeviceCount {
                used: self.devices_used,
                limit: self.device_limit,
            },
        })
    }
}

impl KeyBody {
    pub fn of(k: &ServiceKey) -> KeyBody {
        KeyBody {
            key_id: hex(&k.key_id),
            public_key: hex(&k.public_key),
        }
    }

    pub fn parse(&self) -> Result<ServiceKey, BadRequest> {
        Ok(ServiceKey {
            key_id: field("key_id", &self.key_id)?,
            public_key: field("public_key", &self.public_key)?,
        })
    }
}

/// The HTTP status and stable error code a service answers a failed decision with.
pub fn error_code(e: &Error) -> (u16, &'static str) {
    match e {
        Error::RestoreFraud { .. } => (403, "restore_limit"),
        Error::TooManyResets(_) => (409, "too_many_resets"),
        Error::BackupCorrupt(_) => (422, "backup_corrupt"),
        Error::AccessDenied(_) => (403, "proof_invalid"),
        Error::InvalidArg(_) => (409, "request_id_reused"),
        Error::BackupRestore(_) => (422, "refused"),
        Error::ServiceUnavailable(_) | Error::Store(_) => (503, "unavailable"),
        _ => (500, "internal"),
    }
}

impl ErrorBody {
    /// The body a service answers `e` with (never a key: errors carry none).
    pub fn of(e: &Error) -> (u16, ErrorBody) {
        let (status, code) = error_code(e);
        let mut body = ErrorBody {
            error: code.into(),
            message: match e {
                // The bare message: the client adds its own context.
                Error::RestoreFraud { message, .. } => message.clone(),
                Error::BackupCorrupt(m)
                | Error::TooManyResets(m)
                | Error::AccessDenied(m)
                | Error::InvalidArg(m)
                | Error::BackupRestore(m) => m.clone(),
                other => other.to_string(),
            },
            ..ErrorBody::default()
        };
        if let Error::RestoreFraud {
            help_url,
            devices_used,
            device_limit,
            ..
        } = e
        {
            body.help_url = help_url.clone();
            body.devices_used = Some(*devices_used);
            body.device_limit = Some(*device_limit);
        }
        (status, body)
    }

    /// A bad request's body.
    pub fn bad_request(message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: "bad_request".into(),
            message: message.into(),
            ..ErrorBody::default()
        }
    }

    /// What the library makes of a refusal it received (`None`: a transient failure, retry).
    pub fn into_error(self, status: u16) -> Option<Error> {
        let m = self.message;
        Some(match self.error.as_str() {
            "restore_limit" => Error::RestoreFraud {
                message: m,
                help_url: self.help_url,
                devices_used: self.devices_used.unwrap_or(0),
                device_limit: self.device_limit.unwrap_or(0),
            },
            "too_many_resets" => Error::TooManyResets(m),
            "backup_corrupt" => Error::BackupCorrupt(m),
            "proof_invalid" | "refused" => Error::BackupRestore(m),
            "request_id_reused" => Error::InvalidArg(m),
            _ if status == 429 || status >= 500 => return None,
            _ => Error::BackupRestore(format!(
                "the License Management Service refused the request ({status} {}): {m}",
                self.error
            )),
        })
    }
}
