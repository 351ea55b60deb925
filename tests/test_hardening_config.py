"""Security issue #21, items 2 and 3: interpolation and the command line.

2. A value is resolved once, in compose(), and checked as resolved. Only `${key.path}`,
   `${ladder_root:}` and `${oc.env:NAME}` (a non-secret NAME, literal arguments) are accepted;
   any other resolver and any nested interpolation is refused, naming the key. An escaped `\\${`
   is a literal `${` in every field, through every merge, dump and load the code does.
3. `hydra.*` overrides are refused, and every argument is checked for secrets: argv is
   recorded in run_meta.json, W&B, the ledger, launch.json and job scripts.

Every payload goes into every string field of the schema (string_fields()), and each attempt is
either refused naming its key or carried as the literal text, never resolved. ATTEMPTS counts
them (a session's totals: `pytest -s` prints them at the end of this module).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from pathlib import Path

import pytest
from conftest import FAST, ladder_cli, train_in_process
from omegaconf import OmegaConf

from training.common.errors import ConfigError
from training.config.compose import compose
from training.config.schema import LadderConfig

SECRET = "secret-value-12345"  # WANDB_API_KEY's value in these tests
ATTEMPTS = {"refused": 0, "carried": 0}


@pytest.fixture(scope="module", autouse=True)
def _print_attempts():
    yield
    print(
        f"\npayload x field attempts: {sum(ATTEMPTS.values())} ({ATTEMPTS['refused']} refused, "
        f"{ATTEMPTS['carried']} carried as literal text)"
    )


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("HF_TOKEN", "hf_planted_token_456")
    if not OmegaConf.has_resolver(
        "ladder_test_leak"
    ):  # registered, so refused by the allow-list, not by luck
        OmegaConf.register_new_resolver("ladder_test_leak", lambda: os.environ["WANDB_API_KEY"])


def string_fields(cls=LadderConfig, prefix: str = "") -> list[tuple[str, str]]:
    """(key, kind) of every string field of the whole schema: str, list or dict values."""
    kinds = {str: "str", typing.Optional[str]: "str", list[str]: "list", dict[str, str]: "dict"}
    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(t):
            found += string_fields(t, key + ".")
        elif t in kinds:
            found.append((key, kinds[t]))
    return found


def hydra_quote(value: str) -> str:
    """A value as a double-quoted string of Hydra's override grammar (the payloads hold no quotes)."""
    return '"' + value + '"'


def override(key: str, kind: str, value: str) -> str:
    return {
        "str": f"{key}={hydra_quote(value)}",
        "list": f"{key}=[{hydra_quote(value)}]",
        "dict": f"+{key}.NCCL_X={hydra_quote(value)}",
    }[kind]


def read(cfg, key: str, kind: str):
    node = OmegaConf.select(cfg, key)
    return node[0] if kind == "list" else node["NCCL_X"] if kind == "dict" else node


def compose_refusing(fields: list[tuple[str, str]], payload: str, base: list[str]):
    """Compose with the payload in every field at once. The fields that the rules for names and
    paths (training/config/names.py, which others extend) refuse are taken out, and the rest composed
    again: returns the config and the refused keys, each named in a refusal message."""
    refused: set[str] = set()
    while True:
        try:
            return compose([*base, *(override(k, kind, payload) for k, kind in fields)]), refused
        except ConfigError as e:
            lines = [
                line.strip()[2:] for line in str(e).splitlines() if line.strip().startswith("- ")
            ]
            named = {
                k
                for k, _ in fields
                if any(line.startswith((f"{k}=", f"{k}[", f"{k} ")) for line in lines)
            }
            assert named and len(lines) >= len(named) and SECRET not in str(e), str(e)
            assert "nterpolation" not in str(e), str(
                e
            )  # a literal is never read as an interpolation
            refused |= named
            fields = [f for f in fields if f[0] not in named]


