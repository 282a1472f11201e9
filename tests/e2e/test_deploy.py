"""`rainbowd deploy`, `rollback`, `promote`, `hold` and `release` as a user runs them: the real
CLI in a child process against the real apiserver with controller-manager and kwok, and, where
the daemon's reaction is the point, rainbowd itself running with a real Prometheus.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    CONSOLIDATED_AT,
    CONSOLIDATED_FROM,
    HOLD_REASON,
    HOLD_UNTIL,
    LIVE_AT,
    ORIGINAL_REPLICAS,
    RETIRED_AT,
    RETIREMENT,
    ActionKind,
    Reason,
)
from rainbowd.deploy import CANARY_COLOR, PREVIOUS_COLOR
from rainbowd.kube.clients import NotFound, request_json, resource_path
from rainbowd.kube.events import EventRecorder
from rainbowd.kube.executing import ActionOutcome, Executor
from rainbowd.settings import PolicySource
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.faultlog import Witness
from tests.e2e.harness import (
    APP,
    ROOT,
    Fleet,
    annotations_of,
    color_doc,
    daemon_settings,
    eventually,
    fetch_json,
    get_deployment,
    our_events,
    policy_text,
    replicas,
    running_daemon,
)
from tests.installtools import service_account_kubeconfig
from tests.integration.test_executing import action_for, plan_of

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full]

A, B, C = "aaaaaa", "bbbbbb", "cccccc"
# A CLI run: rolling out a color on two busy shared cores can take a while.
CLI_DEADLINE = 240.0


def chat_template(
    *, replicas: int = 1, fate: str | None = None, progress_deadline: int | None = None
) -> str:
    """The seed's app.yaml shape for the test app: a Service and one Deployment, __COLOR__.
    `fate` (sandbox.rainbowd.io/fate) makes kwok keep the pods from ever getting ready."""
    text = textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: Service
        metadata:
          name: {APP}
          labels: {{app: {APP}}}
        spec:
          selector: {{app: {APP}, color: __COLOR__}}
          ports: [{{name: http, port: 80, targetPort: 8080}}]
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {APP}-__COLOR__
          labels: {{app: {APP}}}
        spec:
          replicas: {replicas}
          selector:
            matchLabels: {{app: {APP}, color: __COLOR__}}
          template:
            metadata:
              labels: {{app: {APP}, color: __COLOR__}}
            spec:
              containers:
                - name: app
                  image: registry.invalid/chat:__COLOR__
        """
    )
    if fate:
        text = text.replace(
            "      labels: {app: chat, color: __COLOR__}\n",
            "      labels: {app: chat, color: __COLOR__}\n"
            f"      annotations: {{sandbox.rainbowd.io/fate: {fate}}}\n",
        )
    if progress_deadline:
        text = text.replace(
            "  selector:\n", f"  progressDeadlineSeconds: {progress_deadline}\n  selector:\n"
        )
    return text


@dataclass
class Run:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


@dataclass
class Cli:
    """`rainbowd COMMAND --kubeconfig K -n NS ...` in a child process."""

    cluster: ControlPlane
    namespace: str
    workdir: Path
    kubeconfig: Path | None = None  # else the cluster's admin

    async def spawn(
        self, command: str, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rainbowd",
            command,
            f"--kubeconfig={self.kubeconfig or self.cluster.kubeconfig}",
            "-n",
            self.namespace,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
        )

    async def __call__(
        self, command: str, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> Run:
        proc = await self.spawn(command, *args, env=env, cwd=cwd)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CLI_DEADLINE)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"rainbowd {command} {args} still running after {CLI_DEADLINE:g}s")
        return Run(proc.returncode or 0, out.decode(), err.decode())

    def template(self, name: str = "app.yaml", **kwargs: Any) -> str:
        path = self.workdir / name
        path.write_text(chat_template(**kwargs))
        return str(path)

    async def deploy(self, color: str, *args: str, **template: Any) -> Run:
        run = await self(
            "deploy", "--app", APP, "-f", self.template(**template), "--color", color, *args
        )
        return run

    async def deployed(self, color: str, *args: str, **template: Any) -> Run:
        run = await self.deploy(color, *args, **template)
        assert run.code == 0, str(run)
        return run


@pytest.fixture
def cli(cluster_full: ControlPlane, namespace: str, tmp_path: Path) -> Cli:
    return Cli(cluster_full, namespace, tmp_path)


async def service(api: ApiClient, namespace: str, name: str = APP) -> dict[str, Any]:
    return await request_json(
        api, "GET", resource_path("v1", "services", namespace=namespace, name=name)
    )


def selector(svc: dict[str, Any]) -> dict[str, str]:
    return dict(svc["spec"]["selector"])


def metadata_annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["metadata"].get("annotations") or {})


