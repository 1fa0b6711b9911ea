#!/usr/bin/env bash
# Install, upgrade, roll back or remove edgegw as a systemd service on a Raspberry Pi
# (Raspberry Pi OS 64-bit / Debian bookworm), from this checkout.
#
#   sudo systemd/install.sh [install]            first installation (safe to run again)
#   sudo systemd/install.sh upgrade              this checkout becomes the running release
#   sudo systemd/install.sh rollback             back to the release before
#   sudo systemd/install.sh uninstall [--purge]  remove code and unit (--purge: config, secrets, data too)
#   systemd/install.sh status                    what is installed and running
#
# Layout (all of it under $DESTDIR when that is set):
#   /opt/edgegw/releases/<version>-<UTC time>/   one virtualenv per release, never changed after
#   /opt/edgegw/venv -> releases/<...>           the current release; ExecStart= runs its edgegw
#   /opt/edgegw/previous -> releases/<...>       the release `rollback` returns to
#   /etc/systemd/system/edgegw.service           from the current release (each release keeps its unit)
#   /etc/edgegw/edgegw.yaml                      the config: written once, never overwritten
#   /etc/credstore/edgegw.NAME                   secrets, loaded with LoadCredential= (root only)
#   /var/lib/edgegw                              spool, rule state, gateway id: made by systemd
#                                                (StateDirectory=), never touched but by --purge
# The links switch atomically (rename), so the service always starts a complete release.
#
# Environment:
#   DESTDIR          install under this directory instead of /; systemctl is not called.
#                    For tests: the virtualenvs' own paths point into DESTDIR.
#   PYTHON           interpreter for the virtualenvs (default python3; 3.11 or newer)
#   EDGEGW_PIP_ARGS  extra pip install arguments, split on spaces (e.g. --find-links DIR)
#   EDGEGW_KEEP_RELEASES  releases kept on disk, the current and previous included (default 3)
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PYTHON=${PYTHON:-python3}
KEEP=${EDGEGW_KEEP_RELEASES:-3}
UNIT_NAME=edgegw.service

OPT=$DESTDIR/opt/edgegw
RELEASES=$OPT/releases
CURRENT=$OPT/venv
PREVIOUS=$OPT/previous
UNIT_DIR=$DESTDIR/etc/systemd/system
ETC=$DESTDIR/etc/edgegw
CONFIG=$ETC/edgegw.yaml
CREDSTORE=$DESTDIR/etc/credstore
STATE=$DESTDIR/var/lib/edgegw
STATE_PRIVATE=$DESTDIR/var/lib/private/edgegw # where DynamicUser= really keeps it

