"""End-to-end runs of train.py and the checks it makes before training."""

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import cli, recipes, train
from rlkit.checkpoint import FORMAT_VERSION, load_checkpoint
from rlkit.config import replace_fields
from rlkit.evaluate import time_limit
from rlkit.rundir import RunRecord
from rlkit.runlog import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SMALL = replace_fields(train.TrainConfig(), total_steps=300, learning_starts=100, batch_size=32,
                       eval_every=0, eval_episodes=1, log_every=100, progress=False,
                       d_model=32, device="cpu")


def test_end_to_end_writes_config_metrics_checkpoint(tmp_path):
    cfg = replace_fields(SMALL, run_dir=str(tmp_path / "run"))
    result = train.main(cfg)
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["env"]["id"] == "Pendulum-v1" and config["loop"]["total_steps"] == 300
    record = RunRecord.read(run)  # the typed view of the same file
    assert record.model.backbone == "mlp" and record.replay.seq_len == 1
    assert record.obs_dim == 3 and record.action_low == (-2.0,) and record.schema == 2
    rows = read_metrics(run)
    train_rows = [r for r in rows if "critic_loss" in r]
    eval_rows = [r for r in rows if "eval_return_mean" in r]
    assert [r["step"] for r in train_rows] == [100, 200, 300]
    assert all("wall_time" in r and "actor_loss" in r for r in train_rows)
    assert all(r["peak_memory_mb"] > 50 for r in train_rows)  # the process holds torch
    assert eval_rows[-1]["step"] == 300 and "eval_return_std" in eval_rows[-1]
    assert result["eval_return_mean"] == eval_rows[-1]["eval_return_mean"]
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["step"] == 300
    assert set(ckpt["agent"]) >= {"actor", "critics", "actor_target", "critic_targets",
                                  "actor_opt", "critic_opt"}


def test_final_training_row_when_total_steps_is_not_a_multiple_of_log_every(tmp_path):
    run = tmp_path / "run"
    train.main(replace_fields(SMALL, total_steps=250, run_dir=str(run)))
    train_rows = [r for r in read_metrics(run) if "critic_loss" in r]
    assert [r["step"] for r in train_rows] == [100, 200, 250]
    last = train_rows[-1]  # one update per step from step 100 on: 151 by step 250
    assert last["updates"] == 151 == train_rows[1]["updates"] + 50
    assert last["updates_per_s"] > 0 and last["sps"] > 0


def test_same_seed_same_first_metrics(tmp_path):
    def first_rows(name, seed):
        train.main(replace_fields(SMALL, total_steps=200, seed=seed, run_dir=str(tmp_path / name)))
        return read_metrics(tmp_path / name)

    a, b, c = first_rows("a", 0), first_rows("b", 0), first_rows("c", 1)
    volatile = ("wall_time", "sps", "updates_per_s", "peak_memory_mb")
    strip = [{k: v for k, v in r.items() if k not in volatile} for r in a]
    assert strip == [{k: v for k, v in r.items() if k not in volatile} for r in b]
    assert a[0]["critic_loss"] != c[0]["critic_loss"]


def test_existing_run_dir_is_never_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("precious\n")
    with pytest.raises(FileExistsError, match="already exists"):
        train.main(replace_fields(SMALL, run_dir=str(run)))
    assert (run / "metrics.jsonl").read_text() == "precious\n"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"env": "CartPole-v1"}, "expected a continuous Box action space"),
        ({"env": "faulty_envs:rlkit-test/MatrixObs-v0"},
         r"has observation space Box\(-1.0, 1.0, \(2, 3\), float32\) of shape \(2, 3\); "
         r"expected a 1-D Box observation space \(gymnasium.wrappers.FlattenObservation "
         r"flattens one"),
        ({"env": "faulty_envs:rlkit-test/MatrixAction-v0"},
         r"has action space Box\(-1.0, 1.0, \(2, 2\), float32\) of shape \(2, 2\); "
         r"expected a 1-D Box action space$"),
        ({"env": "NoSuchEnv-v9"}, "unknown env id 'NoSuchEnv-v9'"),
        ({"env": "no_such_module:Foo-v0"}, r"cannot import module 'no_such_module' for --env "
                                             r"no_such_module:Foo-v0: .*; expected a module on the "
                                             r"import path"),
        ({"env": ":Foo-v0"}, r"--env :Foo-v0: '' before the ':' is not a module name; "
                             r"expected module:EnvId"),
        ({"env": "my-pkg.envs:Foo-v0"}, r"'my-pkg.envs' before the ':' is not a module name"),
        ({"total_steps": 0}, "--total-steps must be a positive integer, got 0"),
        ({"total_steps": -5}, "--total-steps must be a positive integer, got -5"),
        ({"batch_size": 512, "buffer_size": 100}, "--batch-size 512 is larger than --buffer-size"),
        ({"backbone": "lstmx"}, "unknown backbone 'lstmx'; expected one of mlp, rnn"),
        ({"backbone": ["gru", "lstm"]}, r"unknown backbone \['gru', 'lstm'\]; expected one of "
                                          r"mlp, rnn"),  # unhashable: a TypeError before
        ({"updates_per_step": 0.0}, r"--updates-per-step must be a finite number > 0.0, got 0.0"),
        ({"updates_per_step": float("inf")}, "--updates-per-step must be a finite number"),
        ({"context": 0, "backbone": "transformer"}, "--context must be a positive integer"),
        ({"branch_init": -1.0, "backbone": "transformer"},
         r"--branch-init must be a finite number >= 0.0, got -1.0"),
        ({"state_mode": "bogus"}, "--state-mode must be zero, stored or prefix, got 'bogus'"),
        ({"state_mode": "prefix"}, "--state-mode prefix needs --burn-in B > 0"),
        ({"backbone": "transformer", "state_mode": "stored", "burn_in": 4, "seq_len": 16},
         r"Use --state-mode prefix --burn-in 63 \(--n-layers x \(--context - 1\)"),
    ],
)
def test_bad_input_stops_before_training(tmp_path, change, message):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train.main(replace_fields(SMALL, run_dir=str(run), **change))
    assert not run.exists()