# --- deploy -------------------------------------------------------------------------------------


async def test_deploy_the_seed_app_yaml_then_a_checked_color_then_rerun_changes_nothing(
    cli: Cli, namespace: str, kube_api: ApiClient, tmp_path: Path
) -> None:
    seed_app = str(ROOT / "k8s" / "demo" / "app.yaml")
    first = await cli("deploy", "--app", "rainbow-deploys", "-f", seed_app, "--color", A)
    assert first.code == 0, str(first)
    assert f"created rainbow-deploys-{A} (2 replicas)" in first.out
    assert f"rainbow-deploys-{A} is Available (2/2 ready)" in first.out
    assert f"Service rainbow-deploys created, selecting #{A}" in first.out
    svc = await service(kube_api, namespace, "rainbow-deploys")
    assert selector(svc) == {"app": "rainbow-deploys", "color": A}

    # The next release, with a smoke check that sees the new color's pods.
    seen = tmp_path / "check.json"
    check = f"{sys.executable} -c 'import json, os; print(json.dumps(dict(os.environ)))' > {seen}"
    second = await cli(
        "deploy", "--app", "rainbow-deploys", "-f", seed_app, "--color", B, "--check", check
    )
    assert second.code == 0, str(second)
    assert "check passed" in second.out
    assert f"Service rainbow-deploys now selects #{B} (was #{A})" in second.out
    env = json.loads(seen.read_text())
    assert env["RAINBOWD_COLOR"] == B and env["RAINBOWD_PREVIOUS_COLOR"] == A
    assert env["RAINBOWD_DEPLOYMENT"] == f"rainbow-deploys-{B}"
    names = env["RAINBOWD_POD_NAMES"].split()
    assert len(names) == 2 and all(n.startswith(f"rainbow-deploys-{B}-") for n in names), env
    assert len(env["RAINBOWD_POD_IPS"].split()) == 2, env
    svc = await service(kube_api, namespace, "rainbow-deploys")
    assert selector(svc) == {"app": "rainbow-deploys", "color": B}
    assert metadata_annotations(svc)[PREVIOUS_COLOR] == A
    # The old color is left running, for rainbowd to burn down.
    assert await replicas(kube_api, namespace, f"rainbow-deploys-{A}") == 2

    # Re-running the finished deploy changes nothing.
    before = await get_deployment(kube_api, namespace, f"rainbow-deploys-{B}")
    assert before is not None
    again = await cli("deploy", "--app", "rainbow-deploys", "-f", seed_app, "--color", B)
    assert again.code == 0, str(again)
    assert "nothing to do" in again.out
    after = await get_deployment(kube_api, namespace, f"rainbow-deploys-{B}")
    assert after is not None
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert metadata_annotations(after) == metadata_annotations(before)
    unchanged = await service(kube_api, namespace, "rainbow-deploys")
    assert unchanged["metadata"]["resourceVersion"] == svc["metadata"]["resourceVersion"]


