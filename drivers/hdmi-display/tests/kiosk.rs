//! The built plugin (`libleitsystem_hdmi_display.so`), loaded through
//! `leitsystem_plugin::testing` as the daemon loads it, supervising stand-in kiosk commands
//! (`sh -c '...'` scripts that write their pid to a file and `exec sleep`) instead of a
//! browser. Every wait is bounded.

use std::path::Path;
use std::time::{Duration, Instant};

use leitsystem_plugin::testing::{TestDevice, TestPlugin};
use leitsystem_plugin::{HostMessage, LogLevel, PluginMessage};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

fn load() -> Result<TestPlugin, String> {
    TestPlugin::load_built("libleitsystem_hdmi_display.so")
}

/// `sh -c SCRIPT sh ARGS...`: in the script `$1`... are the arguments.
fn sh(script: &str, args: &[&str]) -> Value {
    let mut command = vec!["sh", "-c", script, "sh"];
    command.extend_from_slice(args);
    json!(command)
}

/// Whether `pid` is a live process (a zombie is not: it has exited, it is only not yet reaped
/// by whoever inherited it).
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `file` has at least `n` lines; returns them.
fn wait_lines(file: &Path, n: usize, timeout: Duration) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = lines(file);
        if found.len() >= n {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} has {} lines, not {n}, after {timeout:?}: {found:?}",
                file.display(),
                found.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `file` holds a pid (written by the stand-in); returns it.
fn wait_pid(file: &Path) -> Result<i32, String> {
    let line = wait_lines(file, 1, WAIT)?.remove(0);
    line.trim()
        .parse()
        .map_err(|e| format!("{}: '{line}' is not a pid: {e}", file.display()))
}

fn is_connection(m: &PluginMessage, connected: bool) -> bool {
    matches!(m, PluginMessage::Connection { connected: c, .. } if *c == connected)
}

fn detail(m: &PluginMessage) -> String {
    match m {
        PluginMessage::Connection { detail, .. } => detail.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

/// The connection details so far, `true`/`false` with their detail.
fn connections(device: &TestDevice<'_>) -> Vec<(bool, String)> {
    device
        .messages()
        .iter()
        .filter_map(|m| match m {
            PluginMessage::Connection { connected, detail } => {
                Some((*connected, detail.clone().unwrap_or_default()))
            }
            _ => None,
        })
        .collect()
}

fn logs(device: &TestDevice<'_>) -> Vec<(LogLevel, String)> {
    device
        .messages()
        .iter()
        .filter_map(|m| match m {
            PluginMessage::Log { level, message } => Some((*level, message.clone())),
            _ => None,
        })
        .collect()
}

/// Waits for `connection {connected: true}` after `from`; returns the pid in its detail.
fn wait_running(device: &TestDevice<'_>, from: usize) -> Result<i32, String> {
    let message = device.wait_for(from, "connection true", WAIT, |m| is_connection(m, true))?;
    let detail = detail(&message);
    detail
        .strip_prefix("kiosk running, pid ")
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| format!("unexpected detail '{detail}'"))
}

#[test]
fn starts_the_kiosk_and_reports_it() -> Result<(), String> {
    let plugin = load()?;
    assert_eq!(plugin.name(), "hdmi-display");
    assert_eq!(plugin.roles(), "display");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let starts = dir.path().join("starts");
    let script = format!(
        "echo started $$ \"$1\" \"$KIOSK_TEST\" >> '{}'; exec sleep 1000",
        starts.display()
    );
    let mut device = plugin.create_device(
        "wall",
        "display",
        json!({
            "command": sh(&script, &["{url}"]),
            "url": "http://127.0.0.1:18080/display",
            "env": {"KIOSK_TEST": "from-env"},
            "restart_min_ms": 100,
        }),
    )?;
    let pid = wait_running(&device, 0)?;
    let started = wait_lines(&starts, 1, WAIT)?;
    assert_eq!(
        started,
        [format!(
            "started {pid} http://127.0.0.1:18080/display from-env"
        )]
    );
    assert!(alive(pid), "the kiosk runs");

    // Display states are accepted (and only remembered); print jobs are refused.
    device.send(&HostMessage::Display {
        state: json!({"calls": [{"ticket": "A-001", "desk": "1", "desk_label": "Platz 1", "at": 0, "recall": false}]}),
    })?;
    let refused = device
        .send(&HostMessage::Print {
            job: "x".into(),
            document: leitsystem_plugin::document::Document {
                number: "A-001".into(),
                blocks: Vec::new(),
            },
        })
        .expect_err("a display does not print");
    assert!(refused.contains("takes no 'print' messages"), "{refused}");

    // It keeps running: no restart, no second start.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&starts).len(), 1);
    assert_eq!(
        connections(&device),
        [(true, format!("kiosk running, pid {pid}"))]
    );

    let took = device.destroy();
    assert!(took < Duration::from_secs(1), "destroy took {took:?}");
    assert!(!alive(pid), "the kiosk is gone after destroy");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "and reaped (no zombie left)"
    );
    let logs = logs(&device);
    assert!(
        logs.iter().any(|(_, m)| m.starts_with(&format!(
            "kiosk (pid {pid}) stopped: was killed by signal 15"
        ))),
        "{logs:?}"
    );
    assert!(device.invalid_messages().is_empty());
    Ok(())
}

