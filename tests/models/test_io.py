"""The saved-model contract: one format, every fitted attribute back, bit-identical
predictions, metadata-driven loading, clear refusals and atomic saves."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bpmf
from bpmf import ModelFileError
from bpmf.cli import main
from bpmf.datasets import Ratings, make_synthetic_ratings
from bpmf.models import BPMF, FILE_EXTENSION, FORMAT_VERSION, PMF, load, read_model_info
from bpmf.models._io import ModelIO
from bpmf.registry import MODELS, model_class

REPO = Path(__file__).resolve().parents[2]

#: Fast settings for every model class that can be saved (a new one must be added here).
SETTINGS = {
    "PMF": {"n_factors": 2, "random_state": 3, "progressbar": False},
    "BPMF": {
        "n_factors": 2,
        "method": "gibbs",
        "sampler_config": {"draws": 40, "tune": 20, "chains": 2, "log_likelihood": True,
                           "posterior_predictive": True},
        "random_state": 4,
        "progressbar": False,
    },
}
#: BPMF with implicit feedback (posterior Y, Y_sd, offset_U) and further pairs of N(u)
SVDPP = {**SETTINGS["BPMF"], "model_config": {
    "implicit": True, "implicit_pairs": {"user": ["u1", "u2"], "item": [3, 4]}}}
SAVABLE = sorted({model_class(name) for name in MODELS if hasattr(model_class(name), "save")},
                 key=lambda cls: cls.__name__)


@pytest.fixture(scope="module")
def train():
    ratings, _ = make_synthetic_ratings(
        n_users=30, n_items=20, n_factors=2, density=0.4, noise_sd=0.5, random_state=2
    )
    values = np.clip(np.round(ratings.values), 1, 5)  # a 1-5 scale, so that clipping applies
    return Ratings([f"u{u}" for u in ratings.users], ratings.items, values, scale=(1.0, 5.0))


@pytest.fixture(scope="module")
def fitted(train):
    models = {cls.__name__: cls(**SETTINGS[cls.__name__]).fit(train) for cls in SAVABLE}
    return {**models, "BPMF-svdpp": BPMF(**SVDPP).fit(train)}


@pytest.fixture()
def pairs(train):
    frame = train.to_frame().iloc[:25]
    return pd.concat([frame, pd.DataFrame({"user": ["u-new"], "item": [frame["item"].iloc[0]]})])


def _fitted_attributes(model):
    return {k: v for k, v in vars(model).items() if k.endswith("_") and not k.startswith("_")}


def _assert_same(a, b, where):
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, xr.DataTree):
        xr.testing.assert_identical(a, b)
        for node in a.subtree:
            other = b[node.path] if node.path != "/" else b
            for name, var in node.variables.items():
                assert var.dtype == other.variables[name].dtype, f"{where}{node.path}/{name}"
    elif isinstance(a, pd.Index):
        assert a.equals(b) and a.dtype == b.dtype and a.name == b.name, where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


def test_every_savable_model_is_covered():
    assert {cls.__name__ for cls in SAVABLE} == set(SETTINGS)


@pytest.mark.parametrize("name", [*sorted(SETTINGS), "BPMF-svdpp"])
def test_round_trip_restores_every_fitted_attribute(name, fitted, pairs, tmp_path):
    model = fitted[name]
    path = model.save(tmp_path / f"model{FILE_EXTENSION}")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left
    loaded = type(model).load(path)
    before, after = _fitted_attributes(model), _fitted_attributes(loaded)
    assert sorted(after) == sorted(before)
    for attribute, value in before.items():
        _assert_same(value, after[attribute], attribute)
    assert loaded.get_params() == model.get_params()
    # bit-identical predictions, intervals, predictive draws and recommendations
    with pytest.warns(UserWarning, match="unseen"):
        expected = model.predict(pairs)
    with pytest.warns(UserWarning, match="unseen"):
        np.testing.assert_array_equal(loaded.predict(pairs), expected)
    known = pairs.iloc[:-1]
    pd.testing.assert_frame_equal(loaded.predict_interval(known), model.predict_interval(known))
    xr.testing.assert_identical(loaded.predict_posterior(known, random_state=1),
                                model.predict_posterior(known, random_state=1))
    pd.testing.assert_frame_equal(loaded.recommend("u3", k=5), model.recommend("u3", k=5))
    # and saving the loaded model writes the same content again
    again = loaded.save(tmp_path / "again.bpmf")
    assert type(load(again)) is type(model)


def test_ordinal_round_trip(train, pairs, tmp_path):
    settings = {**SETTINGS["BPMF"], "model_config": {"likelihood": "ordinal"}}
    model = BPMF(**settings).fit(train)
    loaded = BPMF.load(model.save(tmp_path / "ordinal.bpmf"))
    before, after = _fitted_attributes(model), _fitted_attributes(loaded)
    assert sorted(after) == sorted(before)
    for attribute, value in before.items():
        _assert_same(value, after[attribute], attribute)
    assert loaded.get_params() == model.get_params()
    known = pairs.iloc[:-1]
    pd.testing.assert_frame_equal(loaded.predict_proba(known), model.predict_proba(known))
    np.testing.assert_array_equal(loaded.predict(known), model.predict(known))
    pd.testing.assert_frame_equal(loaded.predict_interval(known), model.predict_interval(known))
    pd.testing.assert_frame_equal(loaded.recommend("u3", k=5), model.recommend("u3", k=5))
    # whole ratings in the predictive draws of both
    draws = loaded.predict_posterior(known, random_state=1)
    xr.testing.assert_identical(draws, model.predict_posterior(known, random_state=1))
    assert set(np.unique(draws.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_implicit_pairs_given_as_a_frame_are_saved_as_their_ids(train, tmp_path):
    pairs = train.to_frame().iloc[:3]
    model = BPMF(**{**SVDPP, "model_config": {"implicit": True, "implicit_pairs": pairs},
                    "sampler_config": {"draws": 3, "tune": 2, "chains": 1}}).fit(train)
    loaded = load(model.save(tmp_path / "svdpp.bpmf"))
    saved = loaded.get_params()["model_config"]["implicit_pairs"]
    assert saved == {"user": pairs["user"].tolist(), "item": pairs["item"].tolist()}
    known = train.to_frame().iloc[:10]
    np.testing.assert_array_equal(loaded.predict(known), model.predict(known))


@pytest.mark.slow
def test_nuts_round_trip_restores_every_fitted_attribute(train, tmp_path):
    model = BPMF(2, sampler_config={"draws": 30, "tune": 30, "chains": 2}, random_state=0,
                 progressbar=False).fit(train)
    loaded = BPMF.load(model.save(tmp_path / "nuts.bpmf"))
    before, after = _fitted_attributes(model), _fitted_attributes(loaded)
    assert sorted(after) == sorted(before)
    for attribute, value in before.items():
        _assert_same(value, after[attribute], attribute)
    known = train.to_frame().iloc[:20]
    np.testing.assert_array_equal(loaded.predict(known), model.predict(known))


def test_file_records_versions_and_class(fitted, tmp_path):
    path = fitted["BPMF"].save(tmp_path / "m.bpmf")
    reference = tmp_path / "reference"
    reference.write_bytes(b"")
    assert path.stat().st_mode == reference.stat().st_mode  # the usual permissions
    info = read_model_info(path)
    assert info == {
        "model": "BPMF",
        "module": type(fitted["BPMF"]).__module__,
        "bpmf_version": bpmf.__version__,
        "format_version": FORMAT_VERSION,
    }
    with zipfile.ZipFile(path) as archive:  # a zip of a zarr store, not compressed
        attrs = json.loads(archive.read("zarr.json"))["attributes"]
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    assert attrs["bpmf_format"] == "bpmf-model"
    assert json.loads(attrs["bpmf_params"])["method"] == "gibbs"


def test_load_picks_the_class_from_the_file(fitted, tmp_path):
    for name, model in fitted.items():
        path = model.save(tmp_path / f"{name}.bpmf")
        assert type(bpmf.load(path)) is type(model)
        assert type(load(str(path))) is type(model)


def test_load_refuses_another_class(fitted, tmp_path):
    path = fitted["PMF"].save(tmp_path / "pmf.bpmf")
    with pytest.raises(ModelFileError, match=r"holds a PMF model, not a BPMF.*bpmf\.load"):
        BPMF.load(path)


def _rewrite_attrs(source, target, **changes):
    """Copy a saved model, changing root attributes of its zarr store."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "zarr.json":
                root = json.loads(data)
                root["attributes"].update(changes)
                data = json.dumps(root)
            dst.writestr(item, data)
    return target


