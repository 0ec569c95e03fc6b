//! Call receipts: the executor's signed statement that it ran a call.
//!
//! Supers verify receipts before crediting anyone: the signature must be
//! the executor's own key, the executor must be the node that answered, and
//! a receipt is counted once (its [`Receipt::id`] is remembered).

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::id::{ContentHash, IdError, Keypair, OrbId, PublicKey, Signature};

/// What an executor signs after a completed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Module hash of the function that ran.
    pub function: ContentHash,
    /// The node that asked for the call (a client, or the gateway's super).
    pub caller: OrbId,
    /// The node that ran it.
    pub executor: OrbId,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Wall-clock duration in microseconds.
    pub duration_us: u64,
    /// When the call finished, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The call's request ID.
    pub request_id: String,
}

/// A receipt with the executor's key and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// The statement.
    pub receipt: Receipt,
    /// The executor's public key.
    pub key: PublicKey,
    /// Signature over the canonical encoding of `receipt`.
    pub signature: Signature,
}

/// Why a receipt was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    /// The signing key is not the executor's.
    #[error("receipt signed by {signer}, but names executor {executor}")]
    WrongSigner {
        /// ID of the key that signed.
        signer: OrbId,
        /// The executor named in the receipt.
        executor: OrbId,
    },
    /// The signature does not verify.
    #[error("receipt signature does not verify")]
    BadSignature,
    /// The receipt cannot be encoded (too large).
    #[error("receipt cannot be encoded: {0}")]
    Encoding(String),
}

const DOMAIN: &[u8] = b"orb-receipt-v1";

impl Receipt {
    fn signing_bytes(&self) -> Result<Vec<u8>, ReceiptError> {
        let mut msg = DOMAIN.to_vec();
        msg.extend(codec::encode(self).map_err(|e| ReceiptError::Encoding(e.to_string()))?);
        Ok(msg)
    }

    /// A unique ID: the hash of the canonical encoding. Used to refuse replays.
    pub fn id(&self) -> Result<ContentHash, ReceiptError> {
        Ok(ContentHash::of(&self.signing_bytes()?))
    }

    /// Sign as the executor.
    pub fn sign(self, keypair: &Keypair) -> Result<SignedReceipt, ReceiptError> {
        let signature = keypair.sign(&self.signing_bytes()?);
        Ok(SignedReceipt {
            receipt: self,
            key: keypair.public(),
            signature,
        })
    }
}

impl SignedReceipt {
    /// Check that the executor signed this receipt.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        let signer = self.key.id();
        if signer != self.receipt.executor {
            return Err(ReceiptError::WrongSigner {
                signer,
                executor: self.receipt.executor,
            });
        }
        self.key
            .verify(&self.receipt.signing_bytes()?, &self.signature)
            .map_err(|e: IdError| match e {
                IdError::BadSignature | IdError::BadKey => ReceiptError::BadSignature,
                other => ReceiptError::Encoding(other.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(executor: OrbId) -> Receipt {
        Receipt {
            function: ContentHash::of(b"m"),
            caller: Keypair::from_seed([9; 32]).id(),
            executor,
            fuel_used: 10,
            duration_us: 5,
            time_ms: 1,
            request_id: "r1".into(),
        }
    }

    #[test]
    fn sign_verify_and_forgeries() {
        let k = Keypair::from_seed([1; 32]);
        let signed = receipt(k.id()).sign(&k).expect("sign");
        assert_eq!(signed.verify(), Ok(()));

        let mut inflated = signed.clone();
        inflated.receipt.fuel_used = 1_000_000;
        assert_eq!(inflated.verify(), Err(ReceiptError::BadSignature));

        // Someone else signing a receipt that names another executor.
        let mallory = Keypair::from_seed([2; 32]);
        let forged = receipt(k.id()).sign(&mallory).expect("sign");
        assert!(matches!(
            forged.verify(),
            Err(ReceiptError::WrongSigner { .. })
        ));

        assert_ne!(receipt(k.id()).id(), {
            let mut r = receipt(k.id());
            r.request_id = "r2".into();
            r.id()
        });
    }
}
