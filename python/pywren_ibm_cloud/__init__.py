"""PyWren-IBM-Cloud's API on Bettong: its programs run unchanged on a Bettong pool.

    import pywren_ibm_cloud as pywren
    pw = pywren.ibm_cf_executor()
    pw.map(f, iterdata)
    print(pw.get_result())

Every executor runs its calls on a Bettong pool (local, or $BETTONG_POOL with
$BETTONG_SECRET), whatever compute backend it names; storage is Bettong's
local directory store (`localhost`). See lithops.executors for what each
parameter does, and the user guide, "Lithops and PyWren programs".
"""

from pywren_ibm_cloud.executor import FunctionExecutor
from pywren_ibm_cloud.version import __version__
from pywren_ibm_cloud.wait import ALL_COMPLETED, ALWAYS, ANY_COMPLETED

name = "pywren_ibm_cloud"


def _executor(compute_backend, config, runtime=None, runtime_memory=None, workers=None,
              region=None, storage_backend=None, storage_backend_region=None,
              rabbitmq_monitor=None, remote_invoker=None, log_level=None):
    return FunctionExecutor(config=config, runtime=runtime, runtime_memory=runtime_memory,
                            workers=workers, compute_backend=compute_backend,
                            compute_backend_region=region, storage_backend=storage_backend,
                            storage_backend_region=storage_backend_region,
                            rabbitmq_monitor=rabbitmq_monitor, remote_invoker=remote_invoker,
                            log_level=log_level)


def ibm_cf_executor(config=None, runtime=None, runtime_memory=None, workers=None, region=None,
                    storage_backend=None, storage_backend_region=None, rabbitmq_monitor=None,
                    remote_invoker=None, log_level=None):
    """IBM Cloud Functions' executor: a Bettong pool here."""
    return _executor("ibm_cf", config, runtime, runtime_memory, workers, region,
                     storage_backend, storage_backend_region, rabbitmq_monitor, remote_invoker,
                     log_level)


def knative_executor(config=None, runtime=None, runtime_memory=None, workers=None, region=None,
                     storage_backend=None, storage_backend_region=None, rabbitmq_monitor=None,
                     remote_invoker=None, log_level=None):
    return _executor("knative", config, runtime, runtime_memory, workers, region,
                     storage_backend, storage_backend_region, rabbitmq_monitor, remote_invoker,
                     log_level)


def openwhisk_executor(config=None, runtime=None, runtime_memory=None, workers=None,
                       storage_backend=None, storage_backend_region=None, rabbitmq_monitor=None,
                       remote_invoker=None, log_level=None):
    return _executor("openwhisk", config, runtime, runtime_memory, workers, None,
                     storage_backend, storage_backend_region, rabbitmq_monitor, remote_invoker,
                     log_level)


def cloudrun_executor(config=None, runtime=None, runtime_memory=None, workers=None, region=None,
                      storage_backend=None, storage_backend_region=None, rabbitmq_monitor=None,
                      remote_invoker=None, log_level=None):
    return _executor("cloudrun", config, runtime, runtime_memory, workers, region,
                     storage_backend, storage_backend_region, rabbitmq_monitor, remote_invoker,
                     log_level)


def function_executor(config=None, runtime=None, runtime_memory=None, workers=None,
                      backend=None, region=None, storage_backend=None,
                      storage_backend_region=None, rabbitmq_monitor=None, remote_invoker=None,
                      log_level=None):
    """The generic executor (compute backend `backend`, default the config's)."""
    return _executor(backend, config, runtime, runtime_memory, workers, region, storage_backend,
                     storage_backend_region, rabbitmq_monitor, remote_invoker, log_level)


def local_executor(config=None, workers=None, storage_backend=None, storage_backend_region=None,
                   rabbitmq_monitor=None, log_level=None):
    """The localhost executor: a local Bettong pool."""
    return _executor("localhost", config, None, None, workers, None,
                     storage_backend or "localhost", storage_backend_region, rabbitmq_monitor,
                     None, log_level)


def docker_executor(config=None, runtime=None, workers=None, storage_backend=None,
                    storage_backend_region=None, rabbitmq_monitor=None, log_level=None):
    return _executor("docker", config, runtime, None, workers, None,
                     storage_backend or "localhost", storage_backend_region, rabbitmq_monitor,
                     None, log_level)


__all__ = ["FunctionExecutor", "ibm_cf_executor", "knative_executor", "openwhisk_executor",
           "cloudrun_executor", "function_executor", "local_executor", "docker_executor",
           "ALL_COMPLETED", "ANY_COMPLETED", "ALWAYS", "__version__"]