def git_checkout(folder: Path) -> str:
    """A repository with one commit in `folder`, as a CI job checks one out; its HEAD."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    folder.mkdir()
    git("init", "-q")
    (folder / "README").write_text("chat\n")
    git("add", "README")
    git("-c", "user.name=ci", "-c", "user.email=ci@example.invalid", "commit", "-qm", "release")
    return git("rev-parse", "HEAD")


async def test_image_clones_the_live_color_named_by_the_checked_out_commit(
    cli: Cli, namespace: str, kube_api: ApiClient, tmp_path: Path
) -> None:
    await cli.deployed(A, replicas=2)
    # A bad --color is refused before anything is written.
    bad = await cli("deploy", "--app", APP, "--image", "registry.invalid/chat:v2", "--color", "B_1")
    assert bad.code == 2, str(bad)
    assert "rainbowd deploy: color 'b_1': expected six hex digits" in bad.err, str(bad)

    # As in CI: no --color, the job's checkout names it.
    sha = git_checkout(tmp_path / "checkout")
    color = sha[:6]
    image = f"registry.invalid/chat:{sha}"
    run = await cli("deploy", "--app", APP, "--image", image, cwd=tmp_path / "checkout")
    assert run.code == 0, str(run)
    assert run.out.startswith(f"deploying #{color} of {APP} in namespace {namespace}\n"), str(run)
    clone = await get_deployment(kube_api, namespace, f"{APP}-{color}")
    assert clone is not None
    template = clone["spec"]["template"]
    assert template["metadata"]["labels"] == {"app": APP, "color": color}
    assert clone["spec"]["selector"]["matchLabels"] == {"app": APP, "color": color}
    assert template["spec"]["containers"][0]["image"] == image
    assert clone["spec"]["replicas"] == 2
    assert selector(await service(kube_api, namespace)) == {"app": APP, "color": color}


@pytest.mark.parametrize(
    ("template", "args", "reason"),
    [
        ({"fate": "never-ready", "progress_deadline": 2}, (), "ProgressDeadlineExceeded"),
        ({"fate": "never-ready"}, ("--timeout=3s",), "not Available after 3s: 0/1 ready"),
        ({"fate": "image-pull-backoff"}, ("--cleanup-on-failure",), "ImagePullBackOff"),
        ({"fate": "crash-loop"}, (), "CrashLoopBackOff"),
    ],
    ids=["progress-deadline", "timeout", "image-pull-backoff", "crash-loop"],
)
async def test_a_color_that_never_gets_ready_leaves_the_service_alone(
    cli: Cli,
    namespace: str,
    kube_api: ApiClient,
    template: dict[str, Any],
    args: tuple[str, ...],
    reason: str,
) -> None:
    await cli.deployed(A)
    before = await service(kube_api, namespace)

    run = await cli.deploy(B, *args, **template)
    assert run.code == 1, str(run)
    assert reason in run.err, str(run)
    assert run.err.startswith("rainbowd deploy: failed: "), str(run)
    after = await service(kube_api, namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert selector(after) == {"app": APP, "color": A}
    left = await get_deployment(kube_api, namespace, f"{APP}-{B}")
    if "--cleanup-on-failure" in args:
        assert f"{APP}-{B} deleted (--cleanup-on-failure)" in run.err
        assert left is None or left["metadata"].get("deletionTimestamp")
    else:
        assert left is not None, "the failed color is kept for a look without the flag"


async def test_a_stuck_rollout_tells_its_last_pod_event_and_ctrl_c_leaves_the_service(
    cli: Cli, namespace: str, kube_api: ApiClient
) -> None:
    await cli.deployed(A)
    before = await service(kube_api, namespace)
    template = cli.template(fate="never-ready")
    proc = await cli.spawn("deploy", "--app", APP, "-f", template, "--color", B)
    stdout = proc.stdout
    assert stdout is not None
    lines: list[str] = []

    async def until_stuck() -> None:
        # Nothing changes for STUCK_AFTER (10s): the progress line adds the last Pod event.
        while not any("; last pod event: " in line for line in lines):
            line = await stdout.readline()
            if not line:
                pytest.fail(f"the deploy ended before telling a stuck rollout: {lines}")
            lines.append(line.decode())

    try:
        await asyncio.wait_for(until_stuck(), CLI_DEADLINE)
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = await proc.communicate()
    progress = [line for line in lines if line.startswith("waiting: ")]
    assert re.fullmatch(rf"waiting: {APP}-{B}: 0/1 ready, \d+ updated, \d+s elapsed\n", progress[0])
    stuck = re.fullmatch(
        rf"waiting: {APP}-{B}: 0/1 ready, \d+ updated, (\d+)s elapsed; last pod event: "
        rf"\w+ on pod {APP}-{B}-\S+: .+\n",
        progress[-1],
    )
    assert stuck is not None and int(stuck.group(1)) >= 10, lines
    # Ctrl-C: exit 130, and the Service was never switched.
    assert proc.returncode == 130, (lines, err)
    after = await service(kube_api, namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_a_failing_check_means_no_switch(
    cli: Cli, namespace: str, kube_api: ApiClient
) -> None:
    await cli.deployed(A)
    run = await cli.deploy(B, "--check", 'test "$RAINBOWD_COLOR" = nope || exit 3')
    assert run.code == 1, str(run)
    assert "failed with exit code 3" in run.err
    svc = await service(kube_api, namespace)
    assert selector(svc) == {"app": APP, "color": A}
    assert PREVIOUS_COLOR not in metadata_annotations(svc)

    # Run again once fixed: the color is not re-created, only waited on, checked and switched.
    kept = await get_deployment(kube_api, namespace, f"{APP}-{B}")
    assert kept is not None
    # (its template's Service now has another port: a deploy switches the selector only)
    moved = cli.workdir / "moved-port.yaml"
    moved.write_text(chat_template().replace("port: 80,", "port: 81,"))
    check = 'test "$RAINBOWD_COLOR" = bbbbbb'
    again = await cli("deploy", "--app", APP, "-f", str(moved), "--color", B, "--check", check)
    assert again.code == 0, str(again)
    assert f"{APP}-{B} exists already: not re-created, waiting for it" in again.out
    assert f"Service {APP} now selects #{B} (was #{A})" in again.out
    switched = await get_deployment(kube_api, namespace, f"{APP}-{B}")
    assert switched is not None and switched["metadata"]["uid"] == kept["metadata"]["uid"]
    assert switched["metadata"]["generation"] == kept["metadata"]["generation"]
    svc = await service(kube_api, namespace)
    assert selector(svc) == {"app": APP, "color": B}
    assert [p["port"] for p in svc["spec"]["ports"]] == [80], svc["spec"]

    # Deploying the older #A again is a rollback by another name: #B, newer and never seen live
    # by a rainbowd, is stamped live-at, so it is planned as retired rather than pending.
    assert LIVE_AT not in await annotations_of(kube_api, namespace, f"{APP}-{B}")
    back = await cli.deploy(A)
    assert back.code == 0, str(back)
    assert f"{APP}-{A} exists already: not re-created" in back.out, str(back)
    assert selector(await service(kube_api, namespace)) == {"app": APP, "color": A}
    assert LIVE_AT in await annotations_of(kube_api, namespace, f"{APP}-{B}")


async def test_two_racing_deploys_one_wins_and_nothing_is_clobbered(
    cli: Cli, namespace: str, kube_api: ApiClient, tmp_path: Path
) -> None:
    await cli.deployed(A)
    gate = tmp_path / "gate"
    gate.mkdir()
    # Each check says it arrived, then waits for the gate: both deploys have read the Service
    # (at the same resourceVersion) and are ready to switch when the gate opens.
    check = f'touch {gate}/"$RAINBOWD_COLOR"; while [ ! -e {gate}/open ]; do sleep 0.1; done'
    racers = [asyncio.create_task(cli.deploy(color, "--check", check)) for color in (B, C)]

    async def both_waiting() -> bool:
        for task in racers:
            if task.done():
                pytest.fail(f"a racer ended before the gate opened: {task.result()}")
        return (gate / B).exists() and (gate / C).exists()

    await eventually(both_waiting, what="both deploys at their check", within=CLI_DEADLINE)
    (gate / "open").touch()
    runs = dict(zip((B, C), await asyncio.gather(*racers), strict=True))

    winners = [color for color, run in runs.items() if run.code == 0]
    assert len(winners) == 1, "\n".join(str(r) for r in runs.values())
    (winner,) = winners
    (loser,) = {B, C} - {winner}
    assert runs[loser].code == 1
    assert "another deploy or rollback won" in runs[loser].err, str(runs[loser])
    svc = await service(kube_api, namespace)
    assert selector(svc) == {"app": APP, "color": winner}
    assert metadata_annotations(svc)[PREVIOUS_COLOR] == A


# --- rollback -----------------------------------------------------------------------------------


async def test_rollback_to_a_deleted_color_names_the_colors_left(
    cli: Cli, namespace: str, kube_api: ApiClient
) -> None:
    for color in (A, B, C):
        await cli.deployed(color)
    await request_json(
        kube_api,
        "DELETE",
        resource_path("apps/v1", "deployments", namespace=namespace, name=f"{APP}-{B}"),
    )
    run = await cli("rollback", "--app", APP)
    assert run.code == 1, str(run)
    assert f"cannot roll back to #{B}" in run.err
    assert f"colors that can be rolled back to: #{A} (1/1 ready)" in run.err, run.err
    run = await cli("rollback", "--app", APP, "--to", "dddddd")
    assert run.code == 1 and "cannot roll back to #dddddd" in run.err, str(run)
    assert selector(await service(kube_api, namespace)) == {"app": APP, "color": C}
    # --to one that is left: back to it, past the recorded previous color.
    run = await cli("rollback", "--app", APP, "--to", A)
    assert run.code == 0, str(run)
    assert f"Service {APP} now selects #{A} again (was #{C})" in run.out
    svc = await service(kube_api, namespace)
    assert selector(svc) == {"app": APP, "color": A}
    assert metadata_annotations(svc)[PREVIOUS_COLOR] == C


async def test_rollback_to_a_consolidated_color_gives_it_back_its_replicas(
    cli: Cli, namespace: str, kube_api: ApiClient
) -> None:
    await cli.deployed(A, replicas=4)
    await cli.deployed(B)
    name_a = f"{APP}-{A}"
    # What a consolidation step writes: its record, then /scale to the busy pods.
    await request_json(
        kube_api,
        "PATCH",
        resource_path("apps/v1", "deployments", namespace=namespace, name=name_a),
        body={
            "metadata": {
                "annotations": {
                    CONSOLIDATED_AT: "2026-11-21T10:00:00Z",
                    CONSOLIDATED_FROM: "4",
                    RETIRED_AT: "2026-11-21T09:00:00Z",
                }
            },
            "spec": {"replicas": 2},
        },
        content_type="application/merge-patch+json",
    )

    run = await cli("rollback", "--app", APP)
    assert run.code == 0, str(run)
    assert f"scaling {name_a} from 2 back to 4 replicas ({CONSOLIDATED_FROM})" in run.out
    assert selector(await service(kube_api, namespace)) == {"app": APP, "color": A}
    deployment = await get_deployment(kube_api, namespace, name_a)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 4
    assert deployment["status"]["availableReplicas"] == 4  # Available before the switch
    bookkeeping = metadata_annotations(deployment)
    for key in RETIREMENT:
        assert key not in bookkeeping, bookkeeping


async def test_a_rollback_that_may_not_clear_the_colors_bookkeeping_still_reports_the_switch(
    cli: Cli, cluster_full: ControlPlane, namespace: str, kube_api: ApiClient, tmp_path: Path
) -> None:
    await cli.deployed(A)
    await cli.deployed(B)
    name_a = f"{APP}-{A}"
    # #A as rainbowd and a user left it: retired, and held (so the rollback writes no hold).
    marks = {RETIRED_AT: "2026-11-29T10:00:00Z", HOLD_UNTIL: "2099-01-01T00:00:00Z"}
    await request_json(
        kube_api,
        "PATCH",
        resource_path("apps/v1", "deployments", namespace=namespace, name=name_a),
        body={"metadata": {"annotations": marks}},
        content_type="application/merge-patch+json",
    )
    # A deployer that may switch Services but not write Deployments: the apiserver refuses the
    # clearing of #A's bookkeeping after the switch.
    rules = [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    ]
    for path, body in (
        ("v1/serviceaccounts", {"metadata": {"name": "deployer"}}),
        ("rbac.authorization.k8s.io/v1/roles", {"metadata": {"name": "deployer"}, "rules": rules}),
        (
            "rbac.authorization.k8s.io/v1/rolebindings",
            {
                "metadata": {"name": "deployer"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "deployer",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": "deployer", "namespace": namespace}
                ],
            },
        ),
    ):
        api_version, plural = path.rsplit("/", 1)
        await request_json(
            kube_api, "POST", resource_path(api_version, plural, namespace=namespace), body=body
        )
    deployer = dataclasses.replace(
        cli,
        kubeconfig=service_account_kubeconfig(
            cluster_full, tmp_path / "deployer.kubeconfig", namespace=namespace, name="deployer"
        ),
    )

    run = await deployer("rollback", "--app", APP)
    assert run.code == 0, str(run)
    assert f"warning: {name_a}: its retired bookkeeping not removed (" in run.out, str(run)
    assert "forbidden" in run.out.lower(), str(run)
    assert f"Service {APP} now selects #{A} again (was #{B})" in run.out, str(run)
    assert selector(await service(kube_api, namespace)) == {"app": APP, "color": A}
    assert (await annotations_of(kube_api, namespace, name_a))[RETIRED_AT] == marks[RETIRED_AT]


async def test_rollback_during_a_canary_narrows_to_the_old_color(
    cli: Cli, namespace: str, kube_api: ApiClient
) -> None:
    await cli.deployed(A, replicas=2)
    run = await cli.deployed(B, "--canary", "--replicas", "1", replicas=2)
    assert "canary" in run.out
    assert await replicas(kube_api, namespace, f"{APP}-{B}") == 1
    svc = await service(kube_api, namespace)
    assert selector(svc) == {"app": APP}
    marks = metadata_annotations(svc)
    assert marks[CANARY_COLOR] == B and marks[PREVIOUS_COLOR] == A
    # A deploy during a canary is refused: promote or roll back first.
    refused = await cli.deploy(C)
    assert refused.code == 1 and "a canary of #bbbbbb is in progress" in refused.err

    run = await cli("rollback", "--app", APP)
    assert run.code == 0, str(run)
    svc = await service(kube_api, namespace)
    assert selector(svc) == {"app": APP, "color": A}
    assert CANARY_COLOR not in metadata_annotations(svc)
    assert metadata_annotations(svc)[PREVIOUS_COLOR] == B

    # No rainbowd ran to see #B live: the rollback stamps it so, and the planner takes it for
    # retired (its connections unknown here, the policy's Prometheus being down), not for a
    # newer color still pending, which would be kept forever.
    assert LIVE_AT in await annotations_of(kube_api, namespace, f"{APP}-{B}")
    colors = await planned_colors(cli)
    assert {c: doc["state"] for c, doc in colors.items()} == {
        A: "live",
        B: "unknown-connections",
    }, colors


async def planned_colors(cli: Cli) -> dict[str, dict[str, Any]]:
    """`rainbowd plan` of the test's namespace, one read-only cycle against the cluster, with a
    policy whose Prometheus is down (connections unknown): each color's document."""
    policy = cli.workdir / "plan-policy.yaml"
    policy.write_text(policy_text("http://127.0.0.1:9", cli.namespace))
    plan = await asyncio.to_thread(
        subprocess.run,
        [
            *(sys.executable, "-m", "rainbowd", "plan", f"--kubeconfig={cli.cluster.kubeconfig}"),
            *(f"--namespaces={cli.namespace}", f"--policy-file={policy}", "-o", "json"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=CLI_DEADLINE,
    )
    assert plan.returncode == 0, plan.stdout + plan.stderr
    (app,) = json.loads(plan.stdout)["apps"]
    return {doc["color"]: doc for doc in app["colors"]}


async def test_a_malformed_hold_holds(cli: Cli, namespace: str, kube_api: ApiClient) -> None:
    await cli.deployed(A)
    await cli.deployed(B)
    await request_json(
        kube_api,
        "PATCH",
        resource_path("apps/v1", "deployments", namespace=namespace, name=f"{APP}-{A}"),
        body={"metadata": {"annotations": {HOLD_UNTIL: "tomorrow", HOLD_REASON: "typo"}}},
        content_type="application/merge-patch+json",
    )
    held = (await planned_colors(cli))[A]
    assert held["state"] == "protected", held
    assert held["note"].startswith(
        f"held ({HOLD_UNTIL} 'tomorrow' is not an RFC 3339 time): typo"
    ), held
    # Released, it is an ordinary retired color again.
    run = await cli("release", A)
    assert run.code == 0, str(run)
    assert (await planned_colors(cli))[A]["state"] == "unknown-connections"


# --- with the daemon ----------------------------------------------------------------------------


async def _cycles(daemon: Any, count: int) -> None:
    """Until the daemon has finished `count` more cycles."""
    start = daemon.last_cycle.number if daemon.last_cycle is not None else 0

    async def passed() -> bool:
        report = daemon.last_cycle
        return report is not None and report.number >= start + count

    await eventually(passed, what=f"{count} more cycles of the daemon")


def _scaled_or_deleted(events: list[dict[str, Any]]) -> list[str]:
    return [
        f"{e['regarding']['name']}: {e['reason']}: {e.get('note')}"
        for e in events
        if str(e.get("reason", "")).startswith(("ScaledDown", "Deleted"))
    ]


async def _never_during(
    check: Callable[[], Awaitable[list[str]]], daemon: Any, cycles: int
) -> None:
    for _ in range(cycles):
        await _cycles(daemon, 1)
        found = await check()
        assert not found, found


async def test_rollback_to_a_scaled_down_color_with_the_daemon_running(
    cli: Cli,
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    witness: Witness,
    tmp_path: Path,
) -> None:
    await cli.deployed(A)
    fleet.start(A)
    await cli.deployed(B)
    fleet.start(B)
    for color in (A, B):
        await fleet.wait_scraped(color, 0)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace, keep_scaled_down=1))
    settings = daemon_settings(cluster_full, namespace, policy=PolicySource(file=str(policy)))
    name_a, name_b = f"{APP}-{A}", f"{APP}-{B}"
    async with running_daemon(settings) as daemon:

        async def a_scaled_down() -> bool:
            return await replicas(kube_api, namespace, name_a) == 0

        await eventually(a_scaled_down, what=f"{name_a} scaled to 0 by rainbowd")
        assert (await annotations_of(kube_api, namespace, name_a))[ORIGINAL_REPLICAS] == "1"

        run = await cli("rollback", "--app", APP)
        assert run.code == 0, str(run)
        assert f"scaling {name_a} from 0 back to 1 replicas" in run.out
        assert f"Service {APP} now selects #{A} again (was #{B})" in run.out

        svc = await service(kube_api, namespace)
        assert selector(svc) == {"app": APP, "color": A}
        assert metadata_annotations(svc)[PREVIOUS_COLOR] == B
        assert await replicas(kube_api, namespace, name_a) == 1
        bookkeeping = await annotations_of(kube_api, namespace, name_a)
        for key in (*RETIREMENT, HOLD_UNTIL, HOLD_REASON):
            assert key not in bookkeeping, bookkeeping

        async def a_stamped_live() -> bool:
            return LIVE_AT in await annotations_of(kube_api, namespace, name_a)

        await eventually(a_stamped_live, what=f"{name_a} stamped live by rainbowd")

        # The daemon retires the color rolled away from and burns it down by the policy...
        async def b_retired() -> bool:
            return RETIRED_AT in await annotations_of(kube_api, namespace, name_b)

        await eventually(b_retired, what=f"{name_b} stamped retired")

        async def b_scaled_down() -> bool:
            return await replicas(kube_api, namespace, name_b) == 0

        await eventually(b_scaled_down, what=f"{name_b} scaled to 0 by rainbowd")
        status = await fetch_json(daemon.http_url + "/status")  # type: ignore[operator]
        doc = color_doc(status, A)
        assert doc is not None and doc["state"] == "live", doc

    # ...and did nothing wrongful to the color rolled back to: its one scale-down is the one
    # from before the rollback, and it was never deleted.
    actions_on_a = _scaled_or_deleted(await our_events(kube_api, namespace, name=name_a))
    assert len(actions_on_a) == 1 and "ScaledDown" in actions_on_a[0], actions_on_a
    assert await replicas(kube_api, namespace, name_a) == 1

    # `rainbowd history` tells it: each color's live, retired and scaled-down times, and why.
    history = await cli("history", "--app", APP, "-o", "json")
    assert history.code == 0, str(history)
    rows = {row["color"]: row for row in json.loads(history.out)}
    assert list(rows) == [A, B], history.out
    assert rows[A]["state"] == "live" and rows[A]["live_at"], rows[A]
    # (its retirement and scale-down before the rollback are in its Events)
    assert rows[A]["retired_at"] and rows[A]["scaled_down_at"], rows[A]
    assert any(event.endswith(" RolledBack") for event in rows[A]["events"]), rows[A]
    assert rows[B]["state"] == "scaled-down", rows[B]
    assert rows[B]["live_at"] and rows[B]["retired_at"] and rows[B]["scaled_down_at"], rows[B]
    assert rows[B]["why"].startswith("ScaledDown: ") and "drained" in rows[B]["why"], rows[B]
    # The audit log's judge: no scale-down or delete of a live, pending or protected color.
    witness.assert_no_wrongful()


