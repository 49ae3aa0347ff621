# Sourced by scripts/*: make sure .venv exists and has the project installed with extra "$1".
# A fresh machine needs only python3 (>= 3.11) with venv; everything else comes from PyPI.
INSTALL_PROBE="import devnet.cli; from importlib.metadata import entry_points as e; \
assert {'pool', 'demo', 'miner'} <= set(e(group='tproxy.commands').names)"

ensure_venv() {
  local extra="$1" probe="$2"
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  # -I: probe what the console script sees (no cwd on sys.path), so a venv
  # installed before devnet's tproxy.commands entry points existed is refreshed.
  if ! .venv/bin/python -I -c "$probe; $INSTALL_PROBE" >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q -e ".[$extra]"
  fi
}
