//! Sealed session files: the state key, where it comes from (`source.rs`), and the format that encrypts and
//! authenticates a session at rest.
//!
//! A sealed file is the session's JSON record encrypted with ChaCha20-Poly1305 (ring, which rustls already
//! links) under the 256-bit state key, with a fresh random nonce per write:
//!
//! ```text
//! offset  size  field
//!      0    18  magic "ATT-TOKEND SEALED\n" (a clear file starts with '{'; `head -1` names the format)
//!     18     1  seal format version, 1
//!     19     1  algorithm, 1 = ChaCha20-Poly1305
//!     20     8  key id: the first 8 bytes of SHA-256("att-tokend state key id\0" || key)
//!     28    12  nonce, random for every write
//!     40     n  ciphertext of the JSON record (n = its length)
//!   40+n    16  Poly1305 tag
//! ```
//!
//! The associated data is the 40-byte header followed by the token name, so a file refuses to open under
//! another token's name (a swapped file), under another format version, or with any byte changed. The key id
//! tells "sealed with another key" (left alone: the operator can restore the key) from "altered or damaged"
//! (set aside), without revealing anything about the key.
//!
//! Secrets in memory: the key lives in one zeroized heap buffer; ring's key object is built for each operation
//! and overwritten with a zero key right after. The plaintext is built and opened in zeroized buffers sized once,
//! so no reallocation leaves a copy behind.

mod source;

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

pub use self::source::{KeySource, state_key, state_key_in};

/// The first bytes of every sealed file.
pub const MAGIC: &[u8; 18] = b"ATT-TOKEND SEALED\n";
/// The seal format version written by this build.
pub const SEAL_VERSION: u8 = 1;
/// ChaCha20-Poly1305, the only algorithm so far.
const ALG_CHACHA20_POLY1305: u8 = 1;
/// Length of the key id in the header.
pub const KEY_ID_LEN: usize = 8;
/// Length of the header, which is also the start of the associated data.
pub const HEADER_LEN: usize = MAGIC.len() + 2 + KEY_ID_LEN + NONCE_LEN;
/// Length of the authentication tag at the end.
pub const TAG_LEN: usize = 16;
/// Length of a state key in bytes.
pub const KEY_LEN: usize = 32;
/// The name of the systemd credential holding the state key.
pub const CREDENTIAL_NAME: &str = "state-key";

/// A key's public fingerprint: says which key sealed a file, reveals nothing about the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The 256-bit state key. `Debug` shows its id only; the bytes are zeroized on drop.
pub struct StateKey {
    bytes: Box<Zeroizing<[u8; KEY_LEN]>>,
    id: KeyId,
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateKey([redacted], id {})", self.id)
    }
}

/// Why a key file could not be used. Never contains the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read the state key {}: {error}; check the path and that the daemon's user may read it (mode 600)", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The file does not hold exactly 32 bytes.
    #[error(
        "the state key {} holds {len} bytes, not 32; a state key is 32 random bytes, made with \
         `head -c 32 /dev/urandom > FILE` (see README, \"Sealed sessions\")", path.display()
    )]
    Length {
        /// The file.
        path: std::path::PathBuf,
        /// How many bytes it holds (up to a limit).
        len: usize,
    },
    /// The file may be read by others.
    #[error("the state key {} is readable or writable by group or others (mode {mode:03o}); run chmod 600 {}", path.display(), path.display())]
    Mode {
        /// The file.
        path: std::path::PathBuf,
        /// Its mode.
        mode: u32,
    },
}

