"""The serving stand-in's Prometheus endpoint (TF-Serving's --monitoring_config_file)."""

import re
import shutil
import time
import urllib.error
import urllib.request

import pytest
from test_serving import VOCAB, raw_post, write_contract_model

from serving import client as client_lib
from serving import server as server_lib
from serving.server import cli as server_cli
from serving.server.monitoring import (
    DEFAULT_PATH,
    LATENCY_BUCKETS_US,
    Metrics,
    MonitoringConfig,
    parse_monitoring_config,
)


@pytest.mark.parametrize("text, expected", [
    ('prometheus_config {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n',
     MonitoringConfig(True, "/monitoring/prometheus/metrics")),
    ('# a comment\nprometheus_config: { enable: true path: "/m" }', MonitoringConfig(True, "/m")),
    ("prometheus_config { enable: true }", MonitoringConfig(True, DEFAULT_PATH)),
    ("prometheus_config { enable: false }", MonitoringConfig(False, DEFAULT_PATH)),
    ("", MonitoringConfig(False, DEFAULT_PATH)),
])
def test_the_config_file_is_tf_servings_text_proto(text, expected):
    assert parse_monitoring_config(text) == expected


@pytest.mark.parametrize("text, problem", [
    ("prometheus_config { enable: yes }", "enable must be true or false"),
    ("prometheus_config { enable: true port: 1 }", "unknown field 'port'"),
    ('prometheus_config { path: "metrics" }', "must start with /"),
    ("prometheus { enable: true }", "one prometheus_config"),
    ("prometheus_config { enable true }", "expected 'enable: true'"),
    ("prometheus_config { enable: true } @", "cannot parse"),
])
def test_a_bad_config_names_the_problem(text, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_monitoring_config(text, "m.config")


def sample(text, series):
    """The value of one series (name and labels exactly as rendered) in a scrape."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_histogram_buckets_are_cumulative_and_count_every_request():
    metrics = Metrics()
    for seconds in (5e-6, 1e-3, 1e-3, 100.0):  # below the first bound, twice 1 ms, above all
        metrics.record("dmi", "predict", "GRPC", "OK", seconds)
    metrics.record("dmi", "predict", "REST", "INVALID_ARGUMENT", 1e-3)
    text = metrics.render({})
    labels = 'model_name="dmi",API="predict",entrypoint="GRPC"'
    first = f"{LATENCY_BUCKETS_US[0]:.6g}"
    assert sample(text, f':tensorflow:serving:request_latency_bucket{{{labels},le="{first}"}}') == 1
    assert sample(text, f':tensorflow:serving:request_latency_bucket{{{labels},le="+Inf"}}') == 4
    assert sample(text, f":tensorflow:serving:request_latency_count{{{labels}}}") == 4
    assert sample(text, f":tensorflow:serving:request_latency_sum{{{labels}}}") == \
        pytest.approx(5 + 1000 + 1000 + 1e8)
    below_1ms = max(b for b in LATENCY_BUCKETS_US if b < 1000)
    assert sample(text, f':tensorflow:serving:request_latency_bucket{{{labels},'
                        f'le="{below_1ms:.6g}"}}') == 1
    assert sample(text, ':tensorflow:serving:request_count{model_name="dmi",status="OK"}') == 4
    assert sample(text, ':tensorflow:serving:request_count{model_name="dmi",'
                        'status="INVALID_ARGUMENT"}') == 1


def scrape(port, path=DEFAULT_PATH):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return answer.read().decode("utf-8")


@pytest.mark.slow
def test_the_endpoint_counts_requests_and_shows_the_served_version(tmp_path):
    base = tmp_path / "dmi"
    write_contract_model(str(base / "1"), VOCAB, seed=1)
    srv = server_lib.ModelServer({"dmi": str(base)}, poll_seconds=0.1,
                                 monitoring=MonitoringConfig(True, DEFAULT_PATH))
    srv.start(port=0, rest_port=-1, log_interval=0)
    try:
        grpc_client = client_lib.TopKClient(f"127.0.0.1:{srv.port}", "dmi", timeout=30)
        rest = client_lib.RestTopKClient(f"127.0.0.1:{srv.rest_port}", "dmi", timeout=30)
        with grpc_client:
            grpc_client.topk([["item001", "item002"]] * 3, k=4)
            grpc_client.topk([["item003"]], k=4)
        rest.topk([["item001"]], k=4)
        status, _ = raw_post(srv.rest_port, '{"instances": [["a"]]}', "/v1/models/nope:predict")
        assert status == 404
        text = scrape(srv.rest_port)
        assert sample(text, ':tensorflow:serving:request_count{model_name="dmi",status="OK"}') == 3
        assert sample(text, ':tensorflow:serving:request_count{model_name="nope",'
                            'status="NOT_FOUND"}') >= 1
        for entrypoint, n in (("GRPC", 2), ("REST", 1)):
            assert sample(text, ':tensorflow:serving:request_latency_count{model_name="dmi",'
                                f'API="predict",entrypoint="{entrypoint}"}}') == n
        assert sample(text, ':dmi_tf:serving:model_version{model_name="dmi",version="1",'
                            'state="AVAILABLE"}') == 1
        assert sample(text, ':tensorflow:cc:saved_model:load_attempt_count{model_path="'
                            f'{base / "1"}",status="success"}}') == 1

        shutil.copytree(base / "1", base / "2")  # a new version: the scrape says when it serves
        deadline = time.monotonic() + 60
        while 'version="2",state="AVAILABLE"' not in text and time.monotonic() < deadline:
            time.sleep(0.2)
            text = scrape(srv.rest_port)
        assert sample(text, ':dmi_tf:serving:model_version{model_name="dmi",version="2",'
                            'state="AVAILABLE"}') == 1
        assert sample(text, ':dmi_tf:serving:model_version{model_name="dmi",version="1",'
                            'state="END"}') == 1
        with pytest.raises(urllib.error.HTTPError):  # only the configured path is the metrics'
            scrape(srv.rest_port, "/monitoring/other")
    finally:
        srv.stop(grace=5)


def test_without_monitoring_there_is_no_endpoint_and_it_needs_the_rest_port(tmp_path, capsys):
    srv = server_lib.ModelServer({"dmi": str(tmp_path)}, poll_seconds=0,
                                 monitoring=MonitoringConfig(True, DEFAULT_PATH))
    with pytest.raises(ValueError, match="--rest_api_port"):
        srv.start(port=0, rest_port=0, log_interval=0)
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enable: true }\n")
    assert server_cli.main(["--model_base_path", str(tmp_path), "--port", "0",
                            "--monitoring_config_file", str(config)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "--rest_api_port" in error and "\n" not in error
    config.write_text("prometheus_config { enabled: true }\n")
    assert server_cli.main(["--model_base_path", str(tmp_path), "--port", "0",
                            "--rest_api_port", "-1", "--monitoring_config_file",
                            str(config)]) == 2
    assert "unknown field 'enabled'" in capsys.readouterr().err
