"""The pure parts of `rainbowd deploy` and the kubectl plugin: colors, templates, the --image
clone, kubectl's flags and completion, the context's namespace."""

from __future__ import annotations

import shlex
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from rainbowd.cli import build_parser
from rainbowd.commands.cluster_args import context_namespace
from rainbowd.core.model import CONSOLIDATED_FROM, ORIGINAL_REPLICAS
from rainbowd.deploy import (
    AppRef,
    UsageError,
    clone_deployment,
    git_color,
    render_template,
    validate_color,
)
from rainbowd.deploy.rollback import replicas_before_rainbowd
from rainbowd.kubectl import _hoist, complete, main

ROOT = Path(__file__).resolve().parents[2]
REF = AppRef(namespace="default", app="rainbow-deploys")


@pytest.mark.parametrize("color", ["3c3fdc", "release-42", "v2", "a"])
def test_valid_colors(color: str) -> None:
    assert validate_color(color) == color


@pytest.mark.parametrize("color", ["3C3FDC", "-abc", "abc-", "a_b", "", "x" * 64, "a.b"])
def test_invalid_colors_say_what_a_color_is(color: str) -> None:
    with pytest.raises(UsageError, match=r"six hex digits .* or a DNS label"):
        validate_color(color)


def test_the_seed_app_yaml_renders_as_it_is() -> None:
    text = (ROOT / "k8s" / "demo" / "app.yaml").read_text()
    docs = render_template(text, "3c3fdc", REF, source="app.yaml")
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Service", "Deployment"]
    deployment = docs[1]
    assert deployment["metadata"]["name"] == "rainbow-deploys-3c3fdc"
    assert deployment["spec"]["template"]["metadata"]["labels"]["color"] == "3c3fdc"
    assert docs[0]["spec"]["selector"]["color"] == "3c3fdc"


@pytest.mark.parametrize("color", ["235549", "000123", "1e5432"])
def test_a_color_of_digits_stays_a_string_in_every_field(color: str) -> None:
    """A git sha's first six hex digits are all digits about one time in sixteen; put into
    the YAML text they would read back as a number, and a label must be a string."""
    text = (ROOT / "k8s" / "demo" / "app.yaml").read_text()
    service, deployment = render_template(text, color, REF, source="app.yaml")
    assert deployment["spec"]["template"]["metadata"]["labels"]["color"] == color
    assert deployment["spec"]["selector"]["matchLabels"]["color"] == color
    assert service["spec"]["selector"]["color"] == color
    assert deployment["metadata"]["name"] == f"rainbow-deploys-{color}"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("kind: Deployment\n", "no __COLOR__ in the template"),
        ("a: [__COLOR__\n", "app.yaml: not YAML"),
        ("kind: ConfigMap\nname: __COLOR__\n", "document 1: kind 'ConfigMap'"),
        ("kind: Service\nx: __COLOR__\n", "expected one Deployment, found 0"),
        (
            "kind: Deployment\nspec: {template: {metadata: {labels: {app: other, "
            "color: __COLOR__}}}}\n",
            "spec.template.metadata.labels.app is 'other', expected 'rainbow-deploys'",
        ),
        (
            "kind: Deployment\nspec: {template: {metadata: {labels: {app: rainbow-deploys, "
            "color: blue}}}}\nx: __COLOR__\n",
            "labels.color is 'blue', expected 'abcdef'",
        ),
        ("- __COLOR__\n", "document 1: expected a Kubernetes object, got list"),
        (
            "kind: Deployment\nmetadata: {name: x-__COLOR__}\nspec: {replicas: 0, template: "
            "{metadata: {labels: {app: rainbow-deploys, color: __COLOR__}}}}\n",
            "'x-abcdef': 0 replicas: the Service would send its connections to no pod",
        ),
    ],
)
def test_a_bad_template_is_a_clear_error(text: str, error: str) -> None:
    with pytest.raises(UsageError) as caught:
        render_template(text, "abcdef", REF, source="app.yaml")
    assert error in str(caught.value)
    assert str(caught.value).startswith("app.yaml")


