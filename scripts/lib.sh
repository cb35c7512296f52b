# Shared shell helpers for scripts/: create a project virtualenv pinned to one Airflow line.
# AIRFLOW_LINE=3.3 (default) uses .venv, AIRFLOW_LINE=2.11 uses .venv-af2.11.

PYTHON=${PYTHON:-python3.11}
AIRFLOW_LINE=${AIRFLOW_LINE:-3.3}

venv_dir() {
  if [ "$AIRFLOW_LINE" = "3.3" ]; then echo ".venv"; else echo ".venv-af${AIRFLOW_LINE}"; fi
}

# uv resolves and installs in seconds; it lives in its own small venv so nothing is installed globally.
ensure_tool_uv() {
  UV=.tools/bin/uv
  if [ ! -x "$UV" ]; then
    "$PYTHON" -m venv .tools
    .tools/bin/pip install --quiet --disable-pip-version-check uv
  fi
}

# Create (or refresh, when pyproject or constraints changed) the venv for $AIRFLOW_LINE.
ensure_venv() {
  local venv constraints stamp want
  venv=$(venv_dir)
  constraints="constraints/airflow-${AIRFLOW_LINE}.txt"
  [ -f "$constraints" ] || { echo "no $constraints: supported Airflow lines are 3.3 and 2.11" >&2; exit 2; }
  stamp="$venv/.kraken-installed"
  want=$(cat pyproject.toml "$constraints" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  ensure_tool_uv
  echo "Installing airflow-provider-kraken-s3 with Airflow ${AIRFLOW_LINE} into ${venv} ..." >&2
  [ -x "$venv/bin/python" ] || "$UV" venv --quiet --python "$PYTHON" "$venv"
  "$UV" pip install --quiet --python "$venv/bin/python" -c "$constraints" -e ".[test]"
  echo "$want" > "$stamp"
}
