"""A compiled NUTS transition for the LKJ Cholesky block of a Gibbs sweep, with its warm-up.

:func:`nuts_transition` is one transition of the No-U-Turn sampler (multinomial sampling of
the trajectory, biased progressive sampling between doublings, the generalised U-turn
criterion on every binary subtree), in the manner of Stan and Betancourt (2017), on the
conditional density :func:`bpmf.kernels.lkj.lkj_relative_logp_grad`. The metric is dense:
the sampler moves in whitened coordinates ``y`` with ``x = chol_cov @ y``, where
``chol_cov`` is the Cholesky factor of an estimate of the block's conditional covariance.
It never calls back into Python (numba caches a kernel that calls a fixed function, not one
that takes it as an argument), and every random number comes in through
``momentum_normals`` and ``uniforms``, drawn by the caller from its seeded
:class:`numpy.random.Generator`, so a chain is reproducible whatever thread runs it.

Each doubling builds its ``2**depth`` new states one after the other and keeps them, then
checks the U-turn criterion on every binary subtree of them, bottom up: the same checks as
the recursive algorithm, over a few hundred states at most for the small blocks this serves.

:class:`StepAdapter` holds the warm-up state in Python: dual averaging of the step size
(Hoffman & Gelman, 2014) towards a target acceptance statistic, and a dense metric from the
Laplace approximation of the block's conditional (the inverse of the negative Hessian, by
finite differences of the gradient) recomputed at the ends of warm-up windows; both are
frozen when the warm-up ends. The conditional covariance is the right metric here: the
draws' spread over the warm-up also holds the movement of the other blocks, which would make
the metric far too wide for any one conditional.
"""

import math

import numpy as np
from numba import njit

from bpmf.kernels.dense import lower_matvec, lower_transposed_matvec, solve_lower
from bpmf.kernels.lkj import lkj_relative_logp_grad

__all__ = ["StepAdapter", "laplace_chol_cov", "nuts_transition"]

_MAX_ENERGY_ERROR = 1000.0  # a trajectory whose energy error exceeds this has diverged


@njit(cache=True)
def _kinetic(p):
    acc = 0.0
    for a in range(p.shape[0]):
        acc += p[a] * p[a]
    return 0.5 * acc


@njit(cache=True)
def _no_uturn(rho, p_first, p_last):
    """Generalised criterion: the summed momentum still points along both ends' velocities."""
    left = 0.0
    right = 0.0
    for a in range(rho.shape[0]):
        left += rho[a] * p_first[a]
        right += rho[a] * p_last[a]
    return left > 0.0 and right > 0.0


@njit(cache=True)
def _span_sum(ps, begin, stop, out):
    """``out`` = the sum of the momenta ``ps[begin:stop]``."""
    out[:] = 0.0
    for k in range(begin, stop):
        for a in range(ps.shape[1]):
            out[a] += ps[k, a]


@njit(cache=True)
def _subtree_turned(ps, n_new, rho):
    """Whether any binary subtree of the ``n_new`` states ``ps[:n_new]`` (in build order)
    makes a U-turn: on its own, or across the merge of its two halves (each half extended by
    the nearest state of the other). ``rho``: scratch of one momentum."""
    size = 2
    while size <= n_new:
        half = size // 2
        for begin in range(0, n_new, size):
            middle = begin + half
            stop = begin + size
            _span_sum(ps, begin, stop, rho)
            if not _no_uturn(rho, ps[begin], ps[stop - 1]):
                return True
            if half > 1:  # with one state per half the extended checks are the check above
                _span_sum(ps, begin, middle + 1, rho)
                if not _no_uturn(rho, ps[begin], ps[middle]):
                    return True
                _span_sum(ps, middle - 1, stop, rho)
                if not _no_uturn(rho, ps[middle - 1], ps[stop - 1]):
                    return True
        size *= 2
    return False


@njit(cache=True)
def _whitened_logp_grad(y, chol_cov, base, scatter, n_rows, eta, scale_sd, last_scale_sd):
    logp, grad_x = lkj_relative_logp_grad(
        lower_matvec(chol_cov, y), base, scatter, n_rows, eta, scale_sd, last_scale_sd
    )
    return logp, lower_transposed_matvec(chol_cov, grad_x)


