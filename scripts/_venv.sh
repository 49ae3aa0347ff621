# Sourced by scripts/*: make sure .venv exists and has the project installed with extra "$1".
# A fresh machine needs only python3 (>= 3.11) with venv; everything else comes from PyPI.
ensure_venv() {
  local extra="$1" probe="$2"
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  if ! .venv/bin/python -c "$probe" >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q -e ".[$extra]"
  fi
}
