//! Reading secrets from files: device and ground token files, password files and TOTP seed files.
//!
//! A secret file holds one line. A trailing newline (and, for tokens and seeds, surrounding whitespace) is
//! ignored; an empty file, a second line or a control character is an error. Errors name the file and what is
//! wrong, never the content. Intermediate buffers are zeroized.
//!
//! The daemon opens each secret file once ([`PrivateFile::open`]): what it checks (a regular file that neither
//! group nor others may access) is the file it then reads.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use token_model::secret::{Password, StaticToken, TotpSeed};
use zeroize::Zeroizing;

/// The largest secret file accepted.
pub const MAX_SECRET_FILE_LEN: u64 = 64 * 1024;

/// Why a secret file could not be used. Never contains the file's content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// The file could not be opened or read.
    #[error("cannot read {what} file {}: {error}; check the path and that the daemon's user may read it (mode 600)", path.display())]
    Read {
        /// Which kind of secret.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error("{what} file {} is empty; write the {what} into it on one line", path.display())]
    Empty {
        /// Which kind of secret.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The file holds more than one line, or a control character.
    #[error("{what} file {} {problem}; it must hold the {what} alone on one line", path.display())]
    Malformed {
        /// Which kind of secret.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong (never the content).
        problem: &'static str,
    },
}

/// A secret file opened once and found private. What is read from it is read through this one open.
#[derive(Debug)]
pub struct PrivateFile {
    file: File,
    path: PathBuf,
}

impl PrivateFile {
    /// Opens a secret file and checks that it is a regular file, readable by this process and not group- or
    /// world-accessible (mode & 0o077 == 0). The error says which and how to fix it.
    pub fn open(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        // Without blocking: a FIFO put in a secret file's place is refused below, not waited on.
        let opened = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path);
        // What was opened is examined; when nothing could be, the path is, to say why.
        let meta = match &opened {
            Ok(file) => file.metadata(),
            Err(_) => std::fs::metadata(path),
        };
        let meta = meta.map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => {
                format!("secret file {shown} does not exist; create it (mode 600) or fix the path")
            }
            io::ErrorKind::PermissionDenied => {
                format!("secret file {shown} cannot be reached ({error}); let the daemon's user traverse its directory")
            }
            _ => format!("secret file {shown} cannot be examined ({error}); check the path"),
        })?;
        if !meta.is_file() {
            return Err(format!(
                "secret file {shown} is not a regular file; point the setting at the file holding the secret"
            ));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "secret file {shown} is readable or writable by group or others (mode {mode:03o}); run chmod 600 {shown}"
            ));
        }
        let file = opened.map_err(|error| {
            format!(
                "secret file {shown} cannot be opened ({error}); make it readable by the daemon's user (chown it, mode 600)"
            )
        })?;
        Ok(Self { file, path: path.to_owned() })
    }

    /// Reads it as a device or ground token ([`read_static_token`]).
    pub fn static_token(self) -> Result<StaticToken, SecretFileError> {
        static_token(self.file, &self.path)
    }

    /// Reads it as a password ([`read_password`]).
    pub fn password(self) -> Result<Password, SecretFileError> {
        password(self.file, &self.path)
    }

    /// Reads it as a TOTP seed ([`read_totp_seed`]).
    pub fn totp_seed(self) -> Result<TotpSeed, SecretFileError> {
        totp_seed(self.file, &self.path)
    }
}

/// Checks that a secret file exists, is a regular file, is readable by this process and is not group- or
/// world-readable ([`PrivateFile::open`], without reading it).
pub fn check_private(path: &Path) -> Result<(), String> {
    PrivateFile::open(path).map(drop)
}

/// Reads a device or ground token (`maker:4AbCd…`).
pub fn read_static_token(path: &Path) -> Result<StaticToken, SecretFileError> {
    static_token(open(path, "token")?, path)
}

/// Reads a password. Only the line ending is removed: leading and trailing spaces are part of the password.
pub fn read_password(path: &Path) -> Result<Password, SecretFileError> {
    password(open(path, "password")?, path)
}

/// Reads a base32 TOTP seed. Spaces (as authenticator apps group the seed) are removed and letters upper-cased.
pub fn read_totp_seed(path: &Path) -> Result<TotpSeed, SecretFileError> {
    totp_seed(open(path, "TOTP seed")?, path)
}

fn open(path: &Path, what: &'static str) -> Result<File, SecretFileError> {
    File::open(path).map_err(|error| SecretFileError::Read { what, path: path.to_owned(), error })
}

