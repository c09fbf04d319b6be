#!/usr/bin/env python3
"""Runs the Kubernetes pods as the manifests declare them, with Docker.

    deploy/pods.py RENDERED.yaml --network NET --secret KEY=VALUE... [--secret-file KEY=PATH...]

RENDERED.yaml is `kubectl kustomize` output. For every container of the migration Job, the
producer CronJob, the worker Deployment(s) and the exporter, it runs the image the manifest
names (as tagged locally) with the manifest's command and args, the environment built from the
rendered ConfigMap and Secret (envFrom, value, secretKeyRef, fieldRef metadata.name), the pod's
user and group, a read-only root filesystem when declared, dropped capabilities, no privilege
escalation, and its volumes (Secret items as read-only files, emptyDirs as tmpfs). The Secret's
placeholders are replaced by --secret values, as an operator creates the real Secret.

Checks: Jobs exit 0; long-running containers answer their liveness and readiness probes on the
declared path and port; the grace period exceeds SHUTDOWN_TIMEOUT; a worker's preStop hook
stops it with exit code 0 within SHUTDOWN_TIMEOUT. Exit status 1 on the first failure.

deploy/smoke.sh runs it inside the compose smoke stack (NET is the stack's network, where the
hosts `postgres` and `redis` of the Secret's URLs resolve). Needs PyYAML.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml


def fail(msg):
    print(f"pods: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def docker(*args, check=True, capture=True):
    r = subprocess.run([os.environ.get("DOCKER", "docker"), *args], capture_output=capture, text=True)
    if check and r.returncode != 0:
        fail(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r


def seconds(value):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(value))
    if not m:
        fail(f"cannot read the duration {value!r}")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def pod_templates(docs):
    """(kind/name, pod spec) of every workload."""
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind in ("Deployment", "Job"):
            yield f"{kind}/{name}", d["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield f"{kind}/{name}", d["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def env_of(container, configmaps, secrets, pod_name):
    env = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update(configmaps[src["configMapRef"]["name"]])
        elif "secretRef" in src:
            env.update(secrets[src["secretRef"]["name"]])
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
            continue
        vf = e["valueFrom"]
        if "secretKeyRef" in vf:
            ref = vf["secretKeyRef"]
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
        elif "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            env[e["name"]] = configmaps[ref["name"]][ref["key"]]
        elif vf.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = pod_name
        else:
            fail(f"{e['name']}: a valueFrom this script cannot emulate: {vf}")
    return env


def run_args(pod, container, env, files_dir, secrets, name, network):
    psc = pod.get("securityContext", {})
    csc = container.get("securityContext", {})
    user = csc.get("runAsUser", psc.get("runAsUser"))
    group = csc.get("runAsGroup", psc.get("runAsGroup"))
    if (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and not user):
        fail(f"{name}: runAsNonRoot without a runAsUser (the image's user is not checked here)")
    args = ["--name", name, "--network", network, "--hostname", name]
    if user is not None:
        args += ["--user", f"{user}:{group if group is not None else user}"]
    if csc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for cap in csc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    if csc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    seccomp = psc.get("seccompProfile", {}).get("type")
    if seccomp not in (None, "RuntimeDefault"):
        fail(f"{name}: seccomp profile {seccomp} cannot be emulated")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        v = volumes[m["name"]]
        if "emptyDir" in v:
            args += ["--tmpfs", f"{m['mountPath']}:mode=1777"]
        elif "secret" in v:
            data = secrets[v["secret"]["secretName"]]
            d = os.path.join(files_dir, f"{name}-{m['name']}")
            os.makedirs(d, exist_ok=True)
            items = v["secret"].get("items") or [{"key": k, "path": k} for k in data]
            for it in items:
                with open(os.path.join(d, it["path"]), "w") as f:
                    f.write(data[it["key"]])
                os.chmod(os.path.join(d, it["path"]), 0o644)
            os.chmod(d, 0o755)
            args += ["-v", f"{d}:{m['mountPath']}:ro"]
        else:
            fail(f"{name}: volume {m['name']} of a kind this script cannot emulate")
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    command = container.get("command")
    if command:
        args += ["--entrypoint", command[0]]
    args.append(container["image"])
    args += (command or [])[1:] + [str(a) for a in container.get("args", [])]
    return args


def port_of(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    fail(f"{container['name']}: probe port {port!r} is not declared")


def http_status(ip, port, path):
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}{path}", timeout=3) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("--network", required=True)
    ap.add_argument("--secret", action="append", default=[], help="KEY=VALUE for the Secret")
    ap.add_argument("--secret-file", action="append", default=[], help="KEY=PATH for the Secret")
    opts = ap.parse_args()
    docs = [d for d in yaml.safe_load_all(open(opts.rendered)) if d]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: dict(d.get("stringData", {})) for d in docs if d["kind"] == "Secret"}
    for s in secrets.values():
        for kv in opts.secret:
            k, v = kv.split("=", 1)
            s[k] = v
        for kv in opts.secret_file:
            k, path = kv.split("=", 1)
            s[k] = open(path).read()
    files_dir = tempfile.mkdtemp()
    os.chmod(files_dir, 0o755)
    started = []
    try:
        for workload, pod in pod_templates(docs):
            for c in pod["containers"]:
                name = "pods-" + re.sub(r"[^a-z0-9-]", "-", f"{workload}-{c['name']}".lower())
                docker("rm", "-f", name, check=False)
                env = env_of(c, configmaps, secrets, name)
                args = run_args(pod, c, env, files_dir, secrets, name, opts.network)
                if workload.startswith(("Job/", "CronJob/")):
                    r = docker("run", *args, check=False)
                    if r.returncode != 0:
                        fail(f"{workload} {c['name']} exited {r.returncode}: {r.stderr.strip()[-500:]}")
                    print(f"pods: {workload} {c['name']}: exit 0")
                    docker("rm", "-f", name, check=False)
                    continue
                docker("run", "-d", *args)
                started.append(name)
                check_long_running(workload, pod, c, env, name)
    finally:
        for name in started:
            docker("rm", "-f", name, check=False)


def check_long_running(workload, pod, c, env, name):
    ip = json.loads(docker("inspect", name).stdout)[0]["NetworkSettings"]["Networks"]
    ip = next(iter(ip.values()))["IPAddress"]
    deadline = time.time() + 60
    for probe in ("livenessProbe", "readinessProbe"):
        p = c.get(probe)
        if not p:
            fail(f"{workload} {c['name']}: no {probe}")
        path, port = p["httpGet"]["path"], port_of(c, p["httpGet"]["port"])
        while (code := http_status(ip, port, path)) != 200:
            state = json.loads(docker("inspect", name).stdout)[0]["State"]
            if not state["Running"]:
                logs = docker("logs", "--tail", "20", name, check=False)
                fail(f"{workload} {c['name']} exited {state['ExitCode']}: {logs.stdout}{logs.stderr}")
            if time.time() > deadline:
                fail(f"{workload} {c['name']}: {probe} {path} on {port} answers {code}")
            time.sleep(1)
        print(f"pods: {workload} {c['name']}: {probe} {path} on port {port}: 200")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if "SHUTDOWN_TIMEOUT" in env:
        shutdown = seconds(env["SHUTDOWN_TIMEOUT"])
        if grace <= shutdown:
            fail(f"{workload}: terminationGracePeriodSeconds {grace} <= SHUTDOWN_TIMEOUT {shutdown}")
        print(f"pods: {workload}: grace period {grace}s > SHUTDOWN_TIMEOUT {shutdown:g}s")
    hook = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if hook:
        t = time.time()
        docker("exec", name, *hook, check=False)
        limit = seconds(env.get("SHUTDOWN_TIMEOUT", grace))
        while json.loads(docker("inspect", name).stdout)[0]["State"]["Running"]:
            if time.time() - t > limit:
                fail(f"{workload} {c['name']}: still running {limit:g}s after its preStop hook")
            time.sleep(0.5)
        code = json.loads(docker("inspect", name).stdout)[0]["State"]["ExitCode"]
        if code != 0:
            fail(f"{workload} {c['name']}: exited {code} after its preStop hook")
        print(f"pods: {workload} {c['name']}: preStop stopped it in {time.time() - t:.1f}s, exit 0")


if __name__ == "__main__":
    main()
