"""Ramp-fitting kernels of the ramp_fit step: pure functions on arrays, numba inside.

``readout``  quantities of a read pattern shared by the algorithms, the weighting
             power table, and the row-chunk scheduler behind ``maximum_cores``
``cas22``    Casertano et al. (2022) optimal fit of unevenly sampled ramps, with the
             integrated jump detection of Sharma et al. (``algorithm=ols_cas22``)
``ols``      Fixsen et al. (2000) optimal fit of evenly sampled ramps and its
             optional per-segment product (``algorithm=ols``)
``likely``   Brandt (2024) maximum-likelihood fit of the resultant differences with
             iterative jump rejection (``algorithm=likely``, romancal 1.1's default)

The step script ``ramp_fit.py`` reads the files and calls one of the three ``fit_ramps_*``
functions; nothing here touches a file.
"""
