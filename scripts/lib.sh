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
  local constraints="constraints/airflow-${AIRFLOW_LINE}.txt"
  [ -f "$constraints" ] || { echo "no $constraints: supported Airflow lines are 3.3 and 2.11" >&2; exit 2; }
  install_venv "$(venv_dir)" "$constraints" test
}

# The Celery lane's venv (scripts/celery-lane): Airflow 3.3 plus the Celery provider and the Redis client, in a
# venv of its own so the main install stays as it is. Its pins extend constraints/airflow-3.3.txt unchanged.
CELERY_VENV=.venv-celery
ensure_celery_venv() {
  install_venv "$CELERY_VENV" constraints/airflow-3.3-celery.txt test,celery
}

# install_venv VENV CONSTRAINTS EXTRAS: the project (editable) with EXTRAS, pinned by CONSTRAINTS.
install_venv() {
  local venv=$1 constraints=$2 extras=$3 stamp want
  stamp="$venv/.kraken-installed"
  want=$(cat pyproject.toml "$constraints" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  ensure_tool_uv
  echo "Installing airflow-provider-kraken-s3[${extras}] (${constraints}) into ${venv} ..." >&2
  [ -x "$venv/bin/python" ] || "$UV" venv --quiet --python "$PYTHON" "$venv"
  "$UV" pip install --quiet --python "$venv/bin/python" -c "$constraints" -e ".[${extras}]"
  echo "$want" > "$stamp"
}

# Debian's redis-server, the Celery lane's broker. Only the binary is used: the lane starts its own instance
# on 127.0.0.1 and a free port. Installed ahead of any parallel lanes in CI (two apt-gets at once would fight
# over dpkg's lock).
ensure_redis_server() {
  command -v redis-server >/dev/null 2>&1 && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  echo "Installing Debian's redis-server (apt-get) ..." >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}