@njit(cache=True)
def nuts_transition(
    x0,
    chol_cov,
    base,
    scatter,
    n_rows,
    eta,
    scale_sd,
    step_size,
    max_depth,
    momentum_normals,
    uniforms,
    last_scale_sd=0.0,
):
    """One NUTS transition of the LKJ block from ``x0``; returns ``(x, accept_stat, n_steps,
    diverging)``.

    ``base, scatter, n_rows, eta, scale_sd`` are the arguments of the conditional density;
    ``momentum_normals`` holds ``dim`` standard normals and ``uniforms`` ``3 * max_depth``
    uniforms on [0, 1). ``accept_stat`` is the mean of ``min(1, exp(H_new - H_0))`` over the
    states built, the statistic that step-size adaptation targets.
    """
    dim = x0.shape[0]
    y0 = solve_lower(chol_cov, x0)
    logp0, grad0 = _whitened_logp_grad(
        y0, chol_cov, base, scatter, n_rows, eta, scale_sd, last_scale_sd
    )
    p0 = momentum_normals.copy()
    energy0 = logp0 - _kinetic(p0)
    x_left, p_left, g_left = y0.copy(), p0.copy(), grad0.copy()
    x_right, p_right, g_right = y0.copy(), p0.copy(), grad0.copy()
    rho = p0.copy()
    x_out = y0.copy()
    log_weight = 0.0  # log of the summed weights exp(H - H_0) of the trajectory so far
    accept_sum = 0.0
    n_steps = 0
    diverging = False
    depth = 0
    # the states of the subtree being built; grown when a doubling needs more
    xs = np.empty((16, dim))
    ps = np.empty((16, dim))
    gs = np.empty((16, dim))
    log_ws = np.empty(16)
    x = np.empty(dim)
    p = np.empty(dim)
    sub_rho = np.empty(dim)
    while depth < max_depth:
        forward = uniforms[3 * depth] < 0.5
        eps = step_size if forward else -step_size
        if forward:
            x[:] = x_right
            p[:] = p_right
            g = g_right.copy()
        else:
            x[:] = x_left
            p[:] = p_left
            g = g_left.copy()
        n_new = 1 << depth
        if n_new > xs.shape[0]:
            xs = np.empty((n_new, dim))
            ps = np.empty((n_new, dim))
            gs = np.empty((n_new, dim))
            log_ws = np.empty(n_new)
        built = 0
        for k in range(n_new):
            for a in range(dim):
                p[a] += 0.5 * eps * g[a]
                x[a] += eps * p[a]
            logp, g = _whitened_logp_grad(
                x, chol_cov, base, scatter, n_rows, eta, scale_sd, last_scale_sd
            )
            for a in range(dim):
                p[a] += 0.5 * eps * g[a]
            energy = logp - _kinetic(p)
            n_steps += 1
            if not np.isfinite(energy) or energy0 - energy > _MAX_ENERGY_ERROR:
                diverging = True
                accept_sum += 0.0
                break
            accept_sum += min(1.0, math.exp(energy - energy0))
            xs[k] = x
            ps[k] = p
            gs[k] = g
            log_ws[k] = energy - energy0
            built += 1
        if diverging:
            break
        # U-turns inside the new subtree: every binary subtree of 2, 4, ... states, and
        # across each merge of two halves (Stan's extra checks: each half with the nearest
        # state of the other). Without the latter, a step size whose doublings span whole
        # periods of the (whitened, nearly Gaussian) conditional misses every U-turn and
        # runs to the maximum depth: 63-255 steps where 7 suffice.
        if _subtree_turned(ps, n_new, sub_rho):
            break
        # a candidate from the new subtree, in proportion to its states' weights
        top = log_ws[0]
        for k in range(1, n_new):
            top = max(top, log_ws[k])
        total = 0.0
        for k in range(n_new):
            total += math.exp(log_ws[k] - top)
        log_new = top + math.log(total)
        target = uniforms[3 * depth + 1] * total
        chosen = n_new - 1
        running = 0.0
        for k in range(n_new):
            running += math.exp(log_ws[k] - top)
            if running >= target:
                chosen = k
                break
        # biased progressive sampling: prefer the new subtree
        if math.log(max(uniforms[3 * depth + 2], 1e-300)) < log_new - log_weight:
            x_out[:] = xs[chosen]
        log_weight = max(log_weight, log_new) + math.log1p(math.exp(-abs(log_weight - log_new)))
        # merging the new subtree into the trajectory: besides the whole trajectory, the old
        # part with the new subtree's nearest state, and the new subtree with the old part's
        # nearest state (Stan's checks across a merge)
        inner = p_right if forward else p_left
        far = p_left if forward else p_right
        for a in range(dim):
            sub_rho[a] = rho[a] + ps[0, a]
        merged = _no_uturn(sub_rho, far, ps[0])
        for a in range(dim):
            sub_rho[a] = inner[a]
        for k in range(n_new):
            for a in range(dim):
                sub_rho[a] += ps[k, a]
        merged = merged and _no_uturn(sub_rho, inner, ps[n_new - 1])
        last = n_new - 1
        if forward:
            x_right[:] = xs[last]
            p_right[:] = ps[last]
            g_right[:] = gs[last]
        else:
            x_left[:] = xs[last]
            p_left[:] = ps[last]
            g_left[:] = gs[last]
        for k in range(n_new):
            for a in range(dim):
                rho[a] += ps[k, a]
        depth += 1
        if not (merged and _no_uturn(rho, p_left, p_right)):
            break
    return lower_matvec(chol_cov, x_out), accept_sum / max(n_steps, 1), n_steps, diverging


