//! Rewriting files of older schema versions, inside the open transaction.
//!
//! Version 2 added fields to the function settings (CGI, content type,
//! file bundle, outbound hosts) and to function records (version,
//! history). Version 1 records are decoded with the old shapes, kept here
//! as they were, and written back in the new ones.

use orb_proto::wire::{CallLimits, FunctionSettings};
use orb_proto::{ContentHash, OrbId};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::{
    FUNCTIONS, FunctionRecord, FunctionVersion, HOSTED, HostedRecord, StoreError, db_err, dec, enc,
};

/// `FunctionSettings` as schema version 1 stored it.
#[derive(Serialize, Deserialize)]
struct SettingsV1 {
    replicas: u32,
    max_replicas: u32,
    args: Vec<String>,
    env: Vec<(String, String)>,
    limits: CallLimits,
}

impl From<SettingsV1> for FunctionSettings {
    fn from(v: SettingsV1) -> Self {
        FunctionSettings {
            replicas: v.replicas,
            max_replicas: v.max_replicas,
            args: v.args,
            env: v.env,
            limits: v.limits,
            ..FunctionSettings::default()
        }
    }
}

/// `FunctionRecord` as schema version 1 stored it.
#[derive(Serialize, Deserialize)]
struct FunctionV1 {
    name: String,
    hash: ContentHash,
    owner: OrbId,
    size: u64,
    settings: SettingsV1,
    created_ms: u64,
    updated_ms: u64,
    placements: Vec<OrbId>,
}

/// `HostedRecord` as schema version 1 stored it.
#[derive(Serialize, Deserialize)]
struct HostedV1 {
    name: String,
    hash: ContentHash,
    settings: SettingsV1,
}

/// Rewrite the `functions` and `hosted` tables from version 1 to 2.
pub(crate) fn v1_to_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut functions = txn.open_table(FUNCTIONS).map_err(db_err)?;
    let mut rewritten = Vec::new();
    for row in functions.iter().map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        let old: FunctionV1 = dec("function record (schema 1)", v.value())?;
        let settings: FunctionSettings = old.settings.into();
        let record = FunctionRecord {
            history: vec![FunctionVersion {
                version: 1,
                hash: old.hash,
                size: old.size,
                settings: settings.clone(),
                created_ms: old.updated_ms,
            }],
            name: old.name,
            hash: old.hash,
            owner: old.owner,
            size: old.size,
            settings,
            created_ms: old.created_ms,
            updated_ms: old.updated_ms,
            placements: old.placements,
            version: 1,
        };
        rewritten.push((k.value().to_string(), enc("function record", &record)?));
    }
    for (k, v) in rewritten {
        functions.insert(k.as_str(), v.as_slice()).map_err(db_err)?;
    }
    let mut hosted = txn.open_table(HOSTED).map_err(db_err)?;
    let mut rewritten = Vec::new();
    for row in hosted.iter().map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        let old: HostedV1 = dec("hosted record (schema 1)", v.value())?;
        let record = HostedRecord {
            name: old.name,
            hash: old.hash,
            settings: old.settings.into(),
        };
        rewritten.push((k.value().to_string(), enc("hosted record", &record)?));
    }
    for (k, v) in rewritten {
        hosted.insert(k.as_str(), v.as_slice()).map_err(db_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old shapes here encode exactly as version 1 wrote them: the
    /// current types with only the old fields, field for field.
    #[test]
    fn v1_records_become_v2_records() {
        let old = FunctionV1 {
            name: "hello".into(),
            hash: ContentHash::of(b"m"),
            owner: OrbId([7; 32]),
            size: 1,
            settings: SettingsV1 {
                replicas: 2,
                max_replicas: 3,
                args: vec!["a".into()],
                env: vec![("K".into(), "V".into())],
                limits: CallLimits::default(),
            },
            created_ms: 5,
            updated_ms: 9,
            placements: vec![OrbId([8; 32])],
        };
        let bytes = enc("v1", &old).expect("encode");
        let back: FunctionV1 = dec("v1", &bytes).expect("decode");
        let s: FunctionSettings = back.settings.into();
        assert_eq!((s.replicas, s.max_replicas), (2, 3));
        assert_eq!(s.env, vec![("K".to_string(), "V".to_string())]);
        assert!(!s.cgi && s.files.is_none() && s.allow_hosts.is_empty());
    }
}
