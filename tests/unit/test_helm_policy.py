"""Every pod the chart can create meets the restricted Pod Security Standard, under every values set.

`restricted_violations` checks the controls of the Kubernetes Pod Security Standards (baseline and
restricted profiles, https://kubernetes.io/docs/concepts/security/pod-security-standards/) on a pod
spec, as the PodSecurity admission controller would with `enforce: restricted` on the namespace.
The checker is tested too: each control catches a spec that breaks it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from helm_render import VALUES_SETS, load_values, only, pod_specs, render

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SECCOMP_OK = {"RuntimeDefault", "Localhost"}


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def _host_and_volume_violations(pod: dict[str, Any]) -> list[str]:
    found = [f"{key} is true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']} is of type {sorted(kinds - ALLOWED_VOLUMES)}")
    ctx = pod.get("securityContext", {})
    for sysctl in ctx.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']} is not in the safe set")
    return found


def _context_violations(where: str, ctx: dict[str, Any]) -> list[str]:
    """Controls that apply alike to the pod's and to each container's securityContext."""
    found = []
    if ctx.get("windowsOptions", {}).get("hostProcess"):
        found.append(f"{where}: windowsOptions.hostProcess is true")
    selinux = ctx.get("seLinuxOptions", {})
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        found.append(f"{where}: seLinuxOptions {selinux}")
    if ctx.get("runAsUser") == 0:
        found.append(f"{where}: runAsUser is 0")
    if ctx.get("runAsNonRoot") is False:
        found.append(f"{where}: runAsNonRoot is false")
    seccomp = ctx.get("seccompProfile", {}).get("type")
    if seccomp is not None and seccomp not in SECCOMP_OK:
        found.append(f"{where}: seccompProfile.type is {seccomp}")
    apparmor = ctx.get("appArmorProfile", {}).get("type")
    if apparmor is not None and apparmor not in SECCOMP_OK:
        found.append(f"{where}: appArmorProfile.type is {apparmor}")
    return found


def _container_violations(container: dict[str, Any], pod_ctx: dict[str, Any]) -> list[str]:
    where = f"container {container['name']}"
    ctx = container.get("securityContext", {})
    found = _context_violations(where, ctx)
    if ctx.get("privileged"):
        found.append(f"{where}: privileged")
    if ctx.get("allowPrivilegeEscalation") is not False:
        found.append(f"{where}: allowPrivilegeEscalation is not false")
    if ctx.get("procMount", "Default") != "Default":
        found.append(f"{where}: procMount is {ctx['procMount']}")
    caps = ctx.get("capabilities", {})
    if "ALL" not in caps.get("drop", []):
        found.append(f"{where}: capabilities.drop lacks ALL")
    if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
        found.append(f"{where}: capabilities.add {caps['add']}")
    if any(port.get("hostPort") for port in container.get("ports", [])):
        found.append(f"{where}: hostPort")
    if not (ctx.get("runAsNonRoot") is True or pod_ctx.get("runAsNonRoot") is True):
        found.append(f"{where}: runAsNonRoot is not true (neither here nor on the pod)")
    if "seccompProfile" not in ctx and pod_ctx.get("seccompProfile", {}).get("type") not in SECCOMP_OK:
        found.append(f"{where}: no RuntimeDefault or Localhost seccomp profile (neither here nor on the pod)")
    return found


def restricted_violations(pod: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """What keeps a pod spec from the restricted Pod Security Standard; [] when it meets it."""
    pod_ctx = pod.get("securityContext", {})
    found = _host_and_volume_violations(pod) + _context_violations("pod", pod_ctx)
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            found.append(f"annotation {key}: {value}")
    for container in _containers(pod):
        found += _container_violations(container, pod_ctx)
    return found


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_every_pod_meets_restricted_pod_security_standard_when_values_are(values_set: str) -> None:
    specs = pod_specs(render(load_values(values_set)))
    assert specs
    problems = {where: v for where, pod in specs.items() if (v := restricted_violations(pod))}
    assert problems == {}


def test_policy_covers_triton_batch_freshness_and_test_pods_when_everything_is_on() -> None:
    """The check sees all pod-creating kinds: Deployment, Job, both CronJobs and both test Pods."""
    kinds = sorted(where.split("/")[0] for where in pod_specs(render(load_values("everything"))))
    assert kinds == ["CronJob", "CronJob", "Deployment", "Job", "Pod", "Pod"]


BREAKS = [
    ("hostNetwork", lambda pod, c: pod.update(hostNetwork=True)),
    ("hostPath", lambda pod, c: pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}})),
    ("privileged", lambda pod, c: c["securityContext"].update(privileged=True)),
    ("allowPrivilegeEscalation", lambda pod, c: c["securityContext"].pop("allowPrivilegeEscalation")),
    ("capabilities.drop", lambda pod, c: c["securityContext"]["capabilities"].update(drop=[])),
    ("capabilities.add", lambda pod, c: c["securityContext"]["capabilities"].update(add=["SYS_ADMIN"])),
    ("runAsUser is 0", lambda pod, c: c["securityContext"].update(runAsUser=0)),
    (
        "runAsNonRoot",
        lambda pod, c: (pod["securityContext"].pop("runAsNonRoot"), c["securityContext"].pop("runAsNonRoot")),
    ),
    ("seccomp", lambda pod, c: pod["securityContext"].pop("seccompProfile")),
    (
        "seccompProfile.type is Unconfined",
        lambda pod, c: c["securityContext"].update(seccompProfile={"type": "Unconfined"}),
    ),
    ("hostPort", lambda pod, c: c["ports"][0].update(hostPort=8000)),
    ("procMount", lambda pod, c: c["securityContext"].update(procMount="Unmasked")),
    ("sysctl", lambda pod, c: pod["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}])),
]


@pytest.mark.parametrize(("control", "breaks"), BREAKS, ids=[b[0] for b in BREAKS])
def test_policy_check_catches_violation_when_a_control_is_broken(control: str, breaks) -> None:
    pod = copy.deepcopy(only(render(), "Deployment")["spec"]["template"]["spec"])
    assert restricted_violations(pod) == []
    breaks(pod, pod["containers"][0])
    problems = restricted_violations(pod)
    assert any(control in p for p in problems), problems
