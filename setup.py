"""Copies the top-level grammar/, targets/ and specs/ into the wheel as
``spikedsl/_data/`` so that an installed spikedsl works outside the source
tree (see spikedsl/resources.py)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA = ("grammar", "targets", "specs")


class BuildWithData(build_py):
    def run(self):
        super().run()
        for name in DATA:
            src = ROOT / name
            if not src.is_dir():
                continue
            dst = Path(self.build_lib) / "spikedsl" / "_data" / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithData})
