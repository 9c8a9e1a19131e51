"""bpmf against its peers on the official MovieLens 100K folds, in one run on one machine.

Fits myFM (Bayesian factorisation machine, C++ Gibbs, rank 10, 200 iterations), Surprise
``SVD`` and ``BaselineOnly``, bpmf's conjugate Gibbs sampler called directly, so that only
the sampler is timed, as myFM is (``bpmf-gibbs-kernel``), ``PMF``, ``BPMF`` with the package
defaults (``bpmf``: LKJ priors, blocked Gibbs, the whole fit with its MAP), the same whole
fit with myFM's 200 sweeps in one chain (``bpmf-200-sweeps``), ``BPMF(method="nuts")``
(joint NUTS), ``BPMF`` with the conjugate Wishart prior, the ordinal ``BPMF``
(``bpmf-ordinal``: ordered probit) against myFM's ordered probit (``myfm-ordinal``), and the
gradient-descent baselines. With side features (the ML-100K user and item tables of
:func:`bpmf.datasets.load_movielens_features`, encoded by :class:`bpmf.datasets.FeatureEncoder`
for both): ``bpmf-features`` (``BPMF`` with ``user_features``/``item_features``) and
``myfm-features`` (myFM with the same encoded features, in relation blocks as its
documentation does for ML-100K), and both with implicit feedback as well
(``bpmf-features-svdpp``, ``myfm-features-implicit``). Implicit feedback (SVD++):
``bpmf-svdpp`` (Bayesian SVD++, ``N(u)`` the training items) against ``myfm-implicit`` (myFM
with relation blocks: a user's one-hot id and normalised training items, the item's one-hot
id, as in myFM's MovieLens 100K example); the ``+test-pairs`` entries of both also put the
test pairs' items into ``N(u)``, which uses test-time information (which items each user
rated in the test set), and are reported apart. Implicit feedback on both sides (each
item's training raters as well, as myFM's extended ML-100K example): ``bpmf-svdpp-both``
against ``myfm-implicit-both``, and with the side features ``bpmf-features-svdpp-both``
against ``myfm-features-implicit-both``. Per-user and per-item noise weights
(heteroscedastic noise, which myFM does not offer): ``bpmf-noise`` and the best variants with
them, ``bpmf-features-svdpp-both-noise`` and ``bpmf-features-svdpp-both-day-noise``, each
against the same myFM variant as without them.
Prints, per fold and averaged over folds, test RMSE, wall time, each wall time as a ratio to
myFM's, iterations per second for the Gibbs samplers and, for the bpmf estimators and
``myfm-ordinal``, the coverage of the central 90% predictive intervals. Every prediction is
clipped to the rating scale [1, 5], peers included.

The peers come from the ``bench`` extra (``pip install "bpmf[bench]"``), never from the runtime
dependencies.

Usage::

    python bench/peers.py                           # fold u1, every model
    python bench/peers.py --folds u1,u2,u3,u4,u5    # the 5-fold protocol
    python bench/peers.py --skip bpmf-nuts          # leave out slow entries (comma-separated)
    python bench/peers.py --only myfm,bpmf-gibbs-kernel --folds u1,u2,u3,u4,u5
"""

import argparse
import time
import traceback
import warnings

import numpy as np
import pandas as pd

from bpmf.datasets import load_movielens_folds
from bpmf.models.ordinal_predictive import nearest_sets

SCALE = (1.0, 5.0)
RANK = 10
ITERATIONS = 200  # myFM iterations; also the Gibbs kernel's sweeps (burn-in + kept)
GIBBS_BURN_IN = 50


def rmse(y, yhat):
    return float(np.sqrt(np.mean((np.asarray(y) - np.clip(yhat, *SCALE)) ** 2)))


# ------------------------------------------------------------------------------------ peers
def myfm_design(train):
    import scipy.sparse as sp

    def design(users, items):
        """One-hot user and item blocks; a code of -1 (unseen) leaves its block empty."""
        rows = np.concatenate([np.flatnonzero(users >= 0), np.flatnonzero(items >= 0)])
        cols = np.concatenate([users[users >= 0], train.n_users + items[items >= 0]])
        return sp.csr_matrix(
            (np.ones(len(rows)), (rows, cols)),
            shape=(len(users), train.n_users + train.n_items),
        )

    return design


