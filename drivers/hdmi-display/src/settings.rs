//! The device's options, checked: [`Settings::from_options`].
//!
//! Every mistake is refused with a message naming the option, so `create` fails before any
//! process is started.

use std::time::Duration;

use serde_json::{Map, Value};

/// The page the kiosk shows when `url` is not set: the daemon's wall display page.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080/display";

/// The command when `command` is not set: the cage Wayland kiosk compositor running chromium
/// in kiosk mode. `{url}` is replaced by the `url` option. The autoplay policy lets the page
/// play its gong without anybody touching the screen first.
pub const DEFAULT_COMMAND: [&str; 9] = [
    "cage",
    "--",
    "chromium",
    "--kiosk",
    "--noerrdialogs",
    "--disable-infobars",
    "--incognito",
    "--autoplay-policy=no-user-gesture-required",
    "{url}",
];

/// The placeholder replaced by the `url` option in every element of `command`.
pub const URL_PLACEHOLDER: &str = "{url}";

/// Every option the driver reads.
pub const OPTIONS: [&str; 8] = [
    "command",
    "env",
    "healthy_after_ms",
    "log_output",
    "restart_max_ms",
    "restart_min_ms",
    "stop_timeout_ms",
    "url",
];

/// Default first pause before a restart.
pub const DEFAULT_RESTART_MIN: Duration = Duration::from_millis(1000);
/// Default longest pause before a restart.
pub const DEFAULT_RESTART_MAX: Duration = Duration::from_millis(60_000);
/// Default run time after which a run counts as healthy (and the backoff starts over).
pub const DEFAULT_HEALTHY_AFTER: Duration = Duration::from_millis(10_000);
/// Default time the kiosk gets to exit after SIGTERM before it is killed.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_millis(5000);

/// Everything a device's options say, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Program and arguments, with `{url}` replaced. Never empty.
    pub command: Vec<String>,
    /// The page the kiosk shows (already put into `command`).
    pub url: String,
    /// Extra environment variables for the kiosk, on top of the daemon's environment.
    pub env: Vec<(String, String)>,
    /// First pause before a restart; doubles after each short run.
    pub restart_min: Duration,
    /// Longest pause before a restart.
    pub restart_max: Duration,
    /// A run that lasted this long resets the pause to `restart_min`.
    pub healthy_after: Duration,
    /// How long the kiosk gets after SIGTERM before the whole group gets SIGKILL.
    pub stop_timeout: Duration,
    /// The kiosk's stdout and stderr go to the daemon's log (else to /dev/null).
    pub log_output: bool,
}

