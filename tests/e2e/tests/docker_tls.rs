//! The Docker API on TCP: only behind TLS that verifies the client's
//! certificate (dockerd's `--tlsverify`). A CA, a server and a client
//! certificate are made with openssl for each run.

use std::path::Path;
use std::process::Command;

use berth_e2e::free_port;
use berth_testkit::TestDaemon;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (hack/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ca.pem, server-{cert,key}.pem (for 127.0.0.1), and a client
/// certificate signed by the CA (cert.pem/key.pem), plus one signed by a
/// CA the server does not trust (rogue-*.pem).
fn make_certs(dir: &Path) {
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "[server]\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n\
         [client]\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for ca in ["ca", "rogue-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                &format!("/CN={ca}"),
                "-keyout",
                &format!("{ca}-key.pem"),
                "-out",
                &format!("{ca}.pem"),
            ],
        );
    }
    let sign = |name: &str, ca: &str, section: &str| {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}-key.pem"),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "ext.cnf",
                "-extensions",
                section,
                "-out",
                &format!("{name}-cert.pem"),
            ],
        );
    };
    sign("server", "ca", "server");
    sign("client", "ca", "client");
    sign("rogue", "rogue-ca", "client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_serves_only_clients_with_a_certificate_from_the_ca() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    make_certs(dir);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let p = |f: &str| dir.join(f).display().to_string();
    let d = TestDaemon::builder()
        .arg("--docker-tcp")
        .arg(&addr)
        .arg("--docker-tlscacert")
        .arg(&p("ca.pem"))
        .arg("--docker-tlscert")
        .arg(&p("server-cert.pem"))
        .arg("--docker-tlskey")
        .arg(&p("server-key.pem"))
        .start()
        .await;
    let host = format!("tcp://{addr}");
    let docker = |cert: Option<&str>| {
        let mut cmd = d.docker_command();
        cmd.env_remove("DOCKER_HOST")
            .args(["-H", &host, "--tlscacert", &p("ca.pem")]);
        match cert {
            Some(name) => cmd.args([
                "--tlsverify",
                "--tlscert",
                &p(&format!("{name}-cert.pem")),
                "--tlskey",
                &p(&format!("{name}-key.pem")),
            ]),
            None => cmd.arg("--tls"),
        };
        cmd.args(["version", "--format", "{{.Server.APIVersion}}"]);
        cmd.output().expect("run docker")
    };

    let trusted = docker(Some("client"));
    assert!(
        trusted.status.success(),
        "a client with the CA's certificate was refused: {}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&trusted.stdout).trim(), "1.41");

    for (who, cert) in [
        ("no certificate", None),
        ("another CA's certificate", Some("rogue")),
    ] {
        let refused = docker(cert);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "a client with {who} was served");
        assert!(
            stderr.contains("certificate")
                || stderr.contains("tls")
                || stderr.contains("handshake"),
            "a client with {who} failed for another reason than TLS: {stderr}"
        );
    }
    assert!(
        d.log().contains("docker TLS handshake refused"),
        "berthd did not log the refused handshakes"
    );
    d.assert_no_leaks();
}
