"""Joint NUTS over the whole posterior: PyMC's ``pm.sample`` with any of its backends, and
nutpie called directly so that every chain gets a start of its own."""

import importlib.util

import numpy as np
import pymc as pm
from threadpoolctl import threadpool_limits

__all__ = ["NUTS_BACKENDS", "check_backend", "default_backend", "sample_nuts"]

#: NUTS backends of ``pm.sample`` and the modules (and bpmf extra) each one needs.
NUTS_BACKENDS = {
    "pymc": ((), None),
    "nutpie": (("nutpie",), "nutpie"),
    "numpyro": (("numpyro", "jax"), "numpyro"),
    "blackjax": (("blackjax", "jax"), "blackjax"),
}


def default_backend():
    """nutpie when it is installed, else PyMC's own NUTS."""
    return "nutpie" if importlib.util.find_spec("nutpie") is not None else "pymc"


def sample_nuts(model, template, start, sampler_config, var_names, seed, progressbar):
    """Sample ``model`` by NUTS from per-chain starts; returns (posterior dict, sample stats).

    ``start(chain_seed)`` gives each chain's initial point (constrained values of the free
    variables); ``template`` is any such point (it fixes the shapes nutpie compiles for).
    """
    backend = sampler_config["nuts_sampler"]
    chains = int(sampler_config["chains"])
    chain_seeds = np.random.SeedSequence(seed).generate_state(chains)
    if backend == "nutpie":
        tree = _sample_nutpie(model, template, start, sampler_config, var_names, seed, progressbar)
    else:
        kwargs = {"nuts": {"max_treedepth": int(sampler_config["max_treedepth"])}}
        if backend == "pymc":
            kwargs["init"] = "adapt_diag"
        with model, threadpool_limits(limits=1, user_api="blas"):
            tree = pm.sample(
                draws=int(sampler_config["draws"]),
                tune=int(sampler_config["tune"]),
                chains=chains,
                cores=int(sampler_config["cores"]),
                target_accept=float(sampler_config["target_accept"]),
                nuts_sampler=backend,
                initvals=[start(int(s)) for s in chain_seeds],
                random_seed=seed,
                progressbar=progressbar,
                var_names=var_names,
                compute_convergence_checks=False,
                **kwargs,
            )
    posterior = {
        name: tree["posterior"][name].values for name in var_names if name in tree["posterior"]
    }
    stats = tree["sample_stats"].to_dataset() if "sample_stats" in tree.children else None
    if stats is not None:
        keep = [
            v
            for v in stats.data_vars
            if set(stats[v].dims) <= {"chain", "draw"} and stats[v].dtype != object
        ]
        stats = stats[keep].drop_vars(
            [c for c in stats.coords if c not in ("chain", "draw")], errors="ignore"
        )
        stats = stats.assign_coords(
            chain=np.arange(stats.sizes["chain"]), draw=np.arange(stats.sizes["draw"])
        )
    return posterior, stats


def _sample_nutpie(model, template, start, sampler_config, var_names, seed, progressbar):
    """``pm.sample(nuts_sampler="nutpie")`` with a start of its own for every chain.

    ``pm.sample`` hands nutpie one initial point for all chains. nutpie asks for each chain's
    start through ``initial_point_func(chain_seed)`` (the seeds are a fixed function of
    ``seed``), so replacing that function with ``start(chain_seed)`` gives every chain its own
    reproducible start. ``template`` is any initial point of the model (it only fixes the
    variables' shapes for compilation).
    """
    import dataclasses
    import threading

    import nutpie
    import pytensor
    from nutpie.compile_pymc import _rv_dict_to_flat_array_wrapper
    from pymc.initial_point import make_initial_point_fn
    from pymc.progress_bar import NutpieProgressBarManager

    shared = {
        name: pytensor.shared(np.asarray(value, dtype=np.float64))
        for name, value in template.items()
    }
    point_fn = make_initial_point_fn(
        model=model, overrides=shared, jitter_rvs=set(), return_transformed=True
    )
    # Without fastmath: pytensor's numba backend caches the compiled log density on disk, and
    # with fastmath a freshly compiled one and its cached copy sum in different orders, so a
    # seeded fit gave other draws on a cold cache than on a warm one (R-hat of sigma 1.0086
    # against 1.0107 on the same data and seed); without it they agree, for about 8% more
    # sampling time.
    no_fastmath = pytensor.config.change_flags(numba__fastmath=False)
    with no_fastmath:
        compiled = nutpie.compile_pymc_model(
            model, var_names=var_names, initial_points=template, jitter_rvs=set()
        )
    values = [model.rvs_to_values[rv] for rv in model.free_RVs]
    ip = point_fn(0)
    flat_fn = _rv_dict_to_flat_array_wrapper(
        point_fn, [v.name for v in values], [np.shape(ip[v.name]) for v in values]
    )
    lock = threading.Lock()

    def initial_point(chain_seed):
        with lock:
            for name, value in start(int(chain_seed) % 2**63).items():
                shared[name].set_value(np.asarray(value, dtype=np.float64))
            return flat_fn(None)

    compiled = dataclasses.replace(compiled, initial_point_func=initial_point)
    chains = int(sampler_config["chains"])
    draws = int(sampler_config["draws"])
    # One BLAS thread per chain: the chains are the parallelism, and OpenBLAS choosing between
    # its threaded and serial paths by timing makes the draws depend on the machine's load.
    with (
        threadpool_limits(limits=1, user_api="blas"),
        no_fastmath,
        NutpieProgressBarManager(chains=chains, draws=draws, progressbar=progressbar) as bar,
    ):
        tree = nutpie.sample(
            compiled,
            draws=draws,
            tune=max(int(sampler_config["tune"]), 1),
            chains=chains,
            cores=int(sampler_config["cores"]),
            seed=int(seed),
            target_accept=float(sampler_config["target_accept"]),
            maxdepth=int(sampler_config["max_treedepth"]),
            adaptation=sampler_config["adaptation"],
            progress_bar=False,
            progress_callback=bar.update,
        )
    return tree


def check_backend(backend):
    if backend not in NUTS_BACKENDS:
        raise ValueError(
            f"Unknown nuts_sampler {backend!r}; choose one of {sorted(NUTS_BACKENDS)}."
        )
    modules, extra = NUTS_BACKENDS[backend]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"nuts_sampler={backend!r} needs {', '.join(missing)}, which is not installed; "
            f"install it with `pip install {' '.join(missing)}` "
            f"(or `pip install 'bpmf[{extra}]'`)."
        )
