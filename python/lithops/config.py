"""Lithops' configuration, read for what applies to a Bettong pool.

The file or dict has Lithops' layout (a `lithops` section naming the mode,
compute backend and storage backend, then a section per backend), found where
Lithops looks for it (config_file, $LITHOPS_CONFIG_FILE, ./.lithops_config,
~/.lithops/config, /etc/lithops/config; none: localhost everything). What
applies here (see `settings`): the storage backend and bucket, the number of
workers of a local pool, the default per-call timeout and memory, modules to
include/exclude, retries and the log level. Every call runs on Bettong's pool
whatever the compute backend (BETTONG_POOL / BETTONG_SECRET choose a remote
pool); anything else the user set is ignored with one note, logged once.
"""

import copy
import json
import logging
import os

from . import constants as c
from .version import __version__

logger = logging.getLogger(__name__)

# What this package reads (section -> keys); the rest of a config is noted.
_LITHOPS_APPLIED = {"mode", "backend", "storage", "execution_timeout", "log_level",
                    "include_modules", "exclude_modules", "retries", "data_cleaner",
                    "storage_bucket"}
# Keys default_config itself fills in (noted only when set to something else).
_LITHOPS_FILLED = {"monitoring": "storage", "monitoring_interval": None, "chunksize": None,
                   "log_format": None, "log_stream": None, "log_filename": None}
_BACKEND_APPLIED = {"max_workers", "worker_processes", "runtime_memory", "runtime_timeout",
                    "storage_bucket", "user_agent", "storage_dir",
                    # an S3 storage backend's connection (lithops.storage.s3)
                    "endpoint", "region", "access_key_id", "secret_access_key",
                    "session_token"}
_noted = set()


def load_yaml_config(config_filename):
    """The YAML file as a dict ({} when the file does not exist)."""
    import yaml
    try:
        with open(config_filename, "r") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        data = {}
    return data


def dump_yaml_config(config_filename, data):
    import yaml
    os.makedirs(os.path.dirname(config_filename) or ".", exist_ok=True)
    with open(config_filename, "w") as f:
        yaml.dump(data, f, default_flow_style=False)


def get_default_config_filename():
    if "LITHOPS_CONFIG_FILE" in os.environ:
        return os.environ["LITHOPS_CONFIG_FILE"]
    if os.path.exists(".lithops_config"):
        return os.path.abspath(".lithops_config")
    for name in (c.CONFIG_FILE, c.CONFIG_FILE_GLOBAL):
        if os.path.exists(name):
            return name
    return None


def load_config(config_file=None, log=True):
    """The configuration dict, from config_file, $LITHOPS_CONFIG or the default
    places; localhost for everything when there is none."""
    data = None
    if config_file:
        name = os.path.expanduser(config_file)
        if not os.path.exists(name):
            raise FileNotFoundError(f"Config file {name} doesn't exist")
        data = load_yaml_config(name)
    elif "LITHOPS_CONFIG" in os.environ:
        data = json.loads(os.environ["LITHOPS_CONFIG"])
    else:
        name = get_default_config_filename()
        if name:
            data = load_yaml_config(name)
    if not data:
        data = {"lithops": {"mode": c.LOCALHOST, "backend": c.LOCALHOST, "storage": c.LOCALHOST}}
    return data


def get_mode(backend):
    if backend == c.LOCALHOST:
        return c.LOCALHOST
    if backend in c.STANDALONE_BACKENDS:
        return c.STANDALONE
    return c.SERVERLESS


def get_default_backend(mode):
    if mode == c.LOCALHOST:
        return c.LOCALHOST
    if mode == c.SERVERLESS:
        return c.SERVERLESS_BACKEND_DEFAULT
    if mode == c.STANDALONE:
        return c.STANDALONE_BACKEND_DEFAULT
    raise Exception(f"Unknown execution mode: {mode}")


def get_log_info(config_file=None, config_data=None):
    data = copy.deepcopy(config_data) or load_config(config_file, log=False)
    cl = data.get("lithops") or {}
    return (cl.get("log_level", "info"), cl.get("log_format"), cl.get("log_stream"),
            cl.get("log_filename"))


def default_config(config_file=None, config_data=None, config_overwrite={},
                   load_storage_config=True):
    """The configuration with Lithops' defaults filled in (mode, backend,
    storage, execution_timeout, ...), as Lithops' default_config does."""
    data = copy.deepcopy(config_data) or load_config(config_file)
    if not data.get("lithops"):
        data["lithops"] = {}
    cl = data["lithops"]
    if "lithops" in config_overwrite:
        cl.update(config_overwrite["lithops"])
    backend, mode = cl.get("backend"), cl.get("mode")
    if mode and not backend:
        if isinstance(data.get(mode), dict) and "backend" in data[mode]:
            cl["backend"] = data[mode]["backend"]
        else:
            cl["backend"] = get_default_backend(mode)
    elif backend:
        cl["mode"] = get_mode(backend)
    else:
        cl["mode"] = c.MODE_DEFAULT
        cl["backend"] = get_default_backend(c.MODE_DEFAULT)
    backend = cl["backend"]
    if not isinstance(data.get(backend), dict):
        data[backend] = {}
    if config_overwrite.get("backend"):
        data[backend].update(config_overwrite["backend"])
    if cl["mode"] == c.LOCALHOST:
        data[backend].setdefault("worker_processes", c.CPU_COUNT)
    if load_storage_config:
        data = default_storage_config(config_data=data)
    for key, value in c.LITHOPS_DEFAULT_CONFIG_KEYS.items():
        cl = data["lithops"]
        cl.setdefault(key, value)
    return data


