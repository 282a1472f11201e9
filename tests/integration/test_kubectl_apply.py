"""The sandbox's kubectl wrapper against the real apiserver: what it applies arrives as written."""

from __future__ import annotations

import pytest

from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.incluster import Kubectl, demo_documents


@pytest.mark.parametrize("color", ["836e91", "123456", "0x1f2e", "abc123"])
def test_a_color_that_reads_as_a_number_stays_a_string(
    cluster: ControlPlane, namespace: str, color: str
) -> None:
    # 836e91 is a plain string to PyYAML's writer and a float to kubectl's YAML reader.
    _, deployment = demo_documents(color, image="localhost/rainbowd:test")
    Kubectl(cluster.kubeconfig).apply([deployment], namespace=namespace)

    found = Kubectl(cluster.kubeconfig).json(
        "get", "deployment", f"rainbow-deploys-{color}", "-n", namespace
    )
    assert found["spec"]["selector"]["matchLabels"]["color"] == color
    assert found["spec"]["template"]["metadata"]["labels"]["color"] == color
