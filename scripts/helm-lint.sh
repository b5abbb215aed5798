#!/usr/bin/env bash
# Lint and render the Helm chart (helm/yrdx) on a machine without helm.
#
# helm comes from PATH, else from ${YRDX_CACHE:-$HOME/.cache/yrdx}/bin/helm, else it is built once
# from the Go module proxy into that directory (`go install`, a few minutes on 2 cores; later runs
# reuse it). Then:
#   1. helm lint --strict with the default values, with region=SH/JS/ZJ/AH and with each
#      helm/yrdx/ci/*-values.yaml example;
#   2. helm template for the same cases, and a check that the rendered ConfigMap's gateway.yaml is
#      valid YAML for the right region, that every file it names lies in a mount of the pod, and that
#      the gateway's own config parser (gateway/config.py) accepts it;
#   3. helm lint and template with the optional monitoring on (alerts.enabled, dashboard.enabled): the
#      PrometheusRule's spec is helm/yrdx/files/yrdx-alerts.rules.yaml (which scripts/promtool.sh checks)
#      and the dashboard ConfigMap, labelled for Grafana's sidecar, holds helm/yrdx/files/yrdx-dashboard.json;
#      with the default values neither is rendered;
#   4. replicas: replicaCount 3 with state.dsn (and the ZJ example, and an autoscaler) render and validate,
#      with the ConfigMap's state in PostgreSQL (state.dsn_file, accepted by the config parser), a PDB keeping
#      one replica up, preferred pod anti-affinity and YRDX_INSTANCE_ID from the pod's name;
#   5. the files spool: files.* rendered into gateway.yaml, its volume writable at files.spool_dir (a claim,
#      shared ReadWriteMany by replicas, or an emptyDir for development); state.retention rendered too;
#   6. helm template with values the chart must refuse (they must fail, naming the problem).
# Safe to run again: nothing outside the cache directory and a temporary directory is written.
set -euo pipefail

HELM_VERSION=v3.21.4
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART="$ROOT/helm/yrdx"
BIN="${YRDX_CACHE:-$HOME/.cache/yrdx}/bin"
REGIONS=(SH JS ZJ AH)

say() { printf '\n==> %s\n' "$*"; }
run() { printf '+ %s\n' "$*" >&2; "$@"; }

install_helm() {
    command -v go >/dev/null || { echo "helm is not installed and go is not on PATH" >&2; exit 1; }
    say "building helm $HELM_VERSION from the Go module proxy into $BIN (once; takes minutes)"
    mkdir -p "$BIN"
    # The official build's ldflags (helm's Makefile): the version string, and the Kubernetes
    # version .Capabilities assumes and lint's deprecation check uses, taken from the client-go
    # helm is built with. Without them both stay at 1.20, below the chart's kubeVersion.
    local gomod k8s_minor ldflags started=$SECONDS
    gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
    k8s_minor=$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2] }' "$gomod")
    [[ $k8s_minor =~ ^[0-9]+$ ]] || { echo "cannot read the client-go version from $gomod" >&2; exit 1; }
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
    done
    run env GOBIN="$BIN" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    echo "built helm in $((SECONDS - started)) s"
}

find_helm() {
    if command -v helm >/dev/null; then
        HELM=$(command -v helm)
        say "using helm from PATH: $HELM"
    else
        HELM="$BIN/helm"
        if [[ -x $HELM ]] && [[ $("$HELM" version --short 2>/dev/null) == "$HELM_VERSION"* ]]; then
            say "using cached helm: $HELM"
        else
            install_helm
        fi
    fi
    run "$HELM" version --short
}

# The project's venv first (the config parser reads a PostgreSQL DSN with psycopg), else python3 with PyYAML;
# $PYTHON overrides both.
find_python() {
    if [[ -z ${PYTHON:-} ]]; then
        PYTHON=python3
        [[ -x $ROOT/.venv/bin/python ]] && PYTHON="$ROOT/.venv/bin/python"
    fi
    "$PYTHON" -c 'import yaml' || { echo "PyYAML is needed ($PYTHON)" >&2; exit 1; }
}