impl Settings {
    /// Reads and checks the options (a table; missing means all defaults). An error names the
    /// option.
    pub fn from_options(options: &Value) -> Result<Settings, String> {
        let empty = Map::new();
        let options = match options {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => return Err(format!("the options must be a table, not {other}")),
        };
        for key in options.keys() {
            if !OPTIONS.contains(&key.as_str()) {
                return Err(format!(
                    "unknown option '{key}'; known options: {}",
                    OPTIONS.join(", ")
                ));
            }
        }
        let url = match options.get("url") {
            None => DEFAULT_URL.to_string(),
            Some(Value::String(url)) if !url.trim().is_empty() && !url.contains('\0') => {
                url.clone()
            }
            Some(other) => {
                return Err(format!(
                    "option 'url' must be a non-empty string (the page to show, e.g. \"{DEFAULT_URL}\"), not {other}"
                ));
            }
        };
        let template: Vec<String> = match options.get("command") {
            None => DEFAULT_COMMAND.iter().map(|s| s.to_string()).collect(),
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err(
                        "option 'command' is empty; it must name the program to start, e.g. [\"cage\", \"--\", \"chromium\", \"--kiosk\", \"{url}\"]"
                            .to_string(),
                    );
                }
                let mut command = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if s.contains('\0') => {
                            return Err(format!(
                                "option 'command': element {i} contains a NUL character"
                            ));
                        }
                        Value::String(s) => command.push(s.clone()),
                        other => {
                            return Err(format!(
                                "option 'command' must be an array of strings (program and arguments); element {i} is {other}"
                            ));
                        }
                    }
                }
                if command[0].trim().is_empty() {
                    return Err("option 'command': the program (element 0) is empty".to_string());
                }
                command
            }
            Some(other) => {
                return Err(format!(
                    "option 'command' must be an array of strings (program and arguments), not {other}"
                ));
            }
        };
        let command = template
            .iter()
            .map(|arg| arg.replace(URL_PLACEHOLDER, &url))
            .collect();
        let env = match options.get("env") {
            None => Vec::new(),
            Some(Value::Object(table)) => {
                let mut env = Vec::with_capacity(table.len());
                for (name, value) in table {
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        return Err(format!(
                            "option 'env': '{name}' is not a valid variable name"
                        ));
                    }
                    let value = match value {
                        Value::String(s) if !s.contains('\0') => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(format!(
                                "option 'env': the value of '{name}' must be a string, not {other}"
                            ));
                        }
                    };
                    env.push((name.clone(), value));
                }
                env
            }
            Some(other) => {
                return Err(format!(
                    "option 'env' must be a table of variables (e.g. {{ WLR_LIBINPUT_NO_DEVICES = \"1\" }}), not {other}"
                ));
            }
        };
        let millis = |key: &str,
                      default: Duration,
                      range: std::ops::RangeInclusive<u64>|
         -> Result<Duration, String> {
            match options.get(key) {
                None => Ok(default),
                Some(value) => value
                    .as_u64()
                    .filter(|ms| range.contains(ms))
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        format!(
                            "option '{key}' must be {}..={} milliseconds, not {value}",
                            range.start(),
                            range.end()
                        )
                    }),
            }
        };
        let restart_min = millis("restart_min_ms", DEFAULT_RESTART_MIN, 10..=3_600_000)?;
        let restart_max = millis(
            "restart_max_ms",
            DEFAULT_RESTART_MAX.max(restart_min),
            10..=3_600_000,
        )?;
        if restart_max < restart_min {
            return Err(format!(
                "option 'restart_max_ms' ({}) must not be below 'restart_min_ms' ({})",
                restart_max.as_millis(),
                restart_min.as_millis()
            ));
        }
        let log_output = match options.get("log_output") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(format!(
                    "option 'log_output' must be true or false, not {other}"
                ));
            }
        };
        Ok(Settings {
            command,
            url,
            env,
            restart_min,
            restart_max,
            healthy_after: millis("healthy_after_ms", DEFAULT_HEALTHY_AFTER, 0..=86_400_000)?,
            stop_timeout: millis("stop_timeout_ms", DEFAULT_STOP_TIMEOUT, 0..=600_000)?,
            log_output,
        })
    }

    /// The program, for messages.
    pub fn program(&self) -> &str {
        self.command.first().map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let settings = Settings::from_options(&json!({})).expect("valid");
        assert_eq!(
            settings.command,
            [
                "cage",
                "--",
                "chromium",
                "--kiosk",
                "--noerrdialogs",
                "--disable-infobars",
                "--incognito",
                "--autoplay-policy=no-user-gesture-required",
                "http://127.0.0.1:8080/display",
            ]
        );
        assert_eq!(settings.url, DEFAULT_URL);
        assert!(settings.env.is_empty());
        assert_eq!(settings.restart_min, Duration::from_millis(1000));
        assert_eq!(settings.restart_max, Duration::from_millis(60_000));
        assert_eq!(settings.healthy_after, Duration::from_millis(10_000));
        assert_eq!(settings.stop_timeout, Duration::from_millis(5000));
        assert!(settings.log_output);
        assert_eq!(Settings::from_options(&Value::Null), Ok(settings));
    }

    #[test]
    fn url_placeholder_and_env() {
        let settings = Settings::from_options(&json!({
            "url": "http://display.local:8080/display?dept=1",
            "command": ["/usr/bin/{url}-kiosk", "--app={url}", "x{url}y{url}", "plain"],
            "env": {"WLR_LIBINPUT_NO_DEVICES": 1, "LANG": "de_DE.UTF-8", "DEBUG": false},
            "restart_min_ms": 50,
            "log_output": false,
        }))
        .expect("valid");
        let url = "http://display.local:8080/display?dept=1";
        assert_eq!(
            settings.command,
            [
                format!("/usr/bin/{url}-kiosk"),
                format!("--app={url}"),
                format!("x{url}y{url}"),
                "plain".to_string()
            ]
        );
        assert_eq!(
            settings.env,
            [
                ("DEBUG".to_string(), "false".to_string()),
                ("LANG".to_string(), "de_DE.UTF-8".to_string()),
                ("WLR_LIBINPUT_NO_DEVICES".to_string(), "1".to_string()),
            ]
        );
        assert_eq!(settings.restart_min, Duration::from_millis(50));
        assert!(!settings.log_output);
        // A minimum above the default maximum raises the default maximum.
        let slow = Settings::from_options(&json!({"restart_min_ms": 120_000})).expect("valid");
        assert_eq!(slow.restart_max, Duration::from_millis(120_000));
    }

    #[test]
    fn mistakes_are_named() {
        for (options, expected) in [
            (
                json!({"comand": ["x"]}),
                "unknown option 'comand'; known options: command, env,",
            ),
            (json!({"command": []}), "option 'command' is empty"),
            (
                json!({"command": "chromium --kiosk"}),
                "option 'command' must be an array of strings",
            ),
            (
                json!({"command": ["chromium", 3]}),
                "option 'command' must be an array of strings (program and arguments); element 1 is 3",
            ),
            (
                json!({"command": [""]}),
                "option 'command': the program (element 0) is empty",
            ),
            (
                json!({"command": ["a\u{0}b"]}),
                "option 'command': element 0 contains a NUL",
            ),
            (
                json!({"url": 8080}),
                "option 'url' must be a non-empty string",
            ),
            (
                json!({"url": " "}),
                "option 'url' must be a non-empty string",
            ),
            (json!({"env": ["A=1"]}), "option 'env' must be a table"),
            (
                json!({"env": {"A": [1]}}),
                "option 'env': the value of 'A' must be a string",
            ),
            (
                json!({"env": {"A=B": "1"}}),
                "option 'env': 'A=B' is not a valid variable name",
            ),
            (
                json!({"restart_min_ms": 0}),
                "option 'restart_min_ms' must be 10..=",
            ),
            (
                json!({"restart_min_ms": "1s"}),
                "option 'restart_min_ms' must be",
            ),
            (
                json!({"restart_max_ms": -1}),
                "option 'restart_max_ms' must be",
            ),
            (
                json!({"restart_min_ms": 5000, "restart_max_ms": 1000}),
                "option 'restart_max_ms' (1000) must not be below 'restart_min_ms' (5000)",
            ),
            (
                json!({"healthy_after_ms": 1.5}),
                "option 'healthy_after_ms' must be",
            ),
            (
                json!({"stop_timeout_ms": 700_000}),
                "option 'stop_timeout_ms' must be 0..=600000",
            ),
            (
                json!({"log_output": "yes"}),
                "option 'log_output' must be true or false",
            ),
            (json!([1]), "the options must be a table"),
        ] {
            let err = Settings::from_options(&options).expect_err("refused");
            assert!(err.contains(expected), "{options}: {err}");
        }
    }
}
