//! Orb's on-disk state: one [redb] file per node, `orb.redb` in the data
//! directory.
//!
//! Everything a node needs to come back after a crash lives here: its
//! identity key, the peers it knew, the functions it owns or hosts, the
//! module bytes, compiled artifacts and small typed blobs (the ledger). The
//! layout and its compatibility rules are in `FORMAT.md` beside this crate.
//!
//! Every write is one redb transaction committed with immediate durability,
//! so a `kill -9` at any point leaves either the old or the new state, never
//! half of a write. The store is synchronous: async callers run it on a
//! blocking thread (`tokio::task::spawn_blocking`).

mod migrate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use orb_proto::wire::{FunctionSettings, Role};
use orb_proto::{ContentHash, Keypair, OrbId};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// Schema version written at creation and checked at every open. Bump it
/// whenever a table's key or value encoding changes, and add a migration.
pub const SCHEMA_VERSION: u32 = 2;

/// File name of the database inside the data directory.
pub const FILE_NAME: &str = "orb.redb";

/// Bounds on the tables that grow with what the network tells a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Peers remembered; the least recently seen are forgotten first.
    pub max_peers: usize,
    /// Compiled artifacts kept; the first key in key order is dropped first.
    pub max_artifacts: usize,
    /// Entries per blob namespace; writes beyond it are refused.
    pub max_blobs_per_namespace: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_peers: 4096,
            max_artifacts: 1024,
            max_blobs_per_namespace: 1_000_000,
        }
    }
}

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const PEERS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("peers");
const FUNCTIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("functions");
const MODULES: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("modules");
const HOSTED: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("hosted");
const ARTIFACTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("artifacts");
const BUNDLES: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("bundles");
const BLOBS: TableDefinition<'_, (&str, &[u8]), &[u8]> = TableDefinition::new("blobs");

const KEY_SCHEMA: &str = "schema_version";
const KEY_IDENTITY: &str = "identity_seed";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// redb refused to open the file (locked by another process, corrupt...).
    #[error("cannot open store {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::DatabaseError>,
    },
    /// The file was written by another schema version.
    #[error("store {path} has schema version {found}, this build reads version {expected}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this build expects.
        expected: u32,
    },
    /// Any redb error during a transaction.
    #[error("store: {0}")]
    Db(#[from] Box<redb::Error>),
    /// A stored value did not decode.
    #[error("store holds a corrupt {what}: {detail}")]
    Corrupt {
        /// Which kind of value.
        what: &'static str,
        /// Decoder message.
        detail: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode {what}: {detail}")]
    Encode {
        /// Which kind of value.
        what: &'static str,
        /// Encoder message.
        detail: String,
    },
    /// The identity key could not be generated.
    #[error("cannot create identity: {0}")]
    Identity(String),
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

/// A peer this node has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Its Orb ID.
    pub id: OrbId,
    /// The last address it was reached at.
    pub addr: SocketAddr,
    /// Super or client.
    pub role: Role,
    /// Unix milliseconds of the last contact.
    pub last_seen_ms: u64,
}

/// A function deployed through this node (kept by supers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// Function name.
    pub name: String,
    /// Content hash of the module.
    pub hash: ContentHash,
    /// Node that deployed it; only it may replace it.
    pub owner: OrbId,
    /// Module size in bytes.
    pub size: u64,
    /// Settings given at deploy.
    pub settings: FunctionSettings,
    /// Unix milliseconds of the first deploy of this name.
    pub created_ms: u64,
    /// Unix milliseconds of the latest deploy.
    pub updated_ms: u64,
    /// Nodes a replica was last placed on.
    pub placements: Vec<OrbId>,
    /// Version of the name this record is (see `NameRecord::version`).
    pub version: u64,
    /// The versions kept for rollback, oldest first (bounded by the node).
    pub history: Vec<FunctionVersion>,
}

/// One deployed version of a function, kept for rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionVersion {
    /// Version number.
    pub version: u64,
    /// Module hash.
    pub hash: ContentHash,
    /// Module size in bytes.
    pub size: u64,
    /// Settings of that version.
    pub settings: FunctionSettings,
    /// Unix milliseconds of its deploy.
    pub created_ms: u64,
}

/// A replica this node hosts (kept by clients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedRecord {
    /// Function name.
    pub name: String,
    /// Content hash of the module.
    pub hash: ContentHash,
    /// Settings the replica runs with.
    pub settings: FunctionSettings,
}

/// One (key, value) pair of a blob namespace.
pub type BlobEntry = (Vec<u8>, Vec<u8>);

