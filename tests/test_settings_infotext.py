import pytest

from slb.generation import leak_seeds, plan_generation, same_latent_space
from slb.infotext import (
    ALL_KEYS,
    infotext_entries,
    paste_value,
    preset_from_entry,
    remove_entries,
    settings_from_infotext,
)
from slb.preset import PresetError
from slb.settings import (
    ARG_NAMES,
    MANUAL,
    LeakSettings,
    SettingsError,
    format_means,
    parse_means,
    settings_from_args,
    settings_from_dict,
)
from tests.conftest import make_preset


def test_means_notation_roundtrip():
    assert parse_means("0:1.5, 2:-0.5") == {0: 1.5, 2: -0.5}
    assert parse_means("") == {}
    assert format_means({2: -0.5, 0: 1.5}) == "0:1.5,2:-0.5"
    assert format_means({1: 2.0}) == "1:2"
    for bad in ("0=1", "a:1", "0:x", ":1"):
        with pytest.raises(SettingsError):
            parse_means(bad)


def test_positional_defaults_and_order():
    assert ARG_NAMES[0] == "enabled" and ARG_NAMES[12] == "seed" and len(ARG_NAMES) == 32
    assert ARG_NAMES[13:17] == ("fix_lr_0", "lr_0", "fix_tb_0", "tb_0")
    assert ARG_NAMES[-3:] == ("fix_colour", "colour", "reference")
    assert settings_from_args([]) == LeakSettings()
    s = settings_from_args([True, "natural", 0.5, "zero", True, 1.5, False, 0.0, True, -0.5])
    assert s == LeakSettings(True, "natural", 0.5, "zero", {0: 1.5, 2: -0.5}, -1)
    assert settings_from_args(LeakSettings(True, "x", 0.3, "zero", {3: 1.0}, 5).to_args()) == \
        LeakSettings(True, "x", 0.3, "zero", {3: 1.0}, 5)


def test_dict_form_equals_positional():
    d = settings_from_dict({"preset": "natural", "strength": 0.7, "means": {"2": -0.5, 0: 1},
                            "seed": 5})
    p = settings_from_args([True, "natural", 0.7, "sampled", True, 1.0, False, 0, True, -0.5,
                            False, 0, 5])
    assert d == p
    assert settings_from_args([{"preset": "natural"}]).enabled is True
    assert settings_from_dict({}).preset == MANUAL


@pytest.mark.parametrize("bad, words", [
    ({"strenght": 1}, "unknown key"), ({"means": {"x": 1}}, "channel number"),
    ({"means": {"7": 1}}, "no mean control"), ({"means": [1, 2]}, "object"),
    ({"strength": "high"}, "number"), ({"strength": 5}, "0.0..2.0"), ({"lf": "half"}, "lf"),
    ({"seed": 1.5}, "integer"), ({"seed": -5}, "-1"), ({"enabled": "maybe"}, "true or false"),
    ({"preset": 3}, "name"), ({"means": {"0": 9}}, "-3.0..3.0")])
def test_dict_form_rejects_bad_input_clearly(bad, words):
    with pytest.raises(SettingsError, match=words):
        settings_from_dict(bad)


def test_too_many_positional_args():
    with pytest.raises(SettingsError, match="32 arguments"):
        settings_from_args([True] * 33)


def test_infotext_entries_and_parse_roundtrip():
    s = LeakSettings(True, "natural", 0.5, "zero", {0: 1.5, 2: -0.5}, 9)
    e = infotext_entries(s, "abcdef0123")
    assert e == {"Signal leak": "natural", "Signal leak hash": "abcdef0123",
                 "Signal leak strength": 0.5, "Signal leak LF": "zero",
                 "Signal leak means": "0:1.5,2:-0.5", "Signal leak seed": 9}
    text = {k: str(v) for k, v in e.items()}  # infotext values come back as text
    assert settings_from_infotext(text) == s
    minimal = infotext_entries(LeakSettings(True))
    assert minimal == {"Signal leak": "manual", "Signal leak strength": 1}
    assert settings_from_infotext({k: str(v) for k, v in minimal.items()}) == LeakSettings(True)


def test_not_applied_entry_keeps_the_preset_name():
    e = infotext_entries(LeakSettings(True, "my preset"), "", "3 channels, model has 4")
    assert e["Signal leak"] == "my preset (not applied: 3 channels, model has 4)"
    assert preset_from_entry(e["Signal leak"]) == "my preset"
    assert preset_from_entry("manual") == MANUAL


def test_paste_values():
    params = {"Signal leak": "natural", "Signal leak means": "1:-2", "Signal leak strength": "2"}
    assert paste_value(params, "enabled") is True
    assert paste_value(params, "preset") == "natural"
    assert paste_value(params, "strength") == 2.0
    assert paste_value(params, "lf") == "sampled"
    assert paste_value(params, "fix_mean_1") is True and paste_value(params, "mean_1") == -2.0
    assert paste_value(params, "fix_mean_0") is False and paste_value(params, "mean_0") is None
    assert paste_value(params, "seed") == -1
    assert paste_value({"Steps": "20"}, "enabled") is False
    assert paste_value({"Steps": "20"}, "preset") is None
    # malformed values fall back to defaults instead of failing the paste
    assert paste_value({"Signal leak": "x", "Signal leak strength": "lots"}, "strength") == 1.0


def test_remove_entries():
    params = {k: 1 for k in ALL_KEYS} | {"Steps": 20}
    remove_entries(params)
    assert params == {"Steps": 20}


def test_leak_seeds():
    s = LeakSettings(True)
    assert leak_seeds(s, [5, 6], iteration=3, batch_size=2) == [5, 6]
    fixed = LeakSettings(True, seed=100)
    assert leak_seeds(fixed, [5, 6], iteration=0, batch_size=2) == [100, 101]
    assert leak_seeds(fixed, [5, 6], iteration=3, batch_size=2) == [106, 107]


def test_latent_space_groups():
    assert same_latent_space("sd1", "sd2") and not same_latent_space("unknown", "sdxl")
    assert not same_latent_space("sd1", "unknown")
    assert not same_latent_space("sd1", "sdxl")


def test_plan_generation_guards():
    preset = make_preset("pixel", shape=(4, 8, 8), model_family="sdxl")

    def find(name):
        if name == "xl":
            return preset
        raise PresetError(f"no preset named {name!r}")

    ok = plan_generation(LeakSettings(True, "xl"), find, model_channels=4, model_family="sdxl")
    assert ok.applies and ok.label == "xl"
    fam = plan_generation(LeakSettings(True, "xl"), find, model_channels=4, model_family="sd1")
    assert not fam.applies and "fitted for sdxl" in fam.reason
    allowed = plan_generation(LeakSettings(True, "xl"), find, model_channels=4,
                              model_family="sd1", allow_other_families=True)
    assert allowed.applies
    ch = plan_generation(LeakSettings(True, "xl"), find, model_channels=16, model_family="sdxl")
    assert "4 latent channels" in ch.reason
    missing = plan_generation(LeakSettings(True, "nope"), find, model_channels=4,
                              model_family="sd1")
    assert "no preset" in missing.reason
    assert missing.infotext()["Signal leak"].startswith("nope (not applied:")
    manual = plan_generation(LeakSettings(True, means={3: 1.0}), find, model_channels=4,
                             model_family="sd1")
    assert manual.applies and manual.label == "manual"
