//! A driver written in C against `include/leitsystem_plugin.h`, compiled by this test with the
//! system C compiler and loaded with libloading like the daemon loads plugins: the descriptor
//! matches the Rust definition, and create, send (with emit back to the host) and destroy work.

use std::ffi::{CStr, c_char, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use leitsystem_plugin::messages::{decode_plugin_message, encode_host_message};
use leitsystem_plugin::{
    ABI_VERSION, ENTRY_SYMBOL, EntryFn, HostApi, HostMessage, LogLevel, PluginDescriptor,
    PluginMessage,
};

fn build_c_plugin(out: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let library = out.join("libc_echo.so");
    let status = Command::new("cc")
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-D_GNU_SOURCE",
        ])
        .arg("-I")
        .arg(dir.join("include"))
        .arg(dir.join("tests/c/echo_plugin.c"))
        .arg("-o")
        .arg(&library)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run the C compiler `cc` ({e}): install the Debian package gcc")
        });
    assert!(status.success(), "compiling the C plugin failed");
    library
}

static RECEIVED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

unsafe extern "C" fn collect(_ctx: *mut c_void, message: *const u8, len: usize) {
    // SAFETY: the plugin passes `len` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(message, len) }.to_vec();
    RECEIVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(bytes);
}

#[test]
fn a_plugin_written_in_c_loads_and_works() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = build_c_plugin(dir.path());
    // SAFETY: loading our own freshly built test library; its initialisers are trivial.
    let library = unsafe { libloading::Library::new(&path) }.expect("the C plugin loads");
    // SAFETY: the symbol has the ABI's entry type.
    let entry = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) }
        .expect("the entry symbol exists");
    // SAFETY: the entry returns a pointer to a static descriptor.
    let descriptor: &PluginDescriptor = unsafe { &*entry() };
    assert_eq!(
        descriptor.size as usize,
        std::mem::size_of::<PluginDescriptor>(),
        "C and Rust agree on the layout"
    );
    assert_eq!(descriptor.abi_version, ABI_VERSION);
    // SAFETY: static NUL-terminated strings.
    let text = |p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    assert_eq!(
        (text(descriptor.name), text(descriptor.roles)),
        ("c-echo".to_string(), "display".to_string())
    );

    let api = HostApi {
        size: std::mem::size_of::<HostApi>() as u32,
        abi_version: ABI_VERSION,
        ctx: std::ptr::null_mut(),
        emit: collect,
    };
    let mut err = [0 as c_char; 128];
    let mut instance = std::ptr::null_mut();
    let refuse = br#"{"v":1,"id":"x","role":"display","options":{"mode":"refuse"}}"#;
    // SAFETY: valid buffers per the ABI.
    let code = unsafe {
        (descriptor.create)(
            refuse.as_ptr(),
            refuse.len(),
            &api,
            &mut instance,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    assert_eq!(code, 1);
    // SAFETY: NUL-terminated by the plugin.
    assert_eq!(
        unsafe { CStr::from_ptr(err.as_ptr()) }.to_str(),
        Ok("refused by its config")
    );

    let config = br#"{"v":1,"id":"wall","role":"display","options":{}}"#;
    // SAFETY: as above.
    let code = unsafe {
        (descriptor.create)(
            config.as_ptr(),
            config.len(),
            &api,
            &mut instance,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    assert_eq!(code, 0);
    let message = encode_host_message(&HostMessage::Display {
        state: serde_json::json!({"calls": []}),
    });
    for _ in 0..2 {
        // SAFETY: valid instance and buffers.
        let code = unsafe {
            (descriptor.send)(
                instance,
                message.as_ptr(),
                message.len(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        assert_eq!(code, 0);
    }
    let received: Vec<PluginMessage> = RECEIVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|b| decode_plugin_message(b).expect("the C plugin emits valid messages"))
        .collect();
    assert_eq!(
        received.last(),
        Some(&PluginMessage::Log {
            level: LogLevel::Info,
            message: format!("C plugin got message 2 of {} bytes", message.len())
        })
    );
    // SAFETY: created above, destroyed once.
    unsafe { (descriptor.destroy)(instance) };
}