def test_load_refuses_unknown_newer_and_foreign_files(fitted, tmp_path):
    path = fitted["PMF"].save(tmp_path / "pmf.bpmf")
    newer = _rewrite_attrs(path, tmp_path / "newer.bpmf", bpmf_format_version=FORMAT_VERSION + 1,
                           bpmf_version="99.0")
    with pytest.raises(ModelFileError, match=r"bpmf 99\.0 .*newer.*upgrade bpmf"):
        bpmf.load(newer)
    with pytest.raises(ModelFileError, match="newer"):
        PMF.load(newer)
    unknown = _rewrite_attrs(path, tmp_path / "unknown.bpmf", bpmf_format_version="two")
    with pytest.raises(ModelFileError, match="unknown model-file format"):
        bpmf.load(unknown)
    untagged = _rewrite_attrs(path, tmp_path / "untagged.bpmf", bpmf_format="netcdf")
    with pytest.raises(ModelFileError, match="not a bpmf model file"):
        bpmf.load(untagged)
    alien = _rewrite_attrs(path, tmp_path / "alien.bpmf", bpmf_model="Alien",
                           bpmf_model_module="no_such_package.models")
    with pytest.raises(ModelFileError, match="Alien model.*no such model class"):
        bpmf.load(alien)
    garbage = tmp_path / "garbage.bpmf"
    garbage.write_text("not a model")
    with pytest.raises(ModelFileError, match="not a zip archive"):
        bpmf.load(garbage)
    truncated = tmp_path / "truncated.bpmf"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError):
        bpmf.load(truncated)
    with pytest.raises(FileNotFoundError):
        bpmf.load(tmp_path / "missing.bpmf")


