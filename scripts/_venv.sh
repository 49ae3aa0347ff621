# Sourced by scripts/*: make sure .venv exists and has the project installed with extra "$1".
# A fresh machine needs only python3 (>= 3.11) with venv; everything else comes from PyPI.
ensure_venv() {
  local extra="$1" probe="$2"
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  # Reinstall when pyproject.toml changed since the last install of this extra (new
  # dependencies, new tproxy.commands entry points), or when the probe fails.
  # -I: probe what the console script sees (no cwd on sys.path).
  local stamp=".venv/.installed-$extra" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -I -c "$probe" >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q -e ".[$extra]"
    echo "$want" >"$stamp"
  fi
}
