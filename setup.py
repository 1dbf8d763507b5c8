"""Packaging beyond setup.cfg's metadata: the launcher's import name and the shipped YAML files.

- The ``launch/`` folder installs as the package ``opmask_launch`` (a top-level ``launch`` would
  collide with other projects' packages).
- ``configs/**/*.yaml`` and ``slurm/profiles/*.yaml`` are copied into ``opmask/_resources/`` of the
  build tree (never of the source tree), so an installed wheel finds them with
  ``importlib.resources`` (``opmask/utils/resources.py``). An editable install reads the
  repository's own folders and gets no copies.
"""

import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
# Folders (relative to the repository) whose YAML files are copied to opmask/_resources/FOLDER.
RESOURCE_DIRS = ("configs", os.path.join("slurm", "profiles"))


def resource_files() -> list[str]:
    """Every shipped YAML file, relative to the repository, sorted."""
    out = []
    for folder in RESOURCE_DIRS:
        for dirpath, _, names in os.walk(os.path.join(HERE, folder)):
            out += [
                os.path.relpath(os.path.join(dirpath, n), HERE)
                for n in names
                if n.endswith((".yaml", ".yml"))
            ]
    return sorted(out)


class BuildPyWithResources(build_py):
    """build_py, then the YAML files into BUILD_LIB/opmask/_resources (same relative layout)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable installs use the checkout's folders
        for rel in resource_files():
            target = os.path.join(self.build_lib, "opmask", "_resources", rel)
            self.mkpath(os.path.dirname(target))
            shutil.copyfile(os.path.join(HERE, rel), target)

    def get_outputs(self, include_bytecode=True):
        extra = [os.path.join(self.build_lib, "opmask", "_resources", r) for r in resource_files()]
        outputs = super().get_outputs(include_bytecode)
        return outputs if getattr(self, "editable_mode", False) else outputs + extra


setup(
    packages=find_packages(include=["opmask", "opmask.*"]) + ["opmask_launch"],
    package_dir={"opmask_launch": "launch"},
    cmdclass={"build_py": BuildPyWithResources},
)
