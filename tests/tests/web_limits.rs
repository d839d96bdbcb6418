//! The web server's limits against the real daemon, as an attacker on the town hall's LAN would
//! try them: a login flood keeps the daemon small and locks after five failures, a lock made
//! from one address never keeps the user out at another, display sockets stop at their cap,
//! a clerk's socket closes when the clerk logs out, the kiosk API answers only the listed
//! kiosks, and unsigned check-in codes are refused unless the config says otherwise.
//!
//! Client addresses are other loopback addresses (127.0.0.0/8): every test stays on loopback.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use anyhow::Context;
use leitsystem_tests::daemon::{book, daemon_binary, device_line, wait_for, walk_in};
use leitsystem_tests::site::{PASSWORD, connect_from, http, http_from, login_from, session, start};

/// A line of `/proc/<pid>/status` in MiB (`VmRSS`, `VmHWM`).
fn memory_mib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib / 1024)
}

/// `count` logins at once (released together by a barrier), the n-th from `from(n)`; the
/// number of answers per status code.
fn parallel_logins(
    url: &str,
    count: usize,
    name: &str,
    password: &str,
    from: impl Fn(usize) -> Ipv4Addr,
) -> anyhow::Result<BTreeMap<u16, usize>> {
    let barrier = Arc::new(Barrier::new(count));
    let threads: Vec<_> = (0..count)
        .map(|n| {
            let (barrier, url, name, password) = (
                barrier.clone(),
                url.to_string(),
                name.to_string(),
                password.to_string(),
            );
            let address = from(n);
            std::thread::spawn(move || {
                barrier.wait();
                login_from(Some(address), &url, &name, &password).map(|a| a.status)
            })
        })
        .collect();
    let mut statuses = BTreeMap::new();
    for thread in threads {
        let status = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a login thread panicked"))??;
        *statuses.entry(status).or_insert(0) += 1;
    }
    Ok(statuses)
}

#[test]
fn a_login_flood_keeps_the_daemon_small_and_locks_after_five_failures() -> anyhow::Result<()> {
    let site = start(|t| t)?;
    let pid = site.daemon.pid();
    let before = memory_mib(pid, "VmRSS")?;
    eprintln!("HWM at start {} MiB", memory_mib(pid, "VmHWM")?);

    // 200 wrong passwords at once from one address: five are checked, the rest refused.
    let one = Ipv4Addr::new(127, 0, 0, 9);
    let statuses = parallel_logins(&site.url, 200, "chef", "falsch", |_| one)?;
    eprintln!(
        "one address: {statuses:?}; HWM {} MiB",
        memory_mib(pid, "VmHWM")?
    );
    assert_eq!(statuses.get(&401), Some(&5), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&195), "{statuses:?}");
    let locked = login_from(Some(one), &site.url, "chef", PASSWORD)?;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert_eq!(locked.json()?["error"], "locked");

    // 200 at once from 200 addresses: no lock applies, the verifier's queue is the bound.
    let statuses = parallel_logins(&site.url, 200, "chef", "falsch", |n| {
        Ipv4Addr::new(127, 0, 1, u8::try_from(n % 250).unwrap_or(0) + 1)
    })?;
    eprintln!("many addresses: {statuses:?}");
    assert_eq!(
        statuses.get(&401).unwrap_or(&0) + statuses.get(&429).unwrap_or(&0),
        200,
        "{statuses:?}"
    );
    let peak = memory_mib(pid, "VmHWM")?;
    eprintln!("daemon RSS before {before} MiB, peak {peak} MiB");
    assert!(
        peak < 100,
        "the daemon's memory peaked at {peak} MiB during the flood"
    );
    // The right password still works from an address that guessed nothing.
    let ok = login_from(
        Some(Ipv4Addr::new(127, 0, 0, 10)),
        &site.url,
        "chef",
        PASSWORD,
    )?;
    assert_eq!(ok.status, 200, "{}", ok.body);
    Ok(())
}

#[test]
fn a_lock_made_from_one_address_never_keeps_the_user_out_at_another() -> anyhow::Result<()> {
    let site = start(|t| t)?;
    let attacker = Some(Ipv4Addr::new(127, 0, 0, 66));
    for _ in 0..5 {
        assert_eq!(
            login_from(attacker, &site.url, "chef", "falsch")?.status,
            401
        );
    }
    let refused = login_from(attacker, &site.url, "chef", PASSWORD)?;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.header("retry-after").is_some());
    let admin = login_from(
        Some(Ipv4Addr::new(127, 0, 0, 1)),
        &site.url,
        "chef",
        PASSWORD,
    )?;
    assert_eq!(
        admin.status, 200,
        "the admin is locked out by someone else's guesses: {}",
        admin.body
    );
    Ok(())
}

