"""The typed recipe: defaults in one place, unknown keys and bad values are one-line errors naming
the key and the file, --set overrides are validated, and the recipe is saved and read back."""

import dataclasses
import json

import pytest
from brainbarriers_training.cli import main
from brainbarriers_training.config import (
    ConfigError,
    load_config,
    load_recipe,
    read_recipe,
    save_recipe,
    stage_config,
)
from brainbarriers_training.recipe import Recipe
from training_helpers import run_training_cli


def test_paper_is_the_defaults_and_every_recipe_round_trips():
    paper = load_recipe("paper")
    assert dataclasses.replace(paper, description="") == Recipe()
    assert paper.stage("fine").optimizer.name == "sgd" and paper.train.deep_supervision_weights == (0.3, 0.3, 0.4)
    for name in ("paper", "smoke", "demo"):
        recipe = load_recipe(name)
        assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe, name


def test_stage_sections_override_train_settings():
    smoke = load_recipe("smoke")
    assert smoke.train.epochs == 8 and smoke.stage("coarse").epochs == 10 and smoke.stage("fine").epochs == 8
    coarse = stage_config(smoke, "coarse")
    assert coarse["optimizer"]["lr"] == 0.01 and coarse["architecture"] == "coarse-unet"
    assert stage_config(load_config("smoke"), "fine")["patch_size"]["falx"] == [24, 56, 16]
    demo = load_recipe("demo")
    assert demo.stage("coarse").augmentation.affine_probability == 0.5
    assert demo.stage("fine").augmentation.affine_probability == 0.3


@pytest.mark.parametrize("text,needle", [
    ('{"train": {"epochz": 3}}', "unknown key 'train.epochz' (did you mean 'train.epochs'?)"),
    ('{"fine": {"networks": {"q": {"architecture": "hmrnet-p"}}}}', "unknown key 'fine.networks.q'"),
    ('{"coarse": {"optimizer": {"lrr": 1}}}', "unknown key 'coarse.optimizer.lrr'"),
    ('{"train": {"epochs": "many"}}', "'train.epochs' must be an integer, not 'many'"),
    ('{"train": {"augmentation": {"flip_axes": ["XY"]}}}', "'train.augmentation.flip_axes[0]' must be"),
    ('{"fine": {"max_crop": [64, 64]}}', "'fine.max_crop' must be a list of 3 values (an integer each), not [64, 64]"),
    ('{"data": {"normalisation": {"pet": {}}}}', "unknown key 'data.normalisation.pet'"),
    ('{"fine": {"loss": {"name": "focal"}}}', "'fine.loss.name' must be 'dice_ce' or 'fn_dice_ce'"),
])
def test_bad_recipe_files_name_the_key_and_the_file(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_overrides_are_validated():
    assert load_recipe("smoke", ["train.epochs=2", "fine.margin=3"]).stage("fine").epochs == 2
    assert load_recipe("smoke", ["fine.margin=3"]).fine.margin == 3
    with pytest.raises(ConfigError, match=r"--set train\.epochz=2: unknown key 'train\.epochz'"):
        load_recipe("smoke", ["train.epochz=2"])
    with pytest.raises(ConfigError, match=r"'train\.amp' must be true or false"):
        load_recipe("smoke", ["train.amp=maybe"])
    assert load_recipe("demo", ["coarse.patch_size=[72,80,64]", "coarse.patch_epochs=50"]).coarse.patch_epochs == 50
    with pytest.raises(ConfigError, match=r"'coarse\.patch_epochs' .* needs 'coarse\.patch_size'"):
        load_recipe("demo", ["coarse.patch_epochs=50"])
    with pytest.raises(ConfigError, match=r"'coarse\.patch_epochs' must be a count"):
        load_recipe("demo", ["coarse.patch_size=[72,80,64]", "coarse.patch_epochs=-1"])


def test_saved_recipe_reads_back(tmp_path):
    recipe = load_recipe("demo", ["seed=5"])
    path = save_recipe(recipe, tmp_path / "run")
    assert path.name == "recipe.json" and read_recipe(tmp_path / "run") == recipe
    with pytest.raises(FileNotFoundError):
        read_recipe(tmp_path)


def test_cli_errors_are_one_line_and_recipe_prints_the_complete_recipe(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"trian": {}}')
    r = run_training_cli(["train-coarse", "--config", str(bad), "--cache", str(tmp_path), "--workdir", str(tmp_path)])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {bad}: unknown key 'trian' (did you mean 'train'?)"]
    assert main(["recipe", "--config", "smoke", "--set", "train.epochs=3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["epochs"] == 3 and printed["data"]["normalisation"]["ct"] == {"clip": [-100.0, 200.0]}


def _fake_run(tmp_path, recipe):
    """A workdir as training leaves it (recipe.json, network.json per network), without weights."""
    from brainbarriers.structures import fine_target
    from brainbarriers_training.engine import SPEC, network_spec

    work = tmp_path / "work"
    save_recipe(recipe, work)
    for name in ("coarse", "falx", "ventricles"):
        folder = work / "coarse" if name == "coarse" else work / "fine" / name
        folder.mkdir(parents=True)
        save_recipe(recipe, folder)
        spec = network_spec(recipe, None if name == "coarse" else fine_target(name))
        (folder / SPEC).write_text(json.dumps(spec))
    return work


def test_export_manifest_comes_from_the_saved_recipe_and_refuses_contradictions(tmp_path):
    from brainbarriers_training.export import manifest_for_run

    recipe = load_recipe("demo")
    work = _fake_run(tmp_path, recipe)
    manifest = manifest_for_run(work, ["falx", "ventricles"])
    assert manifest["id"] == "brainbarriers-demo" and manifest["spacing"] == [2.4, 2.4, 2.4]
    assert manifest["structures"] == ["falx", "ventricles"] and len(manifest["inputs"]["supported_subsets"]) == 7
    assert manifest["networks"]["fine"]["falx"]["options"]["mr_widths"] == [8, 16, 16, 32]
    assert manifest["normalisation"]["ct"] == {"clip": [-100.0, 200.0]}
    # a network trained with other widths than the run's recipe says
    spec = json.loads((work / "fine" / "falx" / "network.json").read_text())
    spec["options"]["hr_width"] = 8
    (work / "fine" / "falx" / "network.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"fine/falx does not match the run's recipe: options"):
        manifest_for_run(work, ["falx", "ventricles"])
    # a network prepared at another spacing
    work = _fake_run(tmp_path / "b", recipe)
    save_recipe(load_recipe("demo", ["data.spacing=[1.2, 1.2, 1.2]"]), work / "fine" / "ventricles")
    with pytest.raises(ValueError, match="data settings"):
        manifest_for_run(work, ["falx", "ventricles"])
    # the coarse network retrained at another coarse spacing: the fine networks never saw that grid
    work = _fake_run(tmp_path / "c", recipe)
    coarser = load_recipe("demo", ["data.coarse_spacing=[4.8, 4.8, 4.8]"])
    save_recipe(coarser, work)
    save_recipe(coarser, work / "coarse")
    assert manifest_for_run(work, ["falx", "ventricles"])["networks"]["coarse"]["spacing"] == [4.8, 4.8, 4.8]
    save_recipe(recipe, work / "coarse")  # but the coarse network must match the run's coarse grid
    with pytest.raises(ValueError, match="coarse does not match the run's recipe: data settings"):
        manifest_for_run(work, ["falx", "ventricles"])