def test_a_section_of_another_type_is_refused_by_name():
    """``TrainConfig(loop=ModelConfig())`` failed later on a field the section lacks
    (AttributeError: 'ModelConfig' object has no attribute 'eval_policy')."""
    from rlkit.config import ModelConfig

    with pytest.raises(TypeError, match=r"^TrainConfig.loop must be a LoopConfig, got "
                                        r"ModelConfig$"):
        train.TrainConfig(loop=ModelConfig())
    with pytest.raises(TypeError, match=r"^TrainConfig.agent must be a DDPGConfig, got dict$"):
        train.TrainConfig(agent={"gamma": 0.9})

def test_branch_init_reaches_every_transformer_block_of_the_agent():
    from rlkit.backbones.transformer import Block

    cfg = replace_fields(SMALL, backbone="transformer", d_model=8, context=4, branch_init=0.0)
    _, agent, env = train.build(cfg, torch.device("cpu"))
    env.close()
    blocks = [m for m in agent.modules() if isinstance(m, Block)]
    assert len(blocks) >= 2  # the actor's and the critic's encoders (and their targets)
    for block in blocks:
        assert block.proj.weight.abs().max() == 0 and block.mlp[2].bias.abs().max() == 0
        assert block.qkv.weight.abs().max() > 0
    _, default, env = train.build(replace_fields(cfg, branch_init=1.0), torch.device("cpu"))
    env.close()
    assert all(m.proj.weight.abs().max() > 0 for m in default.modules() if isinstance(m, Block))


@pytest.mark.parametrize("field", ["actor_lr", "critic_lr"])
def test_bad_learning_rate(field):
    flag = "--agent." + field.replace("_", "-")
    with pytest.raises(ValueError, match=rf"{flag} must be a number in \(0, 1\], got 0.0"):
        replace_fields(SMALL.agent, **{field: 0.0})


