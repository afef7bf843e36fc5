"""Ships configs/ (the YAML presets) inside the wheel as the package ``emofusion.configs``, so
``emofusion train --config rrnn_mosei`` works after a non-editable install. Everything else is in
pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src"), "emofusion.configs"],
    package_dir={"": "src", "emofusion.configs": "configs"},
    package_data={"emofusion.configs": ["*.yaml"]},
)
