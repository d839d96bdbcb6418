# The crates the Debian package ships (the daemon and the driver plugins), built with
# `cargo build --release --locked "${RELEASE_PACKAGES[@]}"`: by systemd/build-deb for the
# package, and by tests/run before the suite for the hardware rig, which boots the same
# release build (so the package test finds it built).
RELEASE_PACKAGES=(-p leitsystemd -p leitsystem-sim -p leitsystem-escpos-printer -p leitsystem-hdmi-display
  -p leitsystem-serial-scanner -p leitsystem-hid-scanner -p leitsystem-gpio-buttons)
