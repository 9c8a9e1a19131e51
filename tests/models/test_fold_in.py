"""Fold-in of new users and items: the exact conditional per draw, better than the population
level on held-out ratings, the fitted model untouched, persistence and the command line."""

import warnings

import numpy as np
import pandas as pd
import pytest
from fold_in_check import assert_standard_normal, block_precision, standardised_rows

from bpmf import metrics
from bpmf.cli import main
from bpmf.datasets import Ratings, make_synthetic_ratings
from bpmf.models import BPMF, PMF

N_FACTORS = 2


@pytest.fixture(scope="module")
def split():
    """Synthetic ratings with 30 users held out entirely; half of their ratings are given."""
    ratings, _ = make_synthetic_ratings(
        n_users=300,
        n_items=120,
        n_factors=N_FACTORS,
        density=0.25,
        noise_sd=0.5,
        random_state=1,
    )
    frame = ratings.to_frame()
    rng = np.random.default_rng(0)
    new_users = rng.choice(ratings.user_ids.to_numpy(), 30, replace=False)
    held = frame["user"].isin(new_users).to_numpy()
    given = rng.random(held.sum()) < 0.5
    return frame[~held], frame[held][given], frame[held][~given]


@pytest.fixture(scope="module")
def fitted(split):
    train, _, _ = split
    model = BPMF(
        N_FACTORS, sampler_config={"draws": 200, "tune": 100}, random_state=0, progressbar=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: convergence warnings are expected
        return model.fit(Ratings.from_frame(train, scale=None))


def _flat(model, name):
    values = model.idata_["posterior"][name].values
    return values.reshape(-1, *values.shape[2:])


def test_folded_rows_follow_the_exact_conditional_of_each_draw(fitted, split):
    """Standardised by each draw's conditional mean and precision, the folded-in rows of a new
    user and of a new item are independent standard normals."""
    train, given, _ = split
    user = given["user"].iloc[0]
    user_ratings = given[given["user"] == user]
    new_item = pd.DataFrame(
        {"user": train["user"].unique()[:12], "item": 10_000, "rating": np.linspace(1, 5, 12)}
    )
    train_items = fitted.item_index_.get_indexer(user_ratings["item"])
    folded = fitted.fold_in(pd.concat([user_ratings, new_item], ignore_index=True))
    mu, sigma = _flat(fitted, "mu"), _flat(fitted, "sigma")
    standardised = []
    for side, partner_codes, targets, name, bias, other, other_bias in (
        ("U", train_items, user_ratings["rating"].to_numpy(), user, "user_bias", "V", "item_bias"),
        (
            "V",
            fitted.user_index_.get_indexer(new_item["user"]),
            new_item["rating"].to_numpy(),
            10_000,
            "item_bias",
            "U",
            "user_bias",
        ),
    ):
        dim_name = "user" if side == "U" else "item"
        index = folded.user_index_ if side == "U" else folded.item_index_
        code = index.get_loc(name)
        rows = np.column_stack([_flat(folded, side)[:, code], _flat(folded, bias)[:, code]])
        assert folded.idata_["posterior"][side].sizes[dim_name] == len(index)
        partners, partner_bias = _flat(fitted, other), _flat(fitted, other_bias)
        precision = block_precision(_flat(fitted, f"Sigma_{side}"), _flat(fitted, f"{bias}_sd"))
        standardised.append(standardised_rows(
            rows, np.zeros((len(mu), N_FACTORS + 1)), precision, partners[:, partner_codes],
            partner_bias[:, partner_codes], targets, mu, sigma,
        ))
    assert_standard_normal(np.concatenate(standardised), cov_atol=0.15)


def test_folded_in_users_beat_the_population_level_and_the_fit_is_untouched(fitted, split):
    _, given, test = split
    n_users, posterior_users = len(fitted.user_index_), fitted.idata_["posterior"].sizes["user"]
    folded = fitted.fold_in(given)
    assert len(fitted.user_index_) == n_users == 270
    assert fitted.idata_["posterior"].sizes["user"] == posterior_users
    assert len(folded.user_index_) == 300 and type(folded) is BPMF
    pairs = test[["user", "item"]]
    with pytest.warns(UserWarning, match="not seen|unseen|population"):
        population = fitted.predict(pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new users are known now: no unseen warning
        known = folded.predict(pairs)
        interval = folded.predict_interval(pairs, prob=0.9)
    population_rmse = metrics.rmse(test["rating"].to_numpy(), population)
    folded_rmse = metrics.rmse(test["rating"].to_numpy(), known)
    assert folded_rmse < 0.65 < population_rmse - 0.3  # noise sd is 0.5
    inside = (interval["lower"] <= test["rating"].to_numpy()) & (
        test["rating"].to_numpy() <= interval["upper"]
    )
    assert 0.8 < inside.mean() <= 1.0
    user = given["user"].iloc[0]
    top = folded.recommend(user, k=5)
    assert len(top) == 5 and not set(top["item"]) & set(given[given["user"] == user]["item"])


def test_fold_in_refuses_what_it_cannot_do_exactly(fitted, split):
    train, given, _ = split
    with pytest.raises(ValueError, match="fitted user with a fitted item"):
        fitted.fold_in(train.iloc[:3])
    both_new = pd.DataFrame({"user": [10_000], "item": [10_000], "rating": [3.0]})
    with pytest.raises(ValueError, match="new user with a new item"):
        fitted.fold_in(both_new)
    pmf = PMF(N_FACTORS, random_state=0).fit(Ratings.from_frame(train, scale=None))
    with pytest.raises(ValueError, match="Sigma_U"):
        pmf.fold_in(given)


def test_folded_model_saves_loads_and_predicts_from_the_command_line(
    fitted, split, tmp_path, capsys
):
    _, given, test = split
    folded = fitted.fold_in(given)
    path = folded.save(tmp_path / "folded.bpmf")
    loaded = BPMF.load(path)
    pairs = test[["user", "item"]].iloc[:20]
    np.testing.assert_allclose(loaded.predict(pairs), folded.predict(pairs))
    fitted.save(tmp_path / "model.bpmf")
    given.to_csv(tmp_path / "given.csv", index=False)
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    out = tmp_path / "out.csv"
    argv = [
        "predict",
        "--model",
        str(tmp_path / "model.bpmf"),
        "--pairs",
        str(tmp_path / "pairs.csv"),
        "--given",
        str(tmp_path / "given.csv"),
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    result = pd.read_csv(out)
    assert (result["unseen"] == 0).all()
    np.testing.assert_allclose(result["mean"], folded.predict(pairs), rtol=1e-10)
    # a rating between a fitted user and a fitted item cannot be folded in: a one-line error
    train, _, _ = split
    train.iloc[:2].to_csv(tmp_path / "known.csv", index=False)
    argv[argv.index("--given") + 1] = str(tmp_path / "known.csv")
    assert main(argv) == 1
    assert "fitted user with a fitted item" in capsys.readouterr().err


def test_fold_in_is_reproducible_whatever_the_threads(fitted, split):
    import numba

    _, given, _ = split
    runs = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(threads)
        runs.append(fitted.fold_in(given, random_state=4).idata_["posterior"]["U"].values)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_correlated_fold_in_follows_the_joint_conditional(split):
    """With correlated biases, a folded-in user's factors and bias are drawn given each
    draw's joint covariance of factors and bias (``Sigma_U``, ``user_bias_factor_cov``,
    ``user_bias_sd``)."""
    train, given, _ = split
    model = BPMF(
        N_FACTORS,
        model_config={"correlated_biases": True},
        sampler_config={"draws": 150, "tune": 100},
        random_state=0,
        progressbar=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(Ratings.from_frame(train, scale=None))
    user = given["user"].iloc[0]
    user_ratings = given[given["user"] == user]
    items = model.item_index_.get_indexer(user_ratings["item"])
    targets = user_ratings["rating"].to_numpy()
    folded = model.fold_in(user_ratings)
    code = folded.user_index_.get_loc(user)
    rows = np.column_stack([_flat(folded, "U")[:, code], _flat(folded, "user_bias")[:, code]])
    mu, sigma = _flat(model, "mu"), _flat(model, "sigma")
    V, c = _flat(model, "V"), _flat(model, "item_bias")
    Sigma, cross = _flat(model, "Sigma_U"), _flat(model, "user_bias_factor_cov")
    scale = _flat(model, "user_bias_sd")
    assert np.abs(cross).max() > 1e-3  # the joint prior is not the independent one
    cov = np.zeros((len(mu), N_FACTORS + 1, N_FACTORS + 1))
    cov[:, :N_FACTORS, :N_FACTORS] = Sigma
    cov[:, :N_FACTORS, N_FACTORS] = cov[:, N_FACTORS, :N_FACTORS] = cross
    cov[:, N_FACTORS, N_FACTORS] = scale**2
    z = standardised_rows(rows, np.zeros((len(mu), N_FACTORS + 1)), np.linalg.inv(cov),
                          V[:, items], c[:, items], targets, mu, sigma)
    assert_standard_normal(z, cov_atol=0.15)