say()  { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

# --------------------------------------------------------------------------- helpers
have_systemd() {
  [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]
}

run_systemctl() {
  if have_systemd; then
    say "systemctl $*"
    systemctl "$@"
  else
    say "skipped: systemctl $* (DESTDIR is set or systemd is not running here)"
  fi
}

need_root() {
  if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root: sudo $0 $*"
  fi
}

# link_target LINK: the release a link points at (relative, e.g. releases/0.1.0-...), or nothing
link_target() {
  if [ -L "$1" ]; then readlink "$1"; fi
}

# switch_link LINK TARGET: point LINK at TARGET atomically (a new link renamed over the old one)
switch_link() {
  local tmp
  tmp="$1.new.$$"
  ln -sfn "$2" "$tmp"
  mv -Tf "$tmp" "$1"
  say "$(basename "$1") -> $2"
}

# lock: one install.sh at a time (a second one fails at once instead of racing the links)
lock() {
  mkdir -p "$OPT"
  exec 9>"$OPT/.install.lock"
  if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    die "another install.sh is working on $OPT; try again when it is done"
  fi
}

check_python() {
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (Raspberry Pi OS: apt-get install python3 python3-venv)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "edgegw needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)"
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$PYTHON cannot create virtualenvs: apt-get install python3-venv"
}

project_version() {
  "$PYTHON" - "$SRC/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as handle:
    print(tomllib.load(handle)["project"]["version"])
PY
}

# build_release: a new virtualenv with edgegw from this checkout; prints its name on stdout
build_release() {
  local version stamp name rel n=1 stage pip_args=()
  version=$(project_version)
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  name="$version-$stamp"
  while [ -e "$RELEASES/$name" ]; do n=$((n + 1)); name="$version-$stamp-$n"; done
  rel=$RELEASES/$name
  if [ -n "${EDGEGW_PIP_ARGS:-}" ]; then read -r -a pip_args <<<"$EDGEGW_PIP_ARGS"; fi

  say "building release $name in $rel" >&2
  mkdir -p "$RELEASES"
  # Build from a copy: pip builds in the source tree, and this checkout may be in use.
  stage=$(mktemp -d "${TMPDIR:-/tmp}/edgegw-src.XXXXXX")
  # On any failure the half-built release goes away; nothing has been switched yet.
  # shellcheck disable=SC2064 # expand now: both paths are known and fixed
  trap "rm -rf '$stage' '$rel'" EXIT
  tar -C "$SRC" -cf - \
    --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=.pytest_cache --exclude=.hypothesis --exclude=./state --exclude=./var . \
    | tar -C "$stage" -xf -

  # A virtualenv cannot move, so it is made at its final path.
  "$PYTHON" -m venv "$rel" >&2 || die "cannot create the virtualenv $rel"
  "$rel/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    "${pip_args[@]}" "$stage" >&2 \
    || die "pip could not install edgegw into $rel; nothing was switched"
  "$rel/bin/edgegw" --version >&2 \
    || die "the new release does not run ($rel/bin/edgegw --version failed); nothing was switched"
  # The release carries its own unit, example config and docs, so a rollback restores them too.
  install -d "$rel/share/edgegw" "$rel/share/doc/edgegw"
  install -m 0644 "$SRC/systemd/$UNIT_NAME" "$rel/share/edgegw/$UNIT_NAME"
  install -m 0644 "$(example_config)" "$rel/share/edgegw/edgegw.example.yaml"
  if [ -f "$SRC/docs/raspberry-pi.md" ]; then
    install -m 0644 "$SRC/docs/raspberry-pi.md" "$rel/share/doc/edgegw/raspberry-pi.md"
  fi
  trap - EXIT
  rm -rf "$stage"
  echo "$name"
}

example_config() {
  if [ -f "$SRC/examples/edgegw.yaml" ]; then
    echo "$SRC/examples/edgegw.yaml"
  else
    echo "$SRC/systemd/edgegw.example.yaml"
  fi
}

# activate NAME: make release NAME current and the current one previous
activate() {
  local name=$1 old
  old=$(link_target "$CURRENT")
  if [ -n "$old" ] && [ "$old" != "releases/$name" ]; then
    switch_link "$PREVIOUS" "$old"
  fi
  switch_link "$CURRENT" "releases/$name"
  install_unit
}

# install_unit: the current release's unit into /etc/systemd/system, then daemon-reload
install_unit() {
  local unit="$CURRENT/share/edgegw/$UNIT_NAME"
  [ -f "$unit" ] || unit="$SRC/systemd/$UNIT_NAME"
  install -d "$UNIT_DIR"
  if ! cmp -s "$unit" "$UNIT_DIR/$UNIT_NAME"; then
    install -m 0644 "$unit" "$UNIT_DIR/$UNIT_NAME"
    say "installed $UNIT_DIR/$UNIT_NAME"
  fi
  run_systemctl daemon-reload
}

# prune: delete old releases beyond $KEEP, never the current or previous one
prune() {
  local current previous name count=0
  current=$(link_target "$CURRENT")
  previous=$(link_target "$PREVIOUS")
  [ -d "$RELEASES" ] || return 0
  while IFS= read -r name; do
    [ -n "$name" ] || continue
    count=$((count + 1))
    if [ "releases/$name" = "$current" ] || [ "releases/$name" = "$previous" ]; then continue; fi
    if [ "$count" -gt "$KEEP" ]; then
      say "removing old release $name"
      rm -rf "${RELEASES:?}/$name"
    fi
  done < <(releases_newest_first)
}

# releases_newest_first: release names (<version>-<UTC time>[-n]) by their time, newest first
releases_newest_first() {
  [ -d "$RELEASES" ] || return 0
  find "$RELEASES" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -t- -k2,2r -k3,3nr
}

write_config() {
  install -d -m 0755 "$ETC"
  if [ -e "$CONFIG" ]; then
    say "keeping the existing config $CONFIG"
  else
    # world-readable: the service runs as a dynamic user, and the file holds no secrets
    install -m 0644 "$(example_config)" "$CONFIG"
    say "wrote the example config $CONFIG (edit it, then start the service)"
  fi
  if [ ! -d "$CREDSTORE" ]; then
    install -d -m 0700 "$CREDSTORE"
    say "created $CREDSTORE (0700) for secrets: edgegw.mqtt-password, edgegw.kafka-sasl-password"
  fi
}

service_active() {
  have_systemd && systemctl is-active --quiet "$UNIT_NAME"
}

restart_if_running() {
  if service_active; then
    # Type=notify: this waits for READY=1 (or the failure) of the new release
    if ! run_systemctl restart "$UNIT_NAME"; then
      warn "edgegw did not come back; see: journalctl -u edgegw -n 50; to go back: $0 rollback"
      return 1
    fi
  else
    say "edgegw is not running; start it with: systemctl start edgegw"
  fi
}

# --------------------------------------------------------------------------- commands
cmd_install() {
  need_root install
  check_python
  lock
  local name
  if [ -n "$(link_target "$CURRENT")" ]; then
    say "edgegw is installed already ($(link_target "$CURRENT")); installing this checkout as a new release"
  fi
  name=$(build_release)
  activate "$name"
  write_config
  run_systemctl enable "$UNIT_NAME"
  prune
  if service_active; then
    restart_if_running
  else
    say "installed edgegw $name. Next: edit $CONFIG, then: systemctl start edgegw"
  fi
}

cmd_upgrade() {
  need_root upgrade
  [ -n "$(link_target "$CURRENT")" ] || die "edgegw is not installed; run: $0 install"
  check_python
  lock
  local name
  name=$(build_release)
  activate "$name"
  prune
  say "upgraded to $name; the previous release is kept for: $0 rollback"
  say "spool and rule state in ${STATE#"$DESTDIR"} are untouched; the new version migrates them at start"
  restart_if_running
}

cmd_rollback() {
  need_root rollback
  local current previous
  current=$(link_target "$CURRENT")
  previous=$(link_target "$PREVIOUS")
  [ -n "$current" ] || die "edgegw is not installed"
  [ -n "$previous" ] || die "no previous release to roll back to"
  [ -x "$OPT/$previous/bin/edgegw" ] || die "the previous release $previous is missing or broken"
  lock
  switch_link "$CURRENT" "$previous"
  switch_link "$PREVIOUS" "$current"
  install_unit
  say "rolled back to ${previous#releases/} (run rollback again to return to ${current#releases/})"
  restart_if_running
}

cmd_uninstall() {
  need_root uninstall "$@"
  local purge=0
  for arg in "$@"; do
    case $arg in
      --purge) purge=1 ;;
      *) die "unknown option for uninstall: $arg" ;;
    esac
  done
  if [ -e "$UNIT_DIR/$UNIT_NAME" ]; then
    run_systemctl disable --now "$UNIT_NAME" || warn "could not stop or disable edgegw"
    rm -f "$UNIT_DIR/$UNIT_NAME"
    say "removed $UNIT_DIR/$UNIT_NAME"
    run_systemctl daemon-reload
  fi
  if [ -e "$OPT" ]; then
    rm -rf "$OPT"
    say "removed $OPT"
  fi
  if [ "$purge" -eq 1 ]; then
    rm -rf "$ETC" "$STATE" "$STATE_PRIVATE"
    rm -f "$CREDSTORE"/edgegw.* "$DESTDIR"/etc/credstore.encrypted/edgegw.*
    say "purged $ETC, $STATE (spool, rule state, gateway id) and the edgegw.* secrets in $CREDSTORE"
  else
    say "kept $ETC, the secrets in $CREDSTORE and the data in $STATE (remove them with --purge)"
  fi
}

