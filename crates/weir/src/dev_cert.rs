//! `weir dev-cert`: a self-signed certificate and its private key, for trying HTTPS on
//! one machine (`[server.tls]`), never for production: nothing vouches for it, so clients
//! must be told to trust it (`curl --cacert cert.pem`) or not to check (`curl -k`).
//!
//! It writes `cert.pem` (valid from the start of last year to the end of next year, for
//! the names asked, the first also as subject common name) and `key.pem` (ECDSA P-256,
//! PKCS#8, readable by its owner only) into the output directory, creating it, and
//! refuses to overwrite either file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{date_time_ymd, CertificateParams, DnType, KeyPair};

/// What `weir dev-cert` was asked to do.
#[derive(Debug, Clone)]
pub struct DevCertOptions {
    /// Directory the two files go to.
    pub out: PathBuf,
    /// DNS names or IP addresses the certificate is for; at least one.
    pub names: Vec<String>,
}

/// `weir dev-cert`: writes the files and prints where, with the config to use them.
pub fn run(options: DevCertOptions) -> ExitCode {
    match write_dev_cert(&options) {
        Ok((cert, key)) => {
            println!("wrote {} and {}", cert.display(), key.display());
            println!("[server.tls]\ncert = {:?}\nkey = {:?}", cert.display().to_string(), key.display().to_string());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("weir dev-cert: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the certificate and writes both files; returns their paths.
fn write_dev_cert(options: &DevCertOptions) -> Result<(PathBuf, PathBuf), String> {
    let mut params = CertificateParams::new(options.names.clone()).map_err(|e| format!("invalid name: {e}"))?;
    let first = options.names.first().ok_or("at least one --name is needed")?;
    params.distinguished_name.push(DnType::CommonName, first.as_str());
    let year = current_year();
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + 1, 12, 31);
    let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let cert = params.self_signed(&key).map_err(|e| format!("cannot sign the certificate: {e}"))?;
    std::fs::create_dir_all(&options.out).map_err(|e| format!("cannot create {}: {e}", options.out.display()))?;
    let (cert_path, key_path) = (options.out.join("cert.pem"), options.out.join("key.pem"));
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

/// Creates `path` (refusing to replace a file) with `mode` and writes `contents`.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The year now, in UTC, give or take a day at New Year (the validity has a year's slack
/// on both sides).
fn current_year() -> i32 {
    const SECONDS_PER_YEAR: u64 = 31_556_952;
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    1970 + i32::try_from(since_epoch / SECONDS_PER_YEAR).unwrap_or(0)
}