/// Handle to a node's database. Cheap to clone; all clones share one file.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    limits: StoreLimits,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn enc<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, StoreError> {
    orb_proto::codec::encode(v).map_err(|e| StoreError::Encode {
        what,
        detail: e.to_string(),
    })
}

fn dec<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    orb_proto::codec::decode(bytes).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

impl Store {
    /// Open (or create) the store in `dir`, creating the directory and every
    /// table, and check the schema version.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_limits(dir, StoreLimits::default())
    }

    /// [`Store::open`] with explicit table bounds.
    pub fn open_with_limits(dir: &Path, limits: StoreLimits) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source: Box::new(source),
        })?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let found = match meta.get(KEY_SCHEMA).map_err(db_err)? {
                Some(v) => Some(decode_version(v.value())?),
                None => None,
            };
            match found {
                Some(1) => {
                    // Version 1 files hold the records without the settings
                    // and fields added in version 2: rewrite them in this
                    // same transaction, so a crash leaves either file.
                    migrate::v1_to_v2(&txn)?;
                    meta.insert(KEY_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())
                        .map_err(db_err)?;
                }
                Some(v) if v != SCHEMA_VERSION => {
                    return Err(StoreError::Schema {
                        path,
                        found: v,
                        expected: SCHEMA_VERSION,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert(KEY_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())
                        .map_err(db_err)?;
                }
            }
            // Create every table now so read transactions never meet a
            // missing one.
            txn.open_table(PEERS).map_err(db_err)?;
            txn.open_table(FUNCTIONS).map_err(db_err)?;
            txn.open_table(MODULES).map_err(db_err)?;
            txn.open_table(HOSTED).map_err(db_err)?;
            txn.open_table(ARTIFACTS).map_err(db_err)?;
            txn.open_table(BLOBS).map_err(db_err)?;
            txn.open_table(BUNDLES).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(Store {
            db: Arc::new(db),
            path,
            limits,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Schema version of the open file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        match meta.get(KEY_SCHEMA).map_err(db_err)? {
            Some(v) => decode_version(v.value()),
            None => Err(StoreError::Corrupt {
                what: "schema version",
                detail: "missing".into(),
            }),
        }
    }

    /// The node's identity key: loaded if present, otherwise generated and
    /// saved in the same transaction that checks for it (two processes
    /// racing on a new directory cannot end up with different keys).
    pub fn load_or_create_identity(&self) -> Result<Keypair, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let key = {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let existing = match meta.get(KEY_IDENTITY).map_err(db_err)? {
                Some(v) => {
                    Some(
                        <[u8; 32]>::try_from(v.value()).map_err(|_| StoreError::Corrupt {
                            what: "identity key",
                            detail: format!("{} bytes, expected 32", v.value().len()),
                        })?,
                    )
                }
                None => None,
            };
            match existing {
                Some(seed) => Keypair::from_seed(seed),
                None => {
                    let kp =
                        Keypair::generate().map_err(|e| StoreError::Identity(e.to_string()))?;
                    meta.insert(KEY_IDENTITY, kp.seed().as_slice())
                        .map_err(db_err)?;
                    kp
                }
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(key)
    }

    /// Remember a peer (replacing what was known about it). When the table
    /// is full, the least recently seen peer is forgotten.
    pub fn put_peer(&self, peer: &PeerEntry) -> Result<(), StoreError> {
        let bytes = enc("peer", peer)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(PEERS).map_err(db_err)?;
            let is_new = t.get(peer.id.as_bytes()).map_err(db_err)?.is_none();
            if is_new && t.len().map_err(db_err)? as usize >= self.limits.max_peers {
                let mut oldest: Option<([u8; 32], u64)> = None;
                for item in t.iter().map_err(db_err)? {
                    let (k, v) = item.map_err(db_err)?;
                    let seen = dec::<PeerEntry>("peer", v.value())
                        .map(|p| p.last_seen_ms)
                        .unwrap_or(0);
                    if oldest.is_none_or(|(_, s)| seen < s) {
                        oldest = Some((*k.value(), seen));
                    }
                }
                if let Some((k, _)) = oldest {
                    t.remove(&k).map_err(db_err)?;
                }
            }
            t.insert(peer.id.as_bytes(), bytes.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Every remembered peer, most recently seen first.
    pub fn peers(&self) -> Result<Vec<PeerEntry>, StoreError> {
        let mut out: Vec<PeerEntry> = self.read_all(PEERS, "peer")?;
        out.sort_by_key(|p| std::cmp::Reverse(p.last_seen_ms));
        Ok(out)
    }

    /// Forget a peer.
    pub fn remove_peer(&self, id: &OrbId) -> Result<bool, StoreError> {
        self.remove_key(PEERS, id.as_bytes())
    }

    /// Save a function record (without touching its module).
    pub fn put_function(&self, f: &FunctionRecord) -> Result<(), StoreError> {
        let bytes = enc("function", f)?;
        self.put_kv(FUNCTIONS, f.name.as_str(), &bytes)
    }

    /// Save a deploy: the module bytes and the function record in ONE
    /// transaction, so a crash never leaves a name pointing at a missing
    /// module.
    pub fn put_deploy(&self, f: &FunctionRecord, module: &[u8]) -> Result<(), StoreError> {
        self.put_deploy_with_bundle(f, module, None)
    }

    /// [`Store::put_deploy`] with the function's file bundle (its hash,
    /// verified by the caller, and bytes), all in one transaction: a
    /// refused or crashed deploy stores none of the three.
    pub fn put_deploy_with_bundle(
        &self,
        f: &FunctionRecord,
        module: &[u8],
        bundle: Option<(&ContentHash, &[u8])>,
    ) -> Result<(), StoreError> {
        let bytes = enc("function", f)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            if let Some((hash, data)) = bundle {
                let mut b = txn.open_table(BUNDLES).map_err(db_err)?;
                b.insert(&hash.0, data).map_err(db_err)?;
            }
            let mut m = txn.open_table(MODULES).map_err(db_err)?;
            m.insert(&f.hash.0, module).map_err(db_err)?;
            let mut t = txn.open_table(FUNCTIONS).map_err(db_err)?;
            t.insert(f.name.as_str(), bytes.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Save where `name` is placed, but only while it still holds `hash`;
    /// read, check and write are one transaction. Returns whether it wrote.
    ///
    /// Placement runs after the deploy's own commit and can take long (a
    /// client that stopped answering holds it until it is declared dead).
    /// A newer deploy of the same name may commit meanwhile; writing the
    /// older whole record back ([`Store::put_function`]) would revert the
    /// name to the old module on disk while the node serves the new one,
    /// so the newer, acknowledged deploy would be lost at the next restart.
    pub fn update_placements(
        &self,
        name: &str,
        hash: &ContentHash,
        placements: &[OrbId],
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(FUNCTIONS).map_err(db_err)?;
            let current: Option<FunctionRecord> = match t.get(name).map_err(db_err)? {
                Some(v) => Some(dec("function", v.value())?),
                None => None,
            };
            let Some(mut record) = current.filter(|r| r.hash == *hash) else {
                // Superseded (or removed): leave the newer state alone.
                return Ok(false);
            };
            record.placements = placements.to_vec();
            let bytes = enc("function", &record)?;
            t.insert(name, bytes.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(true)
    }

    /// A function record by name.
    pub fn function(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(FUNCTIONS).map_err(db_err)?;
        match t.get(name).map_err(db_err)? {
            Some(v) => Ok(Some(dec("function", v.value())?)),
            None => Ok(None),
        }
    }

    /// Every function record, by name.
    pub fn functions(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        self.read_all(FUNCTIONS, "function")
    }

    /// Remove a function record. Its module stays until [`Store::remove_module`].
    pub fn remove_function(&self, name: &str) -> Result<bool, StoreError> {
        self.remove_key(FUNCTIONS, name)
    }

    /// Store module bytes under their hash. The caller has verified the hash.
    pub fn put_module(&self, hash: &ContentHash, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_kv(MODULES, &hash.0, bytes)
    }

    /// Module bytes by hash.
    pub fn module(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(MODULES).map_err(db_err)?;
        Ok(t.get(&hash.0).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Whether the module is stored.
    pub fn has_module(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(MODULES).map_err(db_err)?;
        Ok(t.get(&hash.0).map_err(db_err)?.is_some())
    }

    /// Store a file bundle under its hash. The caller has verified the hash.
    pub fn put_bundle(&self, hash: &ContentHash, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_kv(BUNDLES, &hash.0, bytes)
    }

    /// File bundle bytes by hash.
    pub fn bundle(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(BUNDLES).map_err(db_err)?;
        Ok(t.get(&hash.0).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Whether the file bundle is stored.
    pub fn has_bundle(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(BUNDLES).map_err(db_err)?;
        Ok(t.get(&hash.0).map_err(db_err)?.is_some())
    }

    /// Delete a module.
    pub fn remove_module(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        self.remove_key(MODULES, &hash.0)
    }

    /// Hashes of every stored module.
    pub fn module_hashes(&self) -> Result<Vec<ContentHash>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(MODULES).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, _) = item.map_err(db_err)?;
            out.push(ContentHash(*k.value()));
        }
        Ok(out)
    }

    /// Record a replica this node hosts.
    pub fn put_hosted(&self, h: &HostedRecord) -> Result<(), StoreError> {
        let bytes = enc("hosted replica", h)?;
        self.put_kv(HOSTED, h.name.as_str(), &bytes)
    }

    /// Replicas this node hosts.
    pub fn hosted(&self) -> Result<Vec<HostedRecord>, StoreError> {
        self.read_all(HOSTED, "hosted replica")
    }

    /// Stop hosting a replica.
    pub fn remove_hosted(&self, name: &str) -> Result<bool, StoreError> {
        self.remove_key(HOSTED, name)
    }

    /// Save a compiled artifact under `key` (the runtime's cache key plus the
    /// content hash). Artifacts are only ever written by this node's own
    /// runtime; nothing from the network lands in this table.
    pub fn put_artifact(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(ARTIFACTS).map_err(db_err)?;
            let is_new = t.get(key).map_err(db_err)?.is_none();
            if is_new && t.len().map_err(db_err)? as usize >= self.limits.max_artifacts {
                let first = t
                    .first()
                    .map_err(db_err)?
                    .map(|(k, _)| k.value().to_string());
                if let Some(k) = first {
                    t.remove(k.as_str()).map_err(db_err)?;
                }
            }
            t.insert(key, bytes).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// A compiled artifact by key.
    pub fn artifact(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(ARTIFACTS).map_err(db_err)?;
        Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Delete a compiled artifact.
    pub fn remove_artifact(&self, key: &str) -> Result<bool, StoreError> {
        self.remove_key(ARTIFACTS, key)
    }

    /// Save a small value under (`namespace`, `key`).
    pub fn put_blob(&self, namespace: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.put_blobs(namespace, &[(key, value)])
    }

    /// Save several values of one namespace in one transaction.
    pub fn put_blobs(&self, namespace: &str, items: &[(&[u8], &[u8])]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(BLOBS).map_err(db_err)?;
            let mut count = None;
            for (key, value) in items {
                if t.get((namespace, *key)).map_err(db_err)?.is_none() {
                    let n = match count {
                        Some(n) => n,
                        None => t
                            .range((namespace, &[][..])..)
                            .map_err(db_err)?
                            .take_while(|r| r.as_ref().is_ok_and(|(k, _)| k.value().0 == namespace))
                            .count(),
                    };
                    if n >= self.limits.max_blobs_per_namespace {
                        return Err(StoreError::Encode {
                            what: "blob",
                            detail: format!(
                                "namespace {namespace:?} is full ({} entries)",
                                self.limits.max_blobs_per_namespace
                            ),
                        });
                    }
                    count = Some(n + 1);
                }
                t.insert((namespace, *key), *value).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// A value by (`namespace`, `key`).
    pub fn blob(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(BLOBS).map_err(db_err)?;
        Ok(t.get((namespace, key))
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }

    /// Every (key, value) of a namespace, in key order.
    pub fn blobs(&self, namespace: &str) -> Result<Vec<BlobEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(BLOBS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.range((namespace, &[][..])..).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let (ns, key) = k.value();
            if ns != namespace {
                break;
            }
            out.push((key.to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Delete a value.
    pub fn remove_blob(&self, namespace: &str, key: &[u8]) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut t = txn.open_table(BLOBS).map_err(db_err)?;
            t.remove((namespace, key)).map_err(db_err)?.is_some()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    fn put_kv<'k, K: redb::Key + 'static>(
        &self,
        table: TableDefinition<'_, K, &[u8]>,
        key: impl std::borrow::Borrow<K::SelfType<'k>>,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(table).map_err(db_err)?;
            t.insert(key, value).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn remove_key<'k, K: redb::Key + 'static>(
        &self,
        table: TableDefinition<'_, K, &[u8]>,
        key: impl std::borrow::Borrow<K::SelfType<'k>>,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut t = txn.open_table(table).map_err(db_err)?;
            t.remove(key).map_err(db_err)?.is_some()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    fn read_all<K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<'_, K, &[u8]>,
        what: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            out.push(dec(what, v.value())?);
        }
        Ok(out)
    }
}

fn decode_version(bytes: &[u8]) -> Result<u32, StoreError> {
    let arr = <[u8; 4]>::try_from(bytes).map_err(|_| StoreError::Corrupt {
        what: "schema version",
        detail: format!("{} bytes", bytes.len()),
    })?;
    Ok(u32::from_le_bytes(arr))
}