def user_day_columns(train, test):
    """One-hot columns of the (user, UTC day) groups of the training ratings, for the training
    and the test ratings (a test rating on a day its user did not rate in training gets an
    empty row): myFM's counterpart of bpmf's day-specific user biases."""
    import scipy.sparse as sp

    from bpmf.inference.day_bias import days_of

    days = pd.MultiIndex.from_arrays([train.users, days_of(train.times)])
    groups = pd.Index(days.unique())

    def one_hot(users, times):
        codes = groups.get_indexer(pd.MultiIndex.from_arrays([users, days_of(times)]))
        rows = np.flatnonzero(codes >= 0)
        return sp.csr_matrix((np.ones(len(rows)), (rows, codes[rows])),
                             shape=(len(users), len(groups)))

    return one_hot(train.users, train.times), one_hot(test.users, test.times), len(groups)


def run_myfm(train, test, seed, features=False, day=False):
    import myfm
    import scipy.sparse as sp

    if features:
        return run_myfm_features(train, test, seed)
    design = myfm_design(train)
    X_train = design(train.user_codes, train.item_codes)
    X_test = design(train.encode_users(test.users), train.encode_items(test.items))
    groups = [train.n_users, train.n_items]
    if day:  # the (user, day) groups as a third block
        day_train, day_test, n_groups = user_day_columns(train, test)
        X_train = sp.hstack([X_train, day_train], format="csr")
        X_test = sp.hstack([X_test, day_test], format="csr")
        groups.append(n_groups)
    start = time.perf_counter()
    fm = myfm.MyFMRegressor(rank=RANK, random_seed=seed)
    fm.fit(
        X_train,
        train.values,
        n_iter=ITERATIONS,
        n_kept_samples=ITERATIONS - GIBBS_BURN_IN,
        group_shapes=groups,
    )
    sampling = time.perf_counter() - start
    pred = fm.predict(X_test)
    return pred, time.perf_counter() - start, ITERATIONS / sampling


def run_myfm_features(train, test, seed, implicit=False, item_implicit=False, day=False,
                      rank=RANK):
    """myFM with the side features, as its documentation does it for ML-100K: one relation
    block per side whose rows are ``[one-hot id | features]`` (the one-hot empty for an id
    without training ratings), indexed by each rating's user and item. ``implicit``: the
    user block also holds the user's normalised training items (as ``myfm-implicit``);
    ``item_implicit``: the item block the item's normalised training users (as myFM's
    extended ML-100K example); ``day``: the (user, day) groups' one-hot columns as well
    (:func:`user_day_columns`); ``rank``: the factorisation's rank."""
    import myfm
    import scipy.sparse as sp

    tables = encoded_features()
    blocks = {}
    for name, table, ids in (("user", tables["user"], train.user_ids),
                             ("item", tables["item"], train.item_ids)):
        codes = pd.Index(ids).get_indexer(table.index)  # -1: no training ratings
        known = np.flatnonzero(codes >= 0)
        one_hot = sp.csr_matrix((np.ones(len(known)), (known, codes[known])),
                                shape=(len(table), len(ids)))
        parts = [one_hot, sp.csr_matrix(table.to_numpy())]
        if implicit and name == "user":  # the one-hot rows select each user's items
            parts.append(one_hot @ normalised_implicit(
                train.user_codes, train.item_codes, train.n_users, train.n_items))
        if item_implicit and name == "item":  # and each item's users
            parts.append(one_hot @ normalised_implicit(
                train.item_codes, train.user_codes, train.n_items, train.n_users))
        blocks[name] = (pd.Index(table.index), sp.hstack(parts, format="csr"))

    def relations(users, items):
        return [myfm.RelationBlock(blocks["user"][0].get_indexer(users), blocks["user"][1]),
                myfm.RelationBlock(blocks["item"][0].get_indexer(items), blocks["item"][1])]

    groups = [train.n_users, tables["user"].shape[1], *([train.n_items] if implicit else []),
              train.n_items, tables["item"].shape[1], *([train.n_users] if item_implicit else [])]
    X_train = sp.csr_matrix((train.n_ratings, 0))
    X_test = sp.csr_matrix((len(test.values), 0))
    if day:  # the plain columns come first in myFM's feature order
        X_train, X_test, n_groups = user_day_columns(train, test)
        groups = [n_groups, *groups]
    start = time.perf_counter()
    fm = myfm.MyFMRegressor(rank=rank, random_seed=seed)
    fm.fit(
        X_train,
        train.values,
        X_rel=relations(train.users, train.items),
        n_iter=ITERATIONS,
        n_kept_samples=ITERATIONS - GIBBS_BURN_IN,
        group_shapes=groups,
    )
    sampling = time.perf_counter() - start
    pred = fm.predict(X_test, X_rel=relations(test.users, test.items))
    return pred, time.perf_counter() - start, ITERATIONS / sampling