async def test_canary_both_live_then_promote_burns_the_old_one_down(
    cli: Cli,
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    witness: Witness,
    tmp_path: Path,
) -> None:
    await cli.deployed(A)
    fleet.start(A)
    await cli.deployed(B, "--canary")
    fleet.start(B)
    for color in (A, B):
        await fleet.wait_scraped(color, 0)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace, keep_scaled_down=0))
    settings = daemon_settings(cluster_full, namespace, policy=PolicySource(file=str(policy)))
    name_a = f"{APP}-{A}"
    async with running_daemon(settings) as daemon:
        assert daemon.http_url is not None
        url = daemon.http_url

        async def both_live() -> bool:
            status = await fetch_json(url + "/status")
            docs = [color_doc(status, color) for color in (A, B)]
            return all(d is not None and d["state"] == "live" for d in docs)

        await eventually(both_live, what="both colors live in rainbowd's plan")

        async def nothing_done() -> list[str]:
            return _scaled_or_deleted(await our_events(kube_api, namespace))

        # Well past minRetiredAge and drainHold: a retired color would have been scaled.
        await _never_during(nothing_done, daemon, cycles=6)
        for color in (A, B):
            assert await replicas(kube_api, namespace, f"{APP}-{color}") == 1

        run = await cli("promote", "--app", APP)
        assert run.code == 0, str(run)
        assert f"promoted: Service {APP} now selects #{B} only" in run.out
        svc = await service(kube_api, namespace)
        assert selector(svc) == {"app": APP, "color": B}
        assert CANARY_COLOR not in metadata_annotations(svc)

        async def a_deleted() -> bool:
            return await get_deployment(kube_api, namespace, name_a) is None

        await eventually(a_deleted, what=f"{name_a} burned down (scaled, then deleted)")
    # keepScaledDown 0: a drained color is deleted outright.
    reasons = [e["reason"] for e in await our_events(kube_api, namespace, name=name_a)]
    assert "MarkedRetired" in reasons and "Deleted" in reasons, reasons
    assert await replicas(kube_api, namespace, f"{APP}-{B}") == 1
    # The audit log's judge: no scale-down or delete of a live, pending or protected color.
    witness.assert_no_wrongful()