impl StateKey {
    /// A key from its 32 bytes (`None` for another length).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut key = Box::new(Zeroizing::new([0_u8; KEY_LEN]));
        key.copy_from_slice(bytes.get(..KEY_LEN).filter(|_| bytes.len() == KEY_LEN)?);
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(b"att-tokend state key id\0");
        context.update(&key[..]);
        let digest = context.finish();
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        Some(Self { bytes: key, id: KeyId(id) })
    }

    /// Reads a key file: exactly 32 bytes; with `private`, a file group or others may access is refused (a
    /// systemd credential is private by construction).
    pub fn read(path: &Path, private: bool) -> Result<Self, KeyError> {
        let read_error = |error| KeyError::Read { path: path.to_owned(), error };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mode = file.metadata().map_err(read_error)?.mode() & 0o777;
        if private && mode & 0o077 != 0 {
            return Err(KeyError::Mode { path: path.to_owned(), mode });
        }
        // One byte more than a key, so a longer file is told apart; the buffer never grows.
        let mut buffer = Zeroizing::new(Vec::with_capacity(KEY_LEN + 1));
        file.take(KEY_LEN as u64 + 1).read_to_end(&mut buffer).map_err(read_error)?;
        Self::from_bytes(&buffer).ok_or(KeyError::Length { path: path.to_owned(), len: buffer.len() })
    }

    /// The key's public fingerprint.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Runs `f` with ring's key object, which is overwritten with a zero key afterwards.
    fn with_key<T>(&self, f: impl FnOnce(&LessSafeKey) -> T) -> T {
        let mut key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.bytes[..]).expect("32-byte key"));
        let result = f(&key);
        key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[0; KEY_LEN]).expect("32-byte key"));
        // Keep the overwrite: the optimiser may not drop a store that is observed.
        std::hint::black_box(&key);
        result
    }
}

/// Whether `bytes` are a sealed file (start with [`MAGIC`]).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The key id of a sealed file, when its header is there.
pub fn key_id_of(bytes: &[u8]) -> Option<KeyId> {
    let start = MAGIC.len() + 2;
    bytes.get(start..start + KEY_ID_LEN).filter(|_| is_sealed(bytes)).map(|id| KeyId(id.try_into().expect("8 bytes")))
}

/// Why a sealed file did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The bytes are not a sealed file.
    #[error("it is not a sealed session file")]
    NotSealed,
    /// A seal format or algorithm this build does not know (a newer att-tokend wrote it).
    #[error("it is sealed in format {version}, algorithm {algorithm}, which this att-tokend does not know")]
    Unknown {
        /// The seal format version found.
        version: u8,
        /// The algorithm found.
        algorithm: u8,
    },
    /// The file was sealed with another key.
    #[error("it was sealed with the state key {found}, not with the configured key {configured}")]
    OtherKey {
        /// The key that sealed it.
        found: KeyId,
        /// The key configured now.
        configured: KeyId,
    },
    /// The file is cut short, altered or damaged, or belongs to another token.
    #[error(
        "it does not authenticate under the state key for this token: it was altered, damaged, or is another token's file"
    )]
    Refused,
}

/// Seals `plaintext` (a session record) for the token `name` under `key`, with a fresh random nonce. The result is
/// a whole sealed file, in a zeroized buffer allocated once.
pub fn seal(key: &StateKey, name: &str, plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut nonce = [0_u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).expect("the kernel's random generator (getrandom) works");
    seal_with_nonce(key, name, plaintext, nonce)
}

/// [`seal`] with a given nonce (for tests; every write uses a random one).
fn seal_with_nonce(key: &StateKey, name: &str, plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN));
    out.extend_from_slice(MAGIC);
    out.push(SEAL_VERSION);
    out.push(ALG_CHACHA20_POLY1305);
    out.extend_from_slice(&key.id.0);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let (header, body) = out.split_at_mut(HEADER_LEN);
    let aad = associated_data(header, name);
    let tag = key
        .with_key(|k| k.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad[..]), body))
        .expect("a session record is far below ChaCha20-Poly1305's length limit");
    out.extend_from_slice(tag.as_ref());
    out
}

