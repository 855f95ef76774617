"""The package list, for one thing pyproject.toml cannot say: the course notebooks (notebooks/ in the repository,
where their Colab/Kaggle addresses point) ship inside the wheel as the package data of `adnlib.notebooks`."""
from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["adnlib*"]), "adnlib.notebooks"],
      package_dir={"adnlib.notebooks": "notebooks"})
