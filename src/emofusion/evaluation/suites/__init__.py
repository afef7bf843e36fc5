"""Built-in benchmark suites; each module registers its suites on import (one import line per module)."""

# imported for their side effect: each module registers its entries
from emofusion.evaluation.suites import (  # noqa: F401
    foundation,
    paper000,
    paper001,
    paper002,
    paper003,
    paper004,
    real,
    robustness,
)
