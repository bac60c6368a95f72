"""The package's modules, plus ``properties/`` shipped inside it as ``recbole_rsir.properties``.

``properties/`` stays at the top of the repository, where RecBole users look for it; pyproject.toml
alone cannot add a folder from outside the package to the packages it finds, so this file does.
Everything else about the package is in pyproject.toml.
"""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["recbole_rsir*"]) + ["recbole_rsir.properties"],
      package_dir={"recbole_rsir.properties": "properties"})