async def test_a_held_color_is_kept_past_max_retired_age_until_released(
    cli: Cli,
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    witness: Witness,
    tmp_path: Path,
) -> None:
    await cli.deployed(A)
    fleet.start(A)
    await cli.deployed(B)
    fleet.start(B)
    for color in (A, B):
        await fleet.wait_scraped(color, 0)
    run = await cli("hold", A, "--for", "1h", "--reason", "incident 42: keep for forensics")
    assert run.code == 0, str(run)
    assert f"{APP}-{A} held until " in run.out
    held = await annotations_of(kube_api, namespace, f"{APP}-{A}")
    assert held[HOLD_REASON] == "incident 42: keep for forensics"
    assert held[HOLD_UNTIL].endswith("Z") and "T" in held[HOLD_UNTIL]

    policy = tmp_path / "policy.yaml"
    text = policy_text(prometheus.url, namespace, keep_scaled_down=0)
    policy.write_text(text.replace("maxRetiredAge: null", "maxRetiredAge: 2s"))
    settings = daemon_settings(cluster_full, namespace, policy=PolicySource(file=str(policy)))
    name_a = f"{APP}-{A}"
    async with running_daemon(settings) as daemon:
        assert daemon.http_url is not None
        url = daemon.http_url

        async def retired_long() -> bool:
            doc = color_doc(await fetch_json(url + "/status"), A)
            return doc is not None and (doc.get("retiredFor") or 0) >= 4

        # Past maxRetiredAge (2s), drainHold and minRetiredAge, and drained: only the hold
        # keeps it.
        await eventually(retired_long, what=f"{name_a} retired for twice maxRetiredAge")

        async def actions_on_a() -> list[str]:
            return _scaled_or_deleted(await our_events(kube_api, namespace, name=name_a))

        await _never_during(actions_on_a, daemon, cycles=4)
        assert await replicas(kube_api, namespace, name_a) == 1

        # `rainbowd status` shows the hold on the color's row, with its reason.
        status = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "rainbowd", "status", "--url", url],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=CLI_DEADLINE,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        row = next((line for line in status.stdout.splitlines() if f" {A} " in line), "")
        assert f"held until {held[HOLD_UNTIL]} ({HOLD_UNTIL})" in row, status.stdout
        assert "incident 42: keep for forensics" in row, status.stdout

        run = await cli("release", A)
        assert run.code == 0, str(run)
        assert f"{name_a} released" in run.out
        # (rainbowd may act on it at once: gone is released too)
        after = await get_deployment(kube_api, namespace, name_a)
        assert after is None or HOLD_UNTIL not in metadata_annotations(after)

        async def a_deleted() -> bool:
            return await get_deployment(kube_api, namespace, name_a) is None

        await eventually(a_deleted, what=f"{name_a} burned down once released")
    reasons = [e["reason"] for e in await our_events(kube_api, namespace, name=name_a)]
    assert "Held" in reasons and "Released" in reasons and "Deleted" in reasons, reasons

    history = await cli("history", "--app", APP)
    assert history.code == 0, str(history)
    print(history.out)
    lines = history.out.splitlines()
    assert lines[0].split()[:3] == ["COLOR", "STATE", "REPLICAS"]
    assert [line.split()[0] for line in lines[1:]] == [A, B], history.out
    assert lines[1].split()[1] == "deleted" and lines[2].split()[1] == "live", history.out
    # LIVE-AT: #A went live with its deploy, before the daemon ever saw it.
    assert lines[1].split()[4] != "-", history.out
    # The audit log's judge: no scale-down or delete of a live, pending or protected color.
    witness.assert_no_wrongful()