def encoded_features():
    """The ML-100K user and item tables encoded as bpmf encodes them (DataFrames by id)."""
    from bpmf.datasets import FeatureEncoder, load_movielens_features

    users, items = load_movielens_features("ml-100k", download=False)
    return {
        name: pd.DataFrame(FeatureEncoder().fit_transform(table), index=table.index)
        for name, table in (("user", users), ("item", items))
    }


def run_myfm_ordinal(train, test, seed):
    """myFM's ordered probit (``MyFMOrderedProbit``): expected rating for the RMSE, and the
    90% interval of whole ratings from its predictive probabilities (as bpmf-ordinal's)."""
    import myfm

    design = myfm_design(train)
    levels = np.arange(SCALE[0], SCALE[1] + 1)
    start = time.perf_counter()
    fm = myfm.MyFMOrderedProbit(rank=RANK, random_seed=seed)
    fm.fit(
        design(train.user_codes, train.item_codes),
        (train.values - SCALE[0]).astype(np.int64),
        n_iter=ITERATIONS,
        n_kept_samples=ITERATIONS - GIBBS_BURN_IN,
        group_shapes=[train.n_users, train.n_items],
    )
    sampling = time.perf_counter() - start
    proba = fm.predict_proba(design(train.encode_users(test.users), train.encode_items(test.items)))
    seconds = time.perf_counter() - start
    # the same rule as bpmf-ordinal's predict_interval: the range of whole ratings whose
    # predictive probability is closest to 90%
    lower, upper = nearest_sets(np.cumsum(proba, axis=1)[:, :-1], 0.9, levels)
    inside = (test.values >= lower) & (test.values <= upper)
    return proba @ levels, seconds, ITERATIONS / sampling, float(inside.mean())


def normalised_implicit(users, items, n_users, n_items):
    """The users' implicit-feedback rows: ``|N(u)|^(-1/2)`` at each item of ``N(u)`` (the
    items of the pairs ``(users, items)``, one entry per pair however often it occurs)."""
    import scipy.sparse as sp

    rated = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, n_items))
    rated.data[:] = 1.0  # duplicates summed: one entry per (user, item)
    counts = np.maximum(np.diff(rated.indptr), 1)
    return (sp.diags(1.0 / np.sqrt(counts)) @ rated).tocsr()


def run_myfm_implicit(train, test, seed, test_pairs=False, item_implicit=False):
    """myFM with SVD++ features in relation blocks; ``test_pairs``: N(u) also holds the test
    pairs' items (test-time information); ``item_implicit``: the item block also holds the
    item's normalised training users."""
    import myfm
    import scipy.sparse as sp

    users, items = train.user_codes, train.item_codes
    test_users, test_items = train.encode_users(test.users), train.encode_items(test.items)
    if test_pairs:
        known = (test_users >= 0) & (test_items >= 0)
        users = np.concatenate([users, test_users[known]])
        items = np.concatenate([items, test_items[known]])
    n_u, n_i = train.n_users, train.n_items
    implicit = normalised_implicit(users, items, n_u, n_i)
    # one extra all-zero row per block for the unseen users and items of the test set
    user_block = sp.vstack([sp.hstack([sp.identity(n_u), implicit]), sp.csr_matrix((1, n_u + n_i))])
    item_parts = [sp.identity(n_i)]
    if item_implicit:
        item_parts.append(normalised_implicit(items, users, n_i, n_u))
    width = sum(part.shape[1] for part in item_parts)
    item_block = sp.vstack([sp.hstack(item_parts), sp.csr_matrix((1, width))])
    user_block, item_block = user_block.tocsr(), item_block.tocsr()

    def blocks(u, i):
        return [myfm.RelationBlock(np.where(u >= 0, u, n_u), user_block),
                myfm.RelationBlock(np.where(i >= 0, i, n_i), item_block)]

    start = time.perf_counter()
    fm = myfm.MyFMRegressor(rank=RANK, random_seed=seed)
    fm.fit(sp.csr_matrix((train.n_ratings, 0)), train.values, X_rel=blocks(train.user_codes,
           train.item_codes), n_iter=ITERATIONS, n_kept_samples=ITERATIONS - GIBBS_BURN_IN,
           group_shapes=[n_u, n_i, n_i, *([n_u] if item_implicit else [])])
    sampling = time.perf_counter() - start
    pred = fm.predict(sp.csr_matrix((test.n_ratings, 0)), X_rel=blocks(test_users, test_items))
    return pred, time.perf_counter() - start, ITERATIONS / sampling


