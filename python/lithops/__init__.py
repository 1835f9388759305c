"""Lithops' API on Bettong: Lithops programs run unchanged on a Bettong pool.

    import lithops
    fexec = lithops.FunctionExecutor()
    fexec.map(lambda x: x + 1, range(10))
    print(fexec.get_result())

Calls run on a local Bettong pool (one worker per core, started on first use)
or on the remote pool at $BETTONG_POOL ($BETTONG_SECRET). A Lithops
configuration is read for what applies (lithops.config). See the user guide,
"Lithops and PyWren programs".
"""

# Other `lithops` directories on sys.path add subpackages (Lithops' own test
# suite, lithops.tests, run from a checkout of Lithops beside this package).
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

from lithops.executors import (FunctionExecutor, LocalhostExecutor, ServerlessExecutor,
                               StandaloneExecutor)
from lithops.retries import RetryingFunctionExecutor
from lithops.storage import Storage
from lithops.storage.utils import CloudObject
from lithops.version import __version__
from lithops.wait import ALL_COMPLETED, ALWAYS, ANY_COMPLETED, get_result, wait

__all__ = [
    "FunctionExecutor",
    "LocalhostExecutor",
    "ServerlessExecutor",
    "StandaloneExecutor",
    "RetryingFunctionExecutor",
    "Storage",
    "CloudObject",
    "wait",
    "get_result",
    "ALL_COMPLETED",
    "ANY_COMPLETED",
    "ALWAYS",
    "__version__",
]
