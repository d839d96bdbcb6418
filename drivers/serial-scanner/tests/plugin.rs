//! The built plugin (`libleitsystem_serial_scanner.so`) loaded as the daemon loads it: a bad config is
//! refused with the option named (no panic), a scanner that is not plugged in is created and
//! reported disconnected with the reason, and destroy returns promptly.

use std::time::Duration;

use leitsystem_plugin::testing::TestPlugin;
use serde_json::json;

fn config(options: serde_json::Value) -> serde_json::Value {
    json!({"v": 1, "id": "foyer", "role": "scanner", "desks": [], "options": options})
}

#[test]
fn a_bad_config_is_refused_and_a_missing_scanner_is_reported_disconnected() {
    let plugin =
        TestPlugin::load_built("libleitsystem_serial_scanner.so").expect("the built plugin");
    assert_eq!(plugin.roles(), "scanner");
    let Err(refused) = plugin.create(config(
        json!({"device": "/dev/ttyACM-missing", "colour": "red"}),
    )) else {
        panic!("accepted");
    };
    assert!(refused.contains("colour"), "{refused}");
    let Err(wrong_role) = plugin.create(json!({"v": 1, "id": "p", "role": "printer", "desks": [], "options": {"device": "/dev/ttyACM-missing"}})) else {
        panic!("accepted");
    };
    assert!(wrong_role.contains("printer"), "{wrong_role}");

    let mut device = plugin
        .create(config(json!({"device": "/dev/ttyACM-missing"})))
        .expect("created without the scanner plugged in");
    let detail = device
        .wait_disconnected(Duration::from_secs(5))
        .expect("reported");
    assert!(detail.contains("/dev/ttyACM-missing"), "{detail}");
    let took = device.destroy();
    assert!(took < Duration::from_secs(1), "destroy took {took:?}");
}
