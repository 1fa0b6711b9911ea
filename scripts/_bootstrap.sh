# Shared set-up for scripts/demo and scripts/test. Source it; do not run it.
# Installs what edgegw needs on Debian bookworm / Raspberry Pi OS 64-bit and says
# clearly what it cannot install. Safe to run again: each step checks first.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${EDGEGW_VENV:-$ROOT/.venv}
cd "$ROOT"

say()  { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[1;33mwarning:\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

_apt_updated=0
# apt_install PKG...: install Debian packages that are missing, as root or with sudo.
# Returns 1 (after saying what to run) when it has no way to become root.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo)
    else
      warn "missing Debian packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}"
      return 1
    fi
  fi
  command -v apt-get >/dev/null || { warn "no apt-get here; install: ${missing[*]}"; return 1; }
  say "installing Debian packages: ${missing[*]}"
  if [ $_apt_updated -eq 0 ]; then
    "${sudo[@]}" apt-get update -qq >&2 || warn "apt-get update failed; trying the install anyway"
    _apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# ensure_venv EXTRAS: a virtualenv in .venv with edgegw installed (editable) with EXTRAS.
ensure_venv() {
  local extras=$1 py=""
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      py=$(command -v "$cand"); break
    fi
  done
  [ -n "$py" ] || die "Python 3.11 or newer is needed (Debian bookworm: apt-get install python3)"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating the virtualenv $VENV with $("$py" --version)"
    if ! "$py" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv || die "python3-venv is needed to create the virtualenv"
      "$py" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  fi
  local stamp="$VENV/.edgegw-installed" want
  want="$(sha256sum pyproject.toml | cut -c1-16) $extras"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing edgegw and its Python dependencies into $VENV (pip, cached after the first run)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]" >&2
    echo "$want" > "$stamp"
  fi
}

# ensure_mosquitto: the Debian mosquitto package (broker + mosquitto_passwd).
# We never enable its system service: the tests and the demo start their own broker.
ensure_mosquitto() {
  if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then return 0; fi
  apt_install mosquitto || return 1
  # Debian starts the packaged service on install; stop it if we can (it owns port 1883).
  if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl disable --now mosquitto >/dev/null 2>&1 || true
  fi
}

# ensure_java: Java 17+ and Maven for the Kafka test broker (jars from Maven Central).
ensure_java() {
  local ok=1
  if ! java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; then ok=0; fi
  command -v mvn >/dev/null || ok=0
  if [ $ok -eq 0 ]; then
    apt_install openjdk-17-jre-headless maven || {
      warn "Java 17 and Maven are needed for the Kafka broker; Kafka tests and the demo's uplink are skipped"
      return 1
    }
  fi
  say "fetching Apache Kafka's jars from Maven Central (first run only; cached in ~/.cache/edgegw)"
  "$VENV/bin/python" -m simulators.testbed fetch-kafka >&2
}

# ensure_fuse: libfuse 3 and fusermount3 (Debian package fuse3) for the power-cut test bed
# (simulators/testbed/powercut.py). Its tests skip where the kernel offers no /dev/fuse.
ensure_fuse() {
  apt_install fuse3 || {
    warn "fuse3 is needed for the power-cut tests (tests/testbed/test_powercut.py); they are skipped"
    return 1
  }
}

# ensure_chromium: Debian's chromium for the web page tests (driven headless by playwright,
# which must never download a browser of its own: EDGEGW_CHROMIUM names the executable).
ensure_chromium() {
  if command -v chromium >/dev/null; then return 0; fi
  apt_install chromium fonts-dejavu-core || {
    warn "chromium is needed for the web page tests; they are skipped"
    return 1
  }
}

# ensure_postgresql: Debian's postgresql server binaries for the fleet view's tests and bench.
# The tests start their own throwaway server (simulators/testbed/postgres.py: initdb into a
# temp folder, pg_ctl on a free loopback port); the packaged system service is not used,
# so it is stopped if the install started it.
ensure_postgresql() {
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; then return 0; fi
  apt_install postgresql || {
    warn "PostgreSQL is needed for the fleet view's PostgreSQL tests; they are skipped"
    return 1
  }
  if command -v systemctl >/dev/null && systemctl is-active --quiet postgresql 2>/dev/null; then
    systemctl disable --now postgresql >/dev/null 2>&1 || true
  fi
}