# check_render FILE REGION: the rendered manifests hold a ConfigMap whose gateway.yaml parses
# (yaml.safe_load), names REGION, has the gateway's top-level keys, whose file paths all lie under a
# volume mount of the Deployment's container, and which gateway.config.parse_config accepts (with
# empty stand-ins for the mounted files, which it checks exist).
check_render() {
    "$PYTHON" - "$1" "$2" "$ROOT" <<'PY'
import os, sys, tempfile, yaml

path, region, root = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
# the gateway's ConfigMap: the optional dashboard ConfigMap holds no gateway.yaml
kinds = {d["kind"]: d for d in docs if d["kind"] != "ConfigMap" or "gateway.yaml" in d.get("data", {})}
for kind in ("ConfigMap", "Deployment", "Service"):
    assert kind in kinds, f"{kind} not rendered"
cfg = yaml.safe_load(kinds["ConfigMap"]["data"]["gateway.yaml"])
keys = {"region", "listen", "kafka", "identity", "trust", "state", "limits", "accept", "platforms", "auditors"}
assert keys <= cfg.keys(), f"gateway.yaml lacks {sorted(keys - cfg.keys())}"
assert cfg["region"] == region, f"gateway.yaml region {cfg['region']} != {region}"
pod = kinds["Deployment"]["spec"]["template"]["spec"]
container = pod["containers"][0]
assert container["command"][-2:] == ["--config", "/etc/yrdx/gateway.yaml"], container["command"]
mounts = [m["mountPath"] for m in container["volumeMounts"]]
files = [cfg["identity"]["certificate"], cfg["identity"]["private_key"], *cfg["trust"]["ca"],
         *cfg["trust"]["certificates"], *(v for k, v in cfg["kafka"].items() if k.endswith("file") and v),
         *(p["public_key"] for p in cfg["platforms"]), *(a["public_key"] for a in cfg["auditors"]),
         *([cfg["metrics"]["bearer_token_file"]] if cfg["metrics"]["bearer_token_file"] else []),
         *([cfg["state"]["dsn_file"]] if "dsn_file" in cfg["state"] else [])]
for f in files:
    assert any(f.startswith(m.rstrip("/") + "/") for m in mounts), f"{f} is in no volume mount"
if "path" in cfg["state"]:
    assert any(cfg["state"]["path"].startswith(m + "/") for m in mounts), "state.path is in no volume mount"
# The spool is writable: its own volume (a claim, or an emptyDir), mounted read-write at files.spool_dir.
spool = cfg["files"]["spool_dir"]
spool_mount = next((m for m in container["volumeMounts"] if m["mountPath"] == spool), None)
assert spool_mount is not None and not spool_mount.get("readOnly"), f"files.spool_dir {spool} is no writable mount"
spool_volume = next(v for v in pod["volumes"] if v["name"] == spool_mount["name"])
assert "persistentVolumeClaim" in spool_volume or "emptyDir" in spool_volume, spool_volume
parser = "no gateway/config.py"
if os.path.exists(os.path.join(root, "gateway", "config.py")):
    sys.path.insert(0, root)
    from gateway.config import parse_config
    with tempfile.TemporaryDirectory() as stand_in:
        def moved(value):
            if isinstance(value, dict):
                return {k: moved(v) for k, v in value.items()}
            if isinstance(value, list):
                return [moved(v) for v in value]
            return stand_in + value if value in files else value
        for f in files:
            os.makedirs(os.path.dirname(stand_in + f), exist_ok=True)
            with open(stand_in + f, "w") as out:  # the DSN file holds a DSN, the SASL login files a word (the
                # parser refuses them empty); the others only exist
                sasl = f in (cfg["kafka"].get("sasl_username_file"), cfg["kafka"].get("sasl_password_file"))
                out.write("postgresql://yrdx@stand-in/yrdx" if f == cfg["state"].get("dsn_file")
                          else "stand-in" if sasl else "")
        parsed = parse_config(moved(cfg), base=__import__("pathlib").Path(stand_in))
        assert parsed.region == region and parsed.port == cfg["listen"]["port"]
    parser = "accepted by gateway.config.parse_config"
state = "PostgreSQL (dsn_file)" if "dsn_file" in cfg["state"] else "SQLite"
print(f"   ok: {len(docs)} manifests ({', '.join(sorted(kinds))}); gateway.yaml region {region}, state {state}, "
      f"kafka {cfg['kafka']['security_protocol']}, {len(cfg['platforms'])} platform(s), "
      f"{len(files)} mounted files, spool {spool} on {'a claim' if 'persistentVolumeClaim' in spool_volume else 'an emptyDir'}; "
      f"{parser}")
PY
}