cmd_status() {
  local current previous name marker version
  current=$(link_target "$CURRENT")
  previous=$(link_target "$PREVIOUS")
  if [ -z "$current" ]; then
    echo "edgegw is not installed (no $CURRENT)"
    return 1
  fi
  version=$("$CURRENT/bin/edgegw" --version 2>/dev/null || echo "edgegw ? (does not run)")
  echo "installed: $version, release ${current#releases/}"
  if [ -n "$previous" ]; then previous=${previous#releases/}; else previous=none; fi
  echo "rollback:  $previous"
  echo "releases in $RELEASES:"
  while IFS= read -r name; do
    marker="  "
    [ "releases/$name" = "$current" ] && marker="* "
    [ "$name" = "$previous" ] && marker="< "
    echo "  $marker$name"
  done < <(releases_newest_first)
  echo "unit:      $([ -f "$UNIT_DIR/$UNIT_NAME" ] && echo "$UNIT_DIR/$UNIT_NAME" || echo missing)"
  echo "config:    $([ -f "$CONFIG" ] && echo "$CONFIG" || echo "missing ($CONFIG)")"
  echo "state:     $([ -e "$STATE" ] && echo "$STATE" || echo "not created yet (the first start does)")"
  if have_systemd; then
    systemctl status "$UNIT_NAME" --no-pager --lines=5 || true
  fi
}

main() {
  local command=${1:-install}
  [ $# -gt 0 ] && shift
  case $command in
    install) [ $# -eq 0 ] || usage 2; cmd_install ;;
    upgrade) [ $# -eq 0 ] || usage 2; cmd_upgrade ;;
    rollback) [ $# -eq 0 ] || usage 2; cmd_rollback ;;
    uninstall) cmd_uninstall "$@" ;;
    status) cmd_status ;;
    -h | --help | help) usage 0 ;;
    *) printf 'error: unknown command %s\n' "$command" >&2; usage 2 ;;
  esac
}

main "$@"