/// A WebSocket handshake on `path` over a fresh connection; the status code and the stream.
fn upgrade(
    host: &str,
    path: &str,
    from: Option<Ipv4Addr>,
    cookie: Option<&str>,
) -> anyhow::Result<(u16, std::net::TcpStream)> {
    let mut stream = connect_from(from, host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{cookie}\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line: {head}"))?;
    Ok((status, stream))
}

#[test]
fn three_thousand_display_sockets_stop_at_the_cap_and_keep_memory_small() -> anyhow::Result<()> {
    let site = start(|t| t.replace("[web]\n", "[web]\nmax_display_sockets = 40\n"))?;
    let host = site.url.trim_start_matches("http://").to_string();
    let pid = site.daemon.pid();
    let mut open = Vec::new();
    let mut statuses = BTreeMap::new();
    for _ in 0..3000 {
        let (status, stream) = upgrade(&host, "/display/ws", None, None)?;
        *statuses.entry(status).or_insert(0) += 1;
        if status == 101 {
            open.push(stream);
        }
    }
    let rss = memory_mib(pid, "VmRSS")?;
    eprintln!(
        "statuses {statuses:?}; daemon RSS {rss} MiB with {} open",
        open.len()
    );
    assert_eq!(statuses.get(&101), Some(&40), "{statuses:?}");
    assert_eq!(statuses.get(&503), Some(&2960), "{statuses:?}");
    assert!(rss < 100, "RSS {rss} MiB with the display sockets open");
    let metrics = http(&site.url, "GET", "/metrics", &[], None)?.body;
    assert!(
        metrics.contains("leitsystem_display_clients 40"),
        "{metrics}"
    );

    // Closed sockets give their places back.
    open.truncate(30);
    wait_for("the places to come back", Duration::from_secs(10), || {
        Ok((upgrade(&host, "/display/ws", None, None)?.0 == 101).then_some(()))
    })?;
    Ok(())
}

/// Reads WebSocket frames until a text frame or a close; `None` for a close frame or the
/// connection's end. Silence until the read timeout is an error, not a close.
fn next_text(stream: &mut std::net::TcpStream) -> anyhow::Result<Option<String>> {
    loop {
        let mut head = [0_u8; 2];
        match stream.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e).context("the socket neither sent nor closed"),
        }
        let opcode = head[0] & 0x0f;
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut ext = [0_u8; 2];
            stream.read_exact(&mut ext)?;
            len = u64::from(u16::from_be_bytes(ext));
        } else if len == 127 {
            let mut ext = [0_u8; 8];
            stream.read_exact(&mut ext)?;
            len = u64::from_be_bytes(ext);
        }
        let mut payload = vec![0_u8; usize::try_from(len)?];
        stream.read_exact(&mut payload)?;
        match opcode {
            0x1 => return Ok(Some(String::from_utf8(payload)?)),
            0x8 => return Ok(None),
            _ => {}
        }
    }
}

#[test]
fn a_clerk_socket_closes_when_the_clerk_logs_out() -> anyhow::Result<()> {
    let site = start(|t| t)?;
    let host = site.url.trim_start_matches("http://").to_string();
    let cookie = session(&site.url, "platz1")?;
    let (status, mut socket) = upgrade(&host, "/api/v1/desks/1/ws", None, Some(&cookie))?;
    assert_eq!(status, 101);
    let first = next_text(&mut socket)?.context("no desk view")?;
    assert!(first.contains("\"type\":\"desk\""), "{first}");
    // Still pushing while logged in: a walk-in reaches the console.
    walk_in(&site.daemon, "meldung")?;
    let pushed = next_text(&mut socket)?.context("no push after the walk-in")?;
    assert!(pushed.contains("\"type\":\"desk\""), "{pushed}");

    let logout = http(
        &site.url,
        "POST",
        "/api/v1/logout",
        &[("Cookie", cookie.as_str())],
        None,
    )?;
    assert_eq!(logout.status, 200);
    walk_in(&site.daemon, "meldung")?;
    // A view already on its way before the logout may still arrive; nothing after it may, and
    // the socket closes.
    let mut after_logout = 0;
    while let Some(text) = next_text(&mut socket)? {
        after_logout += 1;
        assert!(
            after_logout <= 2,
            "the logged-out console keeps getting views: {text}"
        );
        let view: serde_json::Value = serde_json::from_str(&text)?;
        let waiting_for_meldung = view["desk"]["waiting"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|queue| queue["service"] == "meldung")
            .filter_map(|queue| queue["waiting"].as_u64())
            .sum::<u64>();
        assert!(
            waiting_for_meldung < 2,
            "the logged-out console saw the walk-in made after the logout: {text}"
        );
    }
    // And it cannot come back with the old cookie.
    let (again, _) = upgrade(&host, "/api/v1/desks/1/ws", None, Some(&cookie))?;
    assert_eq!(again, 401);
    Ok(())
}