def test_cli_reports_bad_input_with_exit_code_2(tmp_path):
    out = subprocess.run(
        [sys.executable, "train.py", "--env", "CartPole-v1", "--run-dir", str(tmp_path / "r")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "expected a continuous Box action space" in out.stderr
    run = tmp_path / "long"  # windows far past the episodes: refused before the run starts
    out = subprocess.run(
        [sys.executable, "train.py", "--env", "rlkit/Pendulum-V-v0", "--backbone", "gru",
         "--seq-len", "100000", "--run-dir", str(run)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2 and not run.exists()
    assert out.stderr.startswith("error: --seq-len 100000 trains 99984 steps a window after a "
                                 "burn-in of 16, more than the task's episodes hold (at most "
                                 "200 steps)"), out.stderr
    assert "Traceback" not in out.stderr and "Warning" not in out.stderr


def test_cli_shows_a_warning_as_one_line_without_its_source(tmp_path):
    """A single run and a grid's runs alike (each grid run warns in its own process, its name
    first); a single run's result line is on stdout, its progress and warnings on stderr."""
    short = ["--env", "rlkit/Pendulum-V-v0", "--backbone", "gru", "--recipe", "none",
             "--seq-len", "50", "--window-start", "episode", "--d-model", "8",
             "--total-steps", "5", "--eval-episodes", "1", "--no-progress"]
    outs = {}
    for where, count in ((["--run-dir", str(tmp_path / "r")], 1),
                         (["--seed", "0", "1", "--grid-dir", str(tmp_path / "g")], 2)):
        out = subprocess.run([sys.executable, "train.py", *short, *where], cwd=ROOT,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        warned = [ln for ln in out.stderr.splitlines() if "train != act" in ln]
        names = [""] if count == 1 else ["[gru__s0] ", "[gru__s1] "]  # a grid's runs by name
        assert sorted(ln.partition("warning: ")[0] for ln in warned) == names, out.stderr
        assert all(ln.partition("warning: ")[2].startswith(
            "train != act: windows cover the first 50 steps") for ln in warned), out.stderr
        assert "UserWarning" not in out.stderr and "build(" not in out.stderr
        outs[count] = out
    result = (rf"run dir: {re.escape(str(tmp_path / 'r'))}  "
              r"final eval return: -?\d+\.\d \+- \d+\.\d\n")
    assert re.fullmatch(result, outs[1].stdout), outs[1].stdout


def test_a_coloured_warning_loses_its_colour_codes_where_stderr_is_a_file(monkeypatch):
    """Gymnasium colours its warnings (``colorize``); on a file or a pipe the escape codes were
    printed as they are."""
    from gymnasium.logger import colorize

    message = UserWarning(colorize("WARN: overwriting existing videos", "yellow"))
    assert "\x1b[" in str(message)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with train.one_line_warnings():
        line = warnings.formatwarning(message, UserWarning, "video.py", 1)
    assert line == "warning: WARN: overwriting existing videos\n"


def test_module_colon_env_form(tmp_path):
    # gymnasium.envs.classic_control is importable and registers nothing new; the id resolves
    cfg = replace_fields(SMALL, env="gymnasium.envs.classic_control:Pendulum-v1", total_steps=120,
                         run_dir=str(tmp_path / "run"))
    train.main(cfg)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 120


def _readme_train_commands() -> list[list[str]]:
    """Every ``python train.py ...`` command in the README, continuation lines joined."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    text = text.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("python train.py"):
            commands.append(shlex.split(line)[2:])
    return commands


def test_every_train_command_in_the_readme_parses():
    commands = _readme_train_commands()
    assert len(commands) >= 5
    for argv in commands:
        if "--help" in argv or "..." in argv:
            continue
        cfg, _, _ = cli.parse_cli(argv)
        if "--prev-reward" in argv:
            assert cfg.model.prev_reward is True


def test_an_env_id_without_its_version_gets_the_recipe_of_the_version_made():
    """Gymnasium makes ``rlkit/Pendulum-P`` as its latest version, ``rlkit/Pendulum-P-v0``;
    ``--recipe auto`` looked the bare id up, found none, and the run trained on the defaults
    recorded as recipe ``none``. In a fresh process (``envs`` not yet imported, as from
    Python) the ids' registry is imported to find the version."""
    script = ("from agents import cli\n"
              "cfg, _, _ = cli.parse_cli(['--env', 'rlkit/Pendulum-P', '--backbone', "
              "'transformer'])\n"
              "print(cfg.run.recipe, cfg.model.context)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout == "pendulum-pomdp 16\n", out.stderr
    cfg, _, _ = cli.parse_cli(["--env", "rlkit/Pendulum-P", "--backbone", "transformer"])
    assert cfg.run.recipe == "pendulum-pomdp" and cfg.model.context == 16  # its per-env value
    corridor, _, _ = cli.parse_cli(["--env", "envs:rlkit/MemoryCorridor-L20"])
    assert corridor.run.recipe == "memory-corridor-20"
    assert recipes.picks("auto", "rlkit/No-Such-Task") == "none"


@pytest.mark.parametrize(("flags", "message"), [
    (["--backbone", "transformer", "--d-model", "16", "--n-heads", "3"],
     "--backbone transformer: --d-model must be divisible by --n-heads, got --d-model=16, "
     "--n-heads=3"),
    (["--backbone", "s4", "--d-state", "3"],
     "--backbone s4: --d-state must be a positive even integer (conjugate pairs), got 3"),
])
def test_a_familys_own_check_fails_at_parse_time_by_flag_name(flags, message):
    """These were found when the run built its model, after the run's warnings, and named by
    field (``d_model=16, n_heads=3``)."""
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()) as err:
        cli.parse_cli(["--total-steps", "300", *flags])
    said = " ".join(err.getvalue().replace("│", " ").split())
    assert e.value.code == 2 and message in said, said


def test_recipe_is_chosen_by_env_and_flags_win_over_it():
    cfg, _, _ = cli.parse_cli(["--env", "rlkit/Pendulum-V-v0", "--backbone", "gru",
                               "--total-steps", "1234"])
    recipe = recipes.recipes()["pendulum-pomdp"]
    assert cfg.run.recipe == "pendulum-pomdp" and "rlkit/Pendulum-V-v0" in recipe.envs
    assert cfg.loop.total_steps == 1234  # given on the command line
    assert cfg.model.d_model == recipe.values["d_model"]  # from the recipe
    assert cfg.agent.pre_tanh_penalty == recipe.values["agent.pre_tanh_penalty"]
    plain, _, _ = cli.parse_cli(["--env", "rlkit/Pendulum-V-v0", "--recipe", "none"])
    assert plain.run.recipe == "none" and plain.model.d_model == train.TrainConfig().model.d_model
    mlp, _, _ = cli.parse_cli([])  # Pendulum-v1 has no recipe
    assert mlp.run.recipe == "none" and mlp.loop.total_steps == 15_000
    chosen, _, _ = cli.parse_cli(["--recipe", "pendulum-pomdp"])
    assert chosen.env.id == "Pendulum-v1" and chosen.model.d_model == recipe.values["d_model"]
    with pytest.raises(ValueError, match="unknown --recipe 'nope'; expected auto, none or one "
                                         "of .*pendulum-pomdp"):
        cli.parse_cli(["--recipe", "nope"])


@pytest.mark.parametrize(("flag", "field", "value"), [
    (["--agent.actor-q", "min"], "actor_q", "min"),
    (["--agent.critics-share-encoder"], "critics_share_encoder", True)])
@pytest.mark.parametrize("env", [["--env", "rlkit/MemoryCorridor-v0"],
                                 ["--env=rlkit/MemoryCorridor-L20-v0"],
                                 ["--recipe", "memory-corridor-20"]])
def test_a_flag_that_needs_a_recipe_value_is_checked_against_the_recipe(flag, field, value, env,
                                                                        capsys):
    """The memory-corridor recipes turn on twin critics, so the flags that need them are valid
    with the recipe (they were checked against the plain defaults first, and refused); with
    --recipe none they are refused, naming the flag that is missing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the recipe named for another env
        cfg = cli.parse_config([*env, "--backbone", "gru", *flag])
    assert cfg.run.recipe == "memory-corridor-20" and cfg.agent.twin_critics
    assert getattr(cfg.agent, field) == value
    with pytest.raises(SystemExit):
        cli.parse_config(["--env", "rlkit/MemoryCorridor-v0", "--recipe", "none", *flag])
    assert "expected --agent.twin-critics" in capsys.readouterr().err


def test_the_help_is_shown_whatever_the_recipe_flags_say(capsys):
    for argv in (["--recipe", "bogus", "--help"], ["--backbone", "bogus", "-h"]):
        with pytest.raises(SystemExit) as exit:
            cli.parse_config(argv)
        assert exit.value.code == 0 and "recipes (--recipe NAME" in capsys.readouterr().out


def test_the_pendulum_recipe_trains_every_family_on_what_it_acts_on():
    """Windows shorter than the 200-step episodes: each memory family starts them the way it
    acts (stored states and a burn-in, the Transformer replaying its reach), with no gap."""
    starts = {"gru": ("stored", 16, 80), "s4": ("stored", 16, 80), "mamba2": ("stored", 16, 80),
              "transformer": ("prefix", 63, 127)}
    for env in ("rlkit/Pendulum-V-v0", "rlkit/Pendulum-P-v0"):
        if env.endswith("P-v0"):  # the Transformer attends over 16 steps there: a reach of 15
            starts["transformer"] = ("prefix", 15, 79)
        for backbone, start in starts.items():
            cfg, _, _ = cli.parse_cli(["--env", env, "--backbone", backbone])
            cfg = train.resolve(cfg, 200)
            r, m = cfg.replay, cfg.model
            assert (r.state_mode, r.burn_in, r.seq_len, r.batch_size) == (*start, 16)
            assert r.seq_len - r.burn_in == 64 and r.window_start == "any"
            assert r.act_gap(m.memory, 200, reach=m.reach) is None
            assert m.context == (16 if env.endswith("P-v0") and backbone == "transformer"
                                 else 64)
    mlp, _, _ = cli.parse_cli(["--env", "rlkit/Pendulum-V-v0", "--backbone", "mlp"])
    assert train.resolve(mlp, 200).replay.seq_len == 1  # transitions


def test_the_long_corridor_recipe_lets_every_family_reach_the_cue():
    """Memory corridor L100 (101-step episodes, the cue 100 steps back), trained whole: the
    Transformer's reach covers the episode (no short-reach warning) and its encoders learn at
    3e-4, the LSTM gets chrono gates for 100 steps, every family twin critics; the other
    families keep the defaults."""
    env = "rlkit/MemoryCorridor-L100-v0"
    for backbone in ("transformer", "lstm", "gru", "s4"):
        cfg, _, _ = cli.parse_cli(["--env", env, "--backbone", backbone])
        cfg = train.resolve(cfg, 101)
        m = cfg.model
        assert cfg.run.recipe == "memory-corridor-100" and cfg.agent.twin_critics
        assert cfg.replay.seq_len == 101 and cfg.replay.window_start == "episode"
        assert m.reach_gap(101, cfg.replay.seq_len) is None
        assert m.chrono == (100 if backbone == "lstm" else 0)
        assert m.context == (102 if backbone == "transformer" else 64)
        assert cfg.agent.encoder_lr == (3e-4 if backbone == "transformer" else None)
    short, _, _ = cli.parse_cli(["--env", env, "--backbone", "transformer", "--context", "64"])
    assert "--context 101 or more" in short.model.reach_gap(101, 101)  # the flag wins


def test_every_shipped_recipe_applies_to_the_config():
    for recipe in recipes.recipes().values():
        cfg = recipe.apply(train.TrainConfig())  # every value names a field and is valid
        assert cfg.run.recipe == recipe.name and recipe.description and recipe.envs
        for backbone in recipe.backbones:  # so does every backbone's own value
            own = recipe.apply(replace_fields(train.TrainConfig(), backbone=backbone))
            assert own.model.backbone == backbone and own != cfg
        for env, families in recipe.env_backbones.items():  # and every one on one env
            for backbone in families:
                base = replace_fields(train.TrainConfig(), backbone=backbone, env=env)
                assert recipe.apply(base) != replace_fields(recipe.apply(
                    replace_fields(base, env="Pendulum-v1")), env=env)


def test_a_recipes_backbone_values_reach_that_backbone_only_and_flags_win(tmp_path,
                                                                         monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "pv.json").write_text(json.dumps({
        "description": "test", "envs": ["rlkit/Pendulum-V-v0"], "values": {"d_model": 8},
        "backbones": {"transformer": {"agent.encoder_lr": 3e-4}}}))
    monkeypatch.setattr(recipes, "_DIR", tmp_path / "recipes")
    pv = ["--env", "rlkit/Pendulum-V-v0"]
    gru, _, _ = cli.parse_cli([*pv, "--backbone", "gru"])
    tf, _, _ = cli.parse_cli([*pv, "--backbone", "transformer"])
    assert gru.agent.encoder_lr is None and tf.agent.encoder_lr == 3e-4
    assert gru.model.d_model == tf.model.d_model == 8 and tf.run.recipe == "pv"
    assert replace_fields(tf, backbone="gru", encoder_lr=None) == gru  # nothing else differs
    given, _, _ = cli.parse_cli([*pv, "--backbone", "transformer", "--agent.encoder-lr", "1e-4"])
    assert given.agent.encoder_lr == 1e-4
    # a grid of several backbones: each backbone's runs get that backbone's values
    launched = {}
    monkeypatch.setattr(cli, "_launch_grid", lambda g, p, runs, d, done=(), **kw: launched.update(
        {r.name: r.config for r in runs}))
    cli.cli([*pv, "--backbone", "gru", "transformer", "--seed", "0", "1",
             "--grid-dir", str(tmp_path / "grid")])
    assert sorted(launched) == ["gru__s0", "gru__s1", "transformer__s0", "transformer__s1"]
    assert [launched[f"transformer__s{s}"].agent.encoder_lr for s in (0, 1)] == [3e-4, 3e-4]
    assert [launched[f"gru__s{s}"].agent.encoder_lr for s in (0, 1)] == [None, None]
    manifest = cli.read_manifest(tmp_path / "grid")  # what --resume of the grid reads
    assert manifest["transformer__s1"].agent.encoder_lr == 3e-4


def test_a_recipes_env_backbone_values_reach_that_backbone_on_that_env_only(tmp_path,
                                                                           monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "pend.json").write_text(json.dumps({
        "description": "test", "envs": ["rlkit/Pendulum-V-v0", "rlkit/Pendulum-P-v0"],
        "values": {"d_model": 8}, "backbones": {"transformer": {"agent.encoder_lr": 3e-4}},
        "env_backbones": {"rlkit/Pendulum-V-v0": {"transformer": {"agent.spike_clip": 3.0,
                                                                  "agent.encoder_lr": 1e-4}}}}))
    monkeypatch.setattr(recipes, "_DIR", tmp_path / "recipes")

    def parse(*argv: str) -> train.TrainConfig:
        return cli.parse_cli(list(argv))[0]

    v_tf = parse("--env", "rlkit/Pendulum-V-v0", "--backbone", "transformer")
    p_tf = parse("--env", "rlkit/Pendulum-P-v0", "--backbone", "transformer")
    v_gru = parse("--env", "rlkit/Pendulum-V-v0", "--backbone", "gru")
    assert (v_tf.agent.spike_clip, v_tf.agent.encoder_lr) == (3.0, 1e-4)  # env layer wins
    assert (p_tf.agent.spike_clip, p_tf.agent.encoder_lr) == (None, 3e-4)  # family layer only
    assert (v_gru.agent.spike_clip, v_gru.agent.encoder_lr) == (None, None)
    assert v_tf.model.d_model == p_tf.model.d_model == v_gru.model.d_model == 8
    assert replace_fields(v_tf, env="rlkit/Pendulum-P-v0", spike_clip=None,
                          encoder_lr=3e-4) == p_tf  # nothing else differs
    given = parse("--env", "rlkit/Pendulum-V-v0", "--backbone", "transformer",
                  "--agent.spike-clip", "None")
    assert given.agent.spike_clip is None and given.agent.encoder_lr == 1e-4  # flags win
    # a recipe chosen by name for an env it does not list: no env layer
    other = parse("--recipe", "pend", "--backbone", "transformer")
    assert other.env.id == "Pendulum-v1" and other.agent.spike_clip is None
    launched = {}
    monkeypatch.setattr(cli, "_launch_grid", lambda g, p, runs, d, done=(), **kw: launched.update(
        {r.name: r.config for r in runs}))
    cli.cli(["--env", "rlkit/Pendulum-V-v0", "--backbone", "gru", "transformer", "--seed", "0",
             "--grid-dir", str(tmp_path / "grid")])
    assert launched["transformer__s0"].agent.spike_clip == 3.0
    assert launched["gru__s0"].agent.spike_clip is None
    assert "transformer on rlkit/Pendulum-V-v0: agent.spike_clip=3.0" in recipes.describe()


def test_a_recipe_naming_an_env_it_is_not_for_is_refused(tmp_path, monkeypatch):
    (tmp_path / "odd.json").write_text(json.dumps({
        "description": "x", "envs": ["rlkit/Pendulum-P-v0"], "values": {},
        "env_backbones": {"rlkit/Pendulum-V-v0": {"gru": {"d_model": 8}}}}))
    monkeypatch.setattr(recipes, "_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"odd.json: env_backbones names envs the recipe is not "
                                         r"for: \['rlkit/Pendulum-V-v0'\]; expected some of "
                                         r"\['rlkit/Pendulum-P-v0'\]"):
        recipes.recipes()
    (tmp_path / "odd.json").write_text(json.dumps({
        "description": "x", "envs": ["rlkit/Pendulum-P-v0"], "values": {},
        "env_backbones": {"rlkit/Pendulum-P-v0": {"gru": 8}}}))
    with pytest.raises(ValueError, match=r"odd.json: expected keys .* and env_backbones "
                                         r"\(env id -> an object of objects\)"):
        recipes.recipes()


def test_a_malformed_recipe_file_is_refused_with_its_path(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"description": "x", "envs": [], "values": {},
                               "backbones": {"gru": 3}}))
    monkeypatch.setattr(recipes, "_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"recipe .*bad.json: expected keys description, envs, "
                                         r"values .* and optionally backbones"):
        recipes.recipes()


def test_chrono_reaches_the_lstm_and_gru_encoders_and_is_ignored_by_the_others():
    """``--chrono`` initialises the gate biases of both the actor's and the critic's encoders
    of an LSTM / GRU run, twin critics included; other families ignore it,
    like ``--context``; a bad value is refused naming the flag."""
    from agents.train import build
    from rlkit.backbones import backbone_config

    want = torch.log(torch.linspace(1.0, 49.0, 8))
    for name in ("lstm", "gru"):
        cfg = replace_fields(train.TrainConfig(), backbone=name, d_model=8, chrono=50,
                             **{"agent.twin_critics": True})
        cfg, agent, _ = build(cfg, torch.device("cpu"))
        assert cfg.model.chrono == 50
        for enc in (agent.actor.encoder, *(c.encoder for c in agent.critics)):
            torch.testing.assert_close(enc.rnn.bias_ih_l0[8:16], want)
    assert not hasattr(backbone_config("s4", 8, 1, chrono=50), "chrono")
    assert backbone_config("gru", 8, 1).chrono == 0
    with pytest.raises(ValueError, match="--chrono must be 0 .*got 1"):
        replace_fields(train.TrainConfig(), chrono=1)


def test_rnn_init_reaches_every_recurrent_encoder_and_is_ignored_by_the_others():
    """``--rnn-init orthogonal`` draws the recurrent weights of the actor's and both critics'
    encoders orthogonal with zero biases; other families ignore it; a bad value is refused."""
    from agents.train import build
    from rlkit.backbones import backbone_config

    cfg = replace_fields(train.TrainConfig(), backbone="gru", d_model=8, rnn_init="orthogonal",
                         **{"agent.twin_critics": True})
    cfg, agent, _ = build(cfg, torch.device("cpu"))
    assert cfg.model.rnn_init == "orthogonal"
    for enc in (agent.actor.encoder, *(c.encoder for c in agent.critics)):
        w = enc.rnn.weight_hh_l0
        torch.testing.assert_close(w.T @ w, torch.eye(8), atol=1e-5, rtol=0)
        assert torch.equal(enc.rnn.bias_hh_l0, torch.zeros(24))
    assert backbone_config("s4", 8, 1, rnn_init="orthogonal") == backbone_config("s4", 8, 1)
    assert backbone_config("rnn", 8, 1).init == "torch"
    with pytest.raises(ValueError, match="--rnn-init must be torch or orthogonal, got 'he'"):
        replace_fields(train.TrainConfig(), rnn_init="he")


def test_input_embed_without_an_input_it_names_is_refused_when_the_run_is_resolved():
    """``--agent.input-embed O A R`` needs encoders that see the previous reward
    (``--prev-reward``): the refusal comes from :func:`agents.train.resolve`, before any run
    directory, and names the flag; with ``--prev-reward`` the run's encoders embed."""
    from agents.networks import InputEmbed
    from agents.train import build, resolve

    cfg = replace_fields(train.TrainConfig(), backbone="gru", d_model=8,
                         **{"agent.input_embed": (8, 4, 4)})
    with pytest.raises(ValueError, match="--agent.input-embed 8 4 4: no encoder sees the "
                                         "previous reward"):
        resolve(cfg, 200)
    cfg, agent, _ = build(replace_fields(cfg, prev_reward=True), torch.device("cpu"))
    assert isinstance(agent.actor.encoder, InputEmbed)
    assert agent.actor.encoder.backbone.d_in == 16


def test_help_lists_only_real_choices_for_the_options_whose_default_depends_on_the_task():
    """``--state-mode`` and ``--window-start`` default to None (chosen from the task and the
    backbone); ``--help`` lists the values a user can give, not None; it names every backbone
    family and every flag a resume may change."""
    out = subprocess.run([sys.executable, "train.py", "--help"], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[1],
                         env={**os.environ, "COLUMNS": "200"}).stdout
    assert "--state-mode {zero,stored,prefix}" in out
    assert "--window-start {any,episode}" in out
    assert "None,zero" not in out and "None,any" not in out
    from rlkit.backbones import BACKBONE_NAMES

    text = " ".join(out.split())  # the help names every family, and every flag a resume takes
    assert f"Encoder family: {', '.join(BACKBONE_NAMES[:-1])} or {BACKBONE_NAMES[-1]}." in text
    resume_help = text.split("--resume")[1].split("--wandb")[0]
    for name in train.RESUME_MAY_CHANGE:
        assert "--" + name.replace("_", "-") in resume_help, name


def test_n_step_targets_on_single_transitions_are_refused(tmp_path):
    import dataclasses

    run = tmp_path / "run"
    cfg = replace_fields(SMALL, run_dir=str(run))
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, n_step=3))
    with pytest.raises(ValueError, match=r"--agent.n-step 3 sums rewards along a window; got "
                                         r"--backbone mlp with --seq-len 1"):
        train.main(cfg)
    assert not run.exists()


@pytest.mark.parametrize(("backbone", "flags", "want"), [
    ("transformer", ["--n-heads", "2"], {"n_heads": 2}),
    ("s4", ["--d-state", "8"], {"d_state": 8}),
    ("mamba", ["--d-state", "4", "--expand", "1"], {"d_state": 4, "expand": 1}),
    ("mamba2", ["--d-state", "4", "--expand", "4"], {"d_state": 4, "expand": 4}),
])
def test_family_sizes_from_the_command_line_reach_the_encoders_and_the_run_record(
        tmp_path, backbone, flags, want):
    """``--n-heads``, ``--d-state`` and ``--expand`` set the family's own config in every
    encoder, ``config.json`` records them, and the agent loaded from the run is built with
    them; left out, the family's defaults hold."""
    run = tmp_path / "run"
    cfg = cli.parse_config(["--env", "Pendulum-v1", "--backbone", backbone, "--d-model", "8",
                            "--total-steps", "60", "--learning-starts", "30", "--batch-size",
                            "2", "--seq-len", "4", "--eval-every", "0", "--eval-episodes", "1",
                            "--no-progress", "--run-dir", str(run), *flags])
    train.main(cfg)
    agent, record = train.load_agent(run)
    for name, value in want.items():
        assert getattr(record.model, name) == value
        for enc in (agent.actor.encoder, *(c.encoder for c in agent.critics)):
            assert getattr(enc.cfg, name) == value
    default = replace_fields(train.TrainConfig(), backbone=backbone).model.backbone_config()
    assert default == type(default)(d_model=256, n_layers=1)


def test_a_family_size_of_zero_is_refused_by_flag():
    for name, flag in (("n_heads", "--n-heads"), ("d_state", "--d-state"), ("expand", "--expand")):
        with pytest.raises(ValueError, match=f"{flag} must be a positive integer, got 0"):
            replace_fields(train.TrainConfig(), **{name: 0})


def test_time_limits_are_found_inside_wrappers_and_evaluation_of_an_endless_env_ends(
        tmp_path, monkeypatch):
    """An env whose entry point wraps ``gym.make(...)`` keeps the inner time limit (windows
    and evaluation know the episode length); an env with none gets evaluation episodes cut at
    ``EVAL_STEP_LIMIT`` steps, with a warning, instead of an evaluation that never ends."""
    import gymnasium as gym

    from rlkit import evaluate as ev

    class Endless(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(2, np.float32), {}

        def step(self, action):
            return np.zeros(2, np.float32), 1.0, False, False, {}

    class Holder(gym.Env):  # an env that drives another one it made, not a gym.Wrapper
        observation_space = gym.spaces.Box(-8.0, 8.0, (3,), np.float32)
        action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

        def __init__(self):
            self.env = gym.make("Pendulum-v1")

        def reset(self, *, seed=None, options=None):
            return self.env.reset(seed=seed)

        def step(self, action):
            return self.env.step(action)

    gym.register("rlkit-test/Endless-v0", entry_point=Endless)
    gym.register("rlkit-test/WrappedPendulum-v0", entry_point=Holder)
    try:
        assert gym.make("rlkit-test/WrappedPendulum-v0").spec.max_episode_steps is None
        assert time_limit(gym.make("rlkit-test/WrappedPendulum-v0")) == 200
        assert time_limit(gym.make("rlkit-test/Endless-v0")) is None
        monkeypatch.setattr(ev, "EVAL_STEP_LIMIT", 30)
        with pytest.warns(UserWarning, match=r"env 'rlkit-test/Endless-v0' has no time limit "
                                             r"\(register it with max_episode_steps\): "
                                             r"evaluation episodes are cut at 30 steps"):
            env = ev.make_eval_env("rlkit-test/Endless-v0", None)
        policy = type("Zero", (), {"initial_state": lambda self, n: (),
                                   "act": lambda self, o, s, a, r: (torch.zeros(1, 1), s)})()
        stats = ev.evaluate(policy, env, 2, torch.device("cpu"), seed=0)
        assert stats["eval_length_mean"] == 30 and stats["eval_return_mean"] == 30.0
        # called on the env as made (no eval env between): cut alike, not an endless loop
        with pytest.warns(UserWarning, match=r"env 'rlkit-test/Endless-v0' has no time limit "
                                             r".*evaluation episode \d was cut at 30 steps"):
            stats = ev.evaluate(policy, gym.make("rlkit-test/Endless-v0"), 2,
                                torch.device("cpu"), seed=0)
        assert stats["eval_length_mean"] == 30 and stats["eval_return_mean"] == 30.0
        with pytest.warns(UserWarning, match=r"evaluation episodes are cut at 30 steps"):
            train.main(replace_fields(SMALL, env="rlkit-test/Endless-v0", total_steps=150,
                                      run_dir=str(tmp_path / "run")))  # its evaluation ends
        last = [r for r in read_metrics(tmp_path / "run") if "eval_return_mean" in r][-1]
        assert last["step"] == 150 and last["eval_length_mean"] == 30
    finally:
        for name in ("rlkit-test/Endless-v0", "rlkit-test/WrappedPendulum-v0"):
            gym.registry.pop(name, None)


def test_a_run_that_ends_before_learning_starts_says_it_trains_nothing(tmp_path):
    cfg = replace_fields(SMALL, total_steps=50, learning_starts=100, run_dir=str(tmp_path / "r"))
    with pytest.warns(UserWarning, match=r"^no update: --total-steps 50 ends before "
                                         r"--learning-starts 100 \(random actions until then\): "
                                         r"the policy evaluated is the untrained one$"):
        train.main(cfg)
    assert not [r for r in read_metrics(tmp_path / "r") if r.get("updates")]
    import warnings as w  # 4 envs step to 12, past --learning-starts 10: it trains, no word

    with w.catch_warnings():
        w.simplefilter("error", UserWarning)
        train.main(replace_fields(cfg, total_steps=9, learning_starts=10, num_envs=4,
                                  batch_size=4, run_dir=str(tmp_path / "v")))
    assert [r for r in read_metrics(tmp_path / "v") if r.get("updates")]


def test_typed_previous_inputs_on_mlp_transitions_are_warned_and_a_recipes_are_not():
    """``--prev-reward`` typed for ``mlp`` on single transitions changes nothing: said once;
    the Pendulum recipe sets it for every family, which is not the user's doing: no word."""
    import warnings as w

    typed = cli.given_on_resume(["--prev-reward", "--prev-action", "True"])
    cfg = cli.parse_config(["--prev-reward", "--prev-action", "True"])
    with pytest.warns(UserWarning, match=r"^unused flags: --prev-action --prev-reward feed "
                                         r"sequence training; --backbone mlp on single "
                                         r"transitions \(--seq-len 1\) does not use them$"):
        cli.warn_unused_inputs(cfg, typed)
    recipe = cli.parse_config(["--env", "rlkit/Pendulum-V-v0"])
    assert recipe.model.prev_reward and recipe.model.backbone == "mlp"
    windows = cli.parse_config(["--prev-reward", "--seq-len", "8"])
    with w.catch_warnings():
        w.simplefilter("error")
        cli.warn_unused_inputs(recipe, cli.given_on_resume(["--env", "rlkit/Pendulum-V-v0"]))
        cli.warn_unused_inputs(windows, cli.given_on_resume(["--prev-reward", "--seq-len", "8"]))


@pytest.mark.parametrize(("argv", "message"), [
    (["--backbone", "gru", "--agent.no-actor-prev-action"],
     r"^--agent.no-actor-prev-action: --prev-action \(on by default for memory backbones\) "
     r"gives the previous action to the actor and the critic alike, so the actor would see it "
     r"anyway; to feed it to the critic alone give --prev-action False "
     r"--agent.critic-prev-action$"),
    (["--env", "rlkit/Pendulum-V-v0", "--backbone", "mlp", "--seq-len", "8",
      "--agent.no-critic-prev-reward"],  # the recipe's --prev-reward
     r"^--agent.no-critic-prev-reward: --prev-reward \(given, or by the recipe\) gives the "
     r"previous reward to the actor and the critic alike, so the critic would see it anyway; "
     r"to feed it to the actor alone give --no-prev-reward --agent.actor-prev-reward$"),
])
def test_a_per_network_switch_that_would_be_overridden_is_refused(tmp_path, argv, message):
    """``--agent.no-actor-prev-action`` on a memory backbone (or ``--agent.no-critic-prev-
    reward`` with ``--prev-reward``) was overridden without a word and config.json recorded
    the input on; it is refused, and the way it suggests builds what was asked for."""
    with pytest.raises(ValueError, match=message):
        cli.cli([*argv, "--run-dir", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()
    way = re.search(r"give (.*)\$$", message).group(1).split()
    net = "critic" if "actor" in argv[-1] else "actor"
    what = argv[-1].rsplit("-", 1)[1]
    cfg = cli.parse_config([*argv[:-1], *way])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolved = train.resolve(cfg, 200).agent
    assert getattr(resolved, f"{net}_prev_{what}")
    assert not getattr(resolved, f"{'actor' if net == 'critic' else 'critic'}_prev_{what}")
    cli.refuse_overridden_switches(cli.parse_config(argv[:-1]), argv[:-1])  # none typed: kept


def test_a_per_network_switch_on_single_transitions_is_not_refused():
    """``mlp`` at ``--seq-len 1`` trains on single transitions, where nothing turns an input
    on: the recipe's ``--prev-reward`` does not make ``--agent.no-critic-prev-reward`` a
    contradiction there."""
    argv = ["--env", "rlkit/Pendulum-V-v0", "--backbone", "mlp", "--agent.no-critic-prev-reward"]
    cfg = cli.parse_config(argv)
    assert cfg.model.prev_reward
    cli.refuse_overridden_switches(cfg, argv)


def test_initial_updates_without_random_action_steps_are_refused_by_name(tmp_path):
    """``--initial-updates`` are made on the steps gathered before learning starts; with
    ``--learning-starts 0`` they were made at step 1 on a replay of one transition. Refused for
    a new run only: a run made before the check still resumes (``resolve`` keeps it)."""
    cfg = replace_fields(train.TrainConfig(), initial_updates=5, learning_starts=0,
                         run_dir=str(tmp_path / "never"))
    with pytest.raises(ValueError, match=r"^--initial-updates 5 are made on the random-action "
                                         r"steps gathered before learning starts; got "
                                         r"--learning-starts 0, where there are none \(expected "
                                         r"--learning-starts > 0, or no --initial-updates\)$"):
        train.main(cfg)
    assert not (tmp_path / "never").exists()
    train.resolve(cfg, 200)
    train.check_new_run(replace_fields(cfg, learning_starts=1))
    train.check_new_run(replace_fields(cfg, initial_updates=0))


def test_a_recipe_named_for_another_env_is_applied_with_a_warning():
    import warnings as w

    with pytest.warns(UserWarning, match=r"^--recipe memory-corridor-100 is made for "
                                         r"rlkit/MemoryCorridor-L100-v0, not Pendulum-v1: its "
                                         r"values apply as given$"):
        recipe = recipes.choose("memory-corridor-100", "Pendulum-v1")
    assert recipe.name == "memory-corridor-100"
    with w.catch_warnings():
        w.simplefilter("error")
        assert recipes.choose("memory-corridor-100", "rlkit/MemoryCorridor-L100-v0") == recipe
        assert recipes.choose("auto", "Pendulum-v1") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_run_on_cuda_without_a_cuda_device_is_refused_before_it_starts():
    with pytest.raises(ValueError, match=r"^--device cuda was asked for but no CUDA device is "
                                         r"available: expected --device cpu$"):
        train.check_device(replace_fields(train.TrainConfig(), device="cuda"))
    assert train.check_device(replace_fields(train.TrainConfig(), device="auto")).type == "cpu"


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_mixed_precision_warns_that_training_and_acting_round_differently(precision):
    """The update runs under autocast and acting in fp32 (a GRU's actions 8e-4 apart in bf16
    on a 50-step episode, README): said where the precision is not fp32, not in fp32."""
    import warnings as w

    cfg = cli.parse_config(["--precision", precision, "--backbone", "gru"])
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        _, _, env = train.build(cfg, torch.device("cpu"))
        env.close()
    said = [str(c.message) for c in caught if "autocast" in str(c.message)]
    assert said == ([] if precision == "fp32" else [
        f"train != act: updates run under {precision} autocast and acting in fp32, so the "
        "policy trains on outputs that differ from those it acts on by autocast's rounding "
        "(measured in the README, --precision)"])


def test_a_schedule_that_makes_no_update_says_it_trains_nothing(tmp_path):
    """Only a run that ended before ``--learning-starts`` was warned of; ``--update-every``
    past the run's end (or too few updates per step to make a whole one) trained nothing
    without a word."""
    for name, flags in (("every", {"update_every": 1000}), ("few", {"updates_per_step": 0.001})):
        cfg = replace_fields(SMALL, run_dir=str(tmp_path / name), **flags)
        with pytest.warns(UserWarning, match=r"^no update: --updates-per-step .* comes to no "
                                             r"whole update by --total-steps 300: the policy "
                                             r"evaluated is the untrained one$"):
            train.main(cfg)
        assert not [r for r in read_metrics(tmp_path / name) if r.get("updates")]


@pytest.mark.parametrize(("flags", "said"), [
    ({"lr_decay_to": 0.5}, "--agent.lr-decay-to 0.5 is for --agent.lr-decay N; this run's is 0"),
    ({"shared_encoder_actor_grad": True}, "--agent.shared-encoder-actor-grad is for "
                                          "--agent.shared-encoder"),
    ({"target_noise_clip": 0.3}, "--agent.target-noise-clip 0.3 is for --agent.target-noise "
                                 "above 0"),
    ({"kind": "gaussian", "ou_theta": 0.3}, "--ou-theta 0.3 is for --noise ou; this run's is "
                                             "gaussian"),
])
def test_a_flag_the_rest_of_the_config_leaves_unused_is_warned_of(flags, said):
    """They ran without a word, and config.json recorded them as if they applied."""
    with pytest.warns(UserWarning, match=f"^unused flags: {re.escape(said)}"):
        _, _, env = train.build(replace_fields(SMALL, **flags), torch.device("cpu"))
    env.close()
    used = {"lr_decay": 100} if "lr_decay_to" in flags else {
        "shared_encoder": True} if "shared_encoder_actor_grad" in flags else {
        "target_noise": 0.2} if "target_noise_clip" in flags else {"kind": "ou"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _, _, env = train.build(replace_fields(SMALL, **{**flags, **used}), torch.device("cpu"))
    env.close()


def test_jobs_on_one_run_is_warned_of(monkeypatch):
    monkeypatch.setattr(cli, "main", lambda *a, **k: None)
    with pytest.warns(UserWarning, match=r"^unused flags: --jobs 4 is for a grid \(several "
                                         r"--backbone or --seed values\)"):
        cli.cli(["--jobs", "4"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        cli.cli(["--jobs", "1"])


def test_help_lists_each_recipes_values_for_every_family():
    """``--help`` named a recipe's per-family values only, so its defaults (d_model 256) read
    as what a recipe's run would use (64)."""
    text = recipes.describe()
    assert "the defaults shown with each flag below are the package's" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("  pendulum-pomdp:"))
    assert "; every family: total_steps=30000, max_window=64, batch_size=16, d_model=64," in line