def run_surprise(train, test, algorithm, seed):
    import surprise

    reader = surprise.Reader(rating_scale=SCALE)
    frame = pd.DataFrame({"user": train.users, "item": train.items, "rating": train.values})
    start = time.perf_counter()
    data = surprise.Dataset.load_from_df(frame, reader)
    algo = algorithm(random_state=seed) if algorithm is surprise.SVD else algorithm(verbose=False)
    algo.fit(data.build_full_trainset())
    pred = np.array([algo.predict(u, i).est for u, i in zip(test.users, test.items, strict=True)])
    return pred, time.perf_counter() - start, None


# ------------------------------------------------------------------------------------- bpmf
def gibbs_predictions(draws, train, test):
    """Posterior-mean predictions from Gibbs draws; unseen users/items use the prior means."""
    users, items = train.encode_users(test.users), train.encode_items(test.items)
    seen_u, seen_i = users >= 0, items >= 0
    u, i = np.where(seen_u, users, 0), np.where(seen_i, items, 0)
    total = np.zeros(len(users))
    n_draws = 0
    for chain in range(draws["mu"].shape[0]):
        for d in range(draws["mu"].shape[1]):
            U = np.where(seen_u[:, None], draws["U"][chain, d][u], draws["mu_U"][chain, d])
            V = np.where(seen_i[:, None], draws["V"][chain, d][i], draws["mu_V"][chain, d])
            pred = draws["mu"][chain, d] + np.einsum("nk,nk->n", U, V)
            if "user_bias" in draws:
                pred += np.where(seen_u, draws["user_bias"][chain, d][u], 0.0)
                pred += np.where(seen_i, draws["item_bias"][chain, d][i], 0.0)
            total += np.clip(pred, *SCALE)
            n_draws += 1
    return total / n_draws


def run_gibbs_kernel(train, test, seed):
    """The conjugate (Normal-Wishart) sampler called directly, 200 sweeps from a random start,
    as myFM runs: no MAP, one chain."""
    from bpmf.inference.gibbs import sample_gibbs
    from bpmf.inference.hyperpriors import WISHART_DEFAULTS

    config = {**WISHART_DEFAULTS, "mu_sd": 1.0, "sigma": None}
    common = dict(n_factors=RANK, chains=1, biases=True, covariance_prior="wishart",
                  model_config=config, random_state=seed, progressbar=False)
    # load (or, on the very first run, compile) the numba kernels outside the timing: they are
    # cached on disk, as myFM's C++ is compiled at install time
    sample_gibbs(train.user_codes[:50], train.item_codes[:50], train.values[:50], train.n_users,
                 train.n_items, draws=1, tune=0, **common)
    start = time.perf_counter()
    draws = sample_gibbs(train.user_codes, train.item_codes, train.values, train.n_users,
                         train.n_items, draws=ITERATIONS - GIBBS_BURN_IN, tune=GIBBS_BURN_IN,
                         **common)
    sampling = time.perf_counter() - start
    pred = gibbs_predictions(draws, train, test)
    return pred, time.perf_counter() - start, ITERATIONS / sampling


def run_estimator(make, test_pairs=False):
    """``test_pairs``: the model's factory takes the test set too (implicit feedback whose
    N(u) holds the test pairs' items)."""

    def run(train, test, seed):
        model = make(seed, test) if test_pairs else make(seed)
        start = time.perf_counter()
        model.fit(train)
        pred = (
            model.predict(test, on_unseen="ignore")
            if hasattr(model, "idata_")
            else model.predict(test)
        )
        seconds = time.perf_counter() - start
        coverage = None
        if hasattr(model, "predict_interval") and hasattr(model, "idata_"):
            interval = model.predict_interval(test, prob=0.9, on_unseen="ignore")
            coverage = float(np.mean((test.values >= interval["lower"].to_numpy())
                                     & (test.values <= interval["upper"].to_numpy())))
        diagnostics = getattr(model, "diagnostics_", None)
        if diagnostics:
            rhat = {k: round(v, 4) for k, v in diagnostics.get("rhat", {}).items()}
            ess = {k: round(v) for k, v in diagnostics.get("ess_bulk", {}).items()}
            print(f"  divergences {diagnostics.get('divergences')}, R-hat {rhat}, bulk ESS {ess}")
        return np.asarray(pred, dtype=float), seconds, None, coverage

    return run


