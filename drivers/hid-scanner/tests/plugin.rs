//! The built plugin (`libleitsystem_hid_scanner.so`) loaded as the daemon loads it: a bad config is
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
    let plugin = TestPlugin::load_built("libleitsystem_hid_scanner.so").expect("the built plugin");
    assert_eq!(plugin.roles(), "scanner");
    let Err(refused) = plugin.create(config(
        json!({"device": "/dev/input/event-missing", "colour": "red"}),
    )) else {
        panic!("accepted");
    };
    assert!(refused.contains("colour"), "{refused}");
    let Err(wrong_role) = plugin.create(json!({"v": 1, "id": "p", "role": "printer", "desks": [], "options": {"device": "/dev/input/event-missing"}})) else {
        panic!("accepted");
    };
    assert!(wrong_role.contains("printer"), "{wrong_role}");

    let mut device = plugin
        .create(config(json!({"device": "/dev/input/event-missing"})))
        .expect("created without the scanner plugged in");
    let detail = device
        .wait_disconnected(Duration::from_secs(5))
        .expect("reported");
    assert!(detail.contains("/dev/input/event-missing"), "{detail}");
    let took = device.destroy();
    assert!(took < Duration::from_secs(1), "destroy took {took:?}");
}

#[test]
fn a_model_is_searched_by_its_keyboard_id_and_a_scanner_in_another_mode_is_refused_with_advice() {
    let plugin = TestPlugin::load_built("libleitsystem_hid_scanner.so").expect("the built plugin");
    let mut device = plugin
        .create(config(json!({"model": "newland-hr22"})))
        .expect("created without the scanner plugged in");
    let detail = device
        .wait_disconnected(Duration::from_secs(5))
        .expect("reported");
    assert!(detail.contains("1eab:1a03"), "{detail}");
    device.destroy();

    let refused = |options: serde_json::Value| match plugin.create(config(options.clone())) {
        Ok(_) => panic!("accepted {options}"),
        Err(reason) => reason,
    };
    // The HR22's serial-mode id: the admin is told which driver reads it, or which id the
    // scanner has once set to keyboard mode.
    let serial = refused(json!({"usb_id": "1eab:1a06"}));
    assert!(
        serial.contains("usb_id")
            && serial.contains("Newland HR22")
            && serial.contains("serial-scanner")
            && serial.contains("1eab:1a03"),
        "{serial}"
    );
    let pos = refused(json!({"usb_id": "05e0:1900"}));
    assert!(
        pos.contains("SNAPI mode") && pos.contains("05e0:1200"),
        "{pos}"
    );
    let unknown = refused(json!({"model": "scanmaster-3000"}));
    assert!(
        unknown.contains("option 'model'") && unknown.contains("newland-hr22"),
        "{unknown}"
    );
    let none = refused(json!({"layout": "de"}));
    assert!(none.contains("or 'model' is missing"), "{none}");
    let several = refused(json!({"model": "newland-hr22", "device": "/dev/input/event3"}));
    assert!(several.contains("not several"), "{several}");
    // An id the table does not know is searched for as given.
    let mut device = plugin
        .create(config(json!({"usb_id": "dead:beef"})))
        .expect("created");
    let detail = device
        .wait_disconnected(Duration::from_secs(5))
        .expect("reported");
    assert!(detail.contains("dead:beef"), "{detail}");
    device.destroy();
}
