#!/usr/bin/env python3
"""Hardening rules for deploy/kubernetes/*.yaml (tests/deploy.rs).

Every container and init container: a pinned image (no :latest, a tag or
digest), a securityContext with runAsNonRoot, no privilege escalation, a
read-only root filesystem and every capability dropped, and CPU/memory
requests and limits. rolegate runs as a native sidecar (an init container
with restartPolicy: Always) with a numeric user. Prints one line per
violation; exit 1 if any.
"""

import sys

import yaml

problems = []


def check_container(where, c, pod_sc):
    name = "%s/%s" % (where, c.get("name"))
    image = c.get("image", "")
    if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
        problems.append("%s: image %r has no tag or digest" % (name, image))
    if image.endswith(":latest"):
        problems.append("%s: image %r is not pinned" % (name, image))
    sc = c.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        problems.append("%s: not runAsNonRoot" % name)
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("%s: allowPrivilegeEscalation is not false" % name)
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("%s: readOnlyRootFilesystem is not true" % name)
    if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
        problems.append("%s: capabilities are not all dropped" % name)
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                problems.append("%s: no %s.%s" % (name, kind, r))
    return sc


def main(paths):
    sidecars = 0
    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") not in ("Deployment", "Job"):
                    continue
                where = "%s %s" % (doc["kind"], doc["metadata"]["name"])
                pod = doc["spec"]["template"]["spec"]
                pod_sc = pod.get("securityContext") or {}
                for c in pod.get("containers", []):
                    if c.get("name") == "rolegate":
                        problems.append("%s: rolegate is a plain container, not a native sidecar" % where)
                    check_container(where, c, pod_sc)
                for c in pod.get("initContainers", []):
                    sc = check_container(where, c, pod_sc)
                    if c.get("name") == "rolegate":
                        sidecars += 1
                        if c.get("restartPolicy") != "Always":
                            problems.append("%s: rolegate init container lacks restartPolicy: Always" % where)
                        if not isinstance(sc.get("runAsUser"), int) or sc.get("runAsUser") == 0:
                            problems.append("%s: rolegate has no numeric non-root runAsUser" % where)
    if sidecars == 0:
        problems.append("no rolegate native sidecar found")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