def _live(containers: list[dict[str, Any]]) -> dict[str, Any]:
    labels = {"app": "rainbow-deploys", "color": "3c3fdc"}
    return {
        "metadata": {
            "name": "rainbow-deploys-3c3fdc",
            "namespace": "default",
            "uid": "u",
            "resourceVersion": "9",
            "labels": {"app": "rainbow-deploys"},
            "annotations": {
                "rainbowd.io/live-at": "2026-01-01T00:00:00Z",
                "deployment.kubernetes.io/revision": "1",
                "team": "chat",
            },
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": containers}},
        },
        "status": {"readyReplicas": 3},
    }


def test_the_image_clone_moves_everything_to_the_new_color() -> None:
    live = _live([{"name": "app", "image": "chat:1"}])
    clone = clone_deployment(
        live, ref=REF, old_color="3c3fdc", color="9d2cc9", image="chat:2", container=None
    )
    assert clone["metadata"] == {
        "name": "rainbow-deploys-9d2cc9",
        "namespace": "default",
        "labels": {"app": "rainbow-deploys"},
        "annotations": {"team": "chat"},
    }
    assert "status" not in clone
    assert clone["spec"]["selector"]["matchLabels"]["color"] == "9d2cc9"
    assert clone["spec"]["template"]["metadata"]["labels"]["color"] == "9d2cc9"
    assert clone["spec"]["template"]["spec"]["containers"] == [{"name": "app", "image": "chat:2"}]
    assert clone["spec"]["replicas"] == 3
    # The live color's object is left as it was.
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "chat:1"


def test_the_image_clone_needs_a_container_name_when_there_are_several() -> None:
    live = _live([{"name": "app", "image": "a:1"}, {"name": "sidecar", "image": "s:1"}])
    with pytest.raises(UsageError, match=r"2 containers \(app, sidecar\): name the one"):
        clone_deployment(live, ref=REF, old_color="3c3fdc", color="b", image="a:2", container=None)
    with pytest.raises(UsageError, match=r"no container 'web' .* app, sidecar"):
        clone_deployment(live, ref=REF, old_color="3c3fdc", color="b", image="a:2", container="web")
    clone = clone_deployment(
        live, ref=REF, old_color="3c3fdc", color="b", image="s:2", container="sidecar"
    )
    images = [c["image"] for c in clone["spec"]["template"]["spec"]["containers"]]
    assert images == ["a:1", "s:2"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status"], ["status"]),
        (["-n", "chat", "deploy", "--app", "x"], ["deploy", "-n", "chat", "--app", "x"]),
        (
            ["--context=prod", "--namespace", "chat", "rollback"],
            ["rollback", "--context=prod", "--namespace", "chat"],
        ),
        (["--help"], ["--help"]),
        (["-n"], ["-n"]),
    ],
)
def test_kubectl_flags_before_the_subcommand_move_after_it(
    argv: list[str], expected: list[str]
) -> None:
    assert _hoist(argv) == expected


