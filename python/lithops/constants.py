"""Lithops' constants that its users' code and config name."""

import os
import tempfile

LOCALHOST = "localhost"
SERVERLESS = "serverless"
STANDALONE = "standalone"
MODE_DEFAULT = SERVERLESS

SERVERLESS_BACKEND_DEFAULT = "aws_lambda"
STANDALONE_BACKEND_DEFAULT = "aws_ec2"
STORAGE_BACKEND_DEFAULT = "aws_s3"
STANDALONE_BACKENDS = ("aws_ec2", "azure_vms", "gcp_compute_engine", "ibm_vpc", "vm")

JOBS_PREFIX = "lithops.jobs"
TEMP_PREFIX = "lithops.jobs/tmp"
LOGS_PREFIX = "lithops.logs"

CPU_COUNT = os.cpu_count()
TEMP_DIR = os.path.realpath(tempfile.gettempdir())
LITHOPS_TEMP_DIR = os.path.join(TEMP_DIR, "lithops-" + os.getenv("USER", "root"))
HOME_DIR = os.path.expanduser("~")
CONFIG_DIR = os.path.join(HOME_DIR, ".lithops")
CONFIG_FILE = os.path.join(CONFIG_DIR, "config")
CONFIG_FILE_GLOBAL = os.path.join("/etc", "lithops", "config")

LITHOPS_DEFAULT_CONFIG_KEYS = {
    "monitoring": "storage",
    "monitoring_interval": 2,
    "execution_timeout": 1800,
}
