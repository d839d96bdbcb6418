//! A test site: the real daemon with the web server, an admin and a clerk user and a sim
//! scanner, and a minimal HTTP/1.1 client (optionally from another loopback address).

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::daemon::{Daemon, daemon_binary, free_port, write_config_with_devices};

/// Passwords of the test users (hashes made by the daemon's own `hash-password`).
pub const PASSWORD: &str = "richtig-geheim";

/// An argon2 hash of `password`, made by the daemon's own `hash-password`.
pub fn hash(password: &str) -> anyhow::Result<String> {
    let mut child = std::process::Command::new(daemon_binary()?)
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "hash-password failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A running test site.
pub struct Site {
    /// The daemon.
    pub daemon: Daemon,
    /// `http://127.0.0.1:port` of its web server.
    pub url: String,
    /// Port of the sim scanner.
    pub scanner: u16,
    /// The config file and data directory (to start the daemon again).
    pub config: std::path::PathBuf,
    /// Its data directory.
    pub data: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A daemon with the web server, an admin `chef`, a clerk `platz1` (desk 1) and a sim scanner;
/// `tweak` edits the config text.
pub fn start(tweak: impl Fn(String) -> String) -> anyhow::Result<Site> {
    start_with_env(tweak, &[])
}

/// [`start`] with extra environment for the daemon.
pub fn start_with_env(
    tweak: impl Fn(String) -> String,
    env: &[(&str, &str)],
) -> anyhow::Result<Site> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (port, scanner) = (free_port()?, free_port()?);
    let hash = hash(PASSWORD)?;
    let config = write_config_with_devices(
        dir.path(),
        &data,
        &format!(
            "[web]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[web.user]]\nname = \"chef\"\nrole = \"admin\"\npassword_hash = \"{hash}\"\n\n\
             [[web.user]]\nname = \"platz1\"\nrole = \"clerk\"\ndesks = [\"1\"]\n\
             password_hash = \"{hash}\"\n\n\
             [[device]]\nid = \"foyer-scanner\"\nplugin = \"libleitsystem_sim.so\"\n\
             role = \"scanner\"\noptions = {{ port = {scanner} }}\n"
        ),
    )?;
    let text = tweak(std::fs::read_to_string(&config)?);
    std::fs::write(&config, text)?;
    let daemon = Daemon::start(&config, &data, env)?;
    Ok(Site {
        daemon,
        url: format!("http://127.0.0.1:{port}"),
        scanner,
        config,
        data,
        _dir: dir,
    })
}

impl Site {
    /// Stops the daemon (it must exit cleanly) and starts it again on the same config and data.
    pub fn restart(self) -> anyhow::Result<Site> {
        let Site {
            daemon,
            url,
            scanner,
            config,
            data,
            _dir,
        } = self;
        anyhow::ensure!(
            daemon.terminate()?.success(),
            "the daemon did not stop cleanly"
        );
        let daemon = Daemon::start(&config, &data, &[])?;
        Ok(Site {
            daemon,
            url,
            scanner,
            config,
            data,
            _dir,
        })
    }
}

impl Site {
    /// SIGKILLs the daemon (a power cut or a crash), runs `while_down`, then starts it again
    /// on the same config, data and port.
    pub fn kill9_and_restart(
        self,
        while_down: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<Site> {
        let Site {
            daemon,
            url,
            scanner,
            config,
            data,
            _dir,
        } = self;
        daemon.kill9()?;
        while_down()?;
        let daemon = Daemon::start(&config, &data, &[])?;
        Ok(Site {
            daemon,
            url,
            scanner,
            config,
            data,
            _dir,
        })
    }
}

/// An HTTP answer: status, headers (lower-case names), body.
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
}

impl Answer {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// A minimal HTTP/1.1 request over loopback (no client crate needed).
pub fn http(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<Answer> {
    http_from(None, url, method, path, headers, body)
}

/// A TCP connection to `host` (`ip:port`) from the loopback address `from` (any of
/// 127.0.0.0/8), or from the default address.
pub fn connect_from(
    from: Option<std::net::Ipv4Addr>,
    host: &str,
) -> anyhow::Result<std::net::TcpStream> {
    let Some(from) = from else {
        return Ok(std::net::TcpStream::connect(host)?);
    };
    let target: std::net::SocketAddr = host.parse().context("host is not ip:port")?;
    // SAFETY: plain socket calls on a descriptor this function owns; every result is checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        local.sin_family = libc::AF_INET as libc::sa_family_t;
        local.sin_addr.s_addr = u32::from(from).to_be();
        let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(fd, (&raw const local).cast(), size);
        anyhow::ensure!(
            bound == 0,
            "bind {from}: {}",
            std::io::Error::last_os_error()
        );
        let std::net::SocketAddr::V4(target) = target else {
            anyhow::bail!("IPv4 only");
        };
        let mut remote: libc::sockaddr_in = std::mem::zeroed();
        remote.sin_family = libc::AF_INET as libc::sa_family_t;
        remote.sin_port = target.port().to_be();
        remote.sin_addr.s_addr = u32::from(*target.ip()).to_be();
        let connected = libc::connect(fd, (&raw const remote).cast(), size);
        anyhow::ensure!(
            connected == 0,
            "connect {host} from {from}: {}",
            std::io::Error::last_os_error()
        );
        Ok(stream)
    }
}

/// [`http`] from the loopback address `from`.
pub fn http_from(
    from: Option<std::net::Ipv4Addr>,
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<Answer> {
    let host = url.strip_prefix("http://").context("http only")?;
    let mut stream = connect_from(from, host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).to_string();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `POST /api/v1/login` with that name and password.
pub fn login(url: &str, name: &str, password: &str) -> anyhow::Result<Answer> {
    login_from(None, url, name, password)
}

/// [`login`] from the loopback address `from`.
pub fn login_from(
    from: Option<std::net::Ipv4Addr>,
    url: &str,
    name: &str,
    password: &str,
) -> anyhow::Result<Answer> {
    http_from(
        from,
        url,
        "POST",
        "/api/v1/login",
        &[],
        Some(&serde_json::json!({"name": name, "password": password}).to_string()),
    )
}

/// The session cookie (`name=value`) of a successful login.
pub fn session(url: &str, name: &str) -> anyhow::Result<String> {
    let answer = login(url, name, PASSWORD)?;
    anyhow::ensure!(answer.status == 200, "login {name}: {}", answer.body);
    let cookie = answer.header("set-cookie").context("no cookie")?;
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    Ok(cookie.split(';').next().unwrap_or_default().to_string())
}
