# Shared set-up for scripts/demo and scripts/test: sourced, not run.
# Installs only what is missing, so a second run installs nothing:
#   - Debian packages (when root and apt exists), checked with dpkg-query first;
#   - a virtual environment in .venv;
#   - the exact versions in requirements-test.lock (hashes checked), then the
#     project (editable), re-installed only when pyproject.toml or the lock
#     changes (a stamp file holds their hash).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"

# What the daemon needs at run time on any board.
APT_RUNTIME=(python3 python3-venv python3-dev gcc pkg-config libsystemd-dev libportaudio2 libsrt1.5-openssl)
# The GStreamer encoder rung (a board's hardware encoder through its OS's elements):
# the OS's Python bindings, appsrc/appsink and the H.264/H.265 parsers. JetPack adds its
# NVENC elements, Raspberry Pi OS its V4L2 ones (plugins-good); plugins-ugly and -bad
# bring x264enc and x265enc, the software stand-ins the tests use.
APT_GSTREAMER=(python3-gi python3-gst-1.0 gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gstreamer1.0-plugins-base
               gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly)
# What the simulation needs on top (simulated FOH audio through PulseAudio, and
# srt-live-transmit as the demo's ingest).
APT_SIM=(pulseaudio pulseaudio-utils libasound2-plugins srt-tools)
# What the tests need on top of that.
APT_TEST=(systemd systemd-container nut-server mosquitto openssl chromium iproute2 nftables gcc libsrt1.5-openssl libsrt-openssl-dev srt-tools
          "${APT_SIM[@]}" "${APT_GSTREAMER[@]}")

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "missing system packages: ${missing[*]}"
        log "install them with: sudo apt-get install ${missing[*]}"
        return 1
    fi
    log "installing system packages: ${missing[*]}"
    # An old or empty package list makes apt-get miss packages: refresh it once.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_venv() {
    local py="${PYTHON:-python3}"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        log "Python 3.11 or newer is needed ($py is $("$py" -V 2>&1))"; return 1; }
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtual environment in $VENV"
        "$py" -m venv "$VENV"
    fi
    local stamp="$VENV/.appliance-installed" want
    # (the C source too: the relay's hot path is built into the checkout at install)
    want="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements-test.lock" "$ROOT/appliance/transport/_relayfast.c" | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing the project and its dependencies into $VENV (exact versions: requirements-test.lock)"
        local piplog="$VENV/pip-install.log"
        # The lock's versions, each checked against its hashes; then the project itself,
        # editable, with nothing more (scripts/lock refreshes the lock).
        if ! { "$VENV/bin/python" -m pip install --require-hashes -r "$ROOT/requirements-test.lock" &&
               "$VENV/bin/python" -m pip install --no-deps --no-build-isolation -e "$ROOT"; } >"$piplog" 2>&1; then
            tail -n 30 "$piplog" >&2
            log "pip install failed: full log in $piplog"
            return 1
        fi
        echo "$want" > "$stamp"
    fi
}
