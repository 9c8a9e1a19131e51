"""BPMF with side features: the cold start, bad feature tables, save/load, and the joint
NUTS graph against the Gibbs sampler."""

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from fold_in_check import assert_standard_normal, block_precision, standardised_rows

from bpmf import DataError
from bpmf.datasets import FeatureEncoder, Ratings
from bpmf.models import BPMF

GIBBS = {"draws": 60, "tune": 40, "chains": 2}


def _simulate(seed=0, n_users=60, n_items=40, density=0.3):
    """Ratings from the model with user features (a number and a category) and item
    features, plus feature rows for one user and one item without ratings."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n_users)
    group = np.where(rng.random(n_users) < 0.5, "a", "b")
    y = rng.standard_normal(n_items)
    U = np.column_stack([x, group == "a"]) * 0.8 + 0.4 * rng.standard_normal((n_users, 2))
    V = np.column_stack([y, -y]) * 0.8 + 0.4 * rng.standard_normal((n_items, 2))
    ub = 0.5 * x + 0.2 * rng.standard_normal(n_users)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    values = (3.0 + ub[users] + np.einsum("nk,nk->n", U[users], V[items])
              + 0.5 * rng.standard_normal(len(users)))
    user_ids = np.array([f"u{k}" for k in range(n_users)])
    train = Ratings(user_ids[users], items, values, scale=None)
    user_table = pd.DataFrame({"x": x, "group": group}, index=user_ids)
    user_table.loc["newbie"] = [1.5, "a"]
    item_table = pd.DataFrame({"y": y}, index=np.arange(n_items))
    item_table.loc[n_items] = [-1.0]
    return train, user_table, item_table


@pytest.fixture(scope="module")
def data():
    return _simulate()


@pytest.fixture(scope="module")
def fitted(data):
    train, user_table, item_table = data
    config = {"user_features": user_table, "item_features": item_table}
    return BPMF(2, model_config=config, sampler_config=GIBBS, random_state=1,
                progressbar=False).fit(train)


def _posterior_mean_by_hand(model, user_row, item_code):
    """E[mu + x^T beta + c_i + (B^T x) . V_i] over the draws, for a user without ratings."""
    post = model.idata_["posterior"].ds
    stack = {n: post[n].values.reshape(-1, *post[n].shape[2:])
             for n in ("mu", "B_U", "user_bias_link", "item_bias", "V", "mu_U")}
    factors = stack["mu_U"] + np.einsum("f,sfk->sk", user_row, stack["B_U"])
    expected = (stack["mu"] + stack["user_bias_link"] @ user_row
                + stack["item_bias"][:, item_code]
                + np.einsum("sk,sk->s", factors, stack["V"][:, item_code]))
    return expected.mean()


def test_posterior_holds_the_links_with_feature_names(fitted, data):
    _, user_table, item_table = data
    post = fitted.idata_["posterior"].ds
    assert post["B_U"].dims == ("chain", "draw", "user_feature", "factor")
    names = FeatureEncoder().fit(user_table).feature_names_
    assert list(post["user_feature"].values) == names == ["x", "group=a", "group=b"]
    assert post["item_bias_link"].shape == (2, 60, 1)
    assert (post["link_precision_U"].values > 0).all()


def test_cold_start_user_is_predicted_from_its_features(fitted, data):
    _, user_table, _ = data
    pairs = pd.DataFrame({"user": ["newbie", "nobody"], "item": [3, 3]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predicted = fitted.predict(pairs, clip=False)
    # only the user without a feature row is reported as unseen
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "1 pair(s) with a user" in messages[0]
    row = FeatureEncoder().fit_transform(user_table)[-1]
    assert predicted[0] == pytest.approx(_posterior_mean_by_hand(fitted, row, 3), abs=1e-10)
    # with zero features the link adds nothing: the population level
    assert predicted[1] == pytest.approx(_posterior_mean_by_hand(fitted, 0 * row, 3), abs=1e-10)
    interval = fitted.predict_interval(pairs, clip=False, on_unseen="ignore")
    np.testing.assert_allclose(interval["mean"], predicted)
    assert (interval["upper"] - interval["lower"] > 0).all()
    top = fitted.recommend("newbie", k=3)
    assert len(top) == 3


def test_cold_start_item_and_draws_of_the_new_rows(fitted):
    pairs = pd.DataFrame({"user": ["u0", "u0"], "item": [40, 0]})
    draws = fitted.predict_posterior(pairs, kind="expected", random_state=0, on_unseen="raise")
    assert draws.shape == (2, 60, 2)
    # a new item's row is drawn around its link mean: more spread than a fitted item's mean
    assert float(draws.isel(pair=0).std()) > 0


def test_missing_rows_raise_unless_zero_features(data):
    train, user_table, item_table = data
    partial = user_table.drop(index=["u1", "u2"])
    model = BPMF(2, model_config={"user_features": partial}, sampler_config=GIBBS,
                 progressbar=False)
    with pytest.raises(DataError, match=r"no row for 2 user id\(s\).*missing_features") as info:
        model.fit(train)
    assert "\n" not in str(info.value)
    zero = BPMF(2, model_config={"user_features": partial, "missing_features": "zero"},
                sampler_config={"draws": 5, "tune": 5, "chains": 1}, progressbar=False,
                random_state=0).fit(train)
    assert zero.features_["user"]["matrix"].shape == (len(partial), 3)


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ({"user_features": np.ones((3, 2))}, DataError, "DataFrame indexed by user id"),
        ({"user_features": pd.DataFrame({"x": [1.0]}, index=[1.5])}, DataError,
         "integers or strings"),
        ({"item_features": pd.DataFrame({"y": [1.0, 2.0]}, index=[0, 0])}, DataError,
         "more than one row"),
        ({"missing_features": "drop"}, ValueError, "missing_features"),
        ({"link_precision_rate": -1.0}, ValueError, "link_precision_rate"),
    ],
)
def test_bad_feature_settings_are_refused(data, config, error, match):
    train = data[0]
    with pytest.raises(error, match=match):
        BPMF(2, model_config=config, sampler_config=GIBBS, progressbar=False).fit(train)


def test_correlated_biases_are_refused(data):
    train, user_table, _ = data
    with pytest.raises(ValueError, match="correlated_biases"):
        BPMF(2, model_config={"user_features": user_table, "correlated_biases": True}).fit(train)


def test_fold_in_draws_a_new_user_around_its_link_mean(fitted):
    """A folded-in user with a feature row has, per draw, the exact conditional whose prior
    mean is its link mean ``(mu_U + B_U^T x, beta_U^T x)``; an id without a row is refused."""
    items = np.arange(6)
    targets = np.array([3.0, 4.5, 2.0, 5.0, 3.5, 1.5])
    new = pd.DataFrame({"user": "newbie", "item": items, "rating": targets})
    folded = fitted.fold_in(new)
    flat = {name: values.reshape(-1, *values.shape[2:]) for name, values in (
        (n, fitted.idata_["posterior"][n].values)
        for n in ("mu", "sigma", "mu_U", "B_U", "user_bias_link", "Sigma_U", "user_bias_sd",
                  "V", "item_bias"))}
    state = fitted.features_["user"]
    x = state["matrix"][state["ids"].get_loc("newbie")]
    prior_mean = np.column_stack([flat["mu_U"] + np.einsum("f,sfk->sk", x, flat["B_U"]),
                                  flat["user_bias_link"] @ x])
    code = folded.user_index_.get_loc("newbie")
    rows = np.column_stack([folded.idata_["posterior"][name].values.reshape(
        len(prior_mean), *folded.idata_["posterior"][name].shape[2:])[:, code]
        for name in ("U", "user_bias")])
    z = standardised_rows(rows, prior_mean,
                          block_precision(flat["Sigma_U"], flat["user_bias_sd"]),
                          flat["V"][:, items], flat["item_bias"][:, items], targets,
                          flat["mu"], flat["sigma"])
    assert_standard_normal(z, cov_atol=5 * np.sqrt(2 / len(z)))
    # with the prior mean set to mu_U alone (no link), the same rows are off
    off = standardised_rows(rows, np.zeros_like(prior_mean),
                            block_precision(flat["Sigma_U"], flat["user_bias_sd"]),
                            flat["V"][:, items], flat["item_bias"][:, items], targets,
                            flat["mu"], flat["sigma"])
    assert np.abs(off.mean(0)).max() > 8 / np.sqrt(len(z))
    with pytest.raises(DataError, match="no row for 1 new user"):
        fitted.fold_in(pd.DataFrame({"user": ["zz"], "item": [0], "rating": [3.0]}))


def test_save_load_round_trip_keeps_the_tables_and_the_cold_start(fitted, data, tmp_path):
    _, user_table, item_table = data
    path = fitted.save(tmp_path / "model.bpmf")
    loaded = BPMF.load(path)
    pairs = pd.DataFrame({"user": ["newbie", "u0", "u5"], "item": [40, 2, 3]})
    np.testing.assert_array_equal(loaded.predict(pairs), fitted.predict(pairs))
    pd.testing.assert_frame_equal(loaded.model_config["user_features"], user_table,
                                  check_dtype=False)
    pd.testing.assert_frame_equal(loaded.model_config["item_features"], item_table,
                                  check_dtype=False)
    assert list(loaded.idata_["posterior"]["user_feature"].values) == ["x", "group=a", "group=b"]
    # the loaded model refits with the restored tables
    assert loaded._model_config()["user_features"] is not None
    # and folds in a new user with a feature row as the fitted one does
    new = pd.DataFrame({"user": "newbie", "item": [0, 1, 2], "rating": [3.0, 4.0, 2.5]})
    np.testing.assert_array_equal(loaded.fold_in(new).predict(pairs),
                                  fitted.fold_in(new).predict(pairs))


@pytest.mark.slow
def test_nuts_and_gibbs_agree_on_the_links():
    """Joint NUTS over the PyMC graph and the Gibbs sampler sample the same posterior: the
    identified link quantities agree within Monte Carlo error."""
    train, user_table, item_table = _simulate(seed=3, n_users=50, n_items=30, density=0.35)
    config = {"user_features": user_table, "item_features": item_table}
    gibbs = BPMF(2, model_config=config, random_state=0, progressbar=False,
                 sampler_config={"draws": 2000, "tune": 300, "chains": 2}).fit(train)
    nuts = BPMF(2, model_config=config, method="nuts", random_state=0, progressbar=False,
                sampler_config={"draws": 1000, "tune": 500, "chains": 2}).fit(train)

    def identified(model):
        post = model.idata_["posterior"].ds
        product = np.einsum("cdfk,cdgk->cdfg", post["B_U"].values, post["B_V"].values)
        return xr.Dataset({
            "user_bias_link": post["user_bias_link"].drop_vars("user_feature"),
            "link_product": (("chain", "draw", "f", "g"), product),
            "sigma": post["sigma"],
        })

    ours, theirs = identified(gibbs), identified(nuts)
    for name in ours.data_vars:
        se = np.sqrt(az.mcse(ours)[name].values ** 2 + az.mcse(theirs)[name].values ** 2)
        z = (ours[name].mean(("chain", "draw")).values
             - theirs[name].mean(("chain", "draw")).values) / se
        assert np.abs(z).max() < 4, (name, z)


def test_nuts_graph_has_the_links(data):
    train, user_table, item_table = data
    model = BPMF(2, model_config={"user_features": user_table, "item_features": item_table})
    graph = model.build_model(train)
    for name in ("B_U", "B_V", "user_bias_link", "item_bias_link", "link_precision_U"):
        assert name in graph.named_vars
    assert graph.named_vars_to_dims["B_U"] == ("user_feature", "factor")
    assert np.isfinite(graph.compile_logp()(graph.initial_point()))


def test_registered_model_uses_the_movielens_tables(movielens_home, monkeypatch):
    from bpmf.datasets import load_movielens
    from bpmf.models._features import encode_features
    from bpmf.registry import make_model

    monkeypatch.setenv("BPMF_DATA", str(movielens_home))
    model = make_model("bpmf-features", preset="quick")
    config = model._model_config()
    assert config["user_features"] == config["item_features"] == "ml-100k"
    ratings = load_movielens("ml-100k", data_home=movielens_home, download=False)
    train = ratings.subset(np.arange(ratings.n_ratings) < 2000)
    designs, state = encode_features(train, config)
    assert designs["U"].shape[0] == train.n_users and designs["V"].shape[0] == train.n_items
    assert len(state["user"]["ids"]) == 943 and len(state["item"]["ids"]) == 1682


def test_fold_in_takes_feature_rows_of_new_ids(fitted, data, tmp_path):
    """A new id whose feature row comes with the fold-in gets the same draws as an id whose
    identical row was in the fitted table; its row joins the model's tables (and is saved),
    so an id given with a row but no ratings is predicted from its features."""
    _, user_table, _ = data
    ratings = {"item": [0, 1, 2, 5], "rating": [3.0, 4.5, 2.0, 4.0]}
    from_table = fitted.fold_in(pd.DataFrame({"user": "newbie", **ratings}), random_state=3)
    row = user_table.loc[["newbie"]].rename(index={"newbie": "late"})
    given = fitted.fold_in(pd.DataFrame({"user": "late", **ratings}), user_features=row,
                           random_state=3)
    pairs = pd.DataFrame({"user": ["newbie"] * 3, "item": [3, 7, 11]})
    np.testing.assert_array_equal(
        given.predict(pairs.assign(user="late")), from_table.predict(pairs))
    assert "late" in given.model_config["user_features"].index
    rows = pd.concat([row, row.rename(index={"late": "solo"})])
    with_solo = fitted.fold_in(pd.DataFrame({"user": "late", **ratings}), user_features=rows,
                               random_state=3)
    cold = with_solo.predict(pairs.assign(user="solo"))  # no ratings: its link mean
    np.testing.assert_array_equal(cold, fitted.predict(pairs))  # newbie has the same row
    loaded = BPMF.load(with_solo.save(tmp_path / "folded.bpmf"))
    np.testing.assert_array_equal(loaded.predict(pairs.assign(user="solo")), cold)
    assert "late" not in fitted.model_config["user_features"].index  # the fit is untouched
    with pytest.raises(DataError, match="already has"):
        fitted.fold_in(pd.DataFrame({"user": "newbie", **ratings}),
                       user_features=user_table.loc[["newbie"]])
    bad = row.assign(group="c")
    with pytest.raises(DataError, match="not seen"):
        fitted.fold_in(pd.DataFrame({"user": "late", **ratings}), user_features=bad)


def test_command_line_folds_in_new_users_with_their_feature_rows(fitted, data, tmp_path,
                                                                 capsys):
    from bpmf.cli import main

    _, user_table, _ = data
    fitted.save(tmp_path / "model.bpmf")
    ratings = pd.DataFrame({"user": "late", "item": [0, 1, 2, 5], "rating": [3.0, 4.5, 2.0, 4.0]})
    ratings.to_csv(tmp_path / "given.csv", index=False)
    row = user_table.loc[["newbie"]].rename(index={"newbie": "late"})
    row.rename_axis("user").reset_index().to_csv(tmp_path / "rows.csv", index=False)
    pairs = pd.DataFrame({"user": ["late", "u3"], "item": [7, 7]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    argv = ["predict", "--model", str(tmp_path / "model.bpmf"), "--pairs",
            str(tmp_path / "pairs.csv"), "--given", str(tmp_path / "given.csv"),
            "--given-user-features", str(tmp_path / "rows.csv"), "--out",
            str(tmp_path / "out.csv"), "--quiet"]
    assert main(argv) == 0
    expected = fitted.fold_in(ratings, user_features=row).predict(pairs)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "out.csv")["mean"], expected,
                               rtol=1e-10)
    without = [a for a in argv if a not in ("--given-user-features", str(tmp_path / "rows.csv"))]
    assert main(without) == 1
    err = capsys.readouterr().err
    assert "--given-user-features" in err and len(err.strip().splitlines()) == 1