fn static_token(file: File, path: &Path) -> Result<StaticToken, SecretFileError> {
    let value = read_line(file, path, "token", Trim::Both)?;
    if value.chars().any(char::is_whitespace) {
        return Err(SecretFileError::Malformed {
            what: "token",
            path: path.to_owned(),
            problem: "has a space inside the token",
        });
    }
    Ok(StaticToken::new(take(value)))
}

fn password(file: File, path: &Path) -> Result<Password, SecretFileError> {
    read_line(file, path, "password", Trim::LineEnd).map(|value| Password::new(take(value)))
}

fn totp_seed(file: File, path: &Path) -> Result<TotpSeed, SecretFileError> {
    let value = read_line(file, path, "TOTP seed", Trim::Both)?;
    let seed: Zeroizing<String> =
        Zeroizing::new(value.chars().filter(|c| *c != ' ').map(|c| c.to_ascii_uppercase()).collect());
    if !seed.trim_end_matches('=').bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)) {
        return Err(SecretFileError::Malformed {
            what: "TOTP seed",
            path: path.to_owned(),
            problem: "is not base32 (letters A-Z and digits 2-7)",
        });
    }
    Ok(TotpSeed::new(take(seed)))
}

/// Moves the string out of its zeroizing wrapper without leaving a copy behind.
fn take(mut value: Zeroizing<String>) -> String {
    std::mem::take(&mut *value)
}

#[derive(Clone, Copy)]
enum Trim {
    Both,
    LineEnd,
}

fn read_line(file: File, path: &Path, what: &'static str, trim: Trim) -> Result<Zeroizing<String>, SecretFileError> {
    let read_error = |error| SecretFileError::Read { what, path: path.to_owned(), error };
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_SECRET_FILE_LEN + 1).read_to_end(&mut bytes).map_err(read_error)?;
    let malformed = |problem| SecretFileError::Malformed { what, path: path.to_owned(), problem };
    if bytes.len() as u64 > MAX_SECRET_FILE_LEN {
        return Err(malformed("is larger than 64 KiB"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed("is not UTF-8 text"))?;
    let line = match trim {
        Trim::Both => text.trim(),
        Trim::LineEnd => text.strip_suffix('\n').map_or(text, |t| t.strip_suffix('\r').unwrap_or(t)),
    };
    if line.trim().is_empty() {
        return Err(SecretFileError::Empty { what, path: path.to_owned() });
    }
    if line.contains('\n') || line.contains('\r') {
        return Err(malformed("has more than one line"));
    }
    if line.chars().any(char::is_control) {
        return Err(malformed("has a control character"));
    }
    Ok(Zeroizing::new(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use token_model::secret::ExposeSecret;

    use super::*;

    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, content).unwrap();
        f
    }

    #[test]
    fn trims_line_endings_and_whitespace() {
        assert_eq!(read_static_token(file(b"maker:4AbCd\n").path()).unwrap().expose_secret(), "maker:4AbCd");
        assert_eq!(read_static_token(file(b"  maker:x \r\n").path()).unwrap().expose_secret(), "maker:x");
        assert_eq!(read_password(file(b" pass word \n").path()).unwrap().expose_secret(), " pass word ");
        assert_eq!(read_password(file(b"p&w=+\r\n").path()).unwrap().expose_secret(), "p&w=+");
        assert_eq!(read_totp_seed(file(b"jbsw y3dp ehpk 3pxp\n").path()).unwrap().expose_secret(), "JBSWY3DPEHPK3PXP");
    }

    #[test]
    fn rejects_bad_content_without_showing_it() {
        let cases: [(&[u8], &str); 5] = [
            (b"\n  \n", "is empty"),
            (b"secret-one\nsecret-two\n", "more than one line"),
            (b"secret\x07bell", "control character"),
            (b"\xffsecret", "not UTF-8"),
            (b"secret token", "space inside"),
        ];
        for (content, expected) in cases {
            let f = file(content);
            let message = read_static_token(f.path()).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains(&f.path().display().to_string()), "{message}");
            assert!(!message.contains("secret"), "content leaked: {message}");
        }
        let message = read_totp_seed(file(b"not-base32!").path()).unwrap_err().to_string();
        assert!(message.contains("base32") && !message.contains("not-base32!"), "{message}");
        let message = read_password(file(b"two\nlines").path()).unwrap_err().to_string();
        assert!(message.contains("one line"), "{message}");
    }

    #[test]
    fn missing_and_huge_files() {
        let message = read_password(Path::new("/nonexistent/att/pw")).unwrap_err().to_string();
        assert!(message.contains("cannot read password file /nonexistent/att/pw"), "{message}");
        let big = vec![b'a'; (MAX_SECRET_FILE_LEN + 10) as usize];
        assert!(read_static_token(file(&big).path()).unwrap_err().to_string().contains("64 KiB"));
    }
}
