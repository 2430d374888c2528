"""The model zoo: specs parsed once with errors naming the flag; configs read without weights."""

import json

import pytest

from interp.graphs import experiment as graph_experiment
from interp.ioi import experiment as ioi_experiment
from interp.models import config as model_config
from interp.models import zoo
from interp.sae import experiment as sae_experiment


@pytest.mark.parametrize("text, kind, path", [
    ("gemma3_270m", zoo.ModelKind.GEMMA3_270M, ""),
    ("gpt2:/models/gpt2", zoo.ModelKind.GPT2, "/models/gpt2"),
    ("toy:runs/lm", zoo.ModelKind.TOY, "runs/lm"),
    ("toy:C:/runs/lm", zoo.ModelKind.TOY, "C:/runs/lm"),  # only the first colon splits
])
def test_parse_round_trips(text, kind, path):
  spec = zoo.ModelSpec.parse(text)
  assert (spec.kind, spec.path) == (kind, path)
  assert str(spec) == text


@pytest.mark.parametrize("text, message", [
    ("llama", "--model='llama': expected gemma3_270m | gpt2:FOLDER | toy:RUN"),
    ("gpt2", "--model='gpt2': give the folder, e.g. gpt2:/path/to/run"),
    ("toy:", "--model='toy:': give the folder"),
    ("gemma3_270m:/x", "--model='gemma3_270m:/x': gemma3_270m takes no folder"),
])
def test_bad_specs_name_the_flag(text, message):
  with pytest.raises(ValueError) as e:
    zoo.ModelSpec.parse(text)
  assert str(e.value).startswith(message)


def test_each_experiment_checks_its_spec_at_the_door(tmp_path):
  with pytest.raises(ValueError, match=r"--model='toy:runs/lm': this experiment takes "
                                       r"gemma3_270m \| gpt2:FOLDER$"):
    ioi_experiment.IOIConfig(workdir=str(tmp_path), model="toy:runs/lm")
  with pytest.raises(ValueError, match=r"--source='bert': expected .* \(or planted\)"):
    sae_experiment.SourceConfig(source="bert")
  with pytest.raises(ValueError, match="--model='gpt2': give the folder"):
    graph_experiment.GraphRunConfig(model="gpt2")
  assert sae_experiment.SourceConfig(source="planted").model is None
  assert sae_experiment.SourceConfig(source="toy:r").model == zoo.ModelSpec(zoo.ModelKind.TOY, "r")


def test_toy_config_reads_the_run_folder_only(tmp_path):
  cfg = model_config.attn_only(n_layers=1, d_model=16, n_heads=2, n_ctx=8, vocab_size=256)
  (tmp_path / "model_config.json").write_text(json.dumps(cfg.to_dict()))
  assert zoo.config(zoo.ModelSpec.parse(f"toy:{tmp_path}")) == cfg
  (tmp_path / "model_config.json").write_text("{not json")
  with pytest.raises(ValueError, match="model_config.json is not valid JSON"):
    zoo.config(zoo.ModelSpec.parse(f"toy:{tmp_path}"))