# check_monitoring FILE ON: with ON=1 the rendered manifests hold the PrometheusRule (its spec the rules file,
# parsed) and the dashboard ConfigMap (sidecar label, the dashboard JSON); with ON=0 neither.
check_monitoring() {
    "$PYTHON" - "$1" "$2" "$CHART" <<'PY'
import json, sys, yaml

path, on, chart = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
boards = [d for d in docs if d["kind"] == "ConfigMap" and "yrdx-exchange.json" in d.get("data", {})]
if not on:
    assert not rules and not boards, "monitoring rendered although off by default"
    print("   ok: no PrometheusRule, no dashboard ConfigMap (off by default)")
    sys.exit()
assert len(rules) == 1 and len(boards) == 1, (len(rules), len(boards))
expected = yaml.safe_load(open(f"{chart}/files/yrdx-alerts.rules.yaml"))
assert rules[0]["apiVersion"] == "monitoring.coreos.com/v1"
assert rules[0]["spec"] == expected, "the PrometheusRule's spec is not files/yrdx-alerts.rules.yaml"
board = boards[0]
assert board["metadata"]["labels"].get("grafana_dashboard") == "1", board["metadata"]["labels"]
assert json.loads(board["data"]["yrdx-exchange.json"]) == json.load(open(f"{chart}/files/yrdx-dashboard.json"))
alerts = [r["alert"] for g in expected["groups"] for r in g["rules"]]
print(f"   ok: PrometheusRule {rules[0]['metadata']['name']} ({', '.join(alerts)}); dashboard ConfigMap "
      f"{board['metadata']['name']} ({len(json.loads(board['data']['yrdx-exchange.json'])['panels'])} panels)")
PY
}