def default_storage_config(config_file=None, config_data=None, backend=None):
    data = copy.deepcopy(config_data) or load_config(config_file)
    if not data.get("lithops"):
        data["lithops"] = {}
    if "storage" not in data["lithops"]:
        data["lithops"]["storage"] = c.STORAGE_BACKEND_DEFAULT
    if backend:
        data["lithops"]["storage"] = backend
    sb = data["lithops"]["storage"]
    if not isinstance(data.get(sb), dict):
        data[sb] = {}
    if sb == c.LOCALHOST:
        data[sb].setdefault("storage_bucket", data["lithops"].get("storage_bucket", "storage"))
    return data


def extract_storage_config(config):
    """{'backend': name, name: {its section}} as Storage(storage_config=...) takes."""
    backend = config["lithops"]["storage"]
    s = {"monitoring_interval": config["lithops"].get(
        "monitoring_interval", c.LITHOPS_DEFAULT_CONFIG_KEYS["monitoring_interval"])}
    s["backend"] = backend
    s[backend] = dict(config[backend]) if config.get(backend) else {}
    s[backend]["user_agent"] = f"lithops/{__version__}"
    if "storage_bucket" in config["lithops"] and "storage_bucket" not in s[backend]:
        s[backend]["storage_bucket"] = config["lithops"]["storage_bucket"]
    return s


def extract_localhost_config(config):
    return dict(config.get(c.LOCALHOST) or {})


def extract_serverless_config(config):
    backend = config["lithops"]["backend"]
    s = {"backend": backend, backend: dict(config.get(backend) or {})}
    s[backend]["user_agent"] = f"lithops/{__version__}"
    return s


def extract_standalone_config(config):
    s = dict(config.get(c.STANDALONE) or {})
    backend = config["lithops"]["backend"]
    s["backend"] = backend
    s["storage"] = config["lithops"].get("storage")
    s[backend] = dict(config.get(backend) or {})
    return s


# ------------------------------------------------------------------ what applies

class Settings:
    """What a configuration means for a Bettong executor."""

    def __init__(self, config, ignored=()):
        cl = config["lithops"]
        sec = config.get(cl["backend"]) or {}
        workers = sec.get("max_workers") or sec.get("worker_processes")
        self.workers = int(workers) if workers else None
        self.workers_asked = "max_workers" in sec
        self.runtime_memory = sec.get("runtime_memory")
        timeout = cl.get("execution_timeout") or c.LITHOPS_DEFAULT_CONFIG_KEYS["execution_timeout"]
        if sec.get("runtime_timeout"):
            timeout = min(timeout, sec["runtime_timeout"])
        self.timeout = timeout
        inc = cl.get("include_modules", [])
        if isinstance(inc, str):
            if inc.lower() != "none":
                raise ValueError("'include_modules' parameter in config must be a list")
            inc = None
        self.include_modules = inc
        self.exclude_modules = list(cl.get("exclude_modules") or [])
        self.retries = cl.get("retries", 0)
        self.data_cleaner = cl.get("data_cleaner", True)
        self.storage = cl.get("storage")
        self.backend = cl["backend"]
        self.mode = cl["mode"]
        _note_ignored(config, ignored)


def note_once(text):
    """A warning, once per process."""
    if text not in _noted:
        _noted.add(text)
        logger.warning("%s", text)


def _note_ignored(config, more=()):
    """One warning, once per process and set of keys, naming what the
    configuration sets that means nothing on a Bettong pool."""
    cl = config.get("lithops") or {}
    ignored = list(more)
    for k, v in cl.items():
        if k in _LITHOPS_APPLIED:
            continue
        if k in _LITHOPS_FILLED and (_LITHOPS_FILLED[k] is None or _LITHOPS_FILLED[k] == v):
            continue
        if k in c.LITHOPS_DEFAULT_CONFIG_KEYS and c.LITHOPS_DEFAULT_CONFIG_KEYS[k] == v:
            continue
        ignored.append(f"lithops.{k}")
    used = {cl.get("backend"), cl.get("storage")}
    if cl.get("storage") == "aws_s3":
        used.add("aws")  # (its credentials)
    for section, body in config.items():
        if section == "lithops" or not body:
            continue
        if section not in used:
            if isinstance(body, dict):
                ignored += [f"{section}.{k}" for k in body]
            else:
                ignored.append(section)
            continue
        if isinstance(body, dict):
            ignored += [f"{section}.{k}" for k in body if k not in _BACKEND_APPLIED]
    if cl.get("backend") not in (None, c.LOCALHOST):
        ignored.append(f"compute backend {cl.get('backend')!r} (calls run on Bettong's pool)")
    if ignored:
        note_once("lithops on Bettong: config settings with no meaning here, ignored: "
                  + ", ".join(sorted(ignored)))