def bpmf_entries():
    """(name, runner) for the bpmf estimators that exist in this checkout."""
    entries = []
    try:
        from bpmf.models import BPMF, PMF
    except ImportError as error:
        print(f"note: bpmf.models not importable yet ({error}); PMF/BPMF skipped")
        BPMF = PMF = None
    if PMF is not None:
        entries.append(
            (
                "bpmf-pmf",
                run_estimator(
                    lambda seed: PMF(n_factors=RANK, random_state=seed, progressbar=False)
                ),
            )
        )
    if BPMF is not None:
        variants = {
            "bpmf": {},  # the package defaults: LKJ priors, blocked Gibbs
            "bpmf-nuts": {"method": "nuts"},
            "bpmf-wishart": {"model_config": {"covariance_prior": "wishart"}},
            "bpmf-correlated": {"model_config": {"correlated_biases": True}},
            "bpmf-features": {"model_config": {"user_features": "ml-100k",
                                               "item_features": "ml-100k"}},
            "bpmf-ordinal": {"model_config": {"likelihood": "ordinal"}, "rating_scale": SCALE},
            "bpmf-svdpp": {"model_config": {"implicit": True}},
            "bpmf-features-svdpp": {"model_config": {"user_features": "ml-100k",
                                                     "item_features": "ml-100k",
                                                     "implicit": True}},
            # implicit feedback on both sides: each item's raters too (myFM's extended example)
            "bpmf-svdpp-both": {"model_config": {"implicit": "both"}},
            "bpmf-features-svdpp-both": {"model_config": {"user_features": "ml-100k",
                                                          "item_features": "ml-100k",
                                                          "implicit": "both"}},
            # day-specific user biases (the ratings' times), alone and with the best variant
            "bpmf-day": {"model_config": {"user_day_bias": True}},
            "bpmf-features-svdpp-both-day": {"model_config": {"user_features": "ml-100k",
                                                              "item_features": "ml-100k",
                                                              "implicit": "both",
                                                              "user_day_bias": True}},
            # per-user and per-item noise weights, alone and with the best variants; these
            # two keep 600 draws a chain instead of 900 (the same test RMSE on u1 and u2 to
            # 0.0001), which keeps their fit within 3x plain BPMF's
            "bpmf-noise": {"model_config": {"noise_weights": True}},
            "bpmf-features-svdpp-both-noise": {
                "model_config": {"user_features": "ml-100k", "item_features": "ml-100k",
                                 "implicit": "both", "noise_weights": True},
                "sampler_config": {"draws": 600}},
            "bpmf-features-svdpp-both-day-noise": {
                "model_config": {"user_features": "ml-100k", "item_features": "ml-100k",
                                 "implicit": "both", "user_day_bias": True,
                                 "noise_weights": True},
                "sampler_config": {"draws": 600}},
            # the same at rank 15 (against myFM at rank 15), 500 draws a chain
            "bpmf-features-svdpp-both-noise-r15": {
                "n_factors": 15,
                "model_config": {"user_features": "ml-100k", "item_features": "ml-100k",
                                 "implicit": "both", "noise_weights": True},
                "sampler_config": {"draws": 500}},
            # the whole fit (MAP, sampling, diagnostics) with myFM's number of sweeps: one
            # chain of 50 warm-up and 150 kept sweeps
            "bpmf-200-sweeps": {"sampler_config": {"chains": 1, "tune": GIBBS_BURN_IN,
                                                   "draws": ITERATIONS - GIBBS_BURN_IN}},
        }
        # load the compiled kernels outside the timing (cached on disk after the first run)
        tiny = load_food_world_cup_tiny()
        for config in ({}, {"likelihood": "ordinal"}, {"implicit": True}):
            BPMF(n_factors=RANK, model_config=config, sampler_config={"draws": 2, "tune": 3},
                 progressbar=False).fit(tiny)
        for name, kwargs in variants.items():
            entries.append((name, run_estimator(
                lambda seed, kwargs=kwargs: BPMF(**{"n_factors": RANK, **kwargs},
                                                 random_state=seed, progressbar=False))))
        # test-time information: the test pairs' items join N(u)
        entries.append(("bpmf-svdpp+test-pairs", run_estimator(
            lambda seed, test: BPMF(n_factors=RANK, random_state=seed, progressbar=False,
                                    model_config={"implicit": True, "implicit_pairs": test}),
            test_pairs=True)))
    try:
        from bpmf import baselines
    except ImportError:
        baselines = None
    for name in ("AdaGradMF", "OLSRegressor", "SoftmaxRegression"):
        cls = getattr(baselines, name, None) if baselines is not None else None
        if cls is None:
            print(f"note: bpmf.baselines.{name} not available; skipped")
            continue
        entries.append((f"bpmf-{name}", run_estimator(lambda seed, cls=cls: _with_seed(cls, seed))))
    return entries