#[test]
fn restarts_a_killed_kiosk_after_the_pause() -> Result<(), String> {
    let plugin = load()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let starts = dir.path().join("starts");
    let script = format!("echo $$ >> '{}'; exec sleep 1000", starts.display());
    let mut device = plugin.create_device(
        "wall",
        "display",
        json!({"command": sh(&script, &[]), "restart_min_ms": 300}),
    )?;
    let first = wait_running(&device, 0)?;
    assert_eq!(wait_lines(&starts, 1, WAIT)?, [first.to_string()]);

    let mark = device.mark();
    // SAFETY: plain syscall on the stand-in's pid.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let down = device.wait_for(mark, "connection false", WAIT, |m| is_connection(m, false))?;
    assert_eq!(
        detail(&down),
        "kiosk was killed by signal 9 (SIGKILL), restart in 300 ms"
    );
    let second = wait_running(&device, mark)?;
    let pause = killed.elapsed();
    assert_ne!(first, second);
    assert!(
        pause >= Duration::from_millis(280),
        "restarted after {pause:?}"
    );
    assert_eq!(
        wait_lines(&starts, 2, WAIT)?,
        [first.to_string(), second.to_string()]
    );
    assert!(alive(second));
    assert!(!alive(first));

    let took = device.destroy();
    assert!(took < Duration::from_secs(1), "destroy took {took:?}");
    assert!(!alive(second));
    assert_eq!(lines(&starts).len(), 2, "no start after destroy");
    Ok(())
}

#[test]
fn a_kiosk_that_exits_at_once_is_restarted_with_growing_pauses() -> Result<(), String> {
    let plugin = load()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let starts = dir.path().join("starts");
    // Nanoseconds since the epoch of every start.
    let script = format!("date +%s%N >> '{}'; exit 3", starts.display());
    let mut device = plugin.create_device(
        "wall",
        "display",
        json!({
            "command": sh(&script, &[]),
            "restart_min_ms": 100,
            "restart_max_ms": 800,
            "healthy_after_ms": 10_000,
        }),
    )?;
    // Pauses 100, 200, 400, 800, 800: six starts in about 2.3 s.
    let planned = [100u64, 200, 400, 800, 800];
    let found = wait_lines(&starts, planned.len() + 1, Duration::from_secs(10))?;
    let times: Vec<u64> = found
        .iter()
        .map(|l| l.trim().parse::<u64>().map_err(|e| format!("'{l}': {e}")))
        .collect::<Result<_, _>>()?;
    let intervals: Vec<u64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    for (i, (&interval, &pause)) in intervals.iter().zip(&planned).enumerate() {
        assert!(
            // At least the pause; the rest is starting `sh` and `date` (slow on a busy
            // machine), far less than the next pause.
            interval >= pause && interval < pause + 1000,
            "interval {i} is {interval} ms, the pause {pause} ms: {intervals:?}"
        );
    }
    let downs: Vec<String> = connections(&device)
        .into_iter()
        .filter(|(up, _)| !up)
        .map(|(_, d)| d)
        .take(planned.len())
        .collect();
    let expected: Vec<String> = planned
        .iter()
        .map(|p| format!("kiosk exited with status 3, restart in {p} ms"))
        .collect();
    assert_eq!(downs, expected);

    let took = device.destroy();
    assert!(took < Duration::from_secs(1), "destroy took {took:?}");
    // Not a busy loop: nothing more starts once destroyed.
    let count = lines(&starts).len();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(lines(&starts).len(), count);
    Ok(())
}

#[test]
fn a_healthy_run_starts_the_pauses_over() -> Result<(), String> {
    let plugin = load()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let starts = dir.path().join("starts");
    // Every run lasts 0.4 s, longer than healthy_after: the pause stays at its minimum.
    let script = format!("echo $$ >> '{}'; sleep 0.4; exit 1", starts.display());
    let mut device = plugin.create_device(
        "wall",
        "display",
        json!({
            "command": sh(&script, &[]),
            "restart_min_ms": 100,
            "healthy_after_ms": 300,
        }),
    )?;
    wait_lines(&starts, 3, WAIT)?;
    let downs: Vec<String> = connections(&device)
        .into_iter()
        .filter(|(up, _)| !up)
        .map(|(_, d)| d)
        .collect();
    assert!(downs.len() >= 2, "{downs:?}");
    for detail in &downs {
        assert_eq!(detail, "kiosk exited with status 1, restart in 100 ms");
    }
    device.destroy();
    Ok(())
}

