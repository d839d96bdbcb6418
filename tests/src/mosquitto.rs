//! A real Mosquitto broker for the sync tests: on 127.0.0.1 with a free port, anonymous
//! (optionally a second listener with TLS or a password file), persistence in a temporary
//! directory (retained messages and persistent sessions survive a
//! restart), default limits (`max_queued_messages` 1000, `max_inflight_messages` 20).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The broker binary: on PATH or in /usr/sbin (Debian puts it there).
pub fn mosquitto_binary() -> anyhow::Result<PathBuf> {
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
    {
        let candidate = dir.join("mosquitto");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("`mosquitto` is missing: install the Debian package mosquitto (tests/run does)")
}

/// `mosquitto_sub`, or an error naming its package.
pub fn mosquitto_sub_binary() -> anyhow::Result<PathBuf> {
    mosquitto_client("mosquitto_sub")
}

/// `mosquitto_pub`, or an error naming its package.
pub fn mosquitto_pub_binary() -> anyhow::Result<PathBuf> {
    mosquitto_client("mosquitto_pub")
}

fn mosquitto_client(name: &str) -> anyhow::Result<PathBuf> {
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("`{name}` is missing: install the Debian package mosquitto-clients")
}

/// Started as root, Mosquitto switches to the user `mosquitto`, which cannot write its
/// persistence file into our temporary directory (owned by root, mode 0700): every save then
/// fails ("Error saving in-memory database ... Permission denied") and a restart loses the
/// retained snapshots and every persistent session. `user root` keeps it running as the user
/// that owns the directory. Not root: Mosquitto does not switch users anyway.
fn run_as_root_line() -> &'static str {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        "user root\n"
    } else {
        ""
    }
}

/// A running broker; stopped when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    /// Its port on 127.0.0.1 (anonymous, plain TCP: the website simulator uses it).
    pub port: u16,
    /// The second listener's port, if started with one ([`Mosquitto::start_with_listener`]).
    pub secure_port: Option<u16>,
    /// That listener's settings (TLS, password file ...).
    secure_settings: String,
    dir: PathBuf,
}

