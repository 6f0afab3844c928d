# Sourced by the README's commands: create or refresh .venv with the pinned dependencies.
# Reinstalls only when requirements.txt or pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv with $("$python" --version)" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.intriguing-installed"
want="$(cat "$root/requirements.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned dependencies (requirements.txt) and intriguing itself" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$root/requirements.txt" -e "$root[test]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  "$venv/bin/python" -c "import intriguing, torch" || { echo "[setup] install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
