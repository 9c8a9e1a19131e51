"""BPMF with implicit feedback (Bayesian SVD++): recovery of the implicit part's scale on data
simulated from the model, predictions from the effective user vectors, the test-time pairs,
reproducibility and the errors of unsupported combinations."""

import numpy as np
import pandas as pd
import pytest
from fold_in_check import assert_standard_normal, block_precision, standardised_rows

from bpmf.inference.implicit import implicit_offsets, implicit_sets
from bpmf.models import BPMF

SAMPLER = {"draws": 150, "tune": 100, "chains": 2}


def simulate(implicit_sd, n_users=300, n_items=200, n_factors=2, density=0.15, seed=0):
    """Ratings from the model: ``mu + b_u + c_i + (U_u + o_u) . V_i + N(0, 0.5^2)`` with
    ``Y_j ~ N(0, implicit_sd^2 I)``; returns the ratings and the true implicit signal
    ``o_u . V_i`` of every rated pair."""
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    U = 0.7 * rng.standard_normal((n_users, n_factors))
    V = 0.7 * rng.standard_normal((n_items, n_factors))
    Y = implicit_sd * rng.standard_normal((n_items, n_factors))
    offsets = implicit_offsets(implicit_sets(users, items, n_users, n_items), Y)
    signal = np.einsum("nk,nk->n", offsets[users], V[items])
    values = (
        3.0
        + 0.3 * rng.standard_normal(n_users)[users]
        + 0.3 * rng.standard_normal(n_items)[items]
        + np.einsum("nk,nk->n", U[users], V[items])
        + signal
        + 0.5 * rng.standard_normal(len(users))
    )
    return pd.DataFrame({"user": users, "item": items, "rating": values}), signal


def fit(frame, seed=1, **config):
    return BPMF(2, model_config={"implicit": True, **config}, sampler_config=SAMPLER,
                random_state=seed, progressbar=False).fit(frame)


def implicit_scale(model, frame):
    """Posterior draws of the rms over the rated pairs of the implicit part ``o_u . V_i``: the
    scale of the implicit factors in the fitted values, which rotations of the factors and
    the rescaling of ``(U, Y)`` against ``V`` leave unchanged."""
    post = model.idata_["posterior"]
    users = model.user_index_.get_indexer(frame["user"])
    items = model.item_index_.get_indexer(frame["item"])
    offsets = post["offset_U"].values[:, :, users]
    V = post["V"].values[:, :, items]
    return np.sqrt(np.mean(np.einsum("cdnk,cdnk->cdn", offsets, V) ** 2, axis=-1)).ravel()


@pytest.fixture(scope="module")
def with_implicit():
    frame, signal = simulate(0.8)
    return frame, signal, fit(frame)


def test_recovers_the_scale_of_the_implicit_factors(with_implicit):
    frame, signal, model = with_implicit
    draws = implicit_scale(model, frame)
    truth = np.sqrt(np.mean(signal**2))
    assert abs(draws.mean() - truth) < 4 * draws.std() + 0.02, (draws.mean(), draws.std(), truth)
    # without implicit feedback in the data, the implicit part shrinks towards zero
    frame0, _ = simulate(0.0)
    null = implicit_scale(fit(frame0), frame0)
    assert null.mean() < 0.4 * truth, (null.mean(), truth)


def test_predictions_use_the_effective_user_vectors(with_implicit):
    frame, _, model = with_implicit
    post = model.idata_["posterior"]
    pairs = frame.iloc[:50]
    users = model.user_index_.get_indexer(pairs["user"])
    items = model.item_index_.get_indexer(pairs["item"])
    effective = post["U"].values + post["offset_U"].values
    expected = (
        post["mu"].values[..., None]
        + post["user_bias"].values[:, :, users]
        + post["item_bias"].values[:, :, items]
        + np.einsum("cdnk,cdnk->cdn", effective[:, :, users], post["V"].values[:, :, items])
    ).mean((0, 1))
    np.testing.assert_allclose(model.predict(pairs, clip=False), expected, rtol=1e-10)
    # the offsets are the scaled sums of the implicit factors of N(u), draw by draw
    sets = implicit_sets(users, items, len(model.user_index_), len(model.item_index_))
    assert post["Y"].dims == ("chain", "draw", "item", "factor")
    assert post["Y_sd"].dims == ("chain", "draw", "factor")
    full = implicit_sets(model.user_index_.get_indexer(frame["user"]),
                         model.item_index_.get_indexer(frame["item"]),
                         len(model.user_index_), len(model.item_index_))
    np.testing.assert_allclose(post["offset_U"].values[1, -1],
                               implicit_offsets(full, post["Y"].values[1, -1]), atol=1e-12)
    assert sets.n_pairs <= full.n_pairs