impl Mosquitto {
    /// Starts a broker with its config and persistence in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Mosquitto> {
        Self::start_inner(dir, None)
    }

    /// Starts a broker with a second listener on 127.0.0.1 configured by `settings`
    /// (Mosquitto listener options, one per line, e.g. `certfile ...` or `password_file ...`);
    /// settings are per listener, so the first one stays anonymous for the simulator.
    pub fn start_with_listener(dir: &Path, settings: &str) -> anyhow::Result<Mosquitto> {
        Self::start_inner(dir, Some(settings))
    }

    fn start_inner(dir: &Path, settings: Option<&str>) -> anyhow::Result<Mosquitto> {
        let port = crate::daemon::free_port()?;
        let secure_port = settings.map(|_| crate::daemon::free_port()).transpose()?;
        std::fs::create_dir_all(dir)?;
        let mut broker = Mosquitto {
            child: None,
            port,
            secure_port,
            secure_settings: settings.unwrap_or_default().to_string(),
            dir: dir.to_path_buf(),
        };
        broker.launch()?;
        Ok(broker)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let config = self.dir.join("mosquitto.conf");
        let mut text = format!(
            "per_listener_settings true\npersistence true\npersistence_location {}/\n\
             autosave_interval 1\n{}listener {} 127.0.0.1\nallow_anonymous true\n",
            self.dir.display(),
            run_as_root_line(),
            self.port,
        );
        if let Some(secure) = self.secure_port {
            text.push_str(&format!(
                "listener {secure} 127.0.0.1\n{}\n",
                self.secure_settings
            ));
        }
        std::fs::write(&config, text)?;
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))?;
        let child = Command::new(mosquitto_binary()?)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting mosquitto")?;
        self.child = Some(child);
        let started = Instant::now();
        for port in std::iter::once(self.port).chain(self.secure_port) {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if started.elapsed() > Duration::from_secs(10) {
                    bail!(
                        "mosquitto did not accept connections on port {port} within 10 s; log:\n{}",
                        self.log_tail(10)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Stops the broker (SIGTERM: it saves its persistence file), waiting for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = libc::pid_t::try_from(child.id())?;
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let started = Instant::now();
            while child.try_wait()?.is_none() {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // A restart must keep the retained messages and sessions: a broker that could not
            // save them would make the tests pass or fail by chance.
            let log = std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.contains("Error saving")) {
                bail!(
                    "mosquitto could not save its persistence file: {line}\n{}",
                    self.log_tail(10)
                );
            }
        }
        Ok(())
    }

    /// The last `lines` lines the broker logged (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Starts it again on the same port with the same persistence.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.launch()
    }

    /// The `[mqtt]` section for a daemon using this broker (fast reconnects for tests).
    pub fn mqtt_section(&self) -> String {
        Self::section("127.0.0.1", self.port)
    }

    /// The `[mqtt]` section for the second listener, on `host` (`127.0.0.1` or `localhost`),
    /// followed by `extra` lines of that table (e.g. `tls = {...}`, `username = ...`).
    pub fn secure_mqtt_section(&self, host: &str, extra: &str) -> anyhow::Result<String> {
        let port = self
            .secure_port
            .context("the broker has no second listener")?;
        Ok(format!("{}{extra}\n", Self::section(host, port)))
    }

    /// The client id is unique per test process and broker port: a daemon leaked by an
    /// earlier, aborted test run keeps reconnecting to its broker's port with the default
    /// id (`leitsystemd-<site>`); once a new broker gets that port, the two daemons took the
    /// session from each other in a loop ("already connected, closing old connection",
    /// 252 connections in 60 s) and the test timed out.
    fn section(host: &str, port: u16) -> String {
        format!(
            "\n[mqtt]\nhost = \"{host}\"\nport = {port}\nclient_id = \"leitsystemd-test-{}-{port}\"\n\
             reconnect_min_ms = 50\nreconnect_max_ms = 500\n",
            std::process::id()
        )
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Certificates for a TLS test, made with the `openssl` command-line tool: a CA, a server
/// certificate for 127.0.0.1 and localhost, a client certificate, and an unrelated second CA.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The broker's certificate and key.
    pub server_cert: PathBuf,
    /// The broker's key.
    pub server_key: PathBuf,
    /// The appliance's client certificate, signed by the CA.
    pub client_cert: PathBuf,
    /// Its key (PKCS#8).
    pub client_key: PathBuf,
    /// Another CA that signed nothing here (a wrong `ca_file`).
    pub other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = match Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`openssl` is missing: install the Debian package openssl")
        }
        Err(e) => return Err(e).context("running openssl"),
    };
    if !output.status.success() {
        bail!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

impl TestPki {
    /// Makes the certificates in `dir` (P-256 keys, valid for two days).
    pub fn create(dir: &Path) -> anyhow::Result<TestPki> {
        std::fs::create_dir_all(dir)?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (name, cn) in [("ca", "Leitsystem Test CA"), ("other-ca", "Unrelated CA")] {
            let mut args = vec!["req", "-x509"];
            args.extend_from_slice(&ec);
            let key = format!("{name}.key");
            let cert = format!("{name}.pem");
            let subject = format!("/CN={cn}");
            args.extend_from_slice(&[
                "-keyout",
                &key,
                "-out",
                &cert,
                "-days",
                "2",
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(dir, &args)?;
        }
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=clientAuth\n",
            ),
        ] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let cert = format!("{name}.pem");
            let extfile = format!("{name}.ext");
            std::fs::write(dir.join(&extfile), ext)?;
            let subject = format!("/CN=leitsystem-test-{name}");
            let mut args = vec!["req"];
            args.extend_from_slice(&ec);
            args.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", &subject]);
            openssl(dir, &args)?;
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &cert,
                    "-days",
                    "2",
                    "-extfile",
                    &extfile,
                ],
            )?;
        }
        Ok(TestPki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
        })
    }

    /// Mosquitto listener settings: TLS with this server certificate, client certificates
    /// required (signed by the CA).
    pub fn listener_settings(&self) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nallow_anonymous true",
            self.ca.display(),
            self.server_cert.display(),
            self.server_key.display()
        )
    }
}

/// Writes a Mosquitto password file with one user (`mosquitto_passwd -b`); returns the
/// listener settings that require it.
pub fn password_listener(dir: &Path, user: &str, password: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("passwords");
    std::fs::write(&file, "")?;
    let status = match Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&file)
        .args([user, password])
        .stdin(Stdio::null())
        .status()
    {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`mosquitto_passwd` is missing: install the Debian package mosquitto")
        }
        Err(e) => return Err(e).context("running mosquitto_passwd"),
    };
    if !status.success() {
        bail!("mosquitto_passwd -b failed: {status}");
    }
    Ok(format!(
        "allow_anonymous false\npassword_file {}",
        file.display()
    ))
}