#[test]
fn a_missing_program_is_reported_and_retried() -> Result<(), String> {
    let plugin = load()?;
    let mut device = plugin.create_device(
        "wall",
        "display",
        json!({
            "command": ["/nonexistent/kiosk-browser", "{url}"],
            "restart_min_ms": 50,
            "restart_max_ms": 200,
        }),
    )?;
    let found = device.wait_until("three failed starts", WAIT, |messages| {
        let downs: Vec<String> = messages
            .iter()
            .filter(|m| is_connection(m, false))
            .map(detail)
            .collect();
        (downs.len() >= 4).then_some(downs)
    })?;
    for (detail, pause) in found.iter().zip([50, 100, 200, 200]) {
        assert_eq!(
            detail,
            &format!(
                "cannot start '/nonexistent/kiosk-browser': No such file or directory (os error 2), retry in {pause} ms"
            )
        );
    }
    assert!(
        !device.messages().iter().any(|m| is_connection(m, true)),
        "never reported as running"
    );
    let took = device.destroy();
    assert!(took < Duration::from_millis(500), "destroy took {took:?}");
    Ok(())
}

#[test]
fn destroy_kills_the_whole_process_group() -> Result<(), String> {
    let plugin = load()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (leader, grandchild) = (dir.path().join("leader"), dir.path().join("grandchild"));
    let script = format!(
        "sleep 1000 & echo $! > '{}'; echo $$ > '{}'; exec sleep 1000",
        grandchild.display(),
        leader.display()
    );
    let mut device =
        plugin.create_device("wall", "display", json!({"command": sh(&script, &[])}))?;
    let pid = wait_running(&device, 0)?;
    let (leader, grandchild) = (wait_pid(&leader)?, wait_pid(&grandchild)?);
    assert_eq!(pid, leader);
    assert!(alive(leader) && alive(grandchild));

    let took = device.destroy();
    assert!(took < Duration::from_secs(1), "destroy took {took:?}");
    assert!(!alive(leader), "the kiosk is gone");
    assert!(!alive(grandchild), "its child is gone too");
    Ok(())
}

#[test]
fn a_kiosk_ignoring_sigterm_is_killed_after_the_stop_timeout() -> Result<(), String> {
    let plugin = load()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (leader, grandchild) = (dir.path().join("leader"), dir.path().join("grandchild"));
    // An ignored signal stays ignored across exec and in children.
    let script = format!(
        "trap '' TERM; sleep 1000 & echo $! > '{}'; echo $$ > '{}'; exec sleep 1000",
        grandchild.display(),
        leader.display()
    );
    let mut device = plugin.create_device(
        "wall",
        "display",
        json!({"command": sh(&script, &[]), "stop_timeout_ms": 300}),
    )?;
    wait_running(&device, 0)?;
    let (leader, grandchild) = (wait_pid(&leader)?, wait_pid(&grandchild)?);
    let took = device.destroy();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
        "destroy took {took:?}"
    );
    assert!(!alive(leader) && !alive(grandchild));
    let logs = logs(&device);
    assert!(
        logs.iter().any(|(level, m)| *level == LogLevel::Warn
            && m == &format!(
                "kiosk (pid {leader}) did not exit within 300 ms of SIGTERM; killing it"
            )),
        "{logs:?}"
    );
    Ok(())
}

#[test]
fn what_an_exited_kiosk_left_behind_is_killed_before_the_restart() -> Result<(), String> {
    let plugin = load()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let grandchildren = dir.path().join("grandchildren");
    let script = format!(
        "sleep 1000 & echo $! >> '{}'; sleep 0.1; exit 2",
        grandchildren.display()
    );
    let mut device = plugin.create_device(
        "wall",
        "display",
        json!({"command": sh(&script, &[]), "restart_min_ms": 200}),
    )?;
    let down = device.wait_for(0, "connection false", WAIT, |m| is_connection(m, false))?;
    assert_eq!(
        detail(&down),
        "kiosk exited with status 2, restart in 200 ms"
    );
    let first: i32 = wait_pid(&grandchildren)?;
    assert!(!alive(first), "the orphan of the first run is gone");
    device.destroy();
    for pid in lines(&grandchildren) {
        let pid: i32 = pid.trim().parse().map_err(|e| format!("{pid}: {e}"))?;
        assert!(!alive(pid), "{pid} left running");
    }
    Ok(())
}

