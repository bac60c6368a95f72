"""Benchmarks are files named bench_*.py: ``pytest benchmarks/bench_NAME.py -s`` runs one,
``pytest benchmarks -s`` all of them (long).

This folder is not in testpaths, so the default ``pytest`` (tests/) never runs them.
"""
import pytest


def pytest_collect_file(file_path, parent):
    named = file_path.suffix == ".py" and file_path.name.startswith("bench_")
    # a file named on the command line is collected by pytest itself
    if named and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
