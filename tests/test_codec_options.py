"""Typed codec options: each codec declares what it takes (``Codec.OPTIONS``); unknown options and bad
values fail before any work with one line naming the codec, the option and what it takes."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rdp_bench.cli import app
from rdp_bench.codecs import (
    REGISTRY, Codec, CodecOptionError, codec_class, get_codec, options_for, route_codec_options,
)
from rdp_bench.codecs.base import Availability, Option


def _keywords(cls: type) -> set[str]:
    """Every named keyword of the constructors along the class's MRO (what the code really reads)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("self", "device"):
                names.add(p.name)
    return names


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_declared_options_are_the_constructor_keywords(name):
    cls = codec_class(name)
    assert set(cls.declared_options()) == _keywords(cls)
    assert ("amp" in cls.declared_options()) == cls.supports_amp


def test_corrdiff_and_hyperprior_declare_their_options():
    expected = {"steps", "gamma_granularity", "gamma_tile", "gamma_precision", "gamma_solver", "perceptual_weight",
                "checkpoint", "amp", "max_batch_pixels"}
    for name in ("corrdiff", "corrdiff-diffusion-only", "corrdiff-e2e"):
        assert set(codec_class(name).declared_options()) == expected
    assert set(codec_class("hyperprior").declared_options()) == {"checkpoint"}


def test_unknown_option_names_the_known_ones():
    with pytest.raises(CodecOptionError, match=r"^jpeg has no option 'foo'; its options: none$"):
        get_codec("jpeg", foo=1)
    with pytest.raises(CodecOptionError, match=r"cdc has no option 'gama'; its options: amp, gamma, max_batch_pixels, "
                                               r"steps, weights_dir"):
        codec_class("cdc").validate_options({"gama": "0.8"})


@pytest.mark.parametrize("name, key, value, expects", [
    ("cdc", "steps", "abc", "an integer in 1..1000"),
    ("cdc", "steps", "0", "an integer in 1..1000"),
    ("cdc", "steps", 2.5, "an integer in 1..1000"),
    ("cdc", "gamma", "high", "a number in 0..10"),
    ("cdc", "amp", "fp8", "one of bf16, fp16"),
    ("corrdiff", "gamma_precision", "int4", "one of bfloat16, float16, uint8"),
    ("corrdiff", "steps", "65", "an integer in 1..64"),
    ("corrdiff", "gamma_solver", "lpips", "one of mse, mse+msssim"),
    ("bpg", "backend", "ffmpeg", "one of auto, binary, pyav"),
])
def test_bad_values_say_which_option_what_it_got_and_what_it_expects(name, key, value, expects):
    with pytest.raises(CodecOptionError) as err:
        codec_class(name).validate_options({key: value})
    message = str(err.value)
    assert message == f"{name}: option {key} got {value!r}; expected {expects}"
    assert "invalid literal" not in message and "\n" not in message


def test_text_values_are_typed():
    cdc = codec_class("cdc").validate_options({"steps": "3", "gamma": "0.5", "weights_dir": Path("/x")})
    assert cdc == {"steps": 3, "gamma": 0.5, "weights_dir": "/x"}
    assert codec_class("corrdiff").validate_options({"perceptual_weight": 1, "gamma_tile": "32"}) == {
        "perceptual_weight": 1.0, "gamma_tile": 32}
    flag = Option(bool, False)
    assert flag.parse("x", "f", "true") is True and flag.parse("x", "f", "0") is False
    with pytest.raises(CodecOptionError, match="expected true or false"):
        flag.parse("x", "f", "maybe")


def test_routing_per_codec():
    routed = route_codec_options(["jpeg", "cdc", "corrdiff"], {"steps": "3", "corrdiff:gamma_precision": "uint8"},
                                 amp="bf16")
    assert routed == {"jpeg": {}, "cdc": {"steps": 3, "amp": "bf16"},
                      "corrdiff": {"steps": 3, "gamma_precision": "uint8", "amp": "bf16"}}
    with pytest.raises(CodecOptionError, match=r"no codec of this run takes option 'foo' \(options: jpeg: none; "
                                               r"hific: checkpoint, weights_dir\)"):
        route_codec_options(["jpeg", "hific"], {"foo": "1"})
    with pytest.raises(CodecOptionError, match="names codec 'cdc', which is not in this run"):
        route_codec_options(["jpeg"], {"cdc:steps": "2"})
    with pytest.raises(CodecOptionError, match="jpeg has no option 'steps'"):
        route_codec_options(["jpeg", "cdc"], {"jpeg:steps": "2"})
    assert options_for("jpeg", {"steps": 2, "amp": "bf16"}) == {}
    assert options_for("cdc", {"steps": 2, "backend": "pyav"}) == {"steps": 2}


def test_interface_defaults():
    class Plain(Codec):
        name = "plain"

        def rate_points(self):
            return []

        def encode_payloads(self, images, rate_point):
            return []

        def decode_payloads(self, records):
            return []

    assert Plain.supports_amp is False and Plain.declared_options() == {}
    assert Plain.availability_for_options({}) == Availability(True)
    with pytest.raises(CodecOptionError, match="plain has no option 'x'"):
        Plain(device="cpu", x=1)


def test_cli_refuses_unknown_options_and_bad_values_before_any_work(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--codec", "jpeg", "--codec-option", "foo=1", "--out", str(out), "-q"])
    assert res.exit_code == 2 and not out.exists()
    assert res.output.strip() == "error: no codec of this run takes option 'foo' (options: jpeg: none)"
    res = CliRunner().invoke(app, ["run", "--codec", "cdc", "--codec-option", "steps=abc", "--out", str(out), "-q"])
    assert res.exit_code == 2 and not out.exists()
    assert res.output.strip() == "error: cdc: option steps got 'abc'; expected an integer in 1..1000"


def test_list_codecs_options():
    res = CliRunner().invoke(app, ["list", "codecs", "--options"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "gamma_solver" in res.output and "one of mse, mse+msssim" in res.output and "backend" in res.output


def test_run_records_each_codecs_options(tmp_path):
    from rdp_bench.bench.runner import RunConfig, run_benchmark

    cfg = RunConfig(codecs=["jpeg"], dataset="samples", out=tmp_path, limit=1, rates=["q20"], metrics=["psnr"],
                    progress=False, device="cpu", amp="bf16")
    run_benchmark(cfg)
    entry = json.loads((tmp_path / "provenance.json").read_text())["runs"][-1]
    assert entry["codecs"]["jpeg"]["options"] == {}
    assert entry["codecs"]["jpeg"]["amp"].startswith("ignored")
