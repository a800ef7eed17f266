"""Scenario schema and loader: valid files load, bad ones give one pinned, helpful paragraph."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from hwsim.exceptions import ScenarioError
from hwsim.scenario import Scenario, load_scenario, scenario_to_dict
from hwsim.scenario.schema import WORKLOAD_KINDS

DESIGN_EXAMPLE = """\
name: gpt3-175b-1024xa100
seed: 0
cluster:
  nodes: 128
  node:
    gpu: A100-SXM4-80GB
    gpus_per_node: 8
    cpu: EPYC-7742
    intra_node: nvlink3
    nic: ib-hdr-200
    nics_per_node: 8
    local_storage: nvme-gen4
  fabric: {topology: fat-tree, oversubscription: 1.0}
  storage: [{name: shared, tier: lustre}]
workload:
  kind: training
  model: {preset: gpt3-175b}
  seq_len: 2048
  precision: bf16
  global_batch: 1536
  parallelism: {tp: 8, pp: 16, dp: 8, cp: 1, ep: 1, micro_batch: 1, virtual_stages: 1,
                sequence_parallel: false, zero: 0, recompute: full}
  optimizer: adam
  train_tokens: 3.0e11
"""


def _catalog_ready() -> bool:
    try:
        import hwsim.catalog
    except ImportError:
        return False
    data = Path(hwsim.catalog.__file__).parent / "data"
    return all((data / f"{s}.yaml").is_file() for s in ("devices", "links", "storage"))


needs_catalog = pytest.mark.skipif(not _catalog_ready(), reason="hwsim.catalog not written yet")


@pytest.fixture
def example() -> dict:
    return yaml.safe_load(DESIGN_EXAMPLE)


def _load(data: dict) -> Scenario:
    return load_scenario(data, file="s.yaml", check_catalog=False)


def _error(data: dict) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        _load(data)
    message = str(info.value)
    assert "\n" not in message and "http" not in message and "pydantic" not in message
    return info.value


def test_design_example_validates(example: dict) -> None:
    s = _load(example)
    assert s.name == "gpt3-175b-1024xa100"
    assert s.cluster.form == "builder" and s.cluster.nodes == 128
    assert s.workload.kind == "training" and s.workload.parallelism.recompute == "full"
    # no steps given: a warm-up step and the measured one (no input pipeline)
    assert s.workload.steps == 2 and s.workload.train_tokens == 3.0e11
    assert s.compute_device == "gpu"
    assert scenario_to_dict(s)["workload"]["model"]["preset"] == "gpt3-175b"
    assert _load(scenario_to_dict(s)) == s  # the plain dump validates back to the same scenario


@needs_catalog
def test_design_example_file_validates_with_catalog(tmp_path: Path) -> None:
    path = tmp_path / "gpt3.yaml"
    path.write_text(DESIGN_EXAMPLE)
    assert load_scenario(path).name == "gpt3-175b-1024xa100"


@needs_catalog
def test_unknown_catalog_id_names_file_and_field(tmp_path: Path, example: dict) -> None:
    example["cluster"]["storage"][0]["tier"] = "lustre-9000"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(example))
    with pytest.raises(ScenarioError, match=r"bad\.yaml: cluster\.storage\[0\]\.tier: ") as info:
        load_scenario(path)
    assert info.value.field == "cluster.storage[0].tier"
    assert "lustre" in str(info.value)  # the valid ids are listed


@needs_catalog
def test_device_kind_checked(example: dict) -> None:
    example["cluster"]["node"]["gpu"] = "EPYC-7742"
    with pytest.raises(ScenarioError, match=r"cluster\.node\.gpu: 'EPYC-7742' is a cpu, not a gpu"):
        load_scenario(example, file="s.yaml")


def test_misspelled_key(example: dict) -> None:
    example["workload"]["parallelism"]["tpp"] = 2
    err = _error(example)
    assert str(err) == (
        "s.yaml: workload.parallelism.tpp: unknown key 'tpp'; valid keys: cp, dp, ep, micro_batch, "
        "offload, offload_params, pp, recompute, sequence_parallel, torus_order, tp, "
        "virtual_stages, zero; did you mean 'tp'?")
    assert err.file == "s.yaml" and err.field == "workload.parallelism.tpp"


def test_list_index_in_path(example: dict) -> None:
    example["cluster"]["storage"][0]["tierr"] = "lustre"
    err = _error(example)
    assert err.field == "cluster.storage[0].tierr"
    assert "did you mean 'tier'?" in str(err)


def test_unknown_workload_kind(example: dict) -> None:
    example["workload"]["kind"] = "trainign"
    err = _error(example)
    assert str(err) == ("s.yaml: workload: unknown kind 'trainign'; valid kinds: training, "
                        "transfer, inference, dataloader; did you mean 'training'?")


def test_literal_lists_allowed_values(example: dict) -> None:
    example["workload"]["precision"] = "bf61"
    with pytest.raises(ScenarioError, match=re.escape(
            "workload.precision: 'bf61' is not allowed; "
            "valid values: fp32, tf32, fp16, bf16, fp8")):
        _load(example)


def test_several_errors_in_one_paragraph(example: dict) -> None:
    example["seed"] = "x"
    example["workload"]["global_batch"] = 0
    example["workload"]["optimizer"] = "lion"
    example["workload"]["loss"] = "hinge"
    message = str(_error(example))
    assert message.count("; also ") == 2 and message.endswith("(and 1 more errors)")


def _graph(links: list[dict]) -> dict:
    return {"graph": {"nodes": [{"id": "gpu0", "kind": "gpu", "spec": "H100-SXM5-80GB"},
                                {"id": "gpu1", "kind": "gpu", "spec": "H100-SXM5-80GB"}],
                      "links": links}}


def test_explicit_graph_negative_bandwidth(example: dict) -> None:
    example["cluster"] = _graph([{"a": "gpu0", "b": "gpu1", "link": "nvlink4", "bw": "-5 GB/s"}])
    err = _error(example)
    assert err.field == "cluster.graph.links[0].bw"
    assert "greater than 0" in str(err) and "'-5 GB/s'" in str(err)


def test_explicit_graph_unknown_endpoint(example: dict) -> None:
    example["cluster"] = _graph([{"a": "gpu0", "b": "gpu2", "link": "nvlink4"}])
    err = _error(example)
    assert err.field == "cluster.graph.links[0].b"
    assert "unknown node id 'gpu2'" in str(err) and "gpu0, gpu1" in str(err)


def test_explicit_graph_valid_and_units(example: dict) -> None:
    example["cluster"] = _graph([{"a": "gpu0", "b": "gpu1", "link": "nvlink4", "bw": "450 GB/s",
                                  "latency": "1.5 us"}])
    s = _load(example)
    link = s.cluster.graph.links[0]
    assert link.bw == 450e9 and link.latency == pytest.approx(1.5e-6)
    assert s.cluster.form == "graph" and s.compute_device == "gpu"
    assert _load(scenario_to_dict(s)) == s


def test_malformed_yaml_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ncluster:\n  nodes: 2\n  node: {gpu: A100\n  fabric: x\n")
    with pytest.raises(ScenarioError, match=r"broken\.yaml: malformed YAML at line 5, column \d+"):
        load_scenario(path)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: x\nseed: 1\nseed: 2\n")
    with pytest.raises(ScenarioError, match=r"line 3, column 1: duplicate key 'seed'"):
        load_scenario(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.yaml: no such scenario file"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ScenarioError, match="not a file"):
        load_scenario(tmp_path)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ScenarioError, match="top level must be a mapping"):
        load_scenario(tmp_path / "list.yaml")


def test_mixed_cluster_forms(example: dict) -> None:
    example["cluster"].update(_graph([]))
    err = _error(example)
    assert err.field == "cluster"
    assert "mixes forms" in str(err) and "builder (nodes" in str(err) and "graph" in str(err)


def test_no_cluster_form(example: dict) -> None:
    example["cluster"] = {}
    assert "no form given" in str(_error(example))


def test_multi_site_cluster(example: dict) -> None:
    node = {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8}
    example["cluster"] = {"sites": [{"name": "dc1", "nodes": 2, "node": node},
                                    {"name": "dc2", "node": node,
                                     "storage": [{"name": "archive", "tier": "object-store"}]}],
                          "wan": [{"a": "dc1", "b": "dc2", "link": "wan-100g"}]}
    s = _load(example)
    assert s.cluster.form == "sites" and "dc2/archive" in s.storage_names()
    assert s.cluster.nodes is None and s.cluster.sites[1].nodes == 1
    assert _load(scenario_to_dict(s)) == s
    example["cluster"]["wan"][0]["b"] = "dc3"
    assert _error(example).field == "cluster.wan[0].b"


def test_quantities_with_units() -> None:
    data = {"name": "copy", "cluster": {"node": {"cpu": "EPYC-7742"}},
            "workload": {"kind": "transfer", "transfers": [
                {"name": "stage", "src": "n0.nvme", "dst": "shared", "size": "10 TB",
                 "request_bytes": "4 MiB", "start": "2 ms"}]}}
    t = _load(data).workload.transfers[0]
    assert t.size == 1e13 and t.request_bytes == 4 * 2**20 and t.start == pytest.approx(2e-3)
    data["workload"]["transfers"][0]["size"] = "10 TB/s"
    assert "not a unit of bytes" in str(_error(data))


def test_transfer_names_unique() -> None:
    t = {"name": "a", "src": "x", "dst": "y", "size": 1}
    data = {"name": "c", "cluster": {"node": {}},
            "workload": {"kind": "transfer", "transfers": [t, t]}}
    assert "repeated: a" in str(_error(data))


def test_model_forms(example: dict) -> None:
    wl = example["workload"]
    wl["model"] = {"preset": "mlp", "width": 512}
    m = _load(example).workload.model
    assert (m.features, m.width, m.depth, m.outputs, m.activation) == (1024, 512, 4, 1024, "relu")
    wl["model"] = {"preset": "logistic-regression"}
    assert _load(example).workload.model.features == 100
    wl["model"] = {"layers": 2, "hidden": 64, "heads": 4, "vocab": 100}
    m = _load(example).workload.model
    assert (m.activation, m.kv_heads, m.ffn_hidden) == ("gelu", 4, 256)
    wl["model"]["activation"] = "swish"
    assert _error(copy.deepcopy(example)).field == "workload.model.activation"
    wl["model"] = {"preset": "gpt3-175b", "width": 4}
    assert "width cannot be used with preset 'gpt3-175b'" in str(_error(example))
    wl["model"] = {"preset": "lama2-7b"}
    err = _error(copy.deepcopy(example))
    assert err.field == "workload.model.preset" and "did you mean 'llama2-7b'?" in str(err)
    wl["model"] = {"preset": "mlp", "hf_config": "c.json"}
    assert "exactly one of preset, hf_config" in str(_error(example))


def test_hf_config_resolved_against_scenario_folder(tmp_path: Path, example: dict) -> None:
    (tmp_path / "config.json").write_text("{}")
    example["workload"]["model"] = {"hf_config": "config.json"}
    path = tmp_path / "hf.yaml"
    path.write_text(yaml.safe_dump(example))
    s = load_scenario(path, check_catalog=False)
    assert Path(s.workload.model.hf_config) == tmp_path / "config.json"
    example["workload"]["model"] = {"hf_config": "missing.json"}
    path.write_text(yaml.safe_dump(example))
    with pytest.raises(ScenarioError, match=r"workload\.model\.hf_config: no such Hugging Face"):
        load_scenario(path, check_catalog=False)


def test_node_and_training_rules(example: dict) -> None:
    node = example["cluster"]["node"]
    node["tpu"] = "TPU-v4"
    assert "mutually exclusive" in str(_error(copy.deepcopy(example)))
    del node["tpu"]
    node["gpus_per_node"] = 0
    assert _error(copy.deepcopy(example)).field == "cluster.node.gpus_per_node"
    node["gpus_per_node"] = 8
    example["workload"]["steps"], example["workload"]["epochs"] = 5, 1.0
    assert "steps and epochs are mutually exclusive" in str(_error(copy.deepcopy(example)))
    del example["workload"]["epochs"]
    example["workload"]["data"] = {"storage": "shraed", "samples": 10, "sample_bytes": "4 kB"}
    err = _error(copy.deepcopy(example))
    assert err.field == "workload.data.storage" and "did you mean 'shared'?" in str(err)
    example["workload"]["data"]["storage"] = "shared"
    data = _load(example).workload.data
    assert data.sample_bytes == 4000 and data.request_bytes == 4000


def test_frozen(example: dict) -> None:
    s = _load(example)
    with pytest.raises(ValidationError, match="frozen"):
        s.name = "other"  # type: ignore[misc]


def test_docs_examples_validate() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "scenarios.md"
    blocks = re.findall(r"```yaml\n(.*?)```", doc.read_text(), flags=re.S)
    examples = [yaml.safe_load(b) for b in blocks if b.startswith("name:")]
    kinds = {load_scenario(e, file=str(doc), check_catalog=_catalog_ready()).workload.kind
             for e in examples}
    assert kinds == set(WORKLOAD_KINDS)  # one complete example per workload kind


def test_steps_default_to_what_a_step_time_question_needs(example: dict) -> None:
    """Without steps or epochs: a warm-up step and the measured one; with an input pipeline,
    enough rounds for its prefetch queues to reach steady state. Given steps stay as given."""
    from hwsim.scenario.schema import DEFAULT_STEPS, DEFAULT_STEPS_WITH_DATA

    assert (DEFAULT_STEPS, DEFAULT_STEPS_WITH_DATA) == (2, 10)
    assert _load(copy.deepcopy(example)).workload.steps == DEFAULT_STEPS
    with_data = copy.deepcopy(example)
    with_data["workload"]["data"] = {"storage": "shared", "samples": 10, "sample_bytes": "4 kB"}
    assert _load(with_data).workload.steps == DEFAULT_STEPS_WITH_DATA
    with_data["workload"]["steps"] = 3
    assert _load(with_data).workload.steps == 3
