"""The config system: defaults, YAML files, ``key=value`` overrides, validation and help rows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import yaml

from abyssal.contracts.train_config import TrainConfig
from abyssal.core.config import (
    apply_overrides,
    config_from_dict,
    config_help,
    config_to_dict,
    field,
    load_config,
    save_config,
)
from abyssal.core.errors import ConfigError
from abyssal.solutions.fraud.config import FraudConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAIN_KEYS = ", ".join(f.name for f in dataclasses.fields(TrainConfig))


@dataclass
class Inner:
    depth: int = field(2, help="how deep")
    tags: list[str] = field(default_factory=lambda: ["a"], help="labels")


@dataclass
class Toy:
    """A small config with every kind of field the coercion handles."""

    epochs: int = field(10, help="number of epochs")
    lr: float = field(1e-3, help="learning rate")
    flag: bool = field(False, help="a switch")
    name: str = field("toy", help="a name")
    mode: Literal["fast", "slow"] = field("fast", help="speed")
    limit: float | None = field(None, help="optional cap")
    sizes: list[int] = field(default_factory=lambda: [1, 2], help="sizes")
    inner: Inner = field(default_factory=lambda: Inner(depth=7), help="nested")

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")


def error(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


# --- defaults and values --------------------------------------------------------------------------


def test_defaults_without_file_or_overrides():
    cfg = load_config(Toy)
    assert cfg == Toy()
    assert cfg.inner == Inner(depth=7, tags=["a"])


def test_overrides_parse_yaml_scalars_and_lists():
    cfg = load_config(
        Toy,
        overrides=[
            "epochs=3",
            "lr=0.5",
            "flag=true",
            "name=big",
            "mode=slow",
            "limit=2",
            "sizes=[4, 5, 6]",
        ],
    )
    assert (cfg.epochs, cfg.lr, cfg.flag, cfg.name, cfg.mode) == (3, 0.5, True, "big", "slow")
    assert cfg.limit == 2.0 and isinstance(cfg.limit, float)
    assert cfg.sizes == [4, 5, 6]


def test_override_exponent_float_and_null():
    # PyYAML reads '1e-3' as a string; a float field still accepts it
    cfg = load_config(Toy, overrides=["lr=1e-3", "limit=null"])
    assert cfg.lr == pytest.approx(1e-3)
    assert cfg.limit is None
    fraud = load_config(FraudConfig, overrides=["train.clip_grad_norm=null"])
    assert fraud.train.clip_grad_norm is None


def test_int_value_for_float_field_becomes_float():
    cfg = load_config(Toy, overrides=["lr=1"])
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_later_override_wins():
    assert load_config(Toy, overrides=["epochs=3", "epochs=4"]).epochs == 4


def test_yaml_file_then_overrides(tmp_path):
    path = write_yaml(tmp_path, "epochs: 5\nname: fromfile\ninner:\n  tags: [x, y]\n")
    cfg = load_config(Toy, path, overrides=["name=cli"])
    assert (cfg.epochs, cfg.name) == (5, "cli")
    assert cfg.inner == Inner(depth=7, tags=["x", "y"])


def test_empty_yaml_file_gives_defaults(tmp_path):
    assert load_config(Toy, write_yaml(tmp_path, "")) == Toy()


# --- nested dataclasses keep their field's own default --------------------------------------------


def test_nested_override_keeps_field_default_factory_values():
    cfg = load_config(FraudConfig, overrides=["train.epochs=3"])
    assert cfg.train.epochs == 3
    assert cfg.train.patience == 20
    assert cfg.train.early_stopping_metric == "val_auprc"
    assert TrainConfig().patience == 10  # the class default differs: the field's one was kept


def test_nested_yaml_section_keeps_field_default_factory_values(tmp_path):
    cfg = load_config(FraudConfig, write_yaml(tmp_path, "train:\n  lr: 0.01\n"))
    assert cfg.train.lr == 0.01
    assert (cfg.train.patience, cfg.train.early_stopping_metric) == (20, "val_auprc")


def test_toy_nested_override_keeps_inner_field_default():
    assert load_config(Toy, overrides=["inner.tags=[b]"]).inner == Inner(depth=7, tags=["b"])


def test_empty_nested_yaml_section_keeps_field_default_factory_values(tmp_path):
    cfg = load_config(FraudConfig, write_yaml(tmp_path, "train:\n  # epochs: 5\n"))
    assert (cfg.train.patience, cfg.train.early_stopping_metric) == (20, "val_auprc")


# --- unknown keys ---------------------------------------------------------------------------------


def test_unknown_top_level_override_lists_valid_keys():
    msg = error(load_config, FraudConfig, overrides=["bogus=1"])
    assert msg == (
        "config: unknown key 'bogus'; valid keys are: "
        "data, model, train, sampling, rings, live, baselines"
    )


def test_unknown_nested_override_lists_nested_keys():
    msg = error(load_config, FraudConfig, overrides=["train.bogus=1"])
    assert msg == f"config: unknown key 'train.bogus'; valid keys are: {TRAIN_KEYS}"


def test_override_below_a_leaf_is_an_error():
    msg = error(load_config, FraudConfig, overrides=["train.epochs.x=1"])
    assert msg == "config: 'train.epochs' has no sub-keys"


def test_unknown_top_level_key_in_file_lists_valid_keys(tmp_path):
    path = write_yaml(tmp_path, "epochs: 2\nbogus: 1\nworse: 2\n")
    msg = error(load_config, Toy, path)
    assert msg == (
        f"{path}: unknown keys 'bogus', 'worse'; valid keys are: "
        "epochs, lr, flag, name, mode, limit, sizes, inner"
    )


def test_unknown_nested_key_in_file_names_section_and_lists_keys(tmp_path):
    path = write_yaml(tmp_path, "train:\n  bogus: 1\n")
    msg = error(load_config, FraudConfig, path)
    assert msg == f"{path}.train: unknown key 'bogus'; valid keys are: {TRAIN_KEYS}"


def test_override_without_equals_sign():
    assert error(load_config, Toy, overrides=["epochs"]) == (
        "override 'epochs' is not of the form key=value"
    )


def test_override_with_invalid_yaml_value():
    msg = error(load_config, Toy, overrides=["sizes=[1, 2"])
    assert msg.startswith("override 'sizes=[1, 2': value is not valid YAML")


# --- wrong types name the dotted key --------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=abc", "config.train.epochs: expected an integer, got 'abc'"),
        ("train.epochs=1.5", "config.train.epochs: expected an integer, got 1.5"),
        ("train.epochs=true", "config.train.epochs: expected an integer, got True"),
        ("train.lr=fast", "config.train.lr: expected a number, got 'fast'"),
        ("train.progress=2", "config.train.progress: expected true or false, got 2"),
        ("train.device=[0]", "config.train.device: expected a string, got [0]"),
        ("data.windows=5", "config.data.windows: expected a list, got 5"),
        ("data.windows=[60, x]", "config.data.windows[1]: expected an integer, got 'x'"),
        ("train.clip_grad_norm=abc", "config.train.clip_grad_norm: expected a number, got 'abc'"),
        ("data=3", "config.data: expected a mapping of keys to values, got int"),
    ],
)
def test_wrong_type_names_dotted_key(override, message):
    assert error(load_config, FraudConfig, overrides=[override]) == message


def test_wrong_type_in_file_names_file_and_key(tmp_path):
    path = write_yaml(tmp_path, "inner:\n  depth: deep\n")
    assert error(load_config, Toy, path) == f"{path}.inner.depth: expected an integer, got 'deep'"


def test_literal_choices():
    assert load_config(FraudConfig, overrides=["model.conv=gat"]).model.conv == "gat"
    msg = error(load_config, FraudConfig, overrides=["model.conv=gcn"])
    assert msg == "config.model.conv: 'gcn' is not one of 'gatv2', 'gat'"


# --- __post_init__ validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.hidden=10", "config.model: model.hidden (10) must divide by model.heads"),
        ("model.dropout=1.0", "config.model: model.dropout must be in [0, 1)"),
        ("train.epochs=0", "config.train: train.epochs must be >= 1, got 0"),
        ("train.lr=-1", "config.train: train.lr must be > 0, got -1.0"),
        (
            "data.source=transactions",
            "config.data: data.path is required for data.source=transactions",
        ),
        (
            "data.val_frac=0.9",
            "config.data: data.val_frac + data.test_frac must leave accounts for training",
        ),
        ("data.windows=[]", "config.data: data.windows must be positive seconds, got []"),
    ],
)
def test_post_init_errors_are_config_errors_with_section(override, message):
    assert error(load_config, FraudConfig, overrides=[override]) == message


def test_post_init_error_of_top_level_class():
    assert error(load_config, Toy, overrides=["epochs=0"]) == "config: epochs must be >= 1, got 0"


def test_config_from_dict_none_gives_defaults():
    assert config_from_dict(Toy, None) == Toy()


# --- files ----------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    assert error(load_config, Toy, path) == f"config file '{path}' does not exist"


def test_invalid_yaml_file(tmp_path):
    path = write_yaml(tmp_path, "epochs: [1, 2\n")
    assert error(load_config, Toy, path).startswith(f"{path}: not valid YAML (")


def test_yaml_file_that_is_not_a_mapping(tmp_path):
    path = write_yaml(tmp_path, "- 1\n- 2\n")
    assert error(load_config, Toy, path) == f"{path}: expected a mapping at the top level"


def test_save_and_load_round_trip(tmp_path):
    cfg = load_config(
        FraudConfig, overrides=["train.epochs=3", "data.windows=[60, 120]", "rings.min_risk=0.7"]
    )
    path = tmp_path / "sub" / "saved.yaml"
    save_config(cfg, path)
    assert yaml.safe_load(path.read_text()) == config_to_dict(cfg)
    assert load_config(FraudConfig, path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["saved.yaml"]  # no temporary left behind


def test_apply_overrides_does_not_change_its_input():
    data = {"inner": {"depth": 1}}
    out = apply_overrides(Toy, data, ["inner.depth=5"])
    assert out == {"inner": {"depth": 5}}
    assert data == {"inner": {"depth": 1}}


# --- help rows ------------------------------------------------------------------------------------


def test_config_help_rows_flatten_nested_fields():
    rows = config_help(Toy)
    assert [r[0] for r in rows] == [
        "epochs",
        "lr",
        "flag",
        "name",
        "mode",
        "limit",
        "sizes",
        "inner.depth",
        "inner.tags",
    ]
    assert rows[0] == ("epochs", "10", "number of epochs")
    assert rows[6] == ("sizes", "[1, 2]", "sizes")
    assert rows[-1] == ("inner.tags", "['a']", "labels")


def test_config_help_fraud_rows_cover_every_leaf():
    keys = [r[0] for r in config_help(FraudConfig)]
    assert len(keys) == len(set(keys))
    assert {"data.windows", "model.conv", "train.epochs", "rings.min_size", "baselines"} <= set(
        keys
    )
    assert all(help_text for _, _, help_text in config_help(FraudConfig))


def test_config_help_shows_field_default_factory_values_for_nested():
    rows = {key: default for key, default, _ in config_help(FraudConfig)}
    assert rows["train.patience"] == "20"
    assert rows["train.early_stopping_metric"] == "'val_auprc'"


# --- shipped YAML files ---------------------------------------------------------------------------

SHIPPED = sorted(CONFIGS.glob("*/*.yaml")) + sorted(CONFIGS.glob("*/*.yml"))


@pytest.mark.skipif(not SHIPPED, reason="no YAML files under configs/")
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_loads_into_its_solution(path):
    from abyssal.solutions import get_solution

    cls = get_solution(path.parent.name).config_cls
    cfg = load_config(cls, path)
    assert isinstance(cfg, cls)