def laplace_chol_cov(x, base, scatter, n_rows, eta, scale_sd, last_scale_sd=0.0,
                     relative_step=1e-5):
    """Cholesky factor of the inverse negative Hessian of the conditional at ``x`` (central
    finite differences of the gradient), or None where that is not positive definite."""
    dim = x.shape[0]
    hessian = np.empty((dim, dim))
    for a in range(dim):
        h = relative_step * max(1.0, abs(x[a]))
        up, down = x.copy(), x.copy()
        up[a] += h
        down[a] -= h
        hessian[a] = (
            lkj_relative_logp_grad(up, base, scatter, n_rows, eta, scale_sd, last_scale_sd)[1]
            - lkj_relative_logp_grad(down, base, scatter, n_rows, eta, scale_sd, last_scale_sd)[1]
        ) / (2.0 * h)
    precision = -0.5 * (hessian + hessian.T)
    try:
        chol_precision = np.linalg.cholesky(precision)
    except np.linalg.LinAlgError:
        return None
    # covariance = P^-1 = L^-T L^-1; its lower Cholesky factor via the reversed-order trick
    cov = np.linalg.inv(chol_precision).T @ np.linalg.inv(chol_precision)
    return np.linalg.cholesky(0.5 * (cov + cov.T))


class StepAdapter:
    """Warm-up of the NUTS block of one side: dual-averaged step size, Laplace metric.

    Parameters
    ----------
    chol_cov : ndarray
        Initial Cholesky factor of the metric (an estimate of the conditional covariance).
    n_tune : int
        Number of warm-up transitions. The metric is recomputed from the Laplace
        approximation after 10% and 30% of them, at the warm-up draw of highest log density
        since the last recomputation (a point in the bulk: the current draw can lie in a
        tail, such as the narrow neck the prior alone has where a diagonal entry of the
        Cholesky factor is small, and a metric taken there collapses the step size); the
        step size is adapted throughout, and both are frozen after.
    target_accept : float
        Target of the mean acceptance statistic.
    """

    def __init__(self, chol_cov, n_tune, target_accept=0.8, step_size=0.8):
        self.chol_cov = np.asarray(chol_cov, dtype=float).copy()
        self.n_tune = int(n_tune)
        self.target = float(target_accept)
        self.step_size = float(step_size)
        self.metric_updates = {max(1, int(0.1 * self.n_tune)), max(2, int(0.3 * self.n_tune))}
        self.count = 0
        self._best = (-math.inf, None)  # (log density, draw) of the current metric window
        self._restart()

    def _restart(self):
        self._mu = math.log(10.0 * self.step_size)
        self._h_bar = 0.0
        self._log_eps_bar = 0.0
        self._t = 0

    @property
    def tuning(self):
        return self.count < self.n_tune

    def update(self, accept_stat, laplace, draw=None, log_density=-math.inf):
        """Record one warm-up transition that ended at ``draw`` (of log density
        ``log_density``); ``laplace(point)`` gives a metric factor at a point, or None."""
        if not self.tuning:
            return
        self.count += 1
        self._t += 1
        t = self._t
        self._h_bar += ((self.target - accept_stat) - self._h_bar) / (t + 10.0)
        log_eps = self._mu - math.sqrt(t) / 0.05 * self._h_bar
        weight = t**-0.75
        self._log_eps_bar = weight * log_eps + (1.0 - weight) * self._log_eps_bar
        self.step_size = math.exp(log_eps)
        if draw is not None and (self._best[1] is None or log_density > self._best[0]):
            self._best = (float(log_density), np.array(draw, dtype=float))
        if self.count in self.metric_updates:
            chol_cov = laplace(self._best[1] if self._best[1] is not None else draw)
            self._best = (-math.inf, None)
            if chol_cov is not None:
                self.chol_cov = chol_cov
                self.step_size = 0.8
                self._restart()
        if not self.tuning:
            self.step_size = math.exp(self._log_eps_bar)