def test_kubectl_completion_speaks_cobra(capsys: pytest.CaptureFixture[str]) -> None:
    assert complete(["ro"]) == 0
    assert capsys.readouterr().out == "rollback\n:4\n"
    assert complete([""]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == ":4" and {"deploy", "promote", "hold", "release", "history"} <= set(out)
    assert complete(["deploy", "--cle"]) == 0
    assert capsys.readouterr().out == "--cleanup-on-failure\n:4\n"


def test_kubectl_rainbow_help_names_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["hold", "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: kubectl rainbow hold")


def test_the_namespace_comes_from_the_kubeconfig_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.write_text(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: Config
            current-context: dev
            contexts:
              - name: dev
                context: {cluster: c, user: u, namespace: chat}
              - name: prod
                context: {cluster: c, user: u}
            """
        )
    )
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert context_namespace(str(config), None) == "chat"
    assert context_namespace(str(config), "prod") == "default"
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert context_namespace(None, None) == "chat"
    assert context_namespace(str(tmp_path / "missing"), None) == "default"


async def test_the_color_defaults_to_the_checked_out_commit(tmp_path: Path) -> None:
    repo, plain = tmp_path / "repo", tmp_path / "plain"
    repo.mkdir()
    plain.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    git("init", "-q")
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.invalid",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "release",
    )
    assert await git_color(str(repo)) == git("rev-parse", "HEAD")[:6]
    with pytest.raises(UsageError, match=r"no --color given and `git rev-parse HEAD` failed"):
        await git_color(str(plain))


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ({}, (0, ORIGINAL_REPLICAS)),
        ({ORIGINAL_REPLICAS: "3"}, (3, ORIGINAL_REPLICAS)),
        ({ORIGINAL_REPLICAS: "2", CONSOLIDATED_FROM: "4"}, (4, CONSOLIDATED_FROM)),
        ({ORIGINAL_REPLICAS: "5", CONSOLIDATED_FROM: "4"}, (5, ORIGINAL_REPLICAS)),
        # Hand-edited records are no count, whatever Python's str.isdigit says of them.
        ({ORIGINAL_REPLICAS: "²", CONSOLIDATED_FROM: "many"}, (0, ORIGINAL_REPLICAS)),
        ({ORIGINAL_REPLICAS: "-2", CONSOLIDATED_FROM: "2"}, (2, CONSOLIDATED_FROM)),
    ],
)
def test_a_rollback_restores_the_most_replicas_a_record_gives(
    records: dict[str, str], expected: tuple[int, str]
) -> None:
    assert replicas_before_rainbowd(records) == expected


def test_the_readme_ci_pipeline_runs_commands_the_cli_takes() -> None:
    """The README's CI example is YAML a CI reads, and each rainbowd line in it parses as the
    command it means, with the sha given as the image tag and the color left to git."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("```yaml\n# .gitlab-ci.yml") + len("```yaml\n") :]
    pipeline = yaml.safe_load(block[: block.index("```")])
    lines = [
        line for job in pipeline.values() for line in job["script"] if line.startswith("rainbowd ")
    ]
    assert [line.split()[1] for line in lines] == ["deploy", "rollback"], lines
    sha = "9d2cc9f1e0a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4"
    parsed = [
        build_parser().parse_args(shlex.split(line.replace("$CI_COMMIT_SHA", sha))[1:])
        for line in lines
    ]
    deploy, rollback = parsed
    assert deploy.image == f"registry.example/chat:{sha}" and deploy.color is None
    assert (deploy.app, deploy.namespace, deploy.timeout) == ("chat", "chat", 600.0)
    assert deploy.check and deploy.cleanup_on_failure
    assert (rollback.app, rollback.namespace, rollback.to) == ("chat", "chat", None)


_HPA = (
    "\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n"
    "metadata: {name: rainbow-deploys-__COLOR__}\n"
    "spec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: TARGET}, "
    "maxReplicas: 3}\n"
)
_PDB = (
    "\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\n"
    "metadata: {name: rainbow-deploys-__COLOR__}\n"
    "spec: {minAvailable: 1, selector: {matchLabels: {app: rainbow-deploys, color: SELECTED}}}\n"
)


def test_a_template_may_carry_the_colors_hpa_pdb_and_scaled_object() -> None:
    text = (ROOT / "k8s" / "demo" / "app.yaml").read_text()
    scaled = (
        "\n---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: s-__COLOR__}\n"
        "spec: {scaleTargetRef: {name: rainbow-deploys-__COLOR__}}\n"
    )
    owned = _HPA.replace("TARGET", "rainbow-deploys-__COLOR__")
    owned += _PDB.replace("SELECTED", "__COLOR__") + scaled
    docs = render_template(text + owned, "3c3fdc", REF, source="app.yaml")
    assert [d["kind"] for d in docs] == [
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ScaledObject",
    ]
    assert docs[2]["spec"]["scaleTargetRef"]["name"] == "rainbow-deploys-3c3fdc"


@pytest.mark.parametrize(
    ("owned", "error"),
    [
        (
            _HPA.replace("TARGET", "rainbow-deploys-0ther0"),
            "document 3: HorizontalPodAutoscaler 'rainbow-deploys-abcdef': spec.scaleTargetRef "
            "names 'rainbow-deploys-0ther0', expected Deployment 'rainbow-deploys-abcdef'",
        ),
        (
            _PDB.replace("SELECTED", "0ther0"),
            "document 3: PodDisruptionBudget 'rainbow-deploys-abcdef': its selector does not "
            "select the pods of Deployment 'rainbow-deploys-abcdef'",
        ),
    ],
)
def test_a_colors_object_aimed_at_another_color_is_a_clear_error(owned: str, error: str) -> None:
    text = (ROOT / "k8s" / "demo" / "app.yaml").read_text()
    with pytest.raises(UsageError) as caught:
        render_template(text + owned, "abcdef", REF, source="app.yaml")
    assert error in str(caught.value)
