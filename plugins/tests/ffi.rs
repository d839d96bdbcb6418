//! The exported functions of a Rust driver, called through the descriptor as the host calls
//! them: create, send and destroy work; refusals and malformed calls get error codes and
//! reasons; panics in create, in a message handler and on a plugin thread never unwind across
//! the boundary.

use std::ffi::{CStr, c_char, c_void};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use leitsystem_plugin::messages::{decode_plugin_message, encode_host_message};
use leitsystem_plugin::{
    ABI_VERSION, DeviceConfig, Driver, Host, HostApi, HostMessage, LogLevel, PluginDescriptor,
    PluginMessage, ffi,
};

/// A driver that does what its config and messages ask, including panicking.
struct TestDriver {
    host: Host,
}

impl Driver for TestDriver {
    fn create(config: DeviceConfig, host: Host) -> Result<Self, String> {
        match config.options.get("mode").and_then(|m| m.as_str()) {
            Some("refuse") => Err("option 'port' is missing".to_string()),
            Some("panic") => panic!("boom in create"),
            _ => Ok(TestDriver { host }),
        }
    }

    fn handle(&mut self, message: HostMessage) -> Result<(), String> {
        match message {
            HostMessage::Display { state } if state == "panic" => panic!("boom in handle"),
            HostMessage::Display { state } if state == "thread-panic" => {
                self.host
                    .spawn("worker", || panic!("boom on a plugin thread"))
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
            HostMessage::Display { state } => {
                self.host.log(LogLevel::Info, format!("showing {state}"));
                Ok(())
            }
            other => Err(format!("this device takes no '{}' messages", other.kind())),
        }
    }
}

leitsystem_plugin::export_plugin!(TestDriver, name: "test-driver", version: "0.1.0", roles: "display");

static RECEIVED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

unsafe extern "C" fn collect(_ctx: *mut c_void, message: *const u8, len: usize) {
    // SAFETY: the SDK passes a valid buffer of `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(message, len) }.to_vec();
    RECEIVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(bytes);
}

fn received() -> Vec<PluginMessage> {
    RECEIVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|b| decode_plugin_message(b).ok())
        .collect()
}

fn host_api() -> HostApi {
    HostApi {
        size: std::mem::size_of::<HostApi>() as u32,
        abi_version: ABI_VERSION,
        ctx: std::ptr::null_mut(),
        emit: collect,
    }
}

fn descriptor() -> &'static PluginDescriptor {
    // SAFETY: the macro returns a pointer to a static descriptor.
    unsafe { &*leitsystem_plugin_entry() }
}

fn create(config: &str, api: &HostApi) -> Result<*mut c_void, (i32, String)> {
    let mut instance = std::ptr::null_mut();
    let mut err = [0 as c_char; 256];
    // SAFETY: valid buffers as the ABI requires.
    let code = unsafe {
        (descriptor().create)(
            config.as_ptr(),
            config.len(),
            api,
            &mut instance,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if code == ffi::OK {
        Ok(instance)
    } else {
        // SAFETY: the SDK writes a NUL-terminated string.
        Err((
            code,
            unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned(),
        ))
    }
}

fn send(instance: *mut c_void, message: &HostMessage) -> Result<(), (i32, String)> {
    let body = encode_host_message(message);
    let mut err = [0 as c_char; 256];
    // SAFETY: valid instance and buffers.
    let code = unsafe {
        (descriptor().send)(
            instance,
            body.as_ptr(),
            body.len(),
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if code == ffi::OK {
        Ok(())
    } else {
        // SAFETY: NUL-terminated by the SDK.
        Err((
            code,
            unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned(),
        ))
    }
}

const CONFIG: &str = r#"{"v":1,"id":"wall","role":"display","options":{}}"#;

#[test]
fn the_descriptor_describes_the_plugin() {
    let d = descriptor();
    assert_eq!(d.size as usize, std::mem::size_of::<PluginDescriptor>());
    assert_eq!(d.abi_version, ABI_VERSION);
    // SAFETY: static NUL-terminated strings.
    let text = |p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    assert_eq!(
        (text(d.name), text(d.version), text(d.roles)),
        ("test-driver".into(), "0.1.0".into(), "display".into())
    );
}

#[test]
fn a_driver_is_created_receives_messages_emits_and_is_destroyed() {
    let api = host_api();
    let instance = create(CONFIG, &api).unwrap_or_else(|e| panic!("{e:?}"));
    send(
        instance,
        &HostMessage::Display {
            state: "A-001 -> 3".into(),
        },
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(received().contains(&PluginMessage::Log {
        level: LogLevel::Info,
        message: "showing \"A-001 -> 3\"".into()
    }));
    let refused = send(
        instance,
        &HostMessage::Print {
            job: "j1".into(),
            document: leitsystem_plugin::document::Document {
                number: "A-1".into(),
                blocks: Vec::new(),
            },
        },
    );
    assert_eq!(
        refused,
        Err((
            ffi::REFUSED,
            "this device takes no 'print' messages".to_string()
        ))
    );
    // SAFETY: created above, destroyed once.
    unsafe { (descriptor().destroy)(instance) };
}

#[test]
fn refusals_and_malformed_calls_get_codes_and_reasons() {
    let api = host_api();
    let refused = create(
        r#"{"v":1,"id":"x","role":"display","options":{"mode":"refuse"}}"#,
        &api,
    );
    assert_eq!(
        refused,
        Err((ffi::REFUSED, "option 'port' is missing".to_string()))
    );
    let garbage = create("{not json", &api);
    assert!(
        matches!(&garbage, Err((ffi::BAD_CALL, m)) if m.contains("not valid JSON")),
        "{garbage:?}"
    );
    let mut small = host_api();
    small.size = 4;
    let too_small = create(CONFIG, &small);
    assert!(
        matches!(&too_small, Err((ffi::BAD_CALL, m)) if m.contains("too small")),
        "{too_small:?}"
    );
}

#[test]
fn panics_in_create_handle_and_plugin_threads_never_cross_the_boundary() {
    let api = host_api();
    let panicked = create(
        r#"{"v":1,"id":"x","role":"display","options":{"mode":"panic"}}"#,
        &api,
    );
    assert_eq!(
        panicked,
        Err((
            ffi::PANICKED,
            "panicked in create: boom in create".to_string()
        ))
    );

    let instance = create(CONFIG, &api).unwrap_or_else(|e| panic!("{e:?}"));
    let in_handle = send(
        instance,
        &HostMessage::Display {
            state: "panic".into(),
        },
    );
    assert_eq!(
        in_handle,
        Err((
            ffi::PANICKED,
            "panicked handling a message: boom in handle".to_string()
        ))
    );
    // The instance still works after a caught panic.
    send(
        instance,
        &HostMessage::Display {
            state: "after".into(),
        },
    )
    .unwrap_or_else(|e| panic!("{e:?}"));

    send(
        instance,
        &HostMessage::Display {
            state: "thread-panic".into(),
        },
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let expected = PluginMessage::Failed {
        reason: "thread 'worker' panicked: boom on a plugin thread".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !received().contains(&expected) {
        assert!(
            Instant::now() < deadline,
            "no failure report from the panicked thread: {:?}",
            received()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: created above, destroyed once.
    unsafe { (descriptor().destroy)(instance) };
}
