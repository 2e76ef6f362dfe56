//! TLS with a key pair that can be swapped while the server runs.
//!
//! The server's rustls configuration does not hold a certificate; it holds a
//! [`CertStore`], which rustls asks for a key pair at every handshake. The
//! store keeps the current pair in an [`ArcSwap`], so [`CertStore::update`]
//! is one atomic pointer swap: handshakes already under way finish with the
//! pair they loaded, every later handshake gets the new one, and open
//! connections are not disturbed. Nothing is restarted and no lock is taken
//! on the handshake path.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::{Error, Result};

/// The serving key pair, shared between the TLS acceptor and whoever rotates it.
///
/// Cloning is cheap and every clone sees the same key pair.
#[derive(Clone)]
pub struct CertStore {
    current: Arc<ArcSwap<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl CertStore {
    /// Builds a store from a PEM certificate chain (leaf first) and a PEM
    /// private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified_key(cert_pem.as_bytes(), key_pem.as_bytes(), &provider)?;
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(key)),
            provider,
        })
    }

    /// Builds a store from a certificate file and a key file, as mounted from
    /// a `kubernetes.io/tls` Secret.
    pub fn from_files(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let (cert_pem, key_pem) = read_pair(cert_path, key_path)?;
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// Replaces the key pair used for new handshakes.
    ///
    /// The pair is parsed and checked (the key must belong to the leaf
    /// certificate) before it is swapped in; on error the old pair stays.
    pub fn update(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        let key = certified_key(cert_pem.as_bytes(), key_pem.as_bytes(), &self.provider)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// Re-reads the pair from files and swaps it in, see [`CertStore::update`].
    pub fn update_from_files(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        let (cert_pem, key_pem) = read_pair(cert_path, key_path)?;
        self.update(&cert_pem, &key_pem)
    }

    /// The key pair new handshakes get now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Polls two files every `interval` and swaps in their contents whenever
    /// they change.
    ///
    /// Contents are compared rather than modification times, which also
    /// catches the symlink swap kubelet performs when a mounted Secret
    /// changes. A pair that fails to load (for example the certificate was
    /// written but the key not yet) is logged and retried when the files
    /// change again; the previous pair keeps serving meanwhile. The future
    /// never completes: drop or abort it to stop watching.
    pub async fn watch_files(self, cert_path: PathBuf, key_path: PathBuf, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seen: Option<(String, String)> = None;
        loop {
            ticker.tick().await;
            let pair = match read_pair(&cert_path, &key_path) {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(error = %error.describe(), "cannot read webhook key pair");
                    continue;
                }
            };
            if last_seen.as_ref() == Some(&pair) {
                continue;
            }
            match self.update(&pair.0, &pair.1) {
                Ok(()) => tracing::info!(
                    cert = %cert_path.display(),
                    "webhook key pair reloaded from files"
                ),
                Err(error) => tracing::warn!(
                    error = %error.describe(),
                    "webhook key pair files changed but do not load; keeping the previous pair"
                ),
            }
            last_seen = Some(pair);
        }
    }

    /// The rustls configuration of the server: TLS 1.3 and 1.2 only, the
    /// `ring` provider, ALPN `h2` then `http/1.1`, no client authentication,
    /// and this store as the certificate source.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(Error::TlsConfig)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("chain_length", &self.current.load().cert.len())
            .finish_non_exhaustive()
    }
}

/// Parses a PEM chain and key into a rustls key pair, checking that they fit.
fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::CertificatePem)?;
    if chain.is_empty() {
        return Err(Error::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(Error::PrivateKeyPem)?;
    CertifiedKey::from_der(chain, key, provider).map_err(Error::KeyPair)
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(String, String)> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })
    };
    Ok((read(cert_path)?, read(key_path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let issued = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (issued.cert.pem(), issued.signing_key.serialize_pem())
    }

    #[test]
    fn update_swaps_the_pair_and_keeps_it_on_error() {
        let (cert, key) = self_signed("first.example");
        let store = CertStore::from_pem(&cert, &key).unwrap();
        let first = store.current().cert[0].clone();

        let (other_cert, other_key) = self_signed("second.example");
        let error = store.update(&other_cert, &key).unwrap_err();
        assert_eq!(error.label(), "key_pair");
        assert_eq!(store.current().cert[0], first);

        store.update(&other_cert, &other_key).unwrap();
        assert_ne!(store.current().cert[0], first);
    }

    #[test]
    fn rejects_input_without_pem_blocks() {
        let (cert, key) = self_signed("x.example");
        assert_eq!(
            CertStore::from_pem("garbage", &key).unwrap_err().label(),
            "no_certificate"
        );
        assert_eq!(
            CertStore::from_pem(&cert, "garbage").unwrap_err().label(),
            "private_key_pem"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watch_files_picks_up_a_new_pair() {
        let dir =
            std::env::temp_dir().join(format!("sandbox-webhook-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        let (cert, key) = self_signed("old.example");
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let store = CertStore::from_files(&cert_path, &key_path).unwrap();
        let old = store.current().cert[0].clone();

        let watcher = tokio::spawn(store.clone().watch_files(
            cert_path.clone(),
            key_path.clone(),
            Duration::from_secs(2),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (new_cert, new_key) = self_signed("new.example");
        std::fs::write(&cert_path, &new_cert).unwrap();
        std::fs::write(&key_path, &new_key).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;

        assert_ne!(store.current().cert[0], old);
        watcher.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
