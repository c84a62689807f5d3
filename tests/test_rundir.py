"""The run directory's record (config.json): round trip, checks, the schema-1 (flat) format
of version 0.1.0, and the typed config sections with their flag-named errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agents import train
from agents.config import TrainConfig
from rlkit.config import LoopConfig, NoiseConfig, ReplayConfig, replace_fields
from rlkit.fields import field_value
from rlkit.rundir import SCHEMA, RunDirError, RunRecord
from rlkit.runlog import read_metrics

DATA = Path(__file__).resolve().parent / "data"
OLD_RUN = DATA / "run-0.1.0-gru"  # written by version 0.1.0: flat config.json, its checkpoint


def test_record_round_trip_and_typed_sections(tmp_path):
    cfg = train.resolve(replace_fields(train.TrainConfig(), backbone="gru", seed=3,
                                       total_steps=500), 200)
    record = RunRecord(**{n: getattr(cfg, n) for n in ("run", "env", "replay", "model",
                                                        "noise", "loop", "grid")},
                       agent={"gamma": 0.9, "head_hidden": (16, 16)}, obs_dim=1,
                       action_dim=1, action_low=(-2.0,), action_high=(2.0,), device="cpu")
    record.write(tmp_path)
    back = RunRecord.read(tmp_path)
    assert back == record and back.schema == SCHEMA
    assert back.agent["head_hidden"] == [16, 16]  # as JSON holds it
    assert back.replay.seq_len == 200 and back.replay.window_start == "episode"
    assert TrainConfig_from(back).loop.total_steps == 500


def TrainConfig_from(record):  # noqa: N802
    return train.TrainConfig.from_record(record)


def test_schema_1_config_of_version_0_1_0_is_read():
    record = RunRecord.read(OLD_RUN)
    assert record.model.backbone == "gru" and record.env.id == "rlkit/Pendulum-V-v0"
    assert record.replay.seq_len == 6 and record.replay.window_start == "any"
    assert record.run.device == "cpu" and record.model.d_model == 8
    assert record.agent["head_hidden"] == [8] and record.agent["actor_prev_action"] is True


def test_checkpoint_of_version_0_1_0_resumes_exactly(tmp_path):
    """A run directory written by 0.1.0 (flat config.json) resumes, and the resumed run logs
    what 0.1.0 itself logged when it resumed the same directory: counts exactly, losses and
    returns to 1e-5 relative (0.1.0 logged them on one CPU; another instruction set, AVX-512
    against AVX2, rounds a sum differently in the 7th digit). Resuming is bitwise exact on
    one machine (``test_reliability.py``)."""
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    with pytest.warns(UserWarning, match="train != act"):  # its windows start anywhere
        train.main(replace_fields(train.TrainConfig(), resume=str(run), total_steps=100))
    expected = [json.loads(line) for line in
                (OLD_RUN / "expected_metrics_at_100.jsonl").read_text().splitlines()]
    got = read_metrics(run)
    timing = {"wall_time", "sps", "updates_per_s", "peak_memory_mb"}
    assert len(got) == len(expected)
    for want, row in zip(expected, got):
        assert set(want) <= set(row)  # later versions log more
        assert {k: row[k] for k in want if k not in timing} == pytest.approx(
            {k: v for k, v in want.items() if k not in timing}, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"schema": 7}', "schema 7 is not one this version reads"),
    ("not json", "not valid JSON"),
])
def test_bad_config_json_is_named(tmp_path, text, message):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RunDirError, match=message):
        RunRecord.read(tmp_path)
    (tmp_path / "config.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RunDirError, match="not valid JSON"):
        RunRecord.read(tmp_path)


def test_record_refuses_unknown_and_bad_fields(tmp_path):
    data = json.loads((OLD_RUN / "config.json").read_text())
    record = RunRecord.from_json(data).to_json()
    record["loop"]["total_steps"] = 0
    with pytest.raises(RunDirError, match="--total-steps must be a positive integer, got 0"):
        RunRecord.from_json(record)
    record["loop"]["total_steps"] = 10
    record["replay"]["nope"] = 1
    with pytest.raises(RunDirError, match=r"replay: unknown field\(s\) \['nope'\]"):
        RunRecord.from_json(record)


@pytest.mark.parametrize(("section", "values", "message"), [
    (LoopConfig, {"updates_per_step": float("inf")}, "--updates-per-step must be a finite"),
    (LoopConfig, {"updates_per_step": 1e300 * 1e10}, "--updates-per-step must be a finite"),
    (NoiseConfig, {"sigma": float("nan")}, "--noise-sigma must be a finite number >= 0.0"),
    (NoiseConfig, {"ou_dt": 0.0}, "--ou-dt must be a finite number > 0.0"),
    (NoiseConfig, {"ou_theta": 0.0}, "--ou-theta must be a finite number > 0.0"),
    (NoiseConfig, {"ou_theta": 1e300}, "--ou-theta x --ou-dt must be below 2"),
    (NoiseConfig, {"ou_theta": 100.0, "ou_dt": 0.05}, "--ou-theta x --ou-dt must be below 2"),
    (ReplayConfig, {"max_window": 0}, "--max-window must be a positive integer"),
    (ReplayConfig, {"episode_sampling": "x"}, "--episode-sampling must be episodes or steps"),
])
def test_sections_validate_themselves_naming_the_flag(section, values, message):
    with pytest.raises(ValueError, match=message):
        section(**values)


def test_replace_fields_takes_flag_names_and_refuses_unknown_ones():
    cfg = replace_fields(train.TrainConfig(), env="rlkit/Pendulum-P-v0", noise_sigma=0.3,
                         **{"agent.gamma": 0.9})
    assert cfg.env.id == "rlkit/Pendulum-P-v0" and cfg.noise.sigma == 0.3
    assert cfg.agent.gamma == 0.9
    with pytest.raises(ValueError, match="cannot set 'nonsense': no section has"):
        replace_fields(cfg, nonsense=1)
    with pytest.raises(ValueError, match="--env must name a Gymnasium id"):
        replace_fields(cfg, env=":")
    # read by the same names, without rebuilding (a value that would not validate is no matter)
    assert [field_value(cfg, n) for n in ("env", "noise_sigma", "agent.gamma", "total_steps")] \
        == ["rlkit/Pendulum-P-v0", 0.3, 0.9, cfg.loop.total_steps]
    assert field_value(cfg, "agent") is cfg.agent
    with pytest.raises(ValueError, match="cannot read 'nonsense': no section has"):
        field_value(cfg, "nonsense")


@pytest.mark.parametrize("field, name", [("resume", "--resume"), ("run_dir", "--run-dir"),
                                         ("grid_dir", "--grid-dir")])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_directory_flag_is_refused_not_read_as_the_current_directory(field, name,
                                                                               value):
    with pytest.raises(ValueError, match=rf"^{name} must name a directory, got '{value}'$"):
        replace_fields(TrainConfig(), **{field: value})
    as_path = Path("runs") / "x"  # a path object is taken as it is
    assert getattr(replace_fields(TrainConfig(), **{field: as_path}).run if field != "grid_dir"
                   else replace_fields(TrainConfig(), grid_dir=as_path).grid, field) == as_path


def test_the_package_version_is_the_installed_distributions():
    """``rlkit.__version__`` is what ``pip show rlkit`` says and ``pyproject.toml`` declares
    (the README names it)."""
    import re
    from importlib.metadata import version

    import rlkit

    project = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"$', project, re.MULTILINE).group(1)
    assert rlkit.__version__ == version("rlkit") == declared
