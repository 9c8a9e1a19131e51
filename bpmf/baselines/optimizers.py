"""First-order optimisers with sparse row updates: AdaGrad and SGD with momentum.

Both update numpy parameter arrays in place. A gradient can be dense (same shape as the
parameter) or *sparse by rows*: ``rows`` lists the rows of the parameter that a mini-batch
touched and ``grad`` holds one gradient row per entry of ``rows`` (repeated rows are summed).
Only those rows, and only their optimiser state, change; every other row is left exactly as it
was. For embedding matrices this gives AdaGrad's per-feature learning rate: a rarely seen user
keeps a large step size while a frequent one's step shrinks.
"""

import numpy as np

from bpmf.baselines._features import check_positive


def _aggregate_rows(param, grad, rows):
    """Unique touched rows and their summed gradient rows."""
    rows = np.asarray(rows, dtype=np.intp)
    grad = np.asarray(grad, dtype=np.float64)
    if rows.ndim != 1:
        raise ValueError(f"rows must be 1-D, got shape {rows.shape}.")
    if grad.shape != (len(rows), *param.shape[1:]):
        raise ValueError(
            f"A row-sparse gradient must have shape {(len(rows), *param.shape[1:])} (one row per "
            f"entry of rows), got {grad.shape}."
        )
    if len(rows) and (rows.min() < 0 or rows.max() >= param.shape[0]):
        raise ValueError(f"rows must lie in [0, {param.shape[0]}); got {rows.min()}..{rows.max()}.")
    # sort once, then sum each run of equal rows (faster than np.add.at on 2-D gradients)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_rows[1:] != sorted_rows[:-1]]))
    if len(starts) == len(rows):
        return sorted_rows, grad[order]
    return sorted_rows[starts], np.add.reduceat(grad[order], starts, axis=0)


class _Optimizer:
    def _check_dense(self, param, grad):
        grad = np.asarray(grad, dtype=np.float64)
        if grad.shape != param.shape:
            raise ValueError(
                f"The gradient has shape {grad.shape} but the parameter has {param.shape}; pass "
                "rows= for a row-sparse gradient."
            )
        return grad

    def step(self, params, grads, rows=None):
        """Update every parameter in the dict ``params`` with ``grads[name]`` (in place).

        ``rows`` maps names of row-sparse gradients to the rows they touch.
        """
        rows = rows or {}
        for name, grad in grads.items():
            self.update(name, params[name], grad, rows.get(name))

    def reset(self):
        """Forget the accumulated state (a new fit starts from scratch)."""
        self.state_ = {}
        return self


class AdaGrad(_Optimizer):
    r"""AdaGrad: per-coordinate step sizes from the accumulated squared gradients.

    Parameters
    ----------
    learning_rate : float, default 0.1
        The base step size :math:`\eta`.
    eps : float, default 1e-8
        Added to the root of the accumulator to avoid division by zero.
    initial_accumulator : float, default 0.0
        Starting value of every accumulator.

    Notes
    -----
    For a parameter :math:`p` with gradient :math:`g_t` at step :math:`t`,

    .. math::

        G_t = G_{t-1} + g_t^2, \qquad p_t = p_{t-1} - \eta\, g_t / (\sqrt{G_t} + \epsilon),

    elementwise (Duchi, Hazan and Singer, 2011). With ``rows`` given, only the touched rows of
    :math:`G` and :math:`p` change, so each embedding row's step size depends only on how often
    and how strongly that user or item has been updated.
    """

    def __init__(self, learning_rate=0.1, eps=1e-8, initial_accumulator=0.0):
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.eps = check_positive("eps", eps)
        self.initial_accumulator = check_positive(
            "initial_accumulator", initial_accumulator, allow_zero=True
        )
        self.state_ = {}

    def _accumulator(self, name, param):
        acc = self.state_.get(name)
        if acc is None or acc.shape != param.shape:
            acc = np.full(param.shape, self.initial_accumulator)
            self.state_[name] = acc
        return acc

    def update(self, name, param, grad, rows=None):
        """Apply one AdaGrad step to ``param`` in place (only ``rows`` if given)."""
        acc = self._accumulator(name, param)
        if rows is None:
            grad = self._check_dense(param, grad)
            acc += grad * grad
            param -= self.learning_rate * grad / (np.sqrt(acc) + self.eps)
            return param
        rows, grad = _aggregate_rows(param, grad, rows)
        acc_rows = acc[rows] + grad * grad
        acc[rows] = acc_rows
        param[rows] -= self.learning_rate * grad / (np.sqrt(acc_rows) + self.eps)
        return param


class SGD(_Optimizer):
    r"""Stochastic gradient descent with (heavy-ball) momentum, for comparison with AdaGrad.

    Parameters
    ----------
    learning_rate : float, default 0.01
        The step size :math:`\eta`, the same for every coordinate.
    momentum : float, default 0.9
        :math:`\beta \in [0, 1)`; 0 gives plain SGD.

    Notes
    -----
    .. math::

        v_t = \beta v_{t-1} + g_t, \qquad p_t = p_{t-1} - \eta\, v_t .

    With ``rows`` given the update is *lazy*: only the touched rows' velocity and values change
    (an untouched row keeps its velocity until it is next seen), as in sparse embedding updates.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9):
        self.learning_rate = check_positive("learning_rate", learning_rate)
        momentum = check_positive("momentum", momentum, allow_zero=True)
        if momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        self.momentum = momentum
        self.state_ = {}

    def update(self, name, param, grad, rows=None):
        """Apply one momentum step to ``param`` in place (only ``rows`` if given)."""
        velocity = self.state_.get(name)
        if velocity is None or velocity.shape != param.shape:
            velocity = np.zeros(param.shape)
            self.state_[name] = velocity
        if rows is None:
            grad = self._check_dense(param, grad)
            velocity *= self.momentum
            velocity += grad
            param -= self.learning_rate * velocity
            return param
        rows, grad = _aggregate_rows(param, grad, rows)
        v_rows = self.momentum * velocity[rows] + grad
        velocity[rows] = v_rows
        param[rows] -= self.learning_rate * v_rows
        return param


def make_optimizer(optimizer, learning_rate):
    """A fresh optimiser from a name ("adagrad", "sgd") or a copy (without state) of an instance."""
    if isinstance(optimizer, AdaGrad | SGD):
        return type(optimizer)(**{k: getattr(optimizer, k) for k in _init_names(optimizer)})
    if optimizer == "adagrad":
        return AdaGrad(learning_rate=learning_rate)
    if optimizer == "sgd":
        return SGD(learning_rate=learning_rate)
    raise ValueError(
        f"optimizer must be 'adagrad', 'sgd' or an AdaGrad/SGD instance, got {optimizer!r}."
    )


def _init_names(optimizer):
    if isinstance(optimizer, AdaGrad):
        return ("learning_rate", "eps", "initial_accumulator")
    return ("learning_rate", "momentum")