def test_format1_files_still_load():
    """Files written by bpmf 0.1.0 (format 1) load and predict what they predicted then."""
    data = Path(__file__).parent / "data"
    expected = json.loads((data / "format1-predictions.json").read_text())
    for name, cls in (("pmf", PMF), ("bpmf", BPMF)):
        path = data / f"{name}-format1.bpmf"
        assert read_model_info(path)["format_version"] == 1
        model = bpmf.load(path)
        assert type(model) is cls and cls.load(path).get_params() == model.get_params()
        pairs = pd.DataFrame({"user": expected[name]["users"], "item": expected[name]["items"]})
        # the predictions were computed then by another summation order (numpy's einsum, now a
        # compiled loop): equal to rounding, and every stored draw is read back exactly
        np.testing.assert_allclose(model.predict(pairs), expected[name]["predict"], rtol=1e-13)
        assert list(model.user_index_[:3]) == ["u0", "u1", "u10"] and model.scale_ == (1.0, 5.0)


def test_load_finds_a_class_that_moved_or_shares_its_name(fitted, tmp_path):
    path = fitted["PMF"].save(tmp_path / "pmf.bpmf")
    moved = _rewrite_attrs(path, tmp_path / "moved.bpmf", bpmf_model_module="bpmf.old.place")
    assert type(bpmf.load(moved)) is PMF

    type("PMF", (ModelIO,), {})  # a user's class of the same name, defined elsewhere
    assert type(bpmf.load(path)) is type(fitted["PMF"])  # the file's own module wins
    assert type(bpmf.load(moved)) is type(fitted["PMF"])  # then bpmf's class


def test_subclasses_save_their_own_state(train, tmp_path):
    class CountingBPMF(BPMF):
        """A user subclass with fitted state of its own, saved by the default hooks."""

        def fit(self, train):
            super().fit(train)
            self.counts_ = {"ratings": np.int64(train.n_ratings), "per_user": np.arange(3.0),
                            "label": ("a", None, float("nan")), "ids": np.array(["x", "yz"])}
            return self

    settings = {**SETTINGS["BPMF"], "sampler_config": {"draws": 5, "tune": 5, "chains": 1}}
    model = CountingBPMF(**settings).fit(train)
    loaded = bpmf.load(model.save(tmp_path / "counting.bpmf"))
    assert type(loaded) is CountingBPMF
    _assert_same(model.counts_, loaded.counts_, "counts_")

    model.handle_ = object()  # a fitted attribute the format cannot hold
    with pytest.raises(TypeError, match="handle_"):
        model.save(tmp_path / "bad.bpmf")
    assert not (tmp_path / "bad.bpmf").exists()