def test_test_time_pairs_join_the_implicit_sets():
    frame, _ = simulate(0.8, n_users=60, n_items=40, density=0.3, seed=3)
    extra = pd.DataFrame({"user": [0, 0, 5, 999], "item": [1, 2, 3, 1]})  # user 999: unknown
    model = BPMF(2, model_config={"implicit": True, "implicit_pairs": extra},
                 sampler_config={"draws": 5, "tune": 5, "chains": 1}, random_state=0,
                 progressbar=False).fit(frame)
    post = model.idata_["posterior"]
    codes = {name: getattr(model, f"{name}_index_").get_indexer(frame[name])
             for name in ("user", "item")}
    known = extra[extra.user != 999]
    sets = implicit_sets(codes["user"], codes["item"], len(model.user_index_),
                         len(model.item_index_),
                         (model.user_index_.get_indexer(known.user),
                          model.item_index_.get_indexer(known.item)))
    Y = post["Y"].values[0, -1]
    np.testing.assert_allclose(post["offset_U"].values[0, -1], implicit_offsets(sets, Y),
                               atol=1e-12)
    without = implicit_sets(codes["user"], codes["item"], len(model.user_index_),
                            len(model.item_index_))
    assert sets.n_pairs > without.n_pairs


def test_same_seed_same_draws():
    frame, _ = simulate(0.5, n_users=50, n_items=30, density=0.3, seed=4)
    config = {"draws": 5, "tune": 5, "chains": 2}
    runs = [BPMF(2, model_config={"implicit": True}, sampler_config=config, random_state=7,
                 progressbar=False).fit(frame).idata_["posterior"] for _ in range(2)]
    for name in ("Y", "Y_sd", "offset_U", "U"):
        np.testing.assert_array_equal(runs[0][name].values, runs[1][name].values)


PAIRS = pd.DataFrame({"user": [0], "item": [0]})


@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        ({"implicit": True}, {"method": "nuts"}, "needs method='gibbs'"),
        ({"implicit": True}, {"sampler_config": {"keep": "moments"}}, "keep'\\]='all'"),
        ({"implicit": "yes"}, {}, "must be False, True"),
        ({"implicit": True}, {"sampler_config": {"implicit_step": "x"}}, "implicit_step"),
        ({"implicit": True, "implicit_scale_sd": 0}, {}, "implicit_scale_sd"),
        ({"implicit_pairs": PAIRS}, {}, "needs model_config\\['implicit'\\]=True"),
        ({"implicit": True, "implicit_pairs": [1, 2]}, {}, "pairs"),
    ],
)
def test_unsupported_settings_fail_with_one_line(config, kwargs, message):
    frame, _ = simulate(0.5, n_users=20, n_items=10, density=0.5)
    with pytest.raises(ValueError, match=message) as error:
        BPMF(2, model_config=config, progressbar=False, **kwargs).fit(frame)
    assert "\n" not in str(error.value)


def test_fold_in_draws_a_new_users_effective_row_given_its_implicit_set(with_implicit):
    """A folded-in user's offset is ``|N(u)|^-1/2 sum Y_j`` over its new ratings' items in
    each draw, and its effective row ``U_u + o_u`` (with the bias) has the exact conditional
    whose prior mean is ``(o_u, 0)``; new items are refused."""
    _, _, model = with_implicit
    items = np.array([0, 3, 5, 8, 13, 21, 34, 55])
    targets = np.linspace(1.5, 4.5, len(items))
    folded = model.fold_in(pd.DataFrame({"user": 10_000, "item": items, "rating": targets}))
    post, new = model.idata_["posterior"], folded.idata_["posterior"]
    flat = {n: post[n].values.reshape(-1, *post[n].shape[2:])
            for n in ("mu", "sigma", "Y", "Sigma_U", "user_bias_sd", "V", "item_bias")}
    code = folded.user_index_.get_loc(10_000)
    offset = new["offset_U"].values.reshape(len(flat["mu"]), -1, 2)[:, code]
    np.testing.assert_allclose(offset, flat["Y"][:, items].sum(1) / np.sqrt(len(items)))
    U = new["U"].values.reshape(len(flat["mu"]), -1, 2)[:, code]
    bias = new["user_bias"].values.reshape(len(flat["mu"]), -1)[:, code]
    z = standardised_rows(np.column_stack([U + offset, bias]),
                          np.column_stack([offset, np.zeros(len(offset))]),
                          block_precision(flat["Sigma_U"], flat["user_bias_sd"]),
                          flat["V"][:, items], flat["item_bias"][:, items], targets,
                          flat["mu"], flat["sigma"])
    assert_standard_normal(z, cov_atol=5 * np.sqrt(2 / len(z)))
    pair = pd.DataFrame({"user": [10_000], "item": [1]})
    expected = (flat["mu"] + bias + flat["item_bias"][:, 1]
                + np.einsum("sk,sk->s", U + offset, flat["V"][:, 1]))
    np.testing.assert_allclose(folded.predict(pair), expected.mean(), rtol=1e-10)
    new_item = pd.DataFrame({"user": [0], "item": [10_000], "rating": [3.0]})
    with pytest.raises(ValueError, match="new users only"):
        model.fold_in(new_item)


