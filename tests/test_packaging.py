"""The wheel: properties/ inside the package, the ``rsir`` command, and the installed layout found."""
import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the checkout (an in-tree build would reuse stale build/ files)."""
    src = tmp_path_factory.mktemp("src") / "repo"
    local = {".git", ".venv", ".venv-wheel", "build", "recbole_rsir.egg-info", ".benchmarks", "dataset", "saved", "log",
             "rsir_output"}
    shutil.copytree(ROOT, src, ignore=lambda folder, names: local & set(names) if folder == ROOT else ())
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(src)], check=True, capture_output=True, text=True)
    (path,) = glob.glob(str(out / "*.whl"))
    return path


@pytest.mark.slow
def test_the_wheel_ships_properties_data_and_the_command(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"recbole_rsir/properties/{os.path.relpath(p, os.path.join(ROOT, 'properties'))}"
               for p in glob.glob(os.path.join(ROOT, "properties", "**", "*.yaml"), recursive=True)}
    assert "recbole_rsir/properties/overall.yaml" in shipped and shipped <= names
    assert {"recbole_rsir/cli.py", "recbole_rsir/schema/__main__.py",
            "recbole_rsir/data/bundled/amazon-beauty.inter.gz"} <= names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "rsir = recbole_rsir.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_the_installed_package_reads_its_own_properties(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), wheel],
                   check=True, capture_output=True, text=True)
    code = ("from recbole_rsir.config import PROPERTIES_DIR, known_keys; "
            "print(PROPERTIES_DIR); assert 'lmd' in known_keys()")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(site / "recbole_rsir" / "properties")