# Escaped: a literal `${`, which must stay text. (payload as typed, the literal text it means)
ESCAPED = {
    "nested-escaped": (
        "\\${oc.env:\\${oc.decode:WANDB_API_KEY}}",
        "${oc.env:${oc.decode:WANDB_API_KEY}}",
    ),
    "usd": ("cost\\${USD}", "cost${USD}"),
    "made-up-escaped": ("x\\${ladder_test_leak:}", "x${ladder_test_leak:}"),
}
# Live interpolations outside the allow-list: refused, naming the key. (payload, words of the message)
REFUSED = {
    "nested": (
        "${oc.env:${oc.decode:WANDB_API_KEY}}",
        "nests an interpolation in the arguments of oc.env",
    ),
    "decode": ("${oc.decode:WANDB_API_KEY}", "uses the resolver oc.decode"),
    "made-up": ("${ladder_test_leak:}", "uses the resolver ladder_test_leak"),
    "hydra-resolver": ("${hydra:job.name}", "uses the resolver hydra"),
    "select": ("${oc.select:tracker.project}", "uses the resolver oc.select"),
    "nested-key": ("${tracker.${oc.env:HOME}}", "nests an interpolation in a key"),
    "nested-env": (
        "${oc.env:HOME,${oc.env:USER}}",
        "nests an interpolation in the arguments of oc.env",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_an_interpolation_outside_the_allow_list_is_refused_in_every_string_field(secret_env, name):
    payload, words = REFUSED[name]
    fields = string_fields()
    assert len(
        fields
    ) >= 41 and {  # closed choices are enums now, refused at compose by their choices
        "tracker.tags",
        "trainer.run_name",
        "sweep.name",
        "launcher.env",
        "tracker.project",
        "eval.lm_eval.include_path",
        "ledger.url",
    } <= {k for k, _ in fields}
    with pytest.raises(ConfigError) as e:  # all at once: every key is named, each on its own line
        compose(
            ["rung=tiny", "launcher=slurm", *(override(k, kind, payload) for k, kind in fields)]
        )
    message = str(e.value)
    for key, kind in fields:
        shown = key + (".NCCL_X" if kind == "dict" else "[0]" if kind == "list" else "")
        line = next((x for x in message.splitlines() if x.strip().startswith(f"- {shown} ")), "")
        assert words in line, (key, message)
        ATTEMPTS["refused"] += 1
    assert SECRET not in message and "Traceback" not in message


@pytest.mark.parametrize("name", list(ESCAPED))
def test_an_escaped_interpolation_is_a_literal_in_every_string_field_and_every_round_trip(
    secret_env, name, tmp_path
):
    from training.config.config_diff import flatten
    from training.run.trainer import with_run_name

    payload, text = ESCAPED[name]
    # trainer.run_name is given, so rung/recipe/data.name need not make one; it is tried alone below
    fields = [f for f in string_fields() if f[0] != "trainer.run_name"]
    cfg, refused = compose_refusing(
        fields, payload, ["rung=tiny", "launcher=slurm", "trainer.run_name=lit"]
    )
    fields = [f for f in fields if f[0] not in refused]
    assert {"sweep.name", "eval.name", "eval.tasks"} <= refused and len(fields) >= 30, refused
    for key, kind in fields:  # as composed: the text itself, not what it would resolve to
        assert read(cfg, key, kind) == text, (key, read(cfg, key, kind))
    from training.config.compose import literal, load_saved

    saved = tmp_path / "config.yaml"
    saved.write_text(OmegaConf.to_yaml(cfg))  # as run_files and checkpoint save it
    trips = {
        "composed": cfg,
        "merged into the schema (trainer.with_run_name)": with_run_name(cfg),
        "to_yaml and create": OmegaConf.create(OmegaConf.to_yaml(cfg)),
        "saved and loaded": load_saved(saved),
        "resolved, then literal()": OmegaConf.create(
            literal(OmegaConf.to_container(cfg, resolve=True))
        ),
    }
    for how, c in trips.items():
        dumped = OmegaConf.to_yaml(c) + json.dumps(
            OmegaConf.to_container(c, resolve=True, enum_to_str=True)
        )
        assert SECRET not in dumped, how
        for key, kind in fields:
            assert read(c, key, kind) == text, (how, key, read(c, key, kind))
    assert flatten(OmegaConf.to_container(cfg, resolve=True))["tracker.project"] == text
    ATTEMPTS["carried"] += len(fields)
    with pytest.raises(
        ConfigError, match=r"trainer.run_name=.* cannot be a file name"
    ):  # it becomes a path
        compose(["rung=tiny", override("trainer.run_name", "str", payload)])
    ATTEMPTS["refused"] += len(refused) + 1


def test_literal_keeps_any_text_through_create_merge_and_yaml():
    import itertools

    from training.config.compose import literal

    parts = ["\\", "$", "{", "}", "${", "\\${", "a:"]
    texts = ["".join(t) for n in range(1, 4) for t in itertools.product(parts, repeat=n)]
    for s in texts + ["C:\\\\${x}\\", "${a}${b}\\${c}", "\\\\\\${x:${y}}"]:
        c = OmegaConf.create({"a": literal(s)})
        again = OmegaConf.merge(OmegaConf.create({"a": "x"}), OmegaConf.to_container(c))
        assert c.a == s and OmegaConf.create(OmegaConf.to_yaml(c)).a == s and again.a == s, repr(s)


def test_an_unescaped_reference_to_no_key_is_a_clear_error_naming_the_key(tmp_path):
    with pytest.raises(
        ConfigError, match=r"(?s)Interpolation key 'USD' not found.*tracker.project.*write \\\$\{"
    ):
        compose(["rung=tiny", 'tracker.project="cost${USD}"'])
    proc = ladder_cli("config", "rung=tiny", 'tracker.project="cost${USD}"', cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "tracker.project" in proc.stderr and "for a literal ${" in proc.stderr


def test_only_the_allowed_interpolations_resolve(secret_env):
    cfg = compose(
        [
            "rung=tiny",
            "recipe=grpo",
            "launcher=slurm",
            "launcher.env.NCCL_DEBUG=${oc.env:HOME}",
            "tracker.project='p-${rung.name}'",
        ]
    )
    assert cfg.launcher.env.NCCL_DEBUG == os.environ["HOME"] and cfg.tracker.project == "p-tiny"
    assert cfg.data.train_files[0].startswith(
        str(Path(__file__).resolve().parent.parent)
    )  # ${ladder_root:}
    assert (
        cfg.recipe.prompts_per_step == cfg.rung.rl_prompts_per_step
    )  # ${rung.rl_prompts_per_step}
    # a resolver registered in this process, but not on the allow-list, is refused all the same
    with pytest.raises(ConfigError, match="tracker.project uses the resolver ladder_test_leak"):
        compose(["rung=tiny", "tracker.project='p-${ladder_test_leak:}'"])


def test_a_saved_config_with_a_live_interpolation_is_refused_not_resolved(secret_env, tmp_path):
    from training.config.config_diff import saved_config

    cfg = compose(["rung=tiny"])
    text = OmegaConf.to_yaml(cfg).replace("project: ladder", "project: ${oc.env:WANDB_API_KEY}")
    assert "${oc.env:WANDB_API_KEY}" in text  # a hand-edited (or older) checkpoint config
    (tmp_path / "ladder_config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"holds interpolations \(tracker.project\)") as e:
        saved_config(tmp_path)
    assert SECRET not in str(e.value)


def test_the_configs_the_code_writes_and_reads_back_keep_a_literal(secret_env, tmp_path):
    """launch_config.yaml, the async evaluator's suite file, the eval suite beside training and the
    ledger's eval_json (promotion-report) each go through a dump and a load or merge."""
    from evals.async_eval import AsyncEvaluator
    from launch.commands.launch_cmd import prepare, write_launch_record
    from training.config.schema import EvalConfig
    from training.rl.generator import eval_beside_training

    text = "${oc.env:${oc.decode:WANDB_API_KEY}}"
    escaped = "\\${oc.env:\\${oc.decode:WANDB_API_KEY}}"
    _, [job] = prepare(
        [
            *FAST,
            f"trainer.run_root={tmp_path}",
            "trainer.run_name=lit",
            f'tracker.project="{escaped}"',
            f'eval.lm_eval.include_path="{escaped}"',
        ]
    )
    write_launch_record(job, "1", tmp_path / "s.sbatch", tmp_path / "s.out", None)
    assert (
        OmegaConf.load(job.run_dir / "launch_config.yaml").tracker.project == text
    )  # as a SLURM job reads it
    beside = eval_beside_training(job.cfg.eval)
    assert beside.lm_eval.include_path == text
    with AsyncEvaluator(beside) as ev:  # evals/runner.py merges its suite file into the schema
        suite = OmegaConf.merge(OmegaConf.structured(EvalConfig), OmegaConf.load(ev.suite_file))
        assert suite.lm_eval.include_path == text and SECRET not in ev.suite_file.read_text()
    from training.config.compose import literal

    as_json = json.loads(
        json.dumps(OmegaConf.to_container(job.cfg.eval, resolve=True, enum_to_str=True))
    )
    assert (
        OmegaConf.merge(OmegaConf.structured(EvalConfig), literal(as_json)).lm_eval.include_path
        == text
    )


def test_a_tiny_run_carries_literals_and_writes_no_secret_anywhere(secret_env, tmp_path):
    """The issue's `ladder train ... tracker.project="cost\\${USD}"` and a nested interpolation
    escaped in tracker.tags, a real run with W&B offline: every file under the run root is read."""
    from training.config.config_diff import check_resume_config, saved_config

    nested = "\\${oc.env:\\${oc.decode:WANDB_API_KEY}}"
    overrides = [
        *FAST,
        "tracker.mode=offline",
        "trainer.max_steps=2",
        "trainer.save_every=2",
        f"trainer.run_root={tmp_path}",
        "trainer.run_name=lit",
        'tracker.project="cost\\${USD}"',
        f'tracker.tags=["{nested}"]',
        f'+launcher.env.NCCL_X="{nested}"',
    ]
    result = train_in_process(overrides)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files) and result.checkpoints
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []
    run_cfg = OmegaConf.load(result.run_dir / "config.yaml")
    assert (
        run_cfg.tracker.project == "cost${USD}"
        and run_cfg.tracker.tags[0] == "${oc.env:${oc.decode:WANDB_API_KEY}}"
    )
    ckpt = Path(result.checkpoints[-1])
    assert saved_config(ckpt)["tracker.project"] == "cost${USD}"
    changes = check_resume_config(compose(overrides), ckpt, 2)  # what a resume compares: no change
    assert changes.math == [] and changes.harmless == []
    assert any(
        b"cost${USD}" in p.read_bytes() for p in files if "wandb" in p.parts
    )  # W&B has the text


# ---- 3. hydra.* overrides and secrets on the command line ---------------------------------
@pytest.mark.parametrize(
    "ov",
    [
        "hydra.job.name=x",
        "+hydra.searchpath=[file:///tmp]",
        "hydra/job_logging=disabled",
        "++hydra.run.dir=/tmp/x",
        "~hydra.job",
        "rung@hydra=tiny",
    ],
)
def test_hydra_overrides_are_refused_naming_the_key(ov):
    key = ov.lstrip("+~").partition("=")[0]
    with pytest.raises(
        ConfigError, match=re.escape(key) + ": Hydra's own settings are not part of ladder's config"
    ):
        compose(["rung=tiny", ov])
    ATTEMPTS["refused"] += 1


def test_a_secret_in_any_override_is_refused_even_one_the_config_ignores(secret_env):
    with pytest.raises(ConfigError) as e:
        compose(["rung=tiny", f"hydra.job.name={SECRET}"])
    assert "hydra.job.name: Hydra's own settings" in str(e.value)
    assert (
        "override 2 (hydra.job.name=...) holds the value of the environment variable WANDB_API_KEY"
        in str(e.value)
    )
    # a value the config does use: both the key and the override are named, the value never
    with pytest.raises(ConfigError) as e:
        compose(["rung=tiny", "launcher=slurm", "+launcher.env.NCCL_X=hf_planted_token_456"])
    assert "launcher.env.NCCL_X holds the value of the environment variable HF_TOKEN" in str(
        e.value
    )
    assert "override 3 (+launcher.env.NCCL_X=...) holds the value" in str(e.value)
    # Hydra cannot read it either: its message (which would quote the override) is not shown
    with pytest.raises(ConfigError) as e:
        compose(["rung=tiny", f"trainer.max_steps=x{SECRET}"])
    assert "override 2 (trainer.max_steps=...)" in str(e.value) and SECRET not in str(e.value)


def test_cli_refuses_hydra_and_secret_arguments_before_writing_anything(tmp_path):
    import subprocess
    import sys

    env_secret = "hf_cli_planted_token_789"
    env = {**os.environ, "HF_TOKEN": env_secret}
    exe = str(Path(sys.executable).parent / "ladder")
    train = (
        "train",
        *FAST,
        "trainer.max_steps=2",
        "tracker.mode=offline",
        f"trainer.run_root={tmp_path}/runs",
        f"hydra.job.name={env_secret}",
    )
    # an option's value is recorded too (the ledger keeps the reason): refused like an override
    launch = (
        "launch",
        "--dry-run",
        *FAST,
        f"trainer.run_root={tmp_path}/runs",
        "--override-budget",
        env_secret,
    )
    runs = {  # argv -> what the message says (arguments are counted from the verb, 1)
        train: f"argument {len(train)} (hydra.job.name=...) holds the value of the environment variable HF_TOKEN",
        launch: f"argument {len(launch)} holds the value of the environment variable HF_TOKEN",
        (
            "config",
            "rung=tiny",
            "hydra.job.name=x",
        ): "hydra.job.name: Hydra's own settings are not part of",
    }
    for argv, message in runs.items():
        proc = subprocess.run(
            [exe, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert message in proc.stderr and env_secret not in proc.stdout + proc.stderr, proc.stderr
        ATTEMPTS["refused"] += 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # not even the run root


def test_the_issues_dry_run_prints_the_literal_not_the_secret(tmp_path):
    env = {**os.environ, "WANDB_API_KEY": SECRET}
    import subprocess
    import sys

    exe = str(Path(sys.executable).parent / "ladder")
    proc = subprocess.run(
        [
            exe,
            "launch",
            "rung=tiny",
            "launcher=slurm",
            "--dry-run",
            '+launcher.env.NCCL_X="\\${oc.env:\\${oc.decode:WANDB_API_KEY}}"',
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert "export NCCL_X='${oc.env:${oc.decode:WANDB_API_KEY}}'" in proc.stdout
    ATTEMPTS["carried"] += 1
