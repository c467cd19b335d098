import pytest

from common.config import apply_overrides, flat_keys, from_dict, to_dict
from common.errors import ConfigError
from ex09_keypoints.config import make_config


def test_overrides_are_typed():
    cfg = apply_overrides(make_config(), ["model.widths=[32,64]", "train.epochs=7", "train.lr=3e-4",
                                          "model.flip_tta=false", "track.group=abc", "data.data_dir=none"])
    assert cfg.model.widths == (32, 64)
    assert cfg.train.epochs == 7 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.flip_tta is False
    assert cfg.track.group == "abc"
    assert cfg.data.data_dir is None


def test_comma_list_and_typed_dict_overrides():
    cfg = apply_overrides(make_config(), {"model.widths": "8,16,32", "train.lr": 1, "augment.flip": False})
    assert cfg.model.widths == (8, 16, 32)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.augment.flip is False


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        apply_overrides(make_config(), ["model.widht=64"])
    assert "model.widht" in str(e.value) and "model.widths" in str(e.value) and "train.lr" in str(e.value)


@pytest.mark.parametrize("override, words", [
    ("train.epochs=ten", "integer"),
    ("model.flip_tta=maybe", "boolean"),
    ("train.lr=fast", "number"),
    ("model.head=sideways", "flatten"),
    ("train.epochs", "key=value"),
    ("model=3", "section"),
])
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(make_config(), [override])
    assert words in str(e.value)


def test_round_trip_through_dict():
    cfg = apply_overrides(make_config("quick"), ["model.widths=[8,8]"])
    again = from_dict(type(cfg), to_dict(cfg))
    assert again == cfg
    assert "augment.rotate_deg" in flat_keys(cfg)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="quick"):
        make_config("fastest")
