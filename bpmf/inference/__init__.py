"""How posteriors are computed: MAP (alternating least squares, L-BFGS), joint NUTS drivers,
blocked Gibbs samplers, and the convergence diagnostics of their draws."""
