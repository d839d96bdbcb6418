# Sourced helper: runs a command as root (directly when root, else through sudo).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "need root to run: $* (install sudo or run as root)" >&2
    return 1
  fi
}