# check_replicas FILE N: N replicas (or an HPA when N is "hpa") on PostgreSQL state: no state claim, a PDB with
# minAvailable 1, preferred pod anti-affinity over the release's pods, YRDX_INSTANCE_ID from metadata.name.
check_replicas() {
    "$PYTHON" - "$1" "$2" <<'PY'
import sys, yaml

path, n = sys.argv[1:3]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
kinds = {d["kind"]: d for d in docs if d["kind"] != "ConfigMap" or "gateway.yaml" in d.get("data", {})}
deployment = kinds["Deployment"]
if n == "hpa":
    hpa = kinds["HorizontalPodAutoscaler"]
    assert "replicas" not in deployment["spec"], "the Deployment sets replicas beside an autoscaler"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"], hpa["spec"]
    what = f"HPA {hpa['spec']['minReplicas']}..{hpa['spec']['maxReplicas']}"
else:
    assert deployment["spec"]["replicas"] == int(n), deployment["spec"]["replicas"]
    assert "HorizontalPodAutoscaler" not in kinds, "an HPA rendered although autoscaling is off"
    what = f"{n} replicas"
claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
assert [c["metadata"]["name"].endswith("-files") for c in claims] in ([], [True]), \
    "a state claim rendered although the state is in PostgreSQL"
pod_volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
if claims:  # the replicas' one spool: a claim they can all mount read-write
    assert "ReadWriteMany" in claims[0]["spec"]["accessModes"], claims[0]["spec"]
    assert pod_volumes["files"]["persistentVolumeClaim"]["claimName"] == claims[0]["metadata"]["name"]
else:
    assert "persistentVolumeClaim" in pod_volumes["files"], "the replicas' spool is not on a shared claim"
assert deployment["spec"]["strategy"]["type"] == "RollingUpdate", deployment["spec"]["strategy"]
pdb = kinds["PodDisruptionBudget"]["spec"]
assert pdb.get("minAvailable") == 1, pdb
pod = deployment["spec"]["template"]["spec"]
term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"], term
env = {e["name"]: e for e in pod["containers"][0]["env"]}
assert env["YRDX_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", env
cfg = yaml.safe_load(kinds["ConfigMap"]["data"]["gateway.yaml"])
assert cfg["state"]["dsn_file"] == "/etc/yrdx/state/dsn" and "path" not in cfg["state"], cfg["state"]
if "NetworkPolicy" in kinds:  # the replicas must reach their database
    ports = [p["port"] for rule in kinds["NetworkPolicy"]["spec"]["egress"] for p in rule.get("ports", [])]
    assert 5432 in ports, f"no egress to PostgreSQL in the NetworkPolicy ({ports})"
print(f"   ok: {what}, RollingUpdate, PDB minAvailable 1, preferred anti-affinity on {term['topologyKey']}, "
      "YRDX_INSTANCE_ID from metadata.name, state.dsn_file, egress to PostgreSQL, no state claim, "
      "one shared spool claim")
PY
}

# lint_and_render NAME REGION ARGS...: lint --strict and template with these values, then check.
lint_and_render() {
    local name=$1 region=$2
    shift 2
    run "$HELM" lint "$CHART" --strict "$@"
    run "$HELM" template "$name" "$CHART" --namespace "$name" "$@" > "$WORK/$name.yaml"
    check_render "$WORK/$name.yaml" "$region"
    check_monitoring "$WORK/$name.yaml" "${MONITORING:-0}"
}

# must_fail WHY ARGS...: helm template with these values must fail with WHY in its message.
must_fail() {
    local why=$1
    shift
    printf '+ %s template %s (must fail: %s)\n' "$HELM" "$*" "$why"
    if "$HELM" template refused "$CHART" "$@" > /dev/null 2> "$WORK/err"; then
        echo "   rendered, but the chart should have refused these values" >&2
        exit 1
    fi
    grep -q -- "$why" "$WORK/err" || { cat "$WORK/err" >&2; echo "   failed without naming: $why" >&2; exit 1; }
    echo "   refused: $(grep -m1 -o -- "$why.*" "$WORK/err" | cut -c1-100)"
}

started=$SECONDS
find_helm
find_python
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

say "lint and render with the default values"
lint_and_render yrdx-default SH

for region in "${REGIONS[@]}"; do
    say "lint and render for region $region"
    lint_and_render "yrdx-${region,,}" "$region" --set "region=$region"
done

for values in "$CHART"/ci/*-values.yaml; do
    region=$(sed -n 's/^region: *\([A-Z][A-Z]\).*/\1/p' "$values")
    say "lint and render with ${values#"$ROOT"/}"
    lint_and_render "yrdx-${region,,}" "$region" -f "$values"
done

say "lint and render with the alert rules and the Grafana dashboard on"
MONITORING=1 lint_and_render yrdx-monitoring JS --set region=JS --set alerts.enabled=true \
    --set dashboard.enabled=true --set alerts.labels.release=kube-prometheus-stack \
    --set dashboard.namespace=monitoring --set-string dashboard.annotations.grafana_folder=yrdx

say "replicas on PostgreSQL state: replicaCount 3 with state.dsn, the ZJ example, an autoscaler"
lint_and_render yrdx-sh-replicas SH --set replicaCount=3 --set state.dsn=postgresql://yrdx-sh@pg.sh.svc:5432/yrdx \
    --set 'files.persistence.accessModes={ReadWriteMany}'
check_replicas "$WORK/yrdx-sh-replicas.yaml" 3
check_replicas "$WORK/yrdx-zj.yaml" 2
lint_and_render yrdx-sh-hpa SH --set autoscaling.enabled=true --set state.dsnSecret.name=yrdx-sh-state \
    --set files.persistence.existingClaim=yrdx-sh-files-nfs
check_replicas "$WORK/yrdx-sh-hpa.yaml" hpa

say "the files spool: its values in gateway.yaml, an emptyDir for development"
lint_and_render yrdx-files JS --set region=JS --set files.spoolDir=/spool --set files.maxBytes=104857600 \
    --set files.waitS=30 --set files.retentionDays=3 --set files.persistence.enabled=false
check_files() {
    "$PYTHON" - "$1" <<'PY'
import sys, yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap" and "gateway.yaml" in d.get("data", {}))
files = yaml.safe_load(cm["data"]["gateway.yaml"])["files"]
assert files == {"spool_dir": "/spool", "max_bytes": 104857600, "wait_s": 30, "retention_days": 3}, files
assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"].endswith("-files")]
print(f"   ok: files {files}, spool on an emptyDir, no files claim")
PY
}
check_files "$WORK/yrdx-files.yaml"

say "the state's retention: its defaults and set values in gateway.yaml"
lint_and_render yrdx-retention SH --set state.retention.days=90 --set state.retention.ackedInboxHours=2 \
    --set state.retention.sweepIntervalS=60
check_retention() {
    "$PYTHON" - "$1" "$2" <<'PY'
import json, sys, yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap" and "gateway.yaml" in d.get("data", {}))
retention = yaml.safe_load(cm["data"]["gateway.yaml"])["state"]["retention"]
assert retention == json.loads(sys.argv[2]), retention
print(f"   ok: state.retention {retention}")
PY
}
check_retention "$WORK/yrdx-retention.yaml" '{"days": 90, "acked_inbox_hours": 2, "sweep_interval_s": 60}'
check_retention "$WORK/yrdx-sh-replicas.yaml" '{"days": 30, "acked_inbox_hours": 24, "sweep_interval_s": 300}'

say "values the chart must refuse"
must_fail "value must be one of 'SH', 'JS', 'ZJ', 'AH'" --set region=XX
must_fail "value must be one of 'PLAINTEXT', 'SSL', 'SASL_SSL'" --set kafka.security.protocol=SASL_PLAINTEXT
must_fail "needs kafka.sasl.existingSecret" --set kafka.security.protocol=SASL_SSL
must_fail "replicaCount > 1 (or autoscaling.enabled) needs state.dsn or state.dsnSecret" --set replicaCount=3
must_fail "replicaCount > 1 (or autoscaling.enabled) needs state.dsn or state.dsnSecret" --set autoscaling.enabled=true
must_fail "needs files.persistence.accessModes \[ReadWriteMany\]" --set replicaCount=2 --set state.dsn=postgresql://yrdx@pg/yrdx
must_fail "needs files.persistence.enabled with a shared volume" --set replicaCount=2 \
    --set state.dsn=postgresql://yrdx@pg/yrdx --set files.persistence.enabled=false
must_fail "files.spoolDir \"/etc/yrdx/files\": it is the spool volume's mount point" --set files.spoolDir=/etc/yrdx/files
must_fail "files.spoolDir \"/var/lib/yrdx/files\"" --set files.spoolDir=/var/lib/yrdx/files
must_fail "at '/files/waitS'" --set files.waitS=0
must_fail "at '/state/retention/days'" --set state.retention.days=0
must_fail "at '/state/retention/sweepIntervalS'" --set state.retention.sweepIntervalS=5
must_fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" --set autoscaling.enabled=true \
    --set state.dsn=postgresql://yrdx@pg/yrdx --set autoscaling.minReplicas=5 --set autoscaling.maxReplicas=2
must_fail "at '/state/dsn': 'mysql://x' does not match pattern" --set state.dsn=mysql://x
must_fail "the chart renders \"kafka\" itself" --set config.extra.kafka=x
must_fail "serviceMonitor.enabled needs metrics.bearerTokenSecret" --set serviceMonitor.enabled=true
must_fail "/dashboard/label': minLength" --set dashboard.enabled=true --set dashboard.label=

say "helm chart OK in $((SECONDS - started)) s"
