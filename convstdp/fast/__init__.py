"""Fast backends. The registry imports each module only when its backend is first asked for, so
``import convstdp`` never loads Numba, JAX or ngclearn; a missing library makes that backend
unavailable, with the reason, instead of failing at import."""