fn associated_data(header: &[u8], name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + name.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Opens a sealed file of the token `name` under `key`: the plaintext record, in a zeroized buffer.
pub fn open(key: &StateKey, name: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    if !is_sealed(sealed) {
        return Err(OpenError::NotSealed);
    }
    if sealed.len() < HEADER_LEN + TAG_LEN {
        return Err(OpenError::Refused);
    }
    let (version, algorithm) = (sealed[MAGIC.len()], sealed[MAGIC.len() + 1]);
    if version != SEAL_VERSION || algorithm != ALG_CHACHA20_POLY1305 {
        return Err(OpenError::Unknown { version, algorithm });
    }
    let found = key_id_of(sealed).expect("the header is there");
    if found != key.id {
        return Err(OpenError::OtherKey { found, configured: key.id });
    }
    let (header, body) = sealed.split_at(HEADER_LEN);
    let nonce: [u8; NONCE_LEN] = header[HEADER_LEN - NONCE_LEN..].try_into().expect("12 bytes");
    let aad = associated_data(header, name);
    let mut buffer = Zeroizing::new(body.to_vec());
    let len = key
        .with_key(|k| {
            k.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad[..]), &mut buffer[..]).map(|p| p.len())
        })
        .map_err(|ring::error::Unspecified| OpenError::Refused)?;
    // Shortening keeps the allocation: the tag's bytes stay in it and are zeroized with it.
    buffer.truncate(len);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(fill: u8) -> StateKey {
        StateKey::from_bytes(&[fill; KEY_LEN]).unwrap()
    }

    #[test]
    fn the_layout_is_as_documented() {
        let sealed = seal_with_nonce(&key(7), "main", b"{\"x\":1}", [9; NONCE_LEN]);
        assert_eq!(&sealed[..18], b"ATT-TOKEND SEALED\n");
        assert_eq!(sealed[18], 1, "seal format version");
        assert_eq!(sealed[19], 1, "ChaCha20-Poly1305");
        assert_eq!(&sealed[20..28], &key(7).id().0);
        assert_eq!(&sealed[28..40], &[9; 12]);
        assert_eq!(sealed.len(), 40 + 7 + 16);
        assert_eq!(HEADER_LEN, 40);
        assert!(!sealed.windows(7).any(|w| w == b"{\"x\":1}"), "the record is not in clear");
    }

    #[test]
    fn keys_are_32_bytes_and_their_ids_differ() {
        assert!(StateKey::from_bytes(&[1; 31]).is_none());
        assert!(StateKey::from_bytes(&[1; 33]).is_none());
        assert_ne!(key(1).id(), key(2).id());
        assert_eq!(key(1).id(), key(1).id());
        assert!(!format!("{:?}", key(0x41)).contains("4141"), "Debug shows the id, not the key");
    }

    #[test]
    fn another_key_another_name_and_another_version_are_each_refused_for_what_they_are() {
        let sealed = seal(&key(1), "main", b"record");
        assert_eq!(*open(&key(1), "main", &sealed).unwrap(), b"record");
        assert_eq!(
            open(&key(2), "main", &sealed),
            Err(OpenError::OtherKey { found: key(1).id(), configured: key(2).id() })
        );
        assert_eq!(open(&key(1), "other", &sealed), Err(OpenError::Refused));
        let mut newer = sealed.clone();
        newer[18] = 2;
        assert_eq!(open(&key(1), "main", &newer), Err(OpenError::Unknown { version: 2, algorithm: 1 }));
        assert_eq!(open(&key(1), "main", b"{\"version\":2}"), Err(OpenError::NotSealed));
        assert_eq!(open(&key(1), "main", &sealed[..HEADER_LEN + TAG_LEN - 1]), Err(OpenError::Refused));
        let again = seal(&key(1), "main", b"record");
        assert_ne!(sealed[28..40], again[28..40], "a fresh nonce for every write");
    }

    proptest! {
        #[test]
        fn seal_then_open_is_the_identity(
            key_bytes in prop::array::uniform32(any::<u8>()),
            name in "[A-Za-z0-9_-]{1,64}",
            plaintext in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            let key = StateKey::from_bytes(&key_bytes).unwrap();
            let sealed = seal(&key, &name, &plaintext);
            prop_assert_eq!(sealed.len(), HEADER_LEN + plaintext.len() + TAG_LEN);
            prop_assert_eq!(&open(&key, &name, &sealed).unwrap()[..], &plaintext[..]);
        }

        #[test]
        fn any_single_byte_change_is_refused(
            key_bytes in prop::array::uniform32(any::<u8>()),
            plaintext in prop::collection::vec(any::<u8>(), 0..512),
            position in any::<prop::sample::Index>(),
            flip in 1_u8..=255,
        ) {
            let key = StateKey::from_bytes(&key_bytes).unwrap();
            let mut sealed = seal(&key, "main", &plaintext);
            let at = position.index(sealed.len());
            sealed[at] ^= flip;
            prop_assert!(open(&key, "main", &sealed).is_err(), "a change at byte {} was accepted", at);
        }
    }
}
