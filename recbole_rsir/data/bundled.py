"""Datasets shipped inside the package, so the default command works offline.

Each is a 5-core benchmark in the version used by S3-Rec, CL4SRec and RSIR (see README),
stored as a gzipped RecBole atomic ``.inter`` file and unpacked into RecBole's
``data_path`` on first use. Atomic files already in ``data_path`` always win.
"""
import gzip
import os
import shutil

from recbole_rsir.data.convert import check_atomic_file
from recbole_rsir.errors import UnknownDatasetError

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled")
BUNDLED = ("amazon-beauty", "amazon-sports-outdoors", "ml-1m")


def atomic_file(data_path, name):
    """Path of the ``.inter`` file RecBole reads for ``name`` (config['data_path'] ends in name)."""
    return os.path.join(data_path, f"{name}.inter")


def check_dataset(data_path, name):
    """Raise unless RecBole can load ``name`` (user files are checked line by line); touches nothing."""
    if os.path.isfile(atomic_file(data_path, name)):
        check_atomic_file(atomic_file(data_path, name))
        return
    if name in BUNDLED:
        return
    raise UnknownDatasetError(
        f"unknown dataset {name!r}: no {atomic_file(data_path, name)} and not bundled "
        f"(bundled: {', '.join(BUNDLED)}; convert your own with python -m recbole_rsir.data convert)"
    )


def ensure_dataset(data_path, name):
    """Unpack the bundled copy of ``name`` into ``data_path`` unless atomic files are there."""
    check_dataset(data_path, name)
    target = atomic_file(data_path, name)
    if os.path.isfile(target):
        return target
    os.makedirs(data_path, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"      # runs started together each unpack, the last rename wins
    with gzip.open(os.path.join(BUNDLED_DIR, f"{name}.inter.gz"), "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(tmp, target)
    return target