def test_compare_scores_the_registered_variant():
    from bpmf import compare

    frame, _ = simulate(0.8, n_users=60, n_items=40, density=0.3, seed=5)
    settings = {"n_factors": 2, "sampler_config": {"draws": 30, "tune": 20, "chains": 1}}
    results = compare({"svdpp": ("bpmf-svdpp", settings)}, frame, folds=2, random_state=0,
                      progress=False)
    assert list(results["model"]) == ["svdpp", "svdpp"]
    assert np.isfinite(results[["rmse", "coverage"]].to_numpy()).all()


def test_item_side_recovers_its_scale_and_predicts_from_effective_item_vectors():
    """Data with the roles swapped (the items' effective vectors carry ``|N(i)|^-1/2 sum Z_u``
    over their raters): ``implicit="item"`` recovers the implicit part's scale, and the
    predictions use ``V + offset_V``."""
    swapped, signal = simulate(0.8, n_users=200, n_items=300, seed=2)
    frame = swapped.rename(columns={"user": "item", "item": "user"})
    model = BPMF(2, model_config={"implicit": "item"}, sampler_config=SAMPLER, random_state=1,
                 progressbar=False).fit(frame)
    post = model.idata_["posterior"]
    assert "Y" not in post and post["Z"].dims == ("chain", "draw", "user", "factor")
    users = model.user_index_.get_indexer(frame["user"])
    items = model.item_index_.get_indexer(frame["item"])
    part = np.einsum("cdnk,cdnk->cdn", post["offset_V"].values[:, :, items],
                     post["U"].values[:, :, users])
    draws = np.sqrt(np.mean(part**2, axis=-1)).ravel()
    truth = np.sqrt(np.mean(signal**2))
    assert abs(draws.mean() - truth) < 4 * draws.std() + 0.02, (draws.mean(), draws.std(), truth)
    pairs = frame.iloc[:40]
    u, i = users[:40], items[:40]
    effective = post["V"].values + post["offset_V"].values
    expected = (post["mu"].values[..., None] + post["user_bias"].values[:, :, u]
                + post["item_bias"].values[:, :, i]
                + np.einsum("cdnk,cdnk->cdn", post["U"].values[:, :, u], effective[:, :, i]))
    np.testing.assert_allclose(model.predict(pairs, clip=False), expected.mean((0, 1)),
                               rtol=1e-10)


def test_both_sides_samplers_agree():
    """The two ways of drawing the implicit factors ("rows" and "collapsed") sample the same
    posterior: the means of sigma, of both implicit parts' scales and of predictions agree
    within Monte Carlo error (|z| < 4, ArviZ MCSE of each run)."""
    import arviz as az

    frame, _ = simulate(0.8, n_users=80, n_items=60, density=0.3, seed=6)
    config = {"draws": 500, "tune": 150, "chains": 2}
    summaries = []
    for method in ("rows", "collapsed"):
        model = BPMF(2, model_config={"implicit": "both"},
                     sampler_config={**config, "implicit_step": method}, random_state=3,
                     progressbar=False).fit(frame)
        post = model.idata_["posterior"]
        users = model.user_index_.get_indexer(frame["user"])
        items = model.item_index_.get_indexer(frame["item"])
        U = post["U"].values + post["offset_U"].values
        V = post["V"].values + post["offset_V"].values
        quantities = {
            "sigma": post["sigma"].values,
            "user_part": np.sqrt(np.mean(np.einsum(
                "cdnk,cdnk->cdn", post["offset_U"].values[:, :, users],
                V[:, :, items]) ** 2, axis=-1)),
            "item_part": np.sqrt(np.mean(np.einsum(
                "cdnk,cdnk->cdn", U[:, :, users],
                post["offset_V"].values[:, :, items]) ** 2, axis=-1)),
        }
        for n in range(0, 200, 40):
            quantities[f"pair{n}"] = (post["mu"].values + post["user_bias"].values[:, :, users[n]]
                                      + post["item_bias"].values[:, :, items[n]]
                                      + np.einsum("cdk,cdk->cd", U[:, :, users[n]],
                                                  V[:, :, items[n]]))
        data = az.convert_to_dataset({k: v for k, v in quantities.items()})
        summaries.append({k: (float(v.mean()), float(az.mcse(data[k].to_dataset(name="x"))["x"]))
                          for k, v in quantities.items()})
    for name, (mean, mcse) in summaries[0].items():
        other, other_mcse = summaries[1][name]
        z = (mean - other) / np.hypot(mcse, other_mcse)
        assert abs(z) < 4.0, (name, mean, other, z)


