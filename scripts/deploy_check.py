"""Consistency of the deployment files: what a schema validator cannot see.

Run by scripts/deploy-check.sh (in its venv, which has PyYAML) after the
Kubernetes manifests passed kubernetes-validate. Each check says what it
protects; every failure is printed, then the script exits 1.

    python scripts/deploy_check.py REPO_ROOT
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
DEPLOY = ROOT / "deploy"
LOG_DIR = "/var/lib/ecom/log"
METRICS_PORT = 9464
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


# --- Dockerfile: the paths and port everything else assumes -----------------
dockerfile = (ROOT / "Dockerfile").read_text()
stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.M | re.I)
check(len(stages) >= 2, f"Dockerfile is multi-stage (stages: {stages})")
check(re.search(rf'^VOLUME\s+\["{LOG_DIR}"\]', dockerfile, re.M) is not None,
      f"Dockerfile: the log directory {LOG_DIR} is a VOLUME")
check(f"ECOM_LOG_DIR={LOG_DIR}" in dockerfile, f"Dockerfile: ECOM_LOG_DIR={LOG_DIR}")
check(f"ECOM_METRICS_ADDR=0.0.0.0:{METRICS_PORT}" in dockerfile,
      f"Dockerfile: ECOM_METRICS_ADDR=0.0.0.0:{METRICS_PORT} (reachable from outside the container)")
check(re.search(rf"^EXPOSE\s+{METRICS_PORT}\b", dockerfile, re.M) is not None,
      f"Dockerfile: EXPOSE {METRICS_PORT}")
user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
check(bool(user) and user[-1].split(":")[0] not in ("root", "0"),
      f"Dockerfile: runs as a non-root user ({user})")
check(re.search(rf"^HEALTHCHECK .*\n?.*127\.0\.0\.1:{METRICS_PORT}/healthz", dockerfile, re.M) is not None,
      "Dockerfile: HEALTHCHECK probes /healthz on the metrics port")
check('ENTRYPOINT ["ecom-pipeline"]' in dockerfile
      and 'CMD ["run", "--source", "pubsub", "--store", "cassandra"]' in dockerfile,
      "Dockerfile: entrypoint ecom-pipeline, command run --source pubsub --store cassandra")

# --- compose: one log volume per instance, init before the pipelines --------
compose = load(DEPLOY / "compose.yml")
services = compose["services"]
declared_volumes = set((compose.get("volumes") or {}).keys())
pipelines = sorted(n for n in services if n.startswith("pipeline-"))
check(len(pipelines) >= 2, f"compose: several pipeline instances ({pipelines})")
log_volumes = {}
for name in pipelines:
    svc = services[name]
    mounts = [v for v in svc.get("volumes", []) if v.split(":")[1] == LOG_DIR]
    check(len(mounts) == 1, f"compose: {name} mounts exactly one volume at {LOG_DIR} ({mounts})")
    if mounts:
        vol = mounts[0].split(":")[0]
        check(vol in declared_volumes, f"compose: {name}'s log volume {vol} is a declared named volume")
        log_volumes.setdefault(vol, []).append(name)
    check("deploy" not in svc and "scale" not in svc,
          f"compose: {name} has no replicas (replicas would share one log volume)")
    dep = (svc.get("depends_on") or {}).get("init", {})
    check(dep.get("condition") == "service_completed_successfully",
          f"compose: {name} starts after init completed")
    check(svc.get("image") == services["init"].get("image"), f"compose: {name} runs the image init builds")
for vol, users in log_volumes.items():
    check(len(users) == 1, f"compose: log volume {vol} belongs to one instance ({users})")
for name, svc in services.items():
    if name in pipelines:
        continue
    for v in svc.get("volumes", []):
        src = v.split(":")[0]
        check(src not in log_volumes, f"compose: {name} does not mount an instance's log volume ({src})")
        if src.startswith("."):
            check((DEPLOY / src).exists(), f"compose: {name} mounts {src}, which exists")
init = services["init"]
init_cmd = " ".join(init.get("entrypoint", []) + init.get("command", []))
check("setup cassandra" in init_cmd and "setup pubsub" in init_cmd,
      f"compose: init runs setup cassandra and setup pubsub ({init_cmd!r})")
for server in ("cassandra", "pubsub"):
    cond = (init.get("depends_on") or {}).get(server, {}).get("condition")
    check(cond == "service_healthy", f"compose: init waits for {server} to be healthy")
    check("healthcheck" in services[server], f"compose: {server} has a healthcheck")
check(services["cassandra"]["image"].startswith("cassandra:5.0"), "compose: Cassandra 5.0")

# --- Prometheus: it scrapes exactly the pipeline services --------------------
prom = load(DEPLOY / "prometheus.yml")
targets = sorted(t for job in prom["scrape_configs"]
                 for sc in job.get("static_configs", []) for t in sc["targets"])
check(targets == sorted(f"{p}:{METRICS_PORT}" for p in pipelines),
      f"prometheus.yml: targets {targets} are the compose pipeline services on :{METRICS_PORT}")
check(all(job.get("metrics_path", "/metrics") == "/metrics" for job in prom["scrape_configs"]),
      "prometheus.yml: scrapes /metrics")

# --- Grafana: the dashboard loads and points at the provisioned source -------
dash = json.loads((DEPLOY / "grafana" / "ecom-pipeline.json").read_text())
ds = load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
uids = {d["uid"] for d in ds if d["type"] == "prometheus"}
var = [v for v in dash.get("templating", {}).get("list", []) if v.get("type") == "datasource"]
check(bool(var) and var[0].get("current", {}).get("value") in uids,
      f"grafana: the dashboard's datasource variable defaults to a provisioned source {sorted(uids)}")
panels = [p for p in dash["panels"] if p.get("type") != "row"]
check(all(p.get("targets") for p in panels), "grafana: every panel has a query")
ids = [p["id"] for p in dash["panels"]]
check(len(ids) == len(set(ids)), "grafana: panel ids are unique")
providers = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "ecom-pipeline.yml")["providers"]
mounted = [v.split(":")[1] for v in services["grafana"]["volumes"] if "ecom-pipeline.json" in v]
check(bool(mounted) and any(m.startswith(p["options"]["path"] + "/") for p in providers for m in mounted),
      "grafana: the dashboard is mounted where the provisioning provider reads")

# --- Kubernetes: the objects refer to each other correctly -------------------
kdir = DEPLOY / "kubernetes"
objs = {}
for r in load(kdir / "kustomization.yaml")["resources"]:
    o = load(kdir / r)
    objs[o["kind"]] = o
listed = set(load(kdir / "kustomization.yaml")["resources"])
present = {p.name for p in kdir.glob("*.yaml")} - {"kustomization.yaml"}
check(listed == present, f"kubernetes: kustomization lists every manifest ({sorted(present - listed)} missing)")
sts = objs["StatefulSet"]
pod = sts["spec"]["template"]
c = pod["spec"]["containers"][0]
labels = pod["metadata"]["labels"]
check(sts["spec"]["selector"]["matchLabels"].items() <= labels.items(), "kubernetes: the StatefulSet selects its pods")
check(objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items(),
      "kubernetes: the PodDisruptionBudget selects the pods")
svc = objs["Service"]
check(svc["spec"].get("clusterIP") == "None" and sts["spec"]["serviceName"] == svc["metadata"]["name"],
      "kubernetes: the StatefulSet's serviceName is the headless Service")
check(svc["spec"]["selector"].items() <= labels.items(), "kubernetes: the Service selects the pods")
templates = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
log_mounts = [m for m in c["volumeMounts"] if m["mountPath"] == LOG_DIR]
check(len(log_mounts) == 1 and log_mounts[0]["name"] in templates,
      f"kubernetes: {LOG_DIR} is a volumeClaimTemplate (one claim per instance)")
port = {p["name"]: p["containerPort"] for p in c["ports"]}.get("metrics")
check(port == METRICS_PORT, f"kubernetes: container port 'metrics' is {METRICS_PORT}")
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
    get = c.get(probe, {}).get("httpGet", {})
    check(get.get("path") == path and get.get("port") in ("metrics", METRICS_PORT),
          f"kubernetes: {probe} GETs {path} on the metrics port")
ann = pod["metadata"].get("annotations", {})
check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(METRICS_PORT),
      "kubernetes: scrape annotations name the metrics port")
check(sts["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30) > 30,
      "kubernetes: terminationGracePeriodSeconds is longer than the default 30 s")
check("requests" in c.get("resources", {}) and "limits" in c.get("resources", {}),
      "kubernetes: resource requests and limits")
cm = objs["ConfigMap"]
check(any(e.get("configMapRef", {}).get("name") == cm["metadata"]["name"] for e in c.get("envFrom", [])),
      "kubernetes: settings come from the ConfigMap")
check(cm["data"].get("ECOM_METRICS_ADDR", "").endswith(f":{METRICS_PORT}")
      and cm["data"].get("ECOM_LOG_DIR") == LOG_DIR,
      "kubernetes: the ConfigMap's metrics address and log dir match the probes and the mount")
secret = objs["Secret"]
refs = [e["valueFrom"]["secretKeyRef"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
check(any(r["name"] == secret["metadata"]["name"] and r["key"] in secret.get("stringData", {}) for r in refs)
      and not any("PASSWORD" in k for k in cm["data"]),
      "kubernetes: the Cassandra password comes from the Secret, not the ConfigMap")

if failures:
    print(f"{len(failures)} deployment check(s) failed", file=sys.stderr)
    sys.exit(1)
print("deployment consistency checks: all passed")