# ---------------------------------------------------------------------- atomic saves
def test_failed_save_leaves_the_earlier_file_loadable(fitted, monkeypatch, tmp_path):
    path = fitted["PMF"].save(tmp_path / "model.bpmf")
    before = path.read_bytes()
    written = []
    original = zipfile.ZipFile.write

    def write_then_fail(self, *args, **kwargs):
        if written:
            raise OSError("disk full")
        written.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "write", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        fitted["BPMF"].save(path)
    monkeypatch.undo()
    assert written  # the failure came half-way through writing the archive
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.bpmf"]
    assert type(bpmf.load(path)) is PMF


_KILLED_SAVE = textwrap.dedent(
    """
    import sys, time, zipfile
    import bpmf
    model = bpmf.load(sys.argv[1])
    original = zipfile.ZipFile.write
    count = [0]
    def slow_write(self, *args, **kwargs):
        count[0] += 1
        if count[0] == 3:
            print("writing", flush=True)
            time.sleep(60)
        return original(self, *args, **kwargs)
    zipfile.ZipFile.write = slow_write
    model.save(sys.argv[1])
    """
)


def test_killed_save_leaves_the_earlier_file_loadable(fitted, tmp_path):
    path = fitted["PMF"].save(tmp_path / "model.bpmf")
    before = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    with subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, str(path)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            line = process.stdout.readline()
            assert line.strip() == "writing", process.stderr.read()
            # half-way: the partial archive sits next to the target under a hidden name
            leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.bpmf"]
            assert leftovers and all(n.startswith(".model.bpmf.") for n in leftovers)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    loaded = bpmf.load(path)
    np.testing.assert_array_equal(loaded.map_["U"], fitted["PMF"].map_["U"])


# ---------------------------------------------------------------------- the command line
def test_cli_loads_any_class_from_its_metadata(fitted, train, tmp_path, capsys):
    pairs_csv = tmp_path / "pairs.csv"
    train.to_frame().iloc[:5][["user", "item"]].to_csv(pairs_csv, index=False)
    for name, model in fitted.items():
        path = model.save(tmp_path / f"{name}.bpmf")
        out = tmp_path / f"{name}.csv"
        assert main(["predict", "--model", str(path), "--pairs", str(pairs_csv),
                     "--out", str(out), "--quiet"]) == 0
        predicted = pd.read_csv(out)
        np.testing.assert_allclose(predicted["mean"], model.predict(train.to_frame().iloc[:5]))
    capsys.readouterr()
    newer = _rewrite_attrs(tmp_path / "PMF.bpmf", tmp_path / "newer.bpmf",
                           bpmf_format_version=FORMAT_VERSION + 1)
    assert main(["predict", "--model", str(newer), "--pairs", str(pairs_csv)]) == 1
    assert "upgrade bpmf" in capsys.readouterr().err


def test_a_file_from_before_the_correlated_default_still_folds_in(train, tmp_path):
    """A file written when independent biases were the default has no correlated_biases key
    (the default now resolves to True) and no bias-factor covariances: fold_in follows its
    draws, independent biases, instead of asking for a refit."""
    settings = {**SETTINGS["BPMF"], "model_config": {"correlated_biases": False}}
    independent = BPMF(**settings).fit(train)
    path = independent.save(tmp_path / "independent.bpmf")
    params = {**independent.get_params(), "model_config": None}  # as an older bpmf wrote it
    old = bpmf.load(_rewrite_attrs(path, tmp_path / "old.bpmf", bpmf_params=json.dumps(params)))
    assert old.model_config is None
    assert "user_bias_factor_cov" not in old.idata_["posterior"].data_vars
    given = train.to_frame().iloc[:3].assign(user="u-new")
    folded = old.fold_in(given)
    assert "u-new" in folded.user_index_
    np.testing.assert_allclose(folded.predict(given), independent.fold_in(given).predict(given))