def test_both_sides_save_load_and_refuse_fold_in(tmp_path):
    frame, _ = simulate(0.5, n_users=40, n_items=30, density=0.3, seed=8)
    model = BPMF(2, model_config={"implicit": "both"},
                 sampler_config={"draws": 10, "tune": 5, "chains": 1}, random_state=0,
                 progressbar=False).fit(frame)
    path = tmp_path / "both.nc"
    model.save(path)
    loaded = BPMF.load(path)
    assert loaded.model_config["implicit"] == "both"
    assert loaded.idata_["posterior"]["offset_V"].dims == ("chain", "draw", "item", "factor")
    np.testing.assert_array_equal(loaded.predict(frame.iloc[:30]), model.predict(frame.iloc[:30]))
    new = pd.DataFrame({"user": ["new"], "item": [0], "rating": [3.0]})
    with pytest.raises(ValueError, match="fold_in does not support implicit feedback"):
        loaded.fold_in(new)


def test_an_unseen_user_is_predicted_with_the_fitted_users_mean_offset(with_implicit):
    """A user without ratings has an unknown implicit set: its population-level prediction
    uses the fitted users' mean offset in each draw, not an empty set's zero offset."""
    _, _, model = with_implicit
    post = model.idata_["posterior"]
    flat = {n: post[n].values.reshape(-1, *post[n].shape[2:])
            for n in ("mu", "offset_U", "V", "item_bias")}
    expected = (flat["mu"] + flat["item_bias"][:, 1]
                + np.einsum("sk,sk->s", flat["offset_U"].mean(1), flat["V"][:, 1]))
    with pytest.warns(UserWarning, match="unseen"):
        predicted = model.predict(pd.DataFrame({"user": [10**6], "item": [1]}))
    np.testing.assert_allclose(predicted, expected.mean(), rtol=1e-10)
    assert abs(np.einsum("sk,sk->s", flat["offset_U"].mean(1), flat["V"][:, 1]).mean()) > 1e-3


def test_centered_offsets_average_zero_and_fold_in_subtracts_their_mean():
    frame, _ = simulate(0.8, n_users=80, n_items=50, density=0.2, seed=3)
    model = BPMF(2, model_config={"implicit": True, "implicit_centered": True},
                 sampler_config={"draws": 20, "tune": 10, "chains": 1}, random_state=0,
                 progressbar=False).fit(frame)
    post = model.idata_["posterior"]
    offsets, Y = post["offset_U"].values[0], post["Y"].values[0]
    mean = post["offset_mean_U"].values[0]
    np.testing.assert_allclose(offsets.mean(axis=1), 0.0, atol=1e-10)
    sets = implicit_sets(model.user_index_.get_indexer(frame["user"]),
                         model.item_index_.get_indexer(frame["item"]),
                         len(model.user_index_), len(model.item_index_))
    for d in (0, 7, 19):
        np.testing.assert_allclose(offsets[d] + mean[d], implicit_offsets(sets, Y[d]),
                                   atol=1e-10)
    items = np.array([1, 4, 9])
    folded = model.fold_in(pd.DataFrame({"user": 999, "item": items, "rating": [2.0, 4.0, 3.0]}))
    new = folded.idata_["posterior"]["offset_U"].values[0, :, folded.user_index_.get_loc(999)]
    np.testing.assert_allclose(new, Y[:, items].sum(1) / np.sqrt(3) - mean, atol=1e-10)
    with pytest.raises(ValueError, match="implicit_step'\\]='rows' only"):
        BPMF(2, model_config={"implicit": True, "implicit_centered": True},
             sampler_config={"implicit_step": "collapsed"}).fit(frame)
    with pytest.raises(ValueError, match="must be True or False"):
        BPMF(2, model_config={"implicit": True, "implicit_centered": "yes"}).fit(frame)