def load_food_world_cup_tiny():
    from bpmf.datasets import load_food_world_cup

    ratings = load_food_world_cup()
    return ratings.subset(np.arange(ratings.n_ratings) < 200)


def _with_seed(cls, seed):
    try:
        return cls(random_state=seed)
    except TypeError:
        return cls()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="u1", help="comma-separated fold names (u1..u5)")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated entry names to run")
    parser.add_argument("--skip", default="", help="comma-separated entry names to leave out")
    args = parser.parse_args(argv)

    import surprise

    entries = [
        ("myfm", run_myfm),
        ("myfm-features", lambda tr, te, s: run_myfm(tr, te, s, features=True)),
        ("myfm-ordinal", run_myfm_ordinal),
        ("myfm-features-implicit", lambda tr, te, s: run_myfm_features(tr, te, s, True)),
        ("myfm-implicit", run_myfm_implicit),
        ("myfm-implicit-both", lambda tr, te, s: run_myfm_implicit(tr, te, s, item_implicit=True)),
        ("myfm-features-implicit-both",
         lambda tr, te, s: run_myfm_features(tr, te, s, True, item_implicit=True)),
        ("myfm-implicit+test-pairs", lambda tr, te, s: run_myfm_implicit(tr, te, s, True)),
        ("myfm-features-implicit-both-r15",
         lambda tr, te, s: run_myfm_features(tr, te, s, True, item_implicit=True, rank=15)),
        ("myfm-day", lambda tr, te, s: run_myfm(tr, te, s, day=True)),
        ("myfm-features-implicit-both-day",
         lambda tr, te, s: run_myfm_features(tr, te, s, True, item_implicit=True, day=True)),
        ("surprise-SVD", lambda tr, te, s: run_surprise(tr, te, surprise.SVD, s)),
        ("surprise-BaselineOnly", lambda tr, te, s: run_surprise(tr, te, surprise.BaselineOnly, s)),
        ("bpmf-gibbs-kernel", run_gibbs_kernel),
        *bpmf_entries(),
    ]
    only = {name for name in args.only.split(",") if name}
    skip = {name for name in args.skip.split(",") if name}
    entries = [(n, r) for n, r in entries if (not only or n in only) and n not in skip]

    folds = load_movielens_folds("ml-100k", data_home=args.data_home, download=False)
    rows = []
    for fold in args.folds.split(","):
        train, test = folds[fold]
        for name, run in entries:
            print(f"[{fold}] {name} ...", flush=True)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pred, seconds, rate, *coverage = run(train, test, args.seed)
            except Exception as error:  # a broken entry must not hide the others' numbers
                print(f"  failed: {type(error).__name__}: {error}")
                traceback.print_exc(limit=2)
                continue
            rows.append(
                {
                    "fold": fold,
                    "model": name,
                    "rmse": rmse(test.values, pred),
                    "seconds": seconds,
                    "it_per_s": rate,
                    "coverage90": coverage[0] if coverage else None,
                }
            )
            print(f"  rmse {rows[-1]['rmse']:.4f}  {seconds:.1f} s", flush=True)

    table = pd.DataFrame(rows)
    myfm_seconds = table[table.model == "myfm"].set_index("fold")["seconds"]
    if len(myfm_seconds):
        table["time_vs_myfm"] = table["seconds"] / table["fold"].map(myfm_seconds)
    myfm_rate = table[table.model == "myfm"].set_index("fold")["it_per_s"]
    if len(myfm_rate):
        table["rate_vs_myfm"] = table["it_per_s"] / table["fold"].map(myfm_rate)
    pd.set_option("display.width", 140)
    print("\nper fold:")
    print(table.round(4).to_string(index=False))
    if table["fold"].nunique() > 1:
        print("\nmean over folds:")
        print(table.groupby("model", sort=False).mean(numeric_only=True).round(4).to_string())


if __name__ == "__main__":
    main()
