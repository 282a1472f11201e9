"""Settings: flags over RAINBOWD_* variables over defaults, and errors that name their source."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from rainbowd.settings import (
    Settings,
    SettingsError,
    add_arguments,
    parse_duration,
    parse_listen,
    settings_from_args,
)


def parse(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(argv), env or {})


def test_defaults_outside_a_cluster() -> None:
    s = parse(["--policy-file", "p.yaml"])
    assert s.policy.file == "p.yaml" and not s.policy.is_configmap
    assert s.interval == 30.0
    assert s.debounce == 1.0
    assert (s.listen_host, s.listen_port) == ("", 8080)
    assert s.leader_elect is False
    assert s.lease_name == "rainbowd"
    assert s.lease_namespace == "default"
    assert s.namespaces == ()
    assert s.shutdown_timeout == 10.0
    assert s.once is False and s.dry_run is False
    assert s.log_format == "json" and s.log_level == "info"
    assert s.identity  # hostname-pid
    assert s.identity.rsplit("-", 1)[1].isdigit()


def test_leader_election_defaults_on_in_a_cluster() -> None:
    s = parse(["--policy-file", "p.yaml"], {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert s.leader_elect is True
    s = parse(
        ["--policy-file", "p.yaml", "--no-leader-elect"], {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    )
    assert s.leader_elect is False


def test_every_flag() -> None:
    s = parse(
        [
            "--kubeconfig=kc",
            "--context=ctx",
            "--namespaces=a, b,c",
            "--selector=tier=chat",
            "--policy-configmap=ops/rainbowd-policy",
            "--interval=1m30s",
            "--debounce=250ms",
            "--listen=127.0.0.1:9000",
            "--leader-elect",
            "--lease-namespace=ops",
            "--lease-name=rb",
            "--lease-duration=6s",
            "--renew-deadline=4s",
            "--retry-period=1s",
            "--identity=me",
            "--once",
            "--dry-run",
            "--log-format=text",
            "--log-level=DEBUG",
            "--shutdown-timeout=3s",
        ]
    )
    assert s.kubeconfig == "kc" and s.context == "ctx"
    assert s.namespaces == ("a", "b", "c")
    assert s.selector == "tier=chat"
    assert (s.policy.configmap_namespace, s.policy.configmap_name) == ("ops", "rainbowd-policy")
    assert s.interval == 90.0 and s.debounce == 0.25
    assert s.listen == "127.0.0.1:9000"
    assert s.leader_elect and s.lease_namespace == "ops" and s.lease_name == "rb"
    assert (s.lease_duration, s.renew_deadline, s.retry_period) == (6.0, 4.0, 1.0)
    assert s.identity == "me" and s.once and s.dry_run
    assert s.log_format == "text" and s.log_level == "debug"
    assert s.shutdown_timeout == 3.0


def test_environment_supplies_defaults_and_flags_win() -> None:
    env = {
        "RAINBOWD_POLICY_FILE": "env.yaml",
        "RAINBOWD_INTERVAL": "5s",
        "RAINBOWD_DRY_RUN": "true",
        "RAINBOWD_LEADER_ELECT": "yes",
        "RAINBOWD_NAMESPACES": "x,y",
    }
    s = parse([], env)
    assert s.policy.file == "env.yaml"
    assert s.interval == 5.0 and s.dry_run and s.leader_elect
    assert s.namespaces == ("x", "y")
    s = parse(["--interval=7s", "--no-leader-elect"], env)
    assert s.interval == 7.0 and not s.leader_elect


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["--policy-file=p", "--interval=soon"], {}, "--interval"),
        (["--policy-file=p", "--interval=0s"], {}, "--interval"),
        (["--policy-file=p", "--interval=-5s"], {}, "--interval"),
        (["--policy-file=p"], {"RAINBOWD_INTERVAL": "5 minutes"}, "RAINBOWD_INTERVAL"),
        (["--policy-file=p", "--listen=8080"], {}, "--listen"),
        (["--policy-file=p", "--listen=:http"], {}, "--listen"),
        (["--policy-file=p", "--listen=:70000"], {}, "--listen"),
        (["--policy-configmap=no-slash"], {}, "--policy-configmap"),
        (["--policy-configmap=ns/Bad_Name"], {}, "--policy-configmap"),
        (["--policy-file=p", "--policy-configmap=a/b"], {}, "--policy-configmap"),
        ([], {}, "--policy-configmap or --policy-file"),
        (["--policy-file=p", "--log-format=xml"], {}, "--log-format"),
        (["--policy-file=p", "--log-level=loud"], {}, "--log-level"),
        (["--policy-file=p"], {"RAINBOWD_DRY_RUN": "maybe"}, "RAINBOWD_DRY_RUN"),
        (["--policy-file=p", "--namespaces=Bad_NS"], {}, "--namespaces"),
        (["--policy-file=p", "--renew-deadline=20s"], {}, "--renew-deadline"),
        (["--policy-file=p", "--shutdown-timeout=x"], {}, "--shutdown-timeout"),
    ],
)
def test_bad_values_name_their_source(argv: list[str], env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse(argv, env)
    assert str(caught.value).startswith(names)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("1.5h", 5400.0), ("2h3m", 7380)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "30", "1d", "1m 30s", "abc", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_listen_forms() -> None:
    assert parse_listen(":8080") == ("", 8080)
    assert parse_listen("0.0.0.0:1") == ("0.0.0.0", 1)
    assert parse_listen("[::1]:9") == ("::1", 9)


def test_run_command_exits_2_naming_the_flag() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rainbowd", "run", "--policy-file=p", "--interval=often"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--interval" in proc.stderr
