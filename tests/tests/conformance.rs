//! The one driver contract (`leitsystem_plugin::testing::conformance`), for every driver in
//! `drivers/`: loads with a good descriptor, refuses invalid options naming the option and the
//! wrong role, reports within 5 s, is destroyed within 2 s, three times in a row. The devices
//! are absent or harmless here (a missing tty, evdev node or GPIO line must be *reported*,
//! never fail the create); each driver's own tests drive its real device.

use leitsystem_plugin::testing::{Conformance, conformance};
use serde_json::json;

#[test]
fn every_driver_keeps_the_plugin_contract() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let printed = dir.path().join("printed");
    let drivers = [
        Conformance {
            file_name: "libleitsystem_sim.so",
            role: "printer",
            valid: json!({"dir": printed.display().to_string()}),
            invalid: json!({"dir": 7}),
            invalid_names: "dir",
        },
        Conformance {
            file_name: "libleitsystem_escpos_printer.so",
            role: "printer",
            valid: json!({"transport": "serial", "device": "/dev/ttyUSB-absent", "baud": 9600}),
            invalid: json!({"transport": "serial", "device": "/dev/ttyUSB-absent", "baud": "fast"}),
            invalid_names: "baud",
        },
        Conformance {
            file_name: "libleitsystem_hdmi_display.so",
            role: "display",
            valid: json!({"command": ["sleep", "30"], "url": "http://127.0.0.1:9/display"}),
            invalid: json!({"command": []}),
            invalid_names: "command",
        },
        Conformance {
            file_name: "libleitsystem_serial_scanner.so",
            role: "scanner",
            valid: json!({"device": "/dev/ttyACM-absent"}),
            invalid: json!({"device": "/dev/ttyACM-absent", "terminator": "tab"}),
            invalid_names: "terminator",
        },
        Conformance {
            file_name: "libleitsystem_hid_scanner.so",
            role: "scanner",
            valid: json!({"device": "/dev/input/event-absent", "layout": "de"}),
            invalid: json!({"usb_id": "scanner"}),
            invalid_names: "usb_id",
        },
        Conformance {
            file_name: "libleitsystem_gpio_buttons.so",
            role: "buttons",
            valid: json!({"buttons": [{"line": "LEITSYSTEM_ABSENT", "desk": "1", "action": "next"}]}),
            invalid: json!({"buttons": [{"line": "GPIO17", "desk": "1", "action": "fly"}]}),
            invalid_names: "fly",
        },
    ];
    let problems: Vec<String> = drivers.iter().flat_map(conformance).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
