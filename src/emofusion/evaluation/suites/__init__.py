"""Built-in benchmark suites; each module registers its suites on import (one import line per module)."""

from emofusion.evaluation.suites import (
    foundation,  # noqa: F401
    paper000,  # noqa: F401
    paper001,  # noqa: F401
    paper002,  # noqa: F401
    paper003,  # noqa: F401
    paper004,  # noqa: F401
    robustness,  # noqa: F401
)
