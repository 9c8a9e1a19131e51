"""The exact Gaussian conditional of a folded-in row, per posterior draw, for the fold-in
tests: each drawn row standardised by its draw's conditional mean and precision."""

import numpy as np
from scipy import stats


def standardised_rows(rows, prior_mean, prior_precision, partners, partner_bias, targets, mu,
                      sigma):
    """``L^T (x_s - m_s)`` per draw ``s``, with ``P_s = L L^T`` the conditional precision
    ``prior_precision[s] + tau_s sum_n y_n y_n^T`` (``y_n = (partners[s, n], 1)``) and
    ``m_s = P_s^-1 (prior_precision[s] prior_mean[s] + tau_s sum_n y_n (t_n - mu_s -
    partner_bias[s, n]))``. ``rows`` is ``(draws, D + 1)``: the factors and the bias."""
    standardised = []
    for s in range(len(mu)):
        Y = np.column_stack([partners[s], np.ones(len(targets))])
        tau = 1.0 / sigma[s] ** 2
        precision = prior_precision[s] + tau * Y.T @ Y
        linear = prior_precision[s] @ prior_mean[s] + tau * Y.T @ (
            targets - mu[s] - partner_bias[s]
        )
        mean = np.linalg.solve(precision, linear)
        standardised.append(np.linalg.cholesky(precision).T @ (rows[s] - mean))
    return np.array(standardised)


def assert_standard_normal(z, cov_atol):
    """``z`` (draws, dims): independent standard normals, by KS, mean (4 standard errors)
    and covariance (within ``cov_atol`` of the identity)."""
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    np.testing.assert_allclose(z.mean(0), 0.0, atol=4 / np.sqrt(len(z)))
    np.testing.assert_allclose(np.cov(z.T), np.eye(z.shape[1]), atol=cov_atol)


def block_precision(Sigma, bias_sd):
    """``diag(Sigma^-1, 1 / bias_sd^2)`` per draw."""
    n, D = Sigma.shape[0], Sigma.shape[1]
    precision = np.zeros((n, D + 1, D + 1))
    precision[:, :D, :D] = np.linalg.inv(Sigma)
    precision[:, D, D] = 1.0 / bias_sd**2
    return precision