OWNED = """
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: rainbow-deploys-__COLOR__
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: rainbow-deploys-__COLOR__}
  minReplicas: 2
  maxReplicas: 3
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: rainbow-deploys-__COLOR__
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: rainbow-deploys, color: __COLOR__}
"""


async def test_a_colors_hpa_and_pdb_from_the_template_go_with_its_deployment(
    cli: Cli, namespace: str, kube_api: ApiClient, tmp_path: Path
) -> None:
    """`deploy -f` creates the color's own HPA and PDB owned by its Deployment; the policy's
    delete (the executor's, as the daemon applies it) leaves the garbage collector of the real
    controller-manager to delete them with it."""
    template = tmp_path / "app.yaml"
    template.write_text((ROOT / "k8s" / "demo" / "app.yaml").read_text() + OWNED)
    for color in (A, B):
        done = await cli(
            "deploy", "--app", "rainbow-deploys", "-f", str(template), "--color", color
        )
        assert done.code == 0, str(done)
        name = f"rainbow-deploys-{color}"
        assert f"created HorizontalPodAutoscaler {name} (owned by {name})" in done.out
    old = await get_deployment(kube_api, namespace, f"rainbow-deploys-{A}")
    assert old is not None
    paths = {
        kind: resource_path(group_version, plural, namespace=namespace, name=f"rainbow-deploys-{A}")
        for kind, group_version, plural in (
            ("hpa", "autoscaling/v2", "horizontalpodautoscalers"),
            ("pdb", "policy/v1", "poddisruptionbudgets"),
        )
    }
    for path in paths.values():
        owners = (await request_json(kube_api, "GET", path))["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"]) for o in owners] == [("Deployment", old["metadata"]["uid"])]

    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    [deleted] = await executor.apply(plan_of(action_for(old, ActionKind.DELETE, Reason.DRAINED)))
    assert deleted.outcome is ActionOutcome.OK, deleted.error

    async def gone() -> bool:
        for path in paths.values():
            try:
                await request_json(kube_api, "GET", path)
            except NotFound:
                continue
            return False
        return True

    await eventually(gone, what="the garbage collector to delete the old color's HPA and PDB")
    # The live color's are untouched.
    live = resource_path(
        "autoscaling/v2",
        "horizontalpodautoscalers",
        namespace=namespace,
        name=f"rainbow-deploys-{B}",
    )
    assert (await request_json(kube_api, "GET", live))["spec"]["minReplicas"] == 2