#[test]
fn output_goes_to_the_log_in_bounded_lines() -> Result<(), String> {
    let plugin = load()?;
    let script = "echo hello from the kiosk; echo oops >&2; \
                  head -c 5000 /dev/zero | tr '\\0' x; echo; exec sleep 1000";
    let mut device =
        plugin.create_device("wall", "display", json!({"command": sh(script, &[])}))?;
    device.wait_until("three output lines", WAIT, |messages| {
        let n = messages
            .iter()
            .filter(|m| matches!(m, PluginMessage::Log { message, .. } if message.starts_with("kiosk std")))
            .count();
        (n >= 3).then_some(())
    })?;
    let output: Vec<String> = logs(&device)
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.starts_with("kiosk std"))
        .collect();
    assert!(
        output.contains(&"kiosk stdout: hello from the kiosk".to_string()),
        "{output:?}"
    );
    assert!(
        output.contains(&"kiosk stderr: oops".to_string()),
        "{output:?}"
    );
    let long = output
        .iter()
        .find(|m| m.contains("xxx"))
        .ok_or("the long line is missing")?;
    assert!(long.len() < 1100, "cut: {} bytes", long.len());
    assert!(long.ends_with("[line cut at 1000 bytes]"), "{long}");
    device.destroy();

    // log_output = false: the output goes to /dev/null.
    let mut quiet = plugin.create_device(
        "wall",
        "display",
        json!({"command": sh(script, &[]), "log_output": false}),
    )?;
    wait_running(&quiet, 0)?;
    std::thread::sleep(Duration::from_millis(300));
    quiet.destroy();
    let output: Vec<String> = logs(&quiet)
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.starts_with("kiosk std"))
        .collect();
    assert!(output.is_empty(), "{output:?}");
    Ok(())
}

#[test]
fn a_flood_of_output_is_limited() -> Result<(), String> {
    let plugin = load()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let done = dir.path().join("done");
    let script = format!(
        "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done; echo > '{}'; exec sleep 1000",
        done.display()
    );
    let mut device =
        plugin.create_device("wall", "display", json!({"command": sh(&script, &[])}))?;
    device.wait_until("100 output lines", WAIT, |messages| {
        let n = messages
            .iter()
            .filter(|m| matches!(m, PluginMessage::Log { message, .. } if message.starts_with("kiosk stdout")))
            .count();
        (n >= 100).then_some(())
    })?;
    // All 300 are in the pipe once `done` exists; destroy reads the pipe to its end.
    wait_lines(&done, 1, WAIT)?;
    device.destroy();
    let logs = logs(&device);
    let logged = logs
        .iter()
        .filter(|(_, m)| m.starts_with("kiosk stdout"))
        .count();
    assert_eq!(logged, 100);
    assert!(
        logs.iter()
            .any(|(_, m)| m == "200 lines of kiosk output not logged (more than 100 in 10 s)"),
        "{logs:?}"
    );
    Ok(())
}

#[test]
fn bad_options_are_refused() -> Result<(), String> {
    let plugin = load()?;
    for (options, expected) in [
        (
            json!({"colour": "red"}),
            "unknown option 'colour'; known options: command, env,",
        ),
        (json!({"command": []}), "option 'command' is empty"),
        (
            json!({"command": "chromium --kiosk"}),
            "option 'command' must be an array of strings",
        ),
        (json!({"command": ["chromium", {"a": 1}]}), "element 1 is"),
        (json!({"env": "A=1"}), "option 'env' must be a table"),
        (
            json!({"env": {"A": {"b": 1}}}),
            "option 'env': the value of 'A' must be a string",
        ),
        (
            json!({"url": false}),
            "option 'url' must be a non-empty string",
        ),
        (
            json!({"restart_min_ms": "fast"}),
            "option 'restart_min_ms' must be",
        ),
        (
            json!({"restart_min_ms": 2000, "restart_max_ms": 1000}),
            "option 'restart_max_ms' (1000) must not be below 'restart_min_ms' (2000)",
        ),
        (
            json!({"healthy_after_ms": -5}),
            "option 'healthy_after_ms' must be",
        ),
        (
            json!({"stop_timeout_ms": 1e9}),
            "option 'stop_timeout_ms' must be",
        ),
        (
            json!({"log_output": 1}),
            "option 'log_output' must be true or false",
        ),
        (json!("cage"), "the options must be a table"),
    ] {
        let err = plugin
            .create_device("wall", "display", options.clone())
            .expect_err("refused");
        assert!(err.contains(expected), "{options}: {err}");
    }
    let err = plugin
        .create_device("printer", "printer", json!({}))
        .expect_err("refused");
    assert!(err.contains("has role 'printer'"), "{err}");
    Ok(())
}
