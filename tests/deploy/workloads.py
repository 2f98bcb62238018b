#!/usr/bin/env python3
"""What rolegate sees in each rendered workload (tests/deploy.rs).

Reads the output of `kubectl kustomize deploy/kubernetes` and prints, as
JSON, one entry per Deployment/Job: the rolegate container's args, the
environment it gets from envFrom ConfigMaps, and each of its volume mounts
with the files the mount holds: the content for ConfigMaps rendered in the
same output, the key names for `items:` projections, or only the source
name for Secrets and ConfigMaps that live outside the repo.
"""

import json
import sys

import yaml


def main(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    out = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            if c.get("name") != "rolegate":
                continue
            env = {}
            for e in c.get("envFrom", []):
                env.update(config_maps[e["configMapRef"]["name"]])
            for e in c.get("env", []):
                env[e["name"]] = e.get("value", "")
            mounts = []
            for m in c.get("volumeMounts", []):
                v = volumes[m["name"]]
                src = v.get("configMap") or v.get("secret") or {}
                name = src.get("name") or src.get("secretName")
                entry = {"path": m["mountPath"], "source": name, "files": None}
                if src.get("items"):
                    entry["files"] = {i["path"]: None for i in src["items"]}
                elif "configMap" in v and name in config_maps:
                    entry["files"] = config_maps[name]
                mounts.append(entry)
            out.append({"workload": "%s/%s" % (doc["kind"], doc["metadata"]["name"]),
                        "args": c.get("args", []), "env": env, "mounts": mounts})
    json.dump(out, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
