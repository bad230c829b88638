"""config.properties to trustserve.yaml and manifests: every key translated or reported with
why, no value in the report, bad values refused with the key named; and the command's
refusals (no trust flag, an existing trustserve.yaml, load_models naming a missing archive)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.models.torch_models import LABELS, classifier, torchscript_bytes, write_mar
from trustserve.cli import main
from trustserve.errors import ConfigError
from trustserve.models.torchserve_config import read_properties, translate
from trustserve.stack import configfile
from trustserve.stack.torchserve import report_lines

# TorchServe's documented keys, as an operator's file has them: a continuation line, ':' as
# the separator, a comment, an escaped character
EVERYTHING = r"""# TorchServe
inference_address=https://0.0.0.0:8443
management_address : http://127.0.0.1:8444
metrics_address=http://127.0.0.1:8445
grpc_inference_port=7070
grpc_management_port=7071
enable_grpc_ssl=true
number_of_netty_threads=4
netty_client_threads=4
default_response_timeout=90
unregister_model_timeout=60
default_workers_per_model=2
job_queue_size=200
async_logging=true
number_of_gpu=0
cors_allowed_origin=*
cors_allowed_methods=GET, POST
cors_allowed_headers=X-Custom
keystore=keystore.p12
keystore_pass={secret}
keystore_type=PKCS12
certificate_file=/etc/ts/cert.pem
private_key_file=/etc/ts/key.pem
max_request_size=6553500
max_response_size=6553500
limit_max_image_pixels=true
allowed_urls=https://s3.amazonaws.com/.*
install_py_dep_per_model=false
enable_envvars_config=false
enable_metrics_api=true
metrics_mode=prometheus
disable_token_authorization=true
enable_model_api=true
vmargs=-Xmx4g
model_store=/opt/ts/store
workflow_store=/opt/ts/wf
load_models=tinycls.mar,other=other.mar
models={\
  "tinycls": {\
    "1.0": {"marName": "tinycls.mar", "minWorkers": 1, "maxWorkers": 4, "batchSize": 8,\
            "maxBatchDelay": 50, "responseTimeout": 120, "defaultVersion": true,\
            "deviceType": "cpu"}\
  }\
}
some_future_key=1
odd\ key=x
"""


def everything() -> tuple[str, str]:
    secret = secrets.token_hex(16)
    return EVERYTHING.replace("{secret}", secret), secret


def props(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.properties"
    path.write_text(text)
    return read_properties(path)


def test_every_key_is_translated_or_ignored_with_why(tmp_path: Path) -> None:
    text, _ = everything()
    found = props(tmp_path, text)
    assert "odd key" in found  # a Java escape, read as Java does
    t = translate(found)
    seen = {e.key for e in t.entries}
    top = set(found) - {"models"}
    per_model = {f"models.tinycls.1.0.{k}" for k in json.loads(found["models"])["tinycls"]["1.0"]}
    assert seen == top | per_model
    assert all(e.why for e in t.ignored), [e.key for e in t.ignored if not e.why]
    assert {e.key for e in t.ignored} >= {
        "grpc_management_port", "enable_grpc_ssl", "number_of_netty_threads", "async_logging",
        "keystore", "keystore_pass", "vmargs", "allowed_urls", "some_future_key", "odd key",
        "models.tinycls.1.0.maxWorkers",
        "models.tinycls.1.0.responseTimeout", "models.tinycls.1.0.deviceType",
    }  # fmt: skip
    assert t.settings == {
        "listen.host": "0.0.0.0",
        "listen.port": 8443,
        "listen.management_host": "127.0.0.1",
        "listen.management_port": 8444,
        "listen.metrics_port": 8445,
        "listen.grpc_port": 7070,
        "limits.timeout_s": 90.0,
        "worker.per_model": 2,
        "limits.max_queue": 200,
        "tls.cert": "/etc/ts/cert.pem",
        "tls.key": "/etc/ts/key.pem",
        "limits.max_body_mb": 7,  # 6553500 bytes, rounded up to whole MiB
    }
    assert t.load == ("tinycls.mar", "other.mar")
    assert t.model_store == "/opt/ts/store"
    s = t.for_model("tinycls.mar", "tinycls", "1.0")
    assert (s.batch_size, s.max_batch_delay_ms, s.default_version) == (8, 50.0, True)
    assert s.workers == 1
    other = t.for_model("other.mar", "other", "1")
    assert (other.batch_size, other.max_batch_delay_ms) == (None, None)


def test_every_setting_written_is_one_trustserve_yaml_knows(tmp_path: Path) -> None:
    text, _ = everything()
    t = translate(props(tmp_path, text))
    for key, value in t.settings.items():
        assert key in configfile.BY_NAME, key
        assert str(configfile.BY_NAME[key].parse(value)) == str(value)
    translated = {target for e in t.entries for target in e.to}
    assert set(t.settings) <= translated  # each setting is reported with the key it came from


def test_the_report_holds_no_value_from_the_file(tmp_path: Path) -> None:
    text, secret = everything()
    t = translate(props(tmp_path, text))
    lines = "\n".join(f"{e.key} {e.to} {e.why}" for e in t.entries)
    assert secret not in lines
    assert "keystore_pass" in lines


def test_top_level_batching_is_the_default_for_every_model(tmp_path: Path) -> None:
    t = translate(props(tmp_path, "batch_size=4\nmax_batch_delay=30\nmodels={\"a\": {\"1\": "
                                  "{\"batchSize\": 2}}}\n"))  # fmt: skip
    a, b = t.for_model("a.mar", "a", "1"), t.for_model("b.mar", "b", "1")
    assert (a.batch_size, a.max_batch_delay_ms) == (2, 30.0)
    assert (b.batch_size, b.max_batch_delay_ms) == (4, 30.0)


def test_workers(tmp_path: Path) -> None:
    t = translate(props(tmp_path, "min_workers=3\nmax_workers=5\n"))
    assert t.settings == {"worker.per_model": 3}
    assert [e.key for e in t.ignored] == ["max_workers"]
    t = translate(props(tmp_path, "min_workers=3\ndefault_workers_per_model=2\n"))
    assert t.settings == {"worker.per_model": 2}
    assert [e.key for e in t.ignored] == ["min_workers"]
    t = translate(props(tmp_path, "default_workers_per_model=0\n"))  # TorchServe's automatic
    assert t.settings == {} and [e.key for e in t.ignored] == ["default_workers_per_model"]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("batch_size=0", "batch_size: expected an integer from 1 to 1024, got '0'"),
        ("batch_size=many", "batch_size: expected an integer"),
        ("max_batch_delay=-5", "max_batch_delay: expected an integer from 0 to 10000"),
        ("default_workers_per_model=lots", "default_workers_per_model: expected an integer"),
        ("inference_address=localhost", "inference_address: expected http(s)://HOST:PORT"),
        ("management_address=http://h:99999", "management_address: expected http(s)://HOST"),
        ("grpc_inference_port=0", "grpc_inference_port: expected an integer from 1 to 65535"),
        ("models={not json", "models: not JSON"),
        ("models=[1]", "models: expected {model: {version: {...}}}"),
        ('models={"a": {"1": {"batchSize": "x"}}}', "models.a.1.batchSize: expected an integer"),
        ('models={"a": {"1": {"batchSize": true}}}', "models.a.1.batchSize: expected an integer"),
        ('models={"a": {"1": {"marName": "../a.mar"}}}', "models.a.1.marName: expected an "),
        ('models={"a": {"1": {"defaultVersion": "yes"}}}', "defaultVersion: expected true or"),
        ("load_models=https://example.org/a.mar", "is not an archive in the store"),
        ("load_models=", "load_models: expected 'all' or a list"),
        ("certificate_file=", "certificate_file: expected a file path"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, line: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        translate(props(tmp_path, line + "\n"))
    assert says in str(err.value)


def test_worker_counts_by_model_in_trustserve_yaml(tmp_path: Path) -> None:
    from trustserve.stack.config import Settings

    path = tmp_path / "trustserve.yaml"
    path.write_text("worker: {per_model: 3, models: {a: 1, 'b:2': 0}}\n")
    found = configfile.read_file(path)
    assert found["worker.models"] == ("a=1", "b:2=0")
    s = Settings(workers_per_model=3, workers_by_model=found["worker.models"])
    assert (s.workers_for("a", "7"), s.workers_for("b", "2"), s.workers_for("b", "1")) == (1, 0, 3)
    assert configfile.BY_NAME["worker.models"].parse("a=2, c:1=4") == ("a=2", "c:1=4")
    for bad in ("a=65", "a=x", "=2", "a"):
        with pytest.raises(ValueError, match="expected a worker count from 0 to 64"):
            configfile.BY_NAME["worker.models"].parse(bad)


def test_deeply_nested_models_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="models: nested too deeply"):
        translate(props(tmp_path, "models=" + "[" * 100000 + "]" * 100000 + "\n"))


def test_unix_socket_addresses_are_reported(tmp_path: Path) -> None:
    t = translate(props(tmp_path, "management_address=unix:/tmp/management.sock\n"))
    assert t.settings == {}
    assert [e.key for e in t.ignored] == ["management_address"]


# the command, up to the conversion (which test_import_torchserve runs against TorchServe)


def store_with(tmp_path: Path, *names: str) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    for i, name in enumerate(names):
        write_mar(store / f"{name}.mar", torchscript_bytes(classifier(i)), name=name,
                  labels=dict(enumerate(LABELS)))  # fmt: skip
    return store


def test_without_the_trust_flag_nothing_is_converted_or_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = store_with(tmp_path, "a", "b")
    out = tmp_path / "out"
    assert main(["import-torchserve", str(store), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a.mar holds a torchscript model" in err and "--trust-model-code" in err
    assert not out.exists()


def test_load_models_naming_a_missing_archive_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = store_with(tmp_path, "a")
    config = tmp_path / "config.properties"
    config.write_text("load_models=a.mar,b.mar\n")
    argv = ["import-torchserve", str(store), "--config", str(config), "--out",
            str(tmp_path / "out"), "--trust-model-code"]  # fmt: skip
    assert main(argv) == 2
    assert "load_models names b.mar, not in" in capsys.readouterr().err


def test_two_archives_of_one_model_version_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = store_with(tmp_path, "a")
    (store / "copy.mar").write_bytes((store / "a.mar").read_bytes())
    assert main(["import-torchserve", str(store), "--out", str(tmp_path / "out")]) == 2
    assert "a.mar and copy.mar both hold a version 1.0" in capsys.readouterr().err


def test_an_existing_trustserve_yaml_is_kept_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = store_with(tmp_path, "a")
    out = tmp_path / "out"
    out.mkdir()
    (out / "trustserve.yaml").write_text("dev: true\n")
    assert main(["import-torchserve", str(store), "--out", str(out), "--trust-model-code"]) == 2
    assert "trustserve.yaml exists: give --force" in capsys.readouterr().err
    assert (out / "trustserve.yaml").read_text() == "dev: true\n"


def test_the_printed_report(tmp_path: Path) -> None:
    from trustserve.stack.torchserve import Report

    text, secret = everything()
    t = translate(props(tmp_path, text))
    report = Report(tmp_path / "trustserve.yaml", settings=t.settings, entries=t.entries)
    lines = report_lines(report)
    ignored = lines.index(f"ignored ({len(t.ignored)}):")
    assert any(line.startswith("  keystore_pass: TLS takes PEM files") for line in lines[ignored:])
    assert "  default_workers_per_model -> worker.per_model" in lines
    assert secret not in "\n".join(lines)


def test_the_migration_guide_has_every_key_and_reason() -> None:
    from trustserve.models import torchserve_config, torchserve_keys

    guide = (Path(__file__).parents[2] / "docs" / "migrating-from-torchserve.md").read_text()
    keys = [*torchserve_config._HANDLERS, *torchserve_keys.IGNORED, *torchserve_keys.MODEL_IGNORED,
            "marName", "batchSize", "maxBatchDelay", "defaultVersion", "minWorkers"]  # fmt: skip
    rows = [line for line in guide.splitlines() if line.startswith("| `")]
    missing = [k for k in keys if not any(f"`{k}`" in row.split(" | ")[0] for row in rows)]
    assert missing == []
    for key, why in torchserve_keys.IGNORED.items():  # the reason, as the report gives it
        row = next(r for r in rows if f"`{key}`" in r.split(" | ")[0])
        assert " ".join(why.split()[:3]) in row.replace("`", ""), key
