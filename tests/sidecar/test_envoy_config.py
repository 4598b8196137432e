"""The sidecar's rendered configuration, descriptor set and process runner.

The behaviour through Envoy is in test_envoy.py; this checks what operators read and run:
the committed example is what the renderer makes and Envoy accepts it, the descriptor set
resolves error details, and Envoy failures come back as clear errors.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import psutil
import pytest
from google.protobuf import descriptor_pb2

from datamorph_gateway.config import Settings, load_settings
from datamorph_gateway.errors import ConfigError
from datamorph_gateway.sidecar import (
    EnvoyError,
    EnvoyProcess,
    SidecarOptions,
    envoy_binary,
    options_from_settings,
    write_config,
)
from datamorph_gateway.sidecar.__main__ import main as sidecar_main
from datamorph_gateway.sidecar.descriptor import HttpRoute, http_routes, transcoder_descriptor
from datamorph_gateway.sidecar.openapi import openapi_json
from datamorph_gateway.sidecar.process import validate
from datamorph_gateway.sidecar.render import EXAMPLE_OPTIONS, example_config, render
from datamorph_gateway.sidecar.yamltext import to_yaml

from ..fixtures.envoy import DESCRIPTOR_SET, REPO

EXAMPLE = REPO / "envoy" / "envoy.yaml"


def test_the_committed_example_is_what_the_renderer_makes() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == example_config(DESCRIPTOR_SET), (
        "envoy/envoy.yaml is stale: python -m datamorph_gateway.sidecar --example "
        "> envoy/envoy.yaml"
    )


def test_envoy_accepts_the_example(tmp_path: Path) -> None:
    descriptor = tmp_path / "transcoder.binpb"
    descriptor.write_bytes(transcoder_descriptor(DESCRIPTOR_SET))
    text = EXAMPLE.read_text(encoding="utf-8")
    assert EXAMPLE_OPTIONS.descriptor_path in text
    document = tmp_path / "openapi.json"
    document.write_bytes(openapi_json(DESCRIPTOR_SET))
    assert "/etc/envoy/openapi.json" in text
    config = tmp_path / "envoy.yaml"
    text = text.replace(EXAMPLE_OPTIONS.descriptor_path, str(descriptor))
    config.write_text(text.replace("/etc/envoy/openapi.json", str(document)))
    validate(config)


def test_the_yaml_reads_back_as_the_rendered_config() -> None:
    yaml = pytest.importorskip("yaml")
    config = render(SidecarOptions(), http_routes(DESCRIPTOR_SET))
    assert yaml.safe_load(to_yaml(config)) == config
    odd = {"a": ["yes", "1", "", "x: y", "#", "ends\n", "two\nlines", " lead\nx"], "b": {}, "c": []}
    assert yaml.safe_load(to_yaml(odd)) == odd


def test_the_transcoder_descriptor_resolves_error_details() -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(transcoder_descriptor(DESCRIPTOR_SET))
    names = [f.name for f in files.file]
    for needed in (
        "datamorph/gateway/v1/gateway.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
        "google/protobuf/any.proto",
    ):
        assert needed in names
    assert len(names) == len(set(names))
    # Every file comes after the files it imports, as protoc orders them.
    for index, file in enumerate(files.file):
        assert set(file.dependency) <= set(names[:index])
    assert not any(f.HasField("source_code_info") for f in files.file)


def test_the_rest_routes_are_the_protos_http_rules() -> None:
    routes = [(r.method, r.template, r.rpc) for r in http_routes(DESCRIPTOR_SET)]
    assert routes == [
        ("POST", "/start", "StartWorkflow"),
        ("POST", "/get/schemas", "GetSchemas"),
        ("POST", "/get/data", "GetData"),
        ("POST", "/execute/query", "ExecuteQuery"),
        ("POST", "/stream/query", "StreamQuery"),
        ("GET", "/get/logs/{run_id}", "GetLogs"),
        ("GET", "/watch/logs/{run_id}", "WatchLogs"),
        ("GET", "/health", "Health"),
    ]


@pytest.mark.parametrize(
    ("template", "path", "matches"),
    [
        ("/get/logs/{run_id}", "/get/logs/20240101_000000_deadbeef", True),
        ("/get/logs/{run_id}", "/get/logs/abc?x=1", True),
        ("/get/logs/{run_id}", "/get/logs/", False),
        ("/get/logs/{run_id}", "/get/logs/a/b", False),
        ("/health", "/health", True),
        ("/health", "/healthz", False),
        ("/v1/{name=shelves/*}/books", "/v1/shelves/7/books", True),
        ("/v1/{name=**}", "/v1/a/b/c", True),
    ],
)
def test_route_templates_become_path_regexes(template: str, path: str, matches: bool) -> None:
    import re

    assert bool(re.match(HttpRoute("GET", template, "X").path_regex, path)) is matches


def test_start_workflow_outlasts_the_orchestrator() -> None:
    config = render(SidecarOptions(), http_routes(DESCRIPTOR_SET))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    [start] = [r for r in routes if r["match"].get("path", "").endswith("/StartWorkflow")]
    assert (
        float(start["route"]["timeout"].rstrip("s"))
        > Settings().workflows.orchestrator_read_timeout_s
    )
    assert start["route"]["idle_timeout"] == start["route"]["timeout"]


# -- failover: retries, health checks, outlier detection, circuit breakers -----------------

SERVICE_PATH = "/datamorph.gateway.v1.DataMorphGateway/"
# Never reached a gateway: safe to send again whatever the RPC does.
UNSENT = {"connect-failure", "refused-stream", "reset-before-request"}
READ = UNSENT | {"reset", "unavailable", "cancelled"}


def _virtual_host(options: SidecarOptions) -> dict[str, Any]:
    config = render(options, http_routes(DESCRIPTOR_SET))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    host: dict[str, Any] = manager["typed_config"]["route_config"]["virtual_hosts"][0]
    return host


def _retries_by_route() -> dict[str, set[str]]:
    """What Envoy retries on each route: its own policy, else the virtual host's (Envoy
    does not merge the two); a route that never reaches a gateway has none."""
    host = _virtual_host(SidecarOptions())
    retries: dict[str, set[str]] = {}
    for route in host["routes"]:
        match = route["match"]
        name = match.get("path", match.get("prefix", "")).removeprefix(SERVICE_PATH)
        if "direct_response" in route:
            name = f"{route['direct_response']['status']} {name}"
            retries[name] = set()
            continue
        policy = route["route"].get("retry_policy", host["retry_policy"])
        retries[name] = set(policy["retry_on"].split(","))
    return retries


def test_only_reads_are_sent_again_once_they_may_have_reached_a_gateway() -> None:
    assert _retries_by_route() == {
        "415 /": set(),  # a POST that is not JSON: Envoy answers it itself
        "StartWorkflow": UNSENT,
        "WatchLogs": READ,
        "StreamQuery": READ,
        "/health": READ,  # REST /health: the Health RPC
        "GetSchemas": READ,
        "GetData": READ,
        "GetLogs": READ,
        "Health": READ,
        "ExecuteQuery": UNSENT,
        "/": UNSENT,  # grpc.health.v1, reflection, anything else
    }


def test_a_retry_goes_to_another_gateway_and_never_after_a_timeout_or_an_answer() -> None:
    host = _virtual_host(SidecarOptions())
    policies = [host["retry_policy"]] + [
        r["route"]["retry_policy"] for r in host["routes"] if "retry_policy" in r.get("route", {})
    ]
    assert len(policies) == 8
    for policy in policies:
        assert policy["num_retries"] == 2
        [predicate] = policy["retry_host_predicate"]
        assert predicate["name"] == "envoy.retry_host_predicates.previous_hosts"
        assert policy["host_selection_retry_max_attempts"] == 3
        # A per-try timeout would send a slow call again while the first still runs.
        assert "per_try_timeout" not in policy
        assert "per_try_idle_timeout" not in policy
    # Conditions that fire after a gateway answered or ran out of time: never.
    every = set().union(*_retries_by_route().values())
    assert every == READ
    for condition in ("5xx", "gateway-error", "retriable-status-codes", "deadline-exceeded"):
        assert condition not in every


def _cluster(**options: Any) -> dict[str, Any]:
    cluster: dict[str, Any] = render(SidecarOptions(**options), [])["static_resources"]["clusters"][
        0
    ]
    return cluster


@pytest.mark.parametrize(
    ("interval", "recheck"), [(5.0, "1s"), (0.5, "0.5s")], ids=["default", "short"]
)
def test_a_gateway_that_failed_or_never_had_traffic_is_checked_again_within_a_second(
    interval: float, recheck: str
) -> None:
    [check] = _cluster(health_check_interval_s=interval)["health_checks"]
    assert check["interval"] == f"{interval:g}s"
    # Envoy's defaults: the interval, and 60 s for a host before the first request.
    assert check["unhealthy_interval"] == recheck
    assert check["no_traffic_interval"] == recheck
    # A healthy gateway, traffic or not, at the interval DRAIN_S counts on.
    assert check["no_traffic_healthy_interval"] == f"{interval:g}s"
    assert (check["unhealthy_threshold"], check["healthy_threshold"]) == (2, 1)
    assert check["grpc_health_check"] == {"service_name": "datamorph.gateway.v1.DataMorphGateway"}


def test_outlier_detection_ejects_on_connection_failures_never_on_answers() -> None:
    detection = _cluster()["outlier_detection"]
    assert detection["split_external_local_origin_errors"] is True
    assert detection["consecutive_local_origin_failure"] == 2
    assert detection["enforcing_consecutive_local_origin_failure"] == 100
    enforced = {k for k, v in detection.items() if k.startswith("enforcing_") and v}
    assert enforced == {"enforcing_consecutive_local_origin_failure"}
    assert (detection["interval"], detection["base_ejection_time"]) == ("1s", "2s")
    assert detection["max_ejection_percent"] == 100


def test_health_changes_reach_the_load_balancer_at_once_and_panic_waits_for_none_healthy() -> None:
    lb = _cluster()["common_lb_config"]
    assert lb["update_merge_window"] == "0s"
    assert lb["healthy_panic_threshold"] == {"value": 1.0}


@pytest.mark.parametrize(
    ("options", "workers", "gateways"),
    [
        ({}, 32, 1),
        ({"upstreams": (("127.0.0.1", 1), ("127.0.0.1", 2))}, 32, 2),
        ({"upstreams": (("gateway.internal", 1),), "gateways": 5}, 32, 5),
        ({"gateway_max_workers": 8}, 8, 1),
    ],
    ids=["one", "two-upstreams", "dns-name-for-five", "eight-workers"],
)
def test_circuit_breakers_and_retry_budget_are_sized_from_the_gateways(
    options: dict[str, Any], workers: int, gateways: int
) -> None:
    [thresholds] = _cluster(**options)["circuit_breakers"]["thresholds"]
    assert thresholds == {
        "priority": "DEFAULT",
        "max_connections": gateways * workers,
        "max_pending_requests": 4 * gateways * workers,
        "max_requests": 4 * gateways * workers,
        # A budget replaces max_retries: Envoy ignores that breaker once one is set.
        "retry_budget": {"budget_percent": {"value": 20.0}, "min_retry_concurrency": workers},
        "track_remaining": True,
    }


def test_a_breakers_refusal_is_worded_for_rest_and_grpc_callers() -> None:
    config = render(SidecarOptions(gateway_max_workers=2), http_routes(DESCRIPTOR_SET))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    mappers = manager["typed_config"]["local_reply_config"]["mappers"]
    overflow = [m for m in mappers if "UO" in json.dumps(m["filter"])]
    assert len(overflow) == 2
    grpc_mapper, rest_mapper = overflow
    message = (
        "the gateways are at capacity: 8 calls are already in progress through this Envoy; "
        "try again shortly"
    )
    assert grpc_mapper["body"] == {"inline_string": message}
    assert rest_mapper["body_format_override"]["json_format"] == {
        "status": "error",
        "code": 14,
        "message": message,
        "details": [],
    }
    # gRPC callers' mapper comes before the one that leaves their other local replies alone.
    assert mappers.index(grpc_mapper) < mappers.index(rest_mapper) == 2


def test_an_upstream_name_is_resolved_by_dns_an_address_is_static() -> None:
    for host, kind in (
        ("gateway.internal", "STRICT_DNS"),
        ("10.0.0.5", "STATIC"),
        ("::1", "STATIC"),
    ):
        cluster = render(SidecarOptions(upstreams=((host, 1),)), [])["static_resources"][
            "clusters"
        ][0]
        assert cluster["type"] == kind


def test_several_upstreams_are_one_cluster_and_a_name_among_them_is_resolved() -> None:
    def cluster(*upstreams: tuple[str, int]) -> dict[str, Any]:
        options = SidecarOptions(upstreams=upstreams)
        made: dict[str, Any] = render(options, [])["static_resources"]["clusters"][0]
        return made

    both = cluster(("127.0.0.1", 50051), ("127.0.0.1", 50052))
    assert both["type"] == "STATIC"
    [group] = both["load_assignment"]["endpoints"]
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"] for e in group["lb_endpoints"]
    ]
    assert ports == [50051, 50052]
    assert cluster(("10.0.0.5", 1), ("gateway.internal", 1))["type"] == "STRICT_DNS"


@pytest.mark.parametrize(
    ("upstreams", "message"),
    [((), "at least one"), ((("gw", 1), ("gw", 1)), "twice"), ((("", 1),), "a host")],
)
def test_bad_upstreams_are_refused(upstreams: tuple[tuple[str, int], ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SidecarOptions(upstreams=upstreams)


@pytest.mark.parametrize(
    "change",
    [
        {"listen_port": 70000},
        {"admin_port": -1},
        {"max_request_bytes": 0},
        {"max_response_bytes": 2**32},
        {"route_timeout_s": 0},
        {"gateway_max_workers": 0},
        {"gateways": -1},
    ],
)
def test_bad_options_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SidecarOptions(**change)


def test_options_come_from_the_settings() -> None:
    settings = load_settings(
        {
            "REST_HOST": "0.0.0.0",
            "REST_PORT": "8443",
            "ENVOY_ADMIN_PORT": "0",
            "ENVOY_MAX_REQUEST_BYTES": "1024",
            "ENVOY_MAX_RESPONSE_BYTES": "2048",
            "ENVOY_ROUTE_TIMEOUT_S": "5",
            "ENVOY_START_TIMEOUT_S": "1000",
            "GRPC_MAX_WORKERS": "40",
        }
    )
    options = options_from_settings(settings, upstreams=[("gw", 1234)], access_log_path="")
    assert dataclasses.asdict(options) == {
        **dataclasses.asdict(SidecarOptions()),
        "listen_host": "0.0.0.0",
        "listen_port": 8443,
        "admin_port": 0,
        "upstreams": (("gw", 1234),),
        "max_request_bytes": 1024,
        "max_response_bytes": 2048,
        "route_timeout_s": 5.0,
        "start_timeout_s": 1000.0,
        "access_log_path": "",
        "gateway_max_workers": 40,
    }


def test_the_cli_writes_a_config_envoy_accepts(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    code = sidecar_main(
        [
            "--out-dir",
            str(out),
            "--descriptor-source",
            str(DESCRIPTOR_SET),
            "--listen",
            "0.0.0.0:8080",
            "--upstream",
            "gateway.internal:50051",
            "--upstream",
            "10.0.0.7:50052",
            "--gateways",
            "6",
            "--gateway-max-workers",
            "16",
        ]
    )
    assert code == 0
    assert (out / "transcoder.binpb").read_bytes() == transcoder_descriptor(DESCRIPTOR_SET)
    text = (out / "envoy.yaml").read_text()
    assert str((out / "transcoder.binpb").resolve()) in text
    assert "gateway.internal" in text
    assert "10.0.0.7" in text
    assert "max_requests: 384" in text  # 6 gateways × 16 workers × 4
    validate(out / "envoy.yaml")


def test_the_cli_prints_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert sidecar_main(["--example", "--descriptor-source", str(DESCRIPTOR_SET)]) == 0
    assert capsys.readouterr().out == EXAMPLE.read_text(encoding="utf-8")


def test_the_cli_names_a_missing_descriptor_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = sidecar_main(["--out-dir", str(tmp_path), "--descriptor-source", "/nonexistent.binpb"])
    assert code == 1
    assert "run `make proto`" in capsys.readouterr().err


def test_envoy_comes_from_the_wheel_unless_configured(tmp_path: Path) -> None:
    assert envoy_binary().name == "envoy"
    with pytest.raises(EnvoyError, match="not an executable"):
        envoy_binary(str(tmp_path / "missing"))


def test_a_config_envoy_refuses_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text("static_resources: {clusters: [{name: x, type: NOPE}]}\n")
    with pytest.raises(EnvoyError, match="NOPE"):
        validate(config)
    process = EnvoyProcess(config, log_path=tmp_path / "envoy.log")
    with pytest.raises(EnvoyError, match="exited with code"):
        process.start(timeout_s=20)
    assert not _envoys_running(config)


def _envoys_running(config: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if str(config) in (process.info["cmdline"] or []):
            found.append(process)
    return found


def test_a_taken_listener_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        options = SidecarOptions(
            listen_port=taken.getsockname()[1], admin_port=0, access_log_path=""
        )
        config = write_config(tmp_path, options, DESCRIPTOR_SET)
        process = EnvoyProcess(config, log_path=tmp_path / "envoy.log")
        with pytest.raises(EnvoyError, match=r"(?i)address already in use"):
            process.start(timeout_s=20)
    assert not _envoys_running(config)


def test_the_lua_filter_runs_on_the_rest_health_route_only() -> None:
    config = render(SidecarOptions(), http_routes(DESCRIPTOR_SET))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    typed = manager["typed_config"]
    [lua] = [f for f in typed["http_filters"] if f["name"] == "envoy.filters.http.lua"]
    assert lua["disabled"] is True
    routes = typed["route_config"]["virtual_hosts"][0]["routes"]
    enabled = [
        r["match"]
        for r in routes
        if "envoy.filters.http.lua" in r.get("typed_per_filter_config", {})
    ]
    assert enabled == [{"path": "/health"}]


def test_a_post_neither_json_nor_grpc_is_answered_415_by_envoy_itself() -> None:
    import re

    config = render(SidecarOptions(), http_routes(DESCRIPTOR_SET))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    first = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]
    assert first["direct_response"] == {"status": 415}
    # The transcoder must not turn the request into a gRPC call and re-route it.
    disabled = first["typed_per_filter_config"]
    assert disabled["envoy.filters.http.grpc_json_transcoder"]["disabled"] is True
    [content_type] = [h for h in first["match"]["headers"] if h["name"] == "content-type"]
    assert content_type["invert_match"] is True
    assert content_type["treat_missing_header_as_empty"] is True
    accepted = re.compile(content_type["string_match"]["safe_regex"]["regex"])
    for ok in (
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/grpc",
        "application/grpc+proto",
    ):
        assert accepted.match(ok), ok
    for bad in (
        "",
        "text/plain",
        "application/jsonp",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/grpc-web",
    ):
        assert not accepted.match(bad), bad


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"admin_host": "0.0.0.0"}, "admin_host must be a loopback address"),
        ({"admin_socket": "relative/admin.sock"}, "absolute path"),
        ({"admin_socket": "/" + "x" * 120}, "at most 107 bytes"),
        ({"cors_allowed_origins": ("*",)}, "scheme://host"),
        ({"cors_allowed_origins": ("https://app.example.com/",)}, "no path"),
    ],
)
def test_unsafe_admin_and_cors_options_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SidecarOptions(**change)  # type: ignore[arg-type]


def test_the_admin_api_is_a_unix_socket_in_data_dir_unless_a_port_is_set(tmp_path: Path) -> None:
    default = options_from_settings(
        load_settings({"DATA_DIR": str(tmp_path)}), upstreams=[("gw", 1)], access_log_path=""
    )
    assert default.admin_socket == str(tmp_path.resolve() / "envoy" / "admin.sock")
    admin = render(default, [])["admin"]["address"]
    assert admin == {"pipe": {"path": default.admin_socket, "mode": 0o600}}
    port = options_from_settings(
        load_settings({"ENVOY_ADMIN_PORT": "9901"}), upstreams=[("gw", 1)], access_log_path=""
    )
    assert port.admin_socket == ""
    assert render(port, [])["admin"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 9901}
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ENVOY_ADMIN_PORT": "-2"}, "ENVOY_ADMIN_PORT must be between 0 and 65535, or -1"),
        ({"ENVOY_ADMIN_HOST": "0.0.0.0"}, "ENVOY_ADMIN_HOST must be a loopback address"),
        ({"CORS_ALLOWED_ORIGINS": "https://a.example, *"}, "CORS_ALLOWED_ORIGINS must list"),
        ({"CORS_ALLOWED_ORIGINS": "a.example"}, "CORS_ALLOWED_ORIGINS must list"),
    ],
)
def test_unsafe_envoy_settings_are_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(settings)


def test_cors_origins_reach_envoy_only_when_set() -> None:
    assert Settings().sidecar.cors_origins() == ()
    config = render(SidecarOptions(), [])
    assert "envoy.filters.http.cors" not in json.dumps(config)
    settings = load_settings({"CORS_ALLOWED_ORIGINS": "https://a.example, http://localhost:3000"})
    options = options_from_settings(settings, upstreams=[("gw", 1)], access_log_path="")
    assert options.cors_allowed_origins == ("https://a.example", "http://localhost:3000")
    manager = render(options, [])["static_resources"]["listeners"][0]["filter_chains"][0]
    typed = manager["filters"][0]["typed_config"]
    assert typed["http_filters"][0]["name"] == "envoy.filters.http.cors"
    policy = typed["route_config"]["virtual_hosts"][0]["typed_per_filter_config"][
        "envoy.filters.http.cors"
    ]
    assert policy["allow_origin_string_match"] == [
        {"exact": "https://a.example"},
        {"exact": "http://localhost:3000"},
    ]
    assert policy["allow_credentials"] is False


def test_the_example_warns_that_it_listens_in_clear_and_hides_admin() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.startswith("# WARNING: Envoy's listener 0.0.0.0:8080 is reachable from")
    assert "no TLS" in text.split("\n#\n", 1)[0]
    assert "9901" not in text
    assert "path: /run/envoy/admin.sock" in text


def test_the_cli_listens_on_loopback_by_default_and_warns_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = ["--descriptor-source", str(DESCRIPTOR_SET)]
    assert sidecar_main(["--out-dir", str(tmp_path / "a"), *source]) == 0
    quiet = capsys.readouterr()
    assert "WARNING" not in quiet.err
    text = (tmp_path / "a" / "envoy.yaml").read_text()
    assert not text.startswith("#")
    assert "0.0.0.0" not in text
    assert "127.0.0.1" in text
    assert "path: /run/envoy/admin.sock" in text

    args = ["--out-dir", str(tmp_path / "b"), "--listen", "0.0.0.0:8080", *source]
    assert sidecar_main([*args, "--admin", "127.0.0.1:9902"]) == 0
    assert "WARNING: Envoy's listener 0.0.0.0:8080" in capsys.readouterr().err
    text = (tmp_path / "b" / "envoy.yaml").read_text()
    assert text.startswith("# WARNING: Envoy's listener 0.0.0.0:8080")
    assert "port_value: 9902" in text
