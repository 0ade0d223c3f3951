//! Self-signed certificates for TLS tests, made with the `openssl` command.

use std::path::PathBuf;
use std::process::Command;

use super::unique;

/// A test CA, a server certificate it signed (for `localhost` and `127.0.0.1`) and a client
/// certificate it signed, as PEM files in a temporary directory removed on drop. They are
/// valid for a day.
#[derive(Debug)]
pub struct Certificates {
    dir: PathBuf,
}

/// The extensions of the server certificate: the names a test connects to.
const SERVER_EXTENSIONS: &str = "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
     basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
     extendedKeyUsage=serverAuth\n";

/// The extensions of the client certificate (mutual TLS).
const CLIENT_EXTENSIONS: &str = "basicConstraints=CA:FALSE\n\
     keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n";

impl Certificates {
    /// Makes the CA and both certificates (RSA 2048) in a new temporary directory. Panics
    /// when the `openssl` command is missing or fails.
    pub fn generate() -> Self {
        let dir = std::env::temp_dir().join(unique("rodario-tls-"));
        std::fs::create_dir_all(&dir).expect("cannot create the certificates' directory");
        let certificates = Certificates { dir };
        certificates.make();
        certificates
    }

    fn make(&self) {
        for (who, extensions) in [("server", SERVER_EXTENSIONS), ("client", CLIENT_EXTENSIONS)] {
            std::fs::write(self.dir.join(format!("{who}.ext")), extensions)
                .expect("cannot write an extensions file");
        }
        // The CA's extensions are explicit: rustls refuses a CA certificate without them,
        // and not every openssl configuration adds them by default.
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=rodario test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        for who in ["server", "client"] {
            self.openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ]);
            self.openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "1",
                "-extfile",
                &format!("{who}.ext"),
            ]);
        }
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("TLS tests need the `openssl` command on PATH");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The CA certificate, for clients to trust (and servers to check client certificates).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The server certificate's private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The client certificate.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    /// The client certificate's private key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
