//! The built `sim` plugin (`libleitsystem_sim.so`), loaded with libloading as the daemon
//! loads it: each role behaves like a device (scanner and button lines over TCP, printer jobs
//! as files with a paper-out switch, display state as a file), and destroy stops promptly.

use std::ffi::{CStr, c_char, c_void};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use leitsystem_plugin::messages::{
    ButtonAction, Paper, decode_plugin_message, encode_host_message,
};
use leitsystem_plugin::{
    ABI_VERSION, ENTRY_SYMBOL, EntryFn, HostApi, HostMessage, PluginDescriptor, PluginMessage,
};

fn plugin_path() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("target/<profile>/deps");
    [
        deps.join("libleitsystem_sim.so"),
        deps.join("../libleitsystem_sim.so"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .expect("libleitsystem_sim.so is built next to the tests (cargo test -p leitsystem-sim)")
}

static RECEIVED: Mutex<Vec<PluginMessage>> = Mutex::new(Vec::new());

unsafe extern "C" fn collect(_ctx: *mut c_void, message: *const u8, len: usize) {
    // SAFETY: the plugin passes `len` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(message, len) };
    let message = decode_plugin_message(bytes).expect("the plugin emits valid messages");
    RECEIVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(message);
}

fn wait_for(what: &str, found: impl Fn(&[PluginMessage]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if found(&RECEIVED.lock().unwrap_or_else(|p| p.into_inner())) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what}: {:?}",
            RECEIVED.lock().unwrap_or_else(|p| p.into_inner())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Plugin {
    descriptor: &'static PluginDescriptor,
    api: Box<HostApi>,
    _library: libloading::Library,
}

impl Plugin {
    fn load() -> Plugin {
        // SAFETY: loading our own plugin; its initialisers are trivial.
        let library = unsafe { libloading::Library::new(plugin_path()) }.expect("the plugin loads");
        // SAFETY: the entry symbol has the ABI's type and returns a static descriptor.
        let descriptor = unsafe {
            &*library
                .get::<EntryFn>(ENTRY_SYMBOL.as_bytes())
                .expect("entry symbol")()
        };
        let api = Box::new(HostApi {
            size: std::mem::size_of::<HostApi>() as u32,
            abi_version: ABI_VERSION,
            ctx: std::ptr::null_mut(),
            emit: collect,
        });
        Plugin {
            descriptor,
            api,
            _library: library,
        }
    }

    fn create(&self, config: serde_json::Value) -> Result<*mut c_void, String> {
        let body = config.to_string();
        let mut err = [0 as c_char; 256];
        let mut instance = std::ptr::null_mut();
        // SAFETY: valid buffers per the ABI.
        let code = unsafe {
            (self.descriptor.create)(
                body.as_ptr(),
                body.len(),
                &*self.api,
                &mut instance,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        // SAFETY: NUL-terminated by the SDK.
        if code == 0 {
            Ok(instance)
        } else {
            Err(unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned())
        }
    }

    fn send(&self, instance: *mut c_void, message: &HostMessage) -> Result<(), String> {
        let body = encode_host_message(message);
        let mut err = [0 as c_char; 256];
        // SAFETY: valid instance and buffers.
        let code = unsafe {
            (self.descriptor.send)(
                instance,
                body.as_ptr(),
                body.len(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        // SAFETY: NUL-terminated by the SDK.
        if code == 0 {
            Ok(())
        } else {
            Err(unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned())
        }
    }

    fn destroy(&self, instance: *mut c_void) -> Duration {
        let started = Instant::now();
        // SAFETY: created by this plugin, destroyed once.
        unsafe { (self.descriptor.destroy)(instance) };
        started.elapsed()
    }
}

fn bound_port(id: &str) -> u16 {
    let marker = format!("{id} listening on 127.0.0.1:");
    wait_for("listening log", |m| {
        m.iter()
            .any(|m| matches!(m, PluginMessage::Log { message, .. } if message.contains(&marker)))
    });
    RECEIVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find_map(|m| match m {
            PluginMessage::Log { message, .. } => {
                message.split(&marker).nth(1).and_then(|p| p.parse().ok())
            }
            _ => None,
        })
        .expect("a port in the log")
}

fn send_line(stream: &mut TcpStream, line: &str) -> String {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .expect("write to the device");
    let mut answer = String::new();
    BufReader::new(stream.try_clone().expect("clone"))
        .read_line(&mut answer)
        .expect("an answer");
    answer
}

#[test]
fn the_sim_plugin_plays_all_four_roles() {
    let plugin = Plugin::load();
    // SAFETY: static NUL-terminated strings.
    let roles = unsafe { CStr::from_ptr(plugin.descriptor.roles) }
        .to_string_lossy()
        .into_owned();
    assert_eq!(roles, "scanner,buttons,printer,display");

    // Scanner: every line is a code.
    let scanner = plugin
        .create(serde_json::json!({"v":1,"id":"scan-1","role":"scanner","options":{"port":0}}))
        .expect("scanner");
    let mut stream =
        TcpStream::connect(("127.0.0.1", bound_port("scan-1"))).expect("connect to the scanner");
    assert_eq!(send_line(&mut stream, "B-2026-000123"), "OK\n");
    wait_for("scan", |m| {
        m.contains(&PluginMessage::Scanned {
            code: "B-2026-000123".into(),
        })
    });
    drop(stream);
    wait_for("disconnect", |m| {
        m.iter().any(|m| {
            matches!(
                m,
                PluginMessage::Connection {
                    connected: false,
                    ..
                }
            )
        })
    });
    assert!(
        plugin.destroy(scanner) < Duration::from_secs(1),
        "destroy must stop promptly"
    );

    // Buttons: "DESK ACTION" lines, each press with its own event id.
    let buttons = plugin.create(serde_json::json!({"v":1,"id":"btn","role":"buttons","desks":["3"],"options":{"port":0}})).expect("buttons");
    let mut stream =
        TcpStream::connect(("127.0.0.1", bound_port("btn"))).expect("connect to the buttons");
    assert_eq!(send_line(&mut stream, "3 next"), "OK\n");
    assert_eq!(send_line(&mut stream, "3 next"), "OK\n");
    assert!(send_line(&mut stream, "3 dance").starts_with("ERR"));
    wait_for("two presses", |m| {
        m.iter().filter(|m| matches!(m, PluginMessage::Button { desk, action: ButtonAction::Next, .. } if desk == "3")).count() == 2
    });
    let ids: Vec<String> = RECEIVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|m| match m {
            PluginMessage::Button { event_id, .. } => Some(event_id.clone()),
            _ => None,
        })
        .collect();
    assert_ne!(ids[0], ids[1], "each press has its own event id");
    plugin.destroy(buttons);

    // Printer: one file per job; paper out while the switch file exists.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let switch = dir.path().join("paper-out");
    let printer = plugin
        .create(serde_json::json!({"v":1,"id":"prn","role":"printer","options":{"dir": dir.path().join("jobs"), "paper_out_file": switch}}))
        .expect("printer");
    let job = |name: &str| HostMessage::Print {
        job: name.into(),
        document: leitsystem_plugin::document::Document {
            number: name.into(),
            blocks: vec![leitsystem_plugin::document::Block::text("Grüße")],
        },
    };
    plugin.send(printer, &job("A-001")).expect("print accepted");
    wait_for("print done", |m| {
        m.contains(&PluginMessage::PrintDone {
            job: "A-001".into(),
        })
    });
    let printed =
        std::fs::read_to_string(dir.path().join("jobs/A-001.json")).expect("the job file");
    assert!(printed.contains("\"A-001\""), "{printed}");
    std::fs::write(&switch, b"").expect("flip the paper-out switch");
    plugin.send(printer, &job("A-002")).expect("print accepted");
    wait_for("paper out", |m| {
        m.contains(&PluginMessage::PrintFailed {
            job: "A-002".into(),
            reason: "paper out".into(),
        })
    });
    wait_for("paper status", |m| {
        m.iter().any(|m| {
            matches!(
                m,
                PluginMessage::PrinterStatus {
                    paper: Paper::Out,
                    ..
                }
            )
        })
    });
    assert!(!dir.path().join("jobs/A-002.json").exists());
    std::fs::remove_file(&switch).expect("paper refilled");
    plugin
        .send(printer, &job("A-002"))
        .expect("reprint accepted");
    wait_for("reprint", |m| {
        m.contains(&PluginMessage::PrintDone {
            job: "A-002".into(),
        })
    });
    assert!(
        plugin
            .send(
                printer,
                &HostMessage::Display {
                    state: serde_json::json!({})
                }
            )
            .is_err()
    );
    plugin.destroy(printer);

    // Display: the latest state as a file.
    let file = dir.path().join("display.json");
    let display = plugin
        .create(serde_json::json!({"v":1,"id":"wall","role":"display","options":{"file": file}}))
        .expect("display");
    plugin
        .send(
            display,
            &HostMessage::Display {
                state: serde_json::json!({"calls":[{"ticket":"A-001","desk":"3"}]}),
            },
        )
        .expect("shown");
    let shown: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the display file")).expect("JSON");
    assert_eq!(shown["calls"][0]["desk"], "3");
    plugin.destroy(display);

    // Bad configs are refused with a reason.
    assert_eq!(
        plugin
            .create(serde_json::json!({"v":1,"id":"x","role":"scanner","options":{}}))
            .err()
            .as_deref(),
        Some("option 'port' is missing")
    );
    assert_eq!(
        plugin
            .create(serde_json::json!({"v":1,"id":"x","role":"display","options":{}}))
            .err()
            .as_deref(),
        Some("option 'file' (a path) is missing")
    );
}