#[test]
fn only_listed_kiosks_pull_tickets_and_the_config_check_says_what_is_open() -> anyhow::Result<()> {
    let site = start(|t| t.replace("[web]\n", "[web]\nkiosk_clients = [\"127.0.0.5\"]\n"))?;
    let pull = |from: Ipv4Addr| {
        http_from(
            Some(from),
            &site.url,
            "POST",
            "/api/v1/kiosk/tickets",
            &[],
            Some(r#"{"service":"meldung"}"#),
        )
    };
    let stranger = pull(Ipv4Addr::new(127, 0, 0, 1))?;
    assert_eq!(stranger.status, 403, "{}", stranger.body);
    assert_eq!(stranger.json()?["error"], "not_a_kiosk");
    let host = site.url.trim_start_matches("http://").to_string();
    assert_eq!(upgrade(&host, "/api/v1/kiosk/ws", None, None)?.0, 403);
    let kiosk = pull(Ipv4Addr::new(127, 0, 0, 5))?;
    assert_eq!(kiosk.status, 200, "{}", kiosk.body);
    assert_eq!(kiosk.json()?["ticket"], "M-001");
    let services = http_from(
        Some(Ipv4Addr::new(127, 0, 0, 5)),
        &site.url,
        "GET",
        "/api/v1/kiosk/services",
        &[],
        None,
    )?;
    assert_eq!(services.status, 200);

    // check-config names what a real site must not leave open.
    let text = std::fs::read_to_string(&site.config)?
        .replace("listen = \"127.0.0.1:", "listen = \"0.0.0.0:")
        .replace("kiosk_clients = [\"127.0.0.5\"]\n", "");
    let open_config = site.config.with_file_name("open.toml");
    std::fs::write(&open_config, text)?;
    let out = std::process::Command::new(daemon_binary()?)
        .arg("check-config")
        .arg(&open_config)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: [web] listens on 0.0.0.0:")
            && stdout.contains("without kiosk_clients"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: [tokens] accept_unsigned = true"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn without_keys_or_accept_unsigned_a_plain_booking_id_checks_nobody_in() -> anyhow::Result<()> {
    let site = start(|t| t.replace("[tokens]\naccept_unsigned = true\n", ""))?;
    let out = std::process::Command::new(daemon_binary()?)
        .arg("check-config")
        .arg(&site.config)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warning: [tokens] has no keys and accept_unsigned is not set"),
        "{stdout}"
    );
    assert!(
        site.daemon
            .log_tail()
            .contains("has no keys and accept_unsigned is not set"),
        "no start-up warning: {}",
        site.daemon.log_tail()
    );
    book(&site.daemon, "BK-PLAIN", "meldung")?;
    let host = site.url.trim_start_matches("http://").to_string();
    let (status, mut kiosk) = upgrade(&host, "/api/v1/kiosk/ws", None, None)?;
    assert_eq!(status, 101);
    device_line(site.scanner, "BK-PLAIN")?;
    let result = loop {
        let text = next_text(&mut kiosk)?.context("the kiosk socket closed")?;
        if text.contains("\"type\":\"scan\"") {
            break text;
        }
    };
    assert!(
        result.contains("\"unsigned\""),
        "the scan was not refused as unsigned: {result}"
    );
    let display = http(&site.url, "GET", "/api/v1/display", &[], None)?.json()?;
    let waiting: u64 = display["queues"]
        .as_array()
        .context("no queues")?
        .iter()
        .map(|q| q["waiting"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(waiting, 0, "{display}");
    Ok(())
}
